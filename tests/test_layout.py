"""``strided_transposes``: Transposes that GEMMs read through their layout flags are marked
``strided=1`` (no work, a view for the engine); values unchanged; peak memory by hand count."""

import numpy as np

import sim
from sim.exec import Executor, execute
from sim.graph import Graph, TensorSpec
from sim.passes.layout import strided_transposes
from sim.passes.training import training_graph


def _copies(graph):
    """The same graph with every transpose a copy again (as before the pass)."""
    g = graph.copy()
    for n in g.nodes.values():
        n.attrs.pop("strided", None)
    return g


def _marked(graph):
    return sorted(n.name for n in graph.nodes.values() if n.op == "Transpose" and n.attrs.get("strided"))


def test_only_last_two_axes_swaps_read_by_gemm_operands_are_marked():
    g = Graph("t")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_input("q", TensorSpec((2, 3, 4, 8)))
    for name, shape in [("w", (6, 8)), ("v", (8, 6)), ("c", (6, 4)), ("p", (8, 5)), ("e", (6, 3))]:
        g.add_param(name, TensorSpec(shape), "normal")
    g.add_node("Transpose", ["w"], ["wt"], name="wt")                    # default perm, rank 2
    g.add_node("MatMul", ["x", "wt"], ["y"], name="mm")
    g.add_node("Transpose", ["x"], ["xt"], {"perm": [1, 0]}, name="xt")  # Gemm operand A
    g.add_node("Transpose", ["c"], ["ct"], {"perm": [1, 0]}, name="ct")  # Gemm's C: an add
    g.add_node("Gemm", ["xt", "v", "ct"], ["z"], {"transA": 1}, name="gemm")
    g.add_node("Transpose", ["q"], ["kt"], {"perm": [0, 1, 3, 2]}, name="kt")  # batched K^T
    g.add_node("MatMul", ["q", "kt"], ["s"], name="scores")
    g.add_node("Transpose", ["q"], ["qh"], {"perm": [0, 2, 1, 3]}, name="qh")  # no GEMM flag
    g.add_node("MatMul", ["qh", "p"], ["s2"], name="heads")
    g.add_node("Transpose", ["y"], ["yt"], {"perm": [1, 0]}, name="yt")  # also read by a Relu
    g.add_node("MatMul", ["yt", "x"], ["u"], name="mm2")
    g.add_node("Relu", ["yt"], ["r"], name="relu")
    g.add_node("Transpose", ["u"], ["ut"], {"perm": [1, 0]}, name="ut")  # read, and an output
    g.add_node("MatMul", ["ut", "e"], ["o"], name="mm3")
    g.set_outputs(["z", "s", "s2", "r", "ut", "o"])
    h = strided_transposes(g)
    assert _marked(h) == ["kt", "wt", "xt"]
    assert h.meta["strided_transposes"] == 3
    for name in ("kt", "wt", "xt"):
        assert h.work(h.nodes[name]).bytes == 0 and g.work(g.nodes[name]).bytes > 0
    for name in ("ct", "qh", "yt", "ut"):
        assert h.work(h.nodes[name]) == g.work(g.nodes[name])


def _torch_style_mlp():
    """x @ w1^T (F.linear's Transpose of the weight in the forward), ReLU, @ w2."""
    g = Graph("tmlp")
    g.add_input("x", TensorSpec((8, 12)))
    g.add_param("w1", TensorSpec((16, 12)), "normal", std=0.3)
    g.add_param("w2", TensorSpec((16, 5)), "normal", std=0.3)
    g.add_node("Transpose", ["w1"], ["w1t"], {"perm": [1, 0]}, name="w1t")
    g.add_node("MatMul", ["x", "w1t"], ["h"], name="fc1")
    g.add_node("Relu", ["h"], ["r"], name="relu")
    g.add_node("MatMul", ["r", "w2"], ["y"], name="fc2")
    g.set_outputs(["y"])
    return g


def test_training_steps_compute_the_same_values():
    t = training_graph(_torch_style_mlp(), optimizer="adam", lr=1e-2)
    # forward: w1^T; backward GEMMs: dr = dy @ w2^T, dw2 = r^T @ dy, d(w1^T) = x^T @ dh (x
    # needs no gradient, so w1^T is never transposed back for a GEMM: d(w1^T) is, for the update)
    marked = _marked(t)
    assert len(marked) == 4 and "w1t" in marked
    assert sorted(t.nodes[m].inputs[0] for m in marked) == ["r", "w1", "w2", "x"]
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((8, 12)).astype(np.float32), "labels": rng.integers(0, 5, 8)}
    for graph in (t, _copies(t)):
        assert sim.simulate(graph, "h100").makespan_s > 0
    a = Executor(t, seed=3).run(feeds).values
    b = Executor(_copies(t), seed=3).run(feeds).values
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_peak_drops_by_the_weight_transpose_by_hand():
    # x[N, K] @ w1[K, H] -> h @ w2[H, C] -> logits, cross-entropy, SGD; sizes make the logits
    # (N x C) the largest tensors, so the peak is the loss gradient, with y and dy alive
    n, k, hid, c = 64, 32, 16, 512
    g = Graph("lin2")
    g.add_input("x", TensorSpec((n, k)))
    g.add_param("w1", TensorSpec((k, hid)), "normal", std=0.1)
    g.add_param("w2", TensorSpec((hid, c)), "normal", std=0.1)
    g.add_node("MatMul", ["x", "w1"], ["h"], name="mm1")
    g.add_node("MatMul", ["h", "w2"], ["y"], name="mm2")
    g.set_outputs(["y"])
    t = training_graph(g, "cross_entropy", "sgd", lr=0.1)
    # backward GEMMs: dh = dy @ w2^T, dw2 = h^T @ dy, dw1 = x^T @ dh (x needs no gradient)
    assert len(_marked(t)) == 3
    folded = sim.simulate(t, "h100", host_inputs=False)
    copies = sim.simulate(_copies(t), "h100", host_inputs=False)
    f32 = 4
    params = (k * hid + hid * c) * f32
    small = n * 8 + 4 + 4 + 8 + 8  # int64 labels, the loss, the backward's seed 1.0, step counter, 1
    # folded: x and h stay alive until their weight-gradient GEMMs read them through views
    at_loss_grad = params + (n * k + n * hid) * f32 + 2 * n * c * f32 + small
    assert folded.peak_memory_bytes == at_loss_grad
    # copies: w2^T (made at the start: it needs only a parameter), x^T and h^T are alive at the
    # loss gradient instead of x and h (dead once copied): more by exactly w2^T's bytes
    assert copies.peak_memory_bytes == at_loss_grad + hid * c * f32
    # the folded transposes launch nothing and take no time
    ops = {r["name"]: r for r in folded.records()}
    assert all(ops[m]["end_s"] == ops[m]["start_s"] for m in _marked(t))
    assert folded.makespan_s < copies.makespan_s


