"""``autocast``: per-op precision by PyTorch's CUDA autocast op lists, casts counted by hand,
values close to fp32, fp32 master weights through a training step."""

import numpy as np
import pytest

import sim
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.passes.autocast import autocast


def _net():
    g = Graph("net")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_input("x2", TensorSpec((4, 8)))
    for name, shape in [("w1", (8, 16)), ("b1", (16,)), ("g", (16,)), ("beta", (16,)), ("w2", (16, 5)),
                        ("b2", (5,))]:
        g.add_param(name, TensorSpec(shape), "normal", std=0.3)
    g.add_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1")
    g.add_node("Relu", ["h"], ["r"], name="relu")
    g.add_node("MatMul", ["x2", "w1"], ["h2"], name="tied")  # the same weight used again
    g.add_node("Add", ["r", "h2"], ["s"], name="add")
    g.add_node("LayerNormalization", ["s", "g", "beta"], ["n"], {"axis": -1}, name="ln")
    g.add_node("Gemm", ["n", "w2", "b2"], ["logits"], name="fc2")
    g.add_node("Softmax", ["logits"], ["p"], {"axis": -1}, name="softmax")
    g.set_outputs(["p"])
    return g


def test_casts_and_dtypes_follow_the_autocast_lists():
    a = autocast(_net(), "bf16")
    casts = sorted(n.inputs[0] for n in a.nodes.values() if n.op == "Cast")
    # by hand: fc1 (LOWER) casts x, w1, b1; tied casts x2 and reuses w1's cached cast; relu and
    # add stay bf16; ln (FP32) casts its input up; fc2 casts ln's output, w2, b2; softmax
    # (FP32) casts the logits up: 9 casts, one per weight
    assert casts == sorted(["x", "w1", "b1", "x2", "s", "n", "w2", "b2", "logits"])
    dt = {t: a.tensors[t].dtype for t in ("h", "r", "h2", "s", "n", "logits", "p")}
    assert dt == {"h": "bf16", "r": "bf16", "h2": "bf16", "s": "bf16", "n": "fp32", "logits": "bf16",
                  "p": "fp32"}
    assert all(a.params[p].dtype == "fp32" for p in a.params)  # master weights
    assert a.meta["promote_casts"] == 0


def test_values_close_to_fp32_and_the_step_updates_fp32_weights():
    g = _net()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 8)).astype(np.float32),
             "x2": rng.standard_normal((4, 8)).astype(np.float32)}
    want = execute(g, feeds)["p"]
    got = execute(autocast(g, "bf16"), feeds)["p"]
    np.testing.assert_allclose(got, want, atol=2e-2)
    assert not np.array_equal(got, want)  # bf16 rounding is really there
    t = sim.training_graph(autocast(g, "bf16"), optimizer="sgd", momentum=0.9, lr=0.1)
    assert t.tensors["w1.new"].dtype == "fp32" and t.tensors["w1.velocity.new"].dtype == "fp32"
    assert t.tensors[t.meta["loss"]].dtype == "fp32"


def test_mixed_inputs_promote_and_bad_dtype():
    g = Graph("mix")
    g.add_input("x", TensorSpec((2, 4)))
    g.add_param("w", TensorSpec((4, 4)), "normal")
    g.add_node("MatMul", ["x", "w"], ["h"], name="mm")
    g.add_node("Add", ["h", "x"], ["y"], name="res")  # bf16 + fp32: PyTorch promotes to fp32
    g.set_outputs(["y"])
    a = autocast(g, "fp16")
    assert a.tensors["y"].dtype == "fp32" and a.meta["promote_casts"] == 1
    with pytest.raises(sim.GraphError, match="autocast dtype"):
        autocast(g, "fp8")
