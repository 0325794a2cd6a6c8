"""Pruning: magnitude masks (unstructured, N:M), graph marking, masks held during training."""

import numpy as np
import pytest
from test_training import mlp

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec
from sim.passes.precision import amp
from sim.passes.sparsity import (
    magnitude_masks,
    nm_mask,
    parse_prune,
    prunable_params,
    prune,
    unstructured_mask,
)
from sim.passes.training import training_graph
from sim.training import Trainer

rng = np.random.default_rng(0)


def test_parse_prune():
    assert parse_prune("0.5").kind == "unstructured" and parse_prune("0.5").fraction == 0.5
    s = parse_prune("2:4")
    assert (s.kind, s.n, s.m) == ("2:4", 2, 4)
    for bad in ("1.5", "4:2", "x", "a:b"):
        with pytest.raises(GraphError):
            parse_prune(bad)


def test_unstructured_mask_removes_the_smallest():
    w = np.array([[0.1, -5.0, 0.3], [2.0, -0.2, 0.05]])
    m = unstructured_mask(w, 0.5)  # floor(0.5 * 6) = 3 smallest |w|: 0.05, 0.1, 0.2
    assert m.tolist() == [[0, 1, 1], [1, 0, 0]]


def test_2_4_mask_along_the_reduction_axis():
    w = rng.standard_normal((8, 5))  # MatMul right operand: K = 8 rows
    m = nm_mask(w, 2, 4, "rows")
    groups = m.T.reshape(5, 2, 4)
    assert (groups.sum(-1) == 2).all()
    # the kept pair of every group is its two largest |w| (checked by sorting by hand)
    wa = np.abs(w.T.reshape(5, 2, 4))
    for i in range(5):
        for j in range(2):
            top = set(np.argsort(wa[i, j])[-2:])
            assert set(np.nonzero(groups[i, j])[0]) == top
    # a conv weight [Cout, Cin, kH, kW] groups the flattened Cin*kH*kW of each output channel
    c = nm_mask(rng.standard_normal((3, 2, 2, 2)), 2, 4, "flat")
    assert (c.reshape(3, 2, 4).sum(-1) == 2).all()
    # a trailing group shorter than 4 stays dense
    assert nm_mask(rng.standard_normal((6, 1)), 2, 4)[:, 0].tolist()[4:] == [1.0, 1.0]


def test_prunable_params_are_matmul_weights_also_through_casts():
    g = mlp()
    assert prunable_params(g) == ["fc0.w", "fc1.w", "fc2.w"]
    assert prunable_params(amp(g, "bf16")) == ["fc0.w", "fc1.w", "fc2.w"]


def test_mark_sparsity_marks_forward_matmuls_only():
    g = mlp()
    t = training_graph(g, optimizer="sgd", lr=0.1)
    params = Trainer(g, optimizer="sgd", lr=0.1).params
    masks, marked = prune(t, params, "2:4")
    assert sorted(masks) == ["fc0.w", "fc1.w", "fc2.w"]
    assert marked.nodes["fc1"].meta["sparsity"] == {"kind": "2:4"}
    assert all("sparsity" not in n.meta for n in marked.nodes.values() if "forward" in n.meta)
    assert "sparsity" not in t.nodes["fc1"].meta  # input graph untouched
    masks, marked = prune(g, params, 0.75)
    d = marked.nodes["fc0"].meta["sparsity"]
    assert d["kind"] == "unstructured" and d["density"] == pytest.approx(0.25, abs=1 / 192)


def test_masks_hold_during_fine_tuning():
    g = mlp()
    tr = Trainer(g, optimizer="adam", lr=1e-2)
    masks, _ = prune(g, tr.params, "2:4")
    tr.set_masks(masks)
    x = rng.standard_normal((8, 12)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    for _ in range(3):
        tr.step(x, y)
    for p, m in masks.items():
        assert np.all(tr.params[p][m == 0] == 0)
        assert np.count_nonzero(tr.params[p]) == np.count_nonzero(m)


def test_2_4_speeds_up_a_gemm_on_h100():
    import sim

    g = Graph("gemm")
    g.add_input("x", TensorSpec((4096, 4096), "fp16"))
    g.add_param("w", TensorSpec((4096, 4096), "fp16"))
    g.add_node("MatMul", ["x", "w"], ["y"], name="mm")
    g.set_outputs(["y"])
    params = {"w": rng.standard_normal((4096, 4096)).astype(np.float16)}
    _, sparse = prune(g, params, "2:4")
    dense_t = sim.simulate(g, "h100", host_inputs=False).makespan_s
    sparse_t = sim.simulate(sparse, "h100", host_inputs=False).makespan_s
    # 2:4 sparse tensor cores double the math rate: a compute-bound GEMM gets up to 2x faster
    assert 1.3 < dense_t / sparse_t <= 2.0


def test_2_4_layout_follows_each_consumer():
    import sim
    from sim.passes.sparsity import _k_layout

    lenet = sim.load("workloads/lenet5.yaml", batch=2)
    assert _k_layout(lenet, "c3.weight") == "flat"  # Conv weight [16, 6, 5, 5]: K = 6*5*5
    assert _k_layout(lenet, "f5.weight") == "rows"  # MatMul x @ W[K, N]
    g = Graph("gemm")
    g.add_input("x", TensorSpec((2, 8)))
    g.add_param("w", TensorSpec((3, 8)))
    g.add_node("Gemm", ["x", "w"], ["y"], {"transB": 1}, name="fc")
    g.set_outputs(["y"])
    assert _k_layout(g, "w") == "cols"  # Gemm B [N, K] with transB: K is the last axis
    params = {"c3.weight": rng.standard_normal((16, 6, 5, 5))}
    masks = magnitude_masks(params, ["c3.weight"], parse_prune("2:4"), lenet)
    flat = masks["c3.weight"].reshape(16, 150)
    assert (flat[:, :148].reshape(16, 37, 4).sum(-1) == 2).all() and (flat[:, 148:] == 1).all()