def test_batched_view_by_hand_strides():
    """Strides worked by hand for a contiguous [b, s, h, d] = [b, 5, 3, 4] (strides 60, 12, 4, 1):
    the head split perm (0, 2, 1, 3) gives sizes [b, 3, 5, 4], strides [60, 4, 12, 1]; batch
    axes b and h collapse only if 60 == 3 * 4, so only when b = 1 (then one batch stride, 4).
    K^T, perm (0, 2, 3, 1): [b, 3, 4, 5] strides [60, 4, 1, 12], the same. A permutation that
    moves the unit-stride axis into the batch (0, 3, 1, 2) leaves no unit-stride matrix axis."""
    from sim.graph import Node
    from sim.passes.layout import batched_view

    def t(perm):
        return Node("t", "Transpose", ["x"], ["y"], {"perm": list(perm)})

    assert batched_view(t((0, 2, 1, 3)), (1, 5, 3, 4))
    assert not batched_view(t((0, 2, 1, 3)), (2, 5, 3, 4))
    assert batched_view(t((0, 2, 3, 1)), (1, 5, 3, 4))
    assert not batched_view(t((0, 2, 3, 1)), (2, 5, 3, 4))
    assert not batched_view(t((0, 3, 1, 2)), (1, 5, 3, 4))
    assert batched_view(t((0, 2, 1, 3)), (2, 1, 3, 4))  # s = 1: the view is contiguous


def test_batched_marks_only_in_batched_mode():
    g = Graph("heads")
    g.add_input("x", TensorSpec((1, 5, 3, 4)))
    g.add_input("k", TensorSpec((1, 3, 4, 6)))
    g.add_node("Transpose", ["x"], ["q"], {"perm": [0, 2, 1, 3]}, name="split")
    g.add_node("MatMul", ["q", "k"], ["s"], name="qk")
    g.set_outputs(["s"])
    assert _marked(strided_transposes(g)) == []
    out = strided_transposes(g, batched=True)
    assert _marked(out) == ["split"]
    x = np.random.default_rng(0).standard_normal((1, 5, 3, 4)).astype(np.float32)
    k = np.random.default_rng(1).standard_normal((1, 3, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(execute(out, {"x": x, "k": k})["s"], x.transpose(0, 2, 1, 3) @ k, rtol=1e-6)


def test_attention_reads_head_splits_in_place_at_any_batch():
    """Batched mode: head splits (last axis kept) feeding only Q, K, V of a fused Attention
    are views at batch 2; a transpose that moves the last axis is not; values unchanged."""
    def build(k_shape, k_perm):
        g = Graph("sdpa")
        g.add_input("q", TensorSpec((2, 5, 3, 4)))
        g.add_input("k", TensorSpec(k_shape))
        g.add_input("v", TensorSpec((2, 5, 3, 4)))
        g.add_input("w", TensorSpec((2, 3, 6, 4)))
        g.add_node("Transpose", ["q"], ["qh"], {"perm": [0, 2, 1, 3]}, name="q_split")
        g.add_node("Transpose", ["k"], ["kh"], {"perm": k_perm}, name="k_split")
        g.add_node("Transpose", ["v"], ["vh"], {"perm": [0, 2, 1, 3]}, name="v_split")
        g.add_node("Attention", ["qh", "kh", "vh"], ["y"], name="attn")
        g.add_node("Transpose", ["w"], ["wt"], {"perm": [0, 1, 3, 2]}, name="w_t")  # a GEMM flag
        g.add_node("MatMul", ["y", "wt"], ["z"], name="mm")
        g.set_outputs(["z"])
        return g

    g = build((2, 5, 3, 4), [0, 2, 1, 3])
    assert _marked(strided_transposes(g)) == ["w_t"]
    assert _marked(strided_transposes(g, batched=True)) == ["k_split", "q_split", "v_split", "w_t"]
    moved = build((2, 5, 4, 3), [0, 3, 1, 2])  # K's rows come from a strided axis: a copy
    assert _marked(strided_transposes(moved, batched=True)) == ["q_split", "v_split", "w_t"]
    rng = np.random.default_rng(2)
    feeds = {t: rng.standard_normal(g.tensors[t].shape).astype(np.float32) for t in ("q", "k", "v", "w")}
    marked = strided_transposes(g, batched=True)
    np.testing.assert_allclose(execute(marked, feeds)["z"], execute(g, feeds)["z"])
