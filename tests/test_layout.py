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


# ----------------------------------------------------------------------------- nhwc_convolutions
def _to_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def test_channels_last_conv_ops_compute_the_channels_first_values():
    """Each conv op with ``channels_last=1`` takes and gives its rank >= 3 tensors channels last
    (weights KRSC): its result is the channels-first op's, moved; its work is the same."""
    from helpers import run_op

    from sim.ops.conv import _conv_work, _gdata_work, _gfilter_work

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    geo = {"kernel_shape": [3, 3], "strides": [2, 1], "dilations": [1, 1], "pads": [1, 0, 1, 0], "group": 2}
    (y,) = run_op("Conv", [x, w, b], geo)
    (y_cl,) = run_op("Conv", [_to_last(x), _to_last(w), b], {**geo, "channels_last": 1})
    np.testing.assert_array_equal(y_cl, _to_last(y))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    (dx,) = run_op("ConvGradData", [dy, w], {**geo, "input_shape": list(x.shape)})
    (dx_cl,) = run_op("ConvGradData", [_to_last(dy), _to_last(w)],
                      {**geo, "input_shape": list(x.shape), "channels_last": 1})
    np.testing.assert_array_equal(dx_cl, _to_last(dx))
    (dw,) = run_op("ConvGradFilter", [x, dy], {**geo, "filter_shape": list(w.shape)})
    (dw_cl,) = run_op("ConvGradFilter", [_to_last(x), _to_last(dy)],
                      {**geo, "filter_shape": list(w.shape), "channels_last": 1})
    np.testing.assert_array_equal(dw_cl, _to_last(dw))
    # the op as the registry costs it: same FLOPs and bytes in either layout
    from sim.ops.registry import get_op
    for op, fn, ins, outs, extra in [
        ("Conv", _conv_work, [x, w, b], [y], {}),
        ("ConvGradData", _gdata_work, [dy, w], [dx], {"input_shape": list(x.shape)}),
        ("ConvGradFilter", _gfilter_work, [x, dy], [dw], {"filter_shape": list(w.shape)}),
    ]:
        spec = [TensorSpec(a.shape) for a in ins]
        cl = [TensorSpec(_to_last(a).shape) if a.ndim >= 3 else TensorSpec(a.shape) for a in ins]
        first = fn(spec, [TensorSpec(o.shape) for o in outs], {**geo, **extra})
        last = get_op(op).work(cl, [TensorSpec(_to_last(o).shape) for o in outs],
                            {**geo, **extra, "channels_last": 1})
        assert (last.flops, last.bytes, last.gemms) == (first.flops, first.bytes, first.gemms)


def test_channels_last_conv_has_no_gradient_rule():
    import pytest

    from sim.errors import GraphError
    from sim.passes.autodiff import gradients

    g = Graph("c")
    g.add_input("x", TensorSpec((1, 5, 5, 2)))
    g.add_param("w", TensorSpec((3, 3, 3, 2)), "normal")
    g.add_node("Conv", ["x", "w"], ["y"], {"channels_last": 1}, name="conv")
    g.add_node("ReduceSum", ["y"], ["s"], {"keepdims": 0}, name="sum")
    g.set_outputs(["s"])
    with pytest.raises(GraphError, match="channels_last"):
        gradients(g, "s", ["w"])


def test_nhwc_convolutions_on_a_training_step_by_hand():
    """LeNet-5's fp16 training step: 2 Conv, 1 ConvGradData (the first conv's input needs no
    gradient) and 2 ConvGradFilter, each between a transpose per rank-4 operand (2) and one
    of its result: 5 x 3 = 15 transposes, each moving its tensor once each way; every value
    of the step (loss, updated weights) is bit-identical. In fp32 (CUDA cores) nothing moves."""
    from sim.passes.layout import nhwc_convolutions
    from sim.passes.precision import cast_graph
    from sim.passes.runtime import kernel_count

    t = cast_graph(training_graph(sim.load("lenet5", batch=2), "cross_entropy", "sgd", lr=0.1), "fp16")
    h = nhwc_convolutions(t)
    convs = [n for n in t.nodes.values() if n.op in ("Conv", "ConvGradData", "ConvGradFilter")]
    assert sorted(n.op for n in convs) == ["Conv", "Conv", "ConvGradData", "ConvGradFilter", "ConvGradFilter"]
    added = [n for n in h.nodes.values() if n.name not in t.nodes]
    assert len(added) == 15 and {n.op for n in added} == {"Transpose"} and h.meta["nhwc_convolutions"] == 5
    assert kernel_count(h) == kernel_count(t) + 15
    assert all(n.attrs["launches"] == 0 for n in added)  # the library launches them, not the host
    moved = sum(2 * 2 * int(np.prod(t.spec(x).shape)) for n in convs for x in (*n.inputs, *n.outputs)
                if x and t.spec(x).rank >= 3)  # read + write, 2 bytes each
    assert sum(h.work(n).bytes for n in added) == moved
    assert all(h.nodes[n.name].attrs["channels_last"] == 1 for n in convs)
    rng = np.random.default_rng(1)
    feeds = {name: (rng.integers(0, 10, s.shape) if s.dtype == "int64" else rng.standard_normal(s.shape))
             for name, s in t.inputs.items()}
    a = Executor(t, seed=3).run(feeds).values
    b = Executor(h, seed=3).run(feeds).values
    for out in t.outputs:
        np.testing.assert_array_equal(a[out], b[out])
    fp32 = training_graph(sim.load("lenet5", batch=2), "cross_entropy", "sgd", lr=0.1)
    assert nhwc_convolutions(fp32).meta["nhwc_convolutions"] == 0


def test_eager_resnet50_launches_cudnn8_layout_kernels_on_a100_only():
    """PyTorch eager ResNet-50 in fp16: 174 kernels (tests/test_runtime.py); on the A100 spec
    (cuDNN 8) each of its 53 convolutions adds 3 transposes (input, filter, result): 333. The
    H100 spec (cuDNN 9, measured reading NCHW in place) keeps 174; so does torch.compile."""
    from sim.passes.runtime import kernel_count, runtime_graph

    g = sim.load("resnet50", batch=2)
    a100, h100 = sim.hardware("a100"), sim.hardware("h100")
    assert kernel_count(runtime_graph(g, "eager", "fp16", a100)) == 174 + 3 * 53
    assert kernel_count(runtime_graph(g, "eager", "fp16", h100)) == 174
    assert kernel_count(runtime_graph(g, "eager", "fp16")) == 174
    assert kernel_count(runtime_graph(g, "compiled", "fp16", a100)) == 56
    # the transposes add device time only: the host issues the same 174 framework ops
    r = sim.simulate(g, a100, dtype="fp16", runtime="eager", host_inputs=False)
    transposes = [x for x in r.records() if x["op"] == "Transpose"]
    assert len(transposes) == 159 and all(x["host_wait_s"] == 0 for x in transposes)
