"""Attention, RotaryEmbedding and their backward ops: values against onnx.reference (opset 23)
and a hand NumPy formula, work against hand counts, gradients by finite differences."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError
from sim.ops.attention import causal_blocks
from sim.ops.work import GemmShape

RNG = np.random.default_rng(7)


def rnd(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def hand_attention(q, k, v, mask=None, scale=None, causal=False):
    """softmax(Q K^T * scale + mask) V on 4-D inputs with GQA by head repetition."""
    reps = q.shape[1] // k.shape[1]
    k = np.repeat(k, reps, axis=1)
    v = np.repeat(v, reps, axis=1)
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
    if mask is not None:
        s = s + (np.where(mask, 0, -np.inf) if mask.dtype == bool else mask)
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v)


def test_attention_4d_matches_hand_formula():
    q, k, v = rnd(2, 3, 5, 4), rnd(2, 3, 6, 4), rnd(2, 3, 6, 3)
    (y,) = run_op("Attention", [q, k, v])
    assert y.shape == (2, 3, 5, 3)
    np.testing.assert_allclose(y, hand_attention(q, k, v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["plain", "gqa3d", "bool_mask", "float_mask_short", "causal",
                                  "causal_mask", "scale_softcap"])
def test_attention_matches_onnx_reference(case):
    attrs: dict = {}
    mask = None
    q, k, v = rnd(2, 4, 5, 8), rnd(2, 4, 5, 8), rnd(2, 4, 5, 8)
    if case == "gqa3d":
        q, k, v = rnd(2, 5, 4 * 6), rnd(2, 7, 2 * 6), rnd(2, 7, 2 * 5)
        attrs = {"q_num_heads": 4, "kv_num_heads": 2}
    elif case == "bool_mask":
        mask = RNG.random((5, 5)) > 0.3
        mask[:, 0] = True
    elif case == "float_mask_short":
        mask = rnd(2, 1, 5, 3)  # last dim 3 < 5 keys: the rest is masked out
    elif case == "causal":
        attrs = {"is_causal": 1}
    elif case == "causal_mask":
        attrs = {"is_causal": 1}
        mask = rnd(4, 5, 5)
    elif case == "scale_softcap":
        attrs = {"scale": 0.3, "softcap": 2.0}
    (y,) = run_op("Attention", [q, k, v, mask], attrs)
    (ref,) = onnx_ref("Attention", [q, k, v, mask], attrs, opset=23)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_attention_kv_cache_matches_onnx_reference():
    q, k, v = rnd(1, 4, 2, 8), rnd(1, 2, 2, 8), rnd(1, 2, 2, 8)
    pk, pv = rnd(1, 2, 3, 8), rnd(1, 2, 3, 8)
    attrs = {"is_causal": 1}
    outs = run_op("Attention", [q, k, v, None, pk, pv], attrs)
    refs = onnx_ref("Attention", [q, k, v, None, pk, pv], attrs, n_out=3, opset=23)
    assert len(outs) == 3 and outs[1].shape == (1, 2, 5, 8)
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_is_zero():
    q, k, v = rnd(1, 1, 2, 4), rnd(1, 1, 3, 4), rnd(1, 1, 3, 4)
    mask = np.array([[True, False, True], [False, False, False]])
    (y,) = run_op("Attention", [q, k, v, mask])
    assert np.all(y[0, 0, 1] == 0) and np.all(np.isfinite(y))


def test_attention_shape_errors():
    with pytest.raises(GraphError, match="multiple of kv heads"):
        one_op_graph("Attention", [rnd(1, 3, 2, 4), rnd(1, 2, 2, 4), rnd(1, 2, 2, 4)])
    with pytest.raises(GraphError, match="q_num_heads"):
        one_op_graph("Attention", [rnd(1, 2, 8), rnd(1, 2, 8), rnd(1, 2, 8)])
    with pytest.raises(GraphError, match="head size"):
        one_op_graph("Attention", [rnd(1, 2, 2, 4), rnd(1, 2, 2, 5), rnd(1, 2, 2, 4)])


def test_causal_blocks_cover_attended_pairs():
    for sq, t, off in [(4, 4, 0), (7, 7, 0), (3, 8, 5), (6, 4, 0), (5, 9, 0), (1, 10, 9)]:
        pairs = sum(min(max(i + off + 1, 0), t) for i in range(sq))
        assert sum(m * n for m, n in causal_blocks(sq, t, off)) == pairs
    assert causal_blocks(4, 4, 0) == [(1, 4), (1, 4), (1, 2)]
    assert causal_blocks(1, 10, 9) == [(1, 10)]  # decoding one token sees the whole cache


def test_attention_work_hand_counts():
    # B=2, H=3, Sq=T=4, D=Dv=8, fp32, no mask: 16 pairs per head, 6 heads
    g = one_op_graph("Attention", [rnd(2, 3, 4, 8)] * 3)
    w = g.work("node")
    assert w.matmul_flops == 2 * 6 * 16 * (8 + 8)  # 3072
    assert w.gemms == (GemmShape(4, 4, 8, 6), GemmShape(4, 8, 4, 6))
    # per pair 5 (scale, max, sub, exp, sum); per row 1 + Dv
    assert w.flops == 3072 + 6 * 16 * 5 + 6 * 4 * 9
    assert w.transcendentals == 6 * 16 + 6 * 4
    assert w.bytes_read == 3 * 192 * 4 and w.bytes_written == 192 * 4  # no S x S matrix
    # causal: 10 of 16 pairs
    gc = one_op_graph("Attention", [rnd(2, 3, 4, 8)] * 3, {"is_causal": 1})
    wc = gc.work("node")
    assert wc.matmul_flops == 2 * 6 * 10 * 16
    assert sum(gm.flops for gm in wc.gemms) == wc.matmul_flops
    assert wc.transcendentals == 6 * 10 + 6 * 4


def test_attention_work_gqa_bool_mask_bytes():
    q, k, v = rnd(1, 4, 3, 2), rnd(1, 2, 5, 2), rnd(1, 2, 5, 2)
    mask = np.ones((3, 5), bool)
    w = one_op_graph("Attention", [q, k, v, mask]).work("node")
    assert w.matmul_flops == 2 * 4 * 15 * 4
    assert w.bytes_read == (24 + 20 + 20) * 4 + 15
    assert w.bytes_written == 24 * 4
    assert w.flops == w.matmul_flops + 4 * 15 * 6 + 4 * 3 * 3


def test_attention_grad_work_is_2_5x_forward_gemms():
    arrays = [rnd(2, 2, 6, 8)] * 3
    g = one_op_graph("Attention", arrays, {"is_causal": 1})
    fwd = g.work("node").matmul_flops
    dy = rnd(2, 2, 6, 8)
    gb = one_op_graph("AttentionGrad", [*arrays, None, None, None, dy, dy], {"is_causal": 1})
    w = gb.work("node")
    assert w.matmul_flops == 2.5 * fwd
    assert sum(gm.flops for gm in w.gemms) == w.matmul_flops


def f64(*shape):
    return RNG.standard_normal(shape)


def test_attention_grad_4d_gqa_float_mask():
    check_grad("Attention", [f64(1, 4, 3, 4), f64(1, 2, 5, 4), f64(1, 2, 5, 3), f64(1, 1, 3, 5)])


def test_attention_grad_short_float_mask_rank2():
    # the mask covers 4 of 5 keys (the last one is masked out) and broadcasts over batch and heads
    check_grad("Attention", [f64(2, 2, 3, 4), f64(2, 2, 5, 4), f64(2, 2, 5, 4), f64(3, 4)])


def test_attention_fp16_runs_in_fp32_and_rounds():
    q, k, v = rnd(1, 2, 4, 8), rnd(1, 2, 4, 8), rnd(1, 2, 4, 8)
    (y16,) = run_op("Attention", [q.astype(np.float16), k.astype(np.float16), v.astype(np.float16)])
    assert y16.dtype == np.float16
    ref = hand_attention(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16))
    np.testing.assert_allclose(y16.astype(np.float64), ref, rtol=2e-3, atol=2e-3)


def test_attention_grad_causal_bool_mask():
    mask = RNG.random((4, 4)) > 0.5
    mask[:, 0] = True
    check_grad("Attention", [f64(2, 2, 4, 3), f64(2, 2, 4, 3), f64(2, 2, 4, 3), mask], {"is_causal": 1})


def test_attention_grad_3d_softcap_scale():
    check_grad("Attention", [f64(1, 3, 4), f64(1, 4, 2), f64(1, 4, 6)],
               {"q_num_heads": 2, "kv_num_heads": 1, "softcap": 1.5, "scale": 0.7})


def test_attention_grad_with_kv_cache_and_present_outputs():
    check_grad("Attention", [f64(1, 2, 2, 3), f64(1, 2, 2, 3), f64(1, 2, 2, 3), None,
                             f64(1, 2, 3, 3), f64(1, 2, 3, 3)], {"is_causal": 1}, n_out=None)


# ---------------------------------------------------------------------------- rotary


def rope_caches(max_pos, half, dtype=np.float32):
    inv = 1.0 / (10000 ** (np.arange(half) / half))
    ang = np.arange(max_pos)[:, None] * inv[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rd", [0, 4])
def test_rotary_4d_position_ids_matches_onnx(interleaved, rd):
    x = rnd(2, 3, 5, 8)
    cos, sin = rope_caches(10, (rd or 8) // 2)
    pos = RNG.integers(0, 10, (2, 5)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rd}
    (y,) = run_op("RotaryEmbedding", [x, cos, sin, pos], attrs)
    (ref,) = onnx_ref("RotaryEmbedding", [x, cos, sin, pos], attrs, opset=23)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_rotary_3d_without_position_ids_matches_onnx():
    x = rnd(2, 5, 12)
    cos, sin = rope_caches(5, 3)
    cos = np.broadcast_to(cos, (2, 5, 3)).copy()
    sin = np.broadcast_to(sin, (2, 5, 3)).copy()
    attrs = {"num_heads": 2, "interleaved": 1}
    (y,) = run_op("RotaryEmbedding", [x, cos, sin], attrs)
    (ref,) = onnx_ref("RotaryEmbedding", [x, cos, sin], attrs, opset=23)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_rotary_work_hand_count():
    x = rnd(1, 2, 3, 8)
    cos, sin = rope_caches(16, 2)
    pos = np.zeros((1, 3), np.int64)
    w = one_op_graph("RotaryEmbedding", [x, cos, sin, pos], {"rotary_embedding_dim": 4}).work("node")
    assert w.flops == 3 * (1 * 2 * 3 * 4)  # 12 rotated pairs x 6 FLOP
    assert w.bytes_read == 48 * 4 + 2 * (3 * 2) * 4 + 3 * 8  # X, used cache rows, ids
    assert w.bytes_written == 48 * 4


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_grad_with_caches(interleaved):
    cos, sin = rope_caches(6, 2, np.float64)
    pos = np.array([[0, 3, 3], [5, 1, 0]], np.int64)
    check_grad("RotaryEmbedding", [f64(2, 2, 3, 6), cos, sin, pos],
               {"interleaved": interleaved, "rotary_embedding_dim": 4})


def test_rotary_grad_3d():
    check_grad("RotaryEmbedding", [f64(2, 3, 8), f64(2, 3, 2), f64(2, 3, 2)], {"num_heads": 2})


def backward_values(op, arrays, attrs, dys):
    """Run op and its gradient rule on float64 arrays; returns (outputs, input gradients)."""
    from sim.exec import execute
    from sim.graph import TensorSpec
    from sim.passes.autodiff import gradients

    g = one_op_graph(op, arrays, attrs, n_out=len(dys))
    for y, dy in zip(g.outputs, dys):
        g.add_input(f"d_{y}", TensorSpec(dy.shape, "fp64"))
    wrt = [f"x{i}" for i, a in enumerate(arrays) if a is not None and a.dtype == np.float64]
    gg, gmap = gradients(g, list(g.outputs), wrt, [f"d_{y}" for y in g.outputs])
    gg.set_outputs(list(g.outputs) + [gmap[w] for w in wrt])
    feeds = {f"x{i}": a for i, a in enumerate(arrays) if a is not None}
    feeds.update({f"d_{y}": dy for y, dy in zip(g.outputs, dys)})
    out = execute(gg, feeds)
    return [out[y] for y in g.outputs], [out[gmap[w]] for w in wrt]


def test_attention_values_and_grads_match_torch_sdpa():
    torch = pytest.importorskip("torch")
    q, k, v = f64(2, 4, 5, 8), f64(2, 2, 5, 8), f64(2, 2, 5, 8)
    dy = f64(2, 4, 5, 8)
    (y,), (dq, dk, dv) = backward_values("Attention", [q, k, v], {"is_causal": 1}, [dy])
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    ty = torch.nn.functional.scaled_dot_product_attention(
        tq, tk.repeat_interleave(2, dim=1), tv.repeat_interleave(2, dim=1), is_causal=True)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, t in [(dq, tq), (dk, tk), (dv, tv)]:
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-9, atol=1e-12)
