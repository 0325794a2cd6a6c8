"""Attention, RotaryEmbedding and their backward ops: values against onnx.reference (opset 23)
and a hand NumPy formula, work against hand counts, gradients by finite differences."""

import ml_dtypes
import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.dtypes import from_numpy
from sim.errors import GraphError
from sim.exec import Executor
from sim.graph import Graph, TensorSpec
from sim.ops.attention import causal_blocks, window_counts
from sim.ops.work import GemmShape

RNG = np.random.default_rng(7)


def rnd(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def attn_graph(arrays, attrs=None, named=(0,)):
    """One Attention node naming only the outputs in ``named`` (0 Y, 1 present_key,
    2 present_value, 3 qk_matmul_output), as an ONNX node with '' outputs does."""
    g = Graph("attn")
    names = []
    for i, a in enumerate(arrays):
        if a is None:
            names.append("")
            continue
        a = np.asarray(a)
        names.append(g.add_input(f"x{i}", TensorSpec(a.shape, from_numpy(a.dtype))))
    outs = [f"o{i}" if i in named else "" for i in range(4)]
    g.add_node("Attention", names, outs, attrs or {}, name="node")
    g.set_outputs([o for o in outs if o])
    return g.verify()


def run_attn(arrays, attrs=None, named=(0,)):
    g = attn_graph(arrays, attrs, named)
    feeds = {f"x{i}": np.asarray(a) for i, a in enumerate(arrays) if a is not None}
    vals = Executor(g).run(feeds).values
    return [vals[o] for o in g.outputs]


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
    (y,) = run_attn([q, k, v])
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
    (y,) = run_attn([q, k, v, mask], attrs)
    (ref,) = onnx_ref("Attention", [q, k, v, mask], attrs, opset=23)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_attention_kv_cache_matches_onnx_reference():
    q, k, v = rnd(1, 4, 2, 8), rnd(1, 2, 2, 8), rnd(1, 2, 2, 8)
    pk, pv = rnd(1, 2, 3, 8), rnd(1, 2, 3, 8)
    attrs = {"is_causal": 1}
    outs = run_attn([q, k, v, None, pk, pv], attrs, named=(0, 1, 2))
    refs = onnx_ref("Attention", [q, k, v, None, pk, pv], attrs, n_out=3, opset=23)
    assert len(outs) == 3 and outs[1].shape == (1, 2, 5, 8)
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_is_zero():
    q, k, v = rnd(1, 1, 2, 4), rnd(1, 1, 3, 4), rnd(1, 1, 3, 4)
    mask = np.array([[True, False, True], [False, False, False]])
    (y,) = run_attn([q, k, v, mask])
    assert np.all(y[0, 0, 1] == 0) and np.all(np.isfinite(y))


def test_attention_shape_errors():
    with pytest.raises(GraphError, match="multiple of kv heads"):
        attn_graph([rnd(1, 3, 2, 4), rnd(1, 2, 2, 4), rnd(1, 2, 2, 4)])
    with pytest.raises(GraphError, match="q_num_heads"):
        attn_graph([rnd(1, 2, 8), rnd(1, 2, 8), rnd(1, 2, 8)])
    with pytest.raises(GraphError, match="head size"):
        attn_graph([rnd(1, 2, 2, 4), rnd(1, 2, 2, 5), rnd(1, 2, 2, 4)])


def test_causal_blocks_cover_attended_pairs():
    for sq, t, off in [(4, 4, 0), (7, 7, 0), (3, 8, 5), (6, 4, 0), (5, 9, 0), (1, 10, 9)]:
        pairs = sum(min(max(i + off + 1, 0), t) for i in range(sq))
        assert sum(m * n for m, n in causal_blocks(sq, t, off)) == pairs
    assert causal_blocks(4, 4, 0) == [(1, 4), (1, 4), (1, 2)]
    assert causal_blocks(1, 10, 9) == [(1, 10)]  # decoding one token sees the whole cache


def test_attention_work_hand_counts():
    # B=2, H=3, Sq=T=4, D=Dv=8, fp32, no mask: 16 pairs per head, 6 heads
    g = attn_graph([rnd(2, 3, 4, 8)] * 3)
    w = g.work("node")
    assert w.matmul_flops == 2 * 6 * 16 * (8 + 8)  # 3072
    assert w.gemms == (GemmShape(4, 4, 8, 6, "attention"), GemmShape(4, 8, 4, 6, "attention"))
    # per pair 5 (scale, max, sub, exp, sum); per row 1 + Dv
    assert w.flops == 3072 + 6 * 16 * 5 + 6 * 4 * 9
    assert w.transcendentals == 6 * 16 + 6 * 4
    assert w.bytes_read == 3 * 192 * 4 and w.bytes_written == 192 * 4  # no S x S matrix
    # causal: 10 of 16 pairs
    gc = attn_graph([rnd(2, 3, 4, 8)] * 3, {"is_causal": 1})
    wc = gc.work("node")
    assert wc.matmul_flops == 2 * 6 * 10 * 16
    assert sum(gm.flops for gm in wc.gemms) == wc.matmul_flops
    assert wc.transcendentals == 6 * 10 + 6 * 4


def test_attention_work_gqa_bool_mask_bytes():
    q, k, v = rnd(1, 4, 3, 2), rnd(1, 2, 5, 2), rnd(1, 2, 5, 2)
    mask = np.ones((3, 5), bool)
    w = attn_graph([q, k, v, mask]).work("node")
    assert w.matmul_flops == 2 * 4 * 15 * 4
    assert w.bytes_read == (24 + 20 + 20) * 4 + 15
    assert w.bytes_written == 24 * 4
    assert w.flops == w.matmul_flops + 4 * 15 * 6 + 4 * 3 * 3


def test_attention_grad_work_is_2_5x_forward_gemms():
    arrays = [rnd(2, 2, 6, 8)] * 3
    g = attn_graph(arrays, {"is_causal": 1})
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


def test_attention_fp16_rounds_each_step_like_onnx():
    q, k, v = (rnd(1, 2, 4, 8).astype(np.float16) for _ in range(3))
    (y16,) = run_attn([q, k, v], {"is_causal": 1})
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16.astype(np.float64), hand_attention(q, k, v, causal=True),
                               rtol=2e-3, atol=2e-3)
    (ref,) = onnx_ref("Attention", [q, k, v], {"is_causal": 1}, opset=23)
    np.testing.assert_array_equal(y16, ref)


def test_attention_grad_causal_bool_mask():
    mask = RNG.random((4, 4)) > 0.5
    mask[:, 0] = True
    check_grad("Attention", [f64(2, 2, 4, 3), f64(2, 2, 4, 3), f64(2, 2, 4, 3), mask], {"is_causal": 1})


def test_attention_grad_3d_softcap_scale():
    check_grad("Attention", [f64(1, 3, 4), f64(1, 4, 2), f64(1, 4, 6)],
               {"q_num_heads": 2, "kv_num_heads": 1, "softcap": 1.5, "scale": 0.7})


def test_attention_grad_with_kv_cache_and_present_outputs():
    check_grad("Attention", [f64(1, 2, 2, 3), f64(1, 2, 2, 3), f64(1, 2, 2, 3), None,
                             f64(1, 2, 3, 3), f64(1, 2, 3, 3)], {"is_causal": 1}, n_out=3)


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


# ---------------------------------------------------------------------------- opsets 24/25


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_matmul_output_modes_match_onnx(mode):
    q, k, v = rnd(2, 4, 3, 8), rnd(2, 2, 5, 8), rnd(2, 2, 5, 8)
    pk, pv = rnd(2, 2, 2, 8), rnd(2, 2, 2, 8)
    mask = rnd(3, 7)
    attrs = {"qk_matmul_output_mode": mode, "is_causal": 1}
    if mode:  # onnx.reference returns the softcapped scores for mode 0 (the spec: raw QK^T)
        attrs["softcap"] = 2.0
    outs = run_attn([q, k, v, mask, pk, pv], attrs, named=(0, 1, 2, 3))
    refs = onnx_ref("Attention", [q, k, v, mask, pk, pv], attrs, n_out=4, opset=24)
    assert outs[3].shape == (2, 4, 3, 7)
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_qk_output_mode0_is_raw_scaled_scores_before_softcap():
    q, k, v = rnd(1, 2, 3, 4), rnd(1, 2, 3, 4), rnd(1, 2, 3, 4)
    attrs = {"softcap": 0.5, "scale": 0.3}
    _, qk0 = run_attn([q, k, v], attrs, named=(0, 3))
    _, qk1 = run_attn([q, k, v], {**attrs, "qk_matmul_output_mode": 1}, named=(0, 3))
    raw = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * 0.3
    np.testing.assert_allclose(qk0, raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qk1, 0.5 * np.tanh(raw / 0.5), rtol=1e-5, atol=1e-6)


def test_attention_qk_softmax_output_of_fully_masked_row_is_zero():
    q, k, v = rnd(1, 1, 2, 4), rnd(1, 1, 3, 4), rnd(1, 1, 3, 4)
    mask = np.array([[True, False, True], [False, False, False]])
    y, p = run_attn([q, k, v, mask], {"qk_matmul_output_mode": 3}, named=(0, 3))
    assert np.all(p[0, 0, 1] == 0) and np.all(y[0, 0, 1] == 0)
    np.testing.assert_allclose(p[0, 0, 0].sum(), 1.0, rtol=1e-6)
    assert p[0, 0, 0, 1] == 0


@pytest.mark.parametrize("case", ["plain", "causal_gqa", "causal_bool_mask", "decode", "overlong"])
def test_attention_nonpad_kv_seqlen_matches_onnx(case):
    attrs: dict = {"is_causal": 1}
    mask = None
    q, k, v = rnd(2, 4, 3, 8), rnd(2, 4, 6, 8), rnd(2, 4, 6, 8)
    nonpad = np.array([4, 6], np.int64)
    if case == "plain":
        attrs = {}
        mask = rnd(2, 1, 3, 5)  # short float mask, padded to 6 keys
    elif case == "causal_gqa":
        k, v = rnd(2, 2, 6, 8), rnd(2, 2, 6, 8)
    elif case == "causal_bool_mask":
        mask = RNG.random((2, 1, 3, 6)) > 0.3
    elif case == "decode":
        q = rnd(2, 4, 1, 8)
        nonpad = np.array([1, 5], np.int64)
    elif case == "overlong":  # nonpad < Sq: the first rows see nothing and give 0
        nonpad = np.array([2, 6], np.int64)
    (y,) = run_attn([q, k, v, mask, None, None, nonpad], attrs)
    (ref,) = onnx_ref("Attention", [q, k, v, mask, None, None, nonpad], attrs, opset=24)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    if case == "overlong":
        assert np.all(y[0, :, 0] == 0)


def test_attention_nonpad_ignores_padded_keys():
    q, k, v = rnd(1, 1, 2, 4), rnd(1, 1, 5, 4), rnd(1, 1, 5, 4)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 3:] = 100.0  # padding slots hold garbage
    v2[:, :, 3:] = -100.0
    nonpad = np.array([3], np.int64)
    (a,) = run_attn([q, k, v, None, None, None, nonpad])
    (b,) = run_attn([q, k2, v2, None, None, None, nonpad])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, hand_attention(q, k[:, :, :3], v[:, :, :3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["local_causal", "bidirectional", "with_past", "nonpad_rank3_mask",
                                  "right_only_3d"])
def test_attention_sliding_window_matches_onnx(case):
    q, k, v = rnd(2, 2, 4, 8), rnd(2, 2, 6, 8), rnd(2, 2, 6, 8)
    ins: list = [q, k, v]
    attrs: dict = {"is_causal": 1, "left_window_size": 2}
    named: tuple = (0,)
    if case == "bidirectional":
        attrs = {"left_window_size": 1, "right_window_size": 2}
    elif case == "with_past":
        ins = [q, rnd(2, 2, 2, 8), rnd(2, 2, 2, 8), None, rnd(2, 2, 5, 8), rnd(2, 2, 5, 8)]
        named = (0, 1, 2)
    elif case == "nonpad_rank3_mask":
        ins = [q, k, v, rnd(2, 4, 6), None, None, np.array([5, 6], np.int64)]
    elif case == "right_only_3d":
        ins = [rnd(2, 4, 16), rnd(2, 6, 8), rnd(2, 6, 6)]
        attrs = {"right_window_size": 1, "q_num_heads": 2, "kv_num_heads": 1}
    outs = run_attn(ins, attrs, named)
    refs = onnx_ref("Attention", ins, attrs, n_out=len(named), opset=25)
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_window_counts_match_the_mask():
    for sq, t, off, causal, left, right in [(4, 6, 2, True, 2, -1), (5, 5, 0, False, 1, 2),
                                            (3, 9, 6, True, 0, -1), (4, 4, 0, False, -1, 0),
                                            (6, 4, -2, True, 1, -1)]:
        i = np.arange(sq)[:, None] + off
        j = np.arange(t)[None, :]
        ok = np.ones((sq, t), bool)
        if causal:
            ok &= j <= i
        if left >= 0:
            ok &= j >= i - left
        if right >= 0:
            ok &= j <= i + right
        assert window_counts(sq, t, off, causal, left, right) == ok.sum(axis=1).tolist()


@pytest.mark.parametrize("case", ["causal", "attn_mask_causal", "nonpad", "qk_mode3_3d"])
def test_attention_bf16_matches_onnx_bit_for_bit(case):
    """bf16 inputs reach the kernel as fp32; the kernel rounds every step to bf16 as the
    reference does (fp32 compute then one final rounding differs in about 1 value in 4)."""
    bf16 = ml_dtypes.bfloat16
    q, k, v = (rnd(2, 3, 4, 8).astype(bf16), rnd(2, 3, 6, 8).astype(bf16), rnd(2, 3, 6, 8).astype(bf16))
    ins: list = [q, k, v]
    attrs: dict = {"is_causal": 1}
    named: tuple = (0,)
    if case == "attn_mask_causal":
        ins.append(rnd(2, 1, 4, 6).astype(bf16))
    elif case == "nonpad":
        ins += [rnd(2, 3, 4, 4).astype(bf16), None, None, np.array([3, 5], np.int64)]
        attrs = {}
    elif case == "qk_mode3_3d":
        ins = [rnd(2, 4, 24).astype(bf16), rnd(2, 6, 24).astype(bf16), rnd(2, 6, 24).astype(bf16)]
        attrs = {"is_causal": 1, "q_num_heads": 3, "kv_num_heads": 3, "qk_matmul_output_mode": 3}
        named = (0, 3)
    outs = run_attn(ins, attrs, named)
    refs = onnx_ref("Attention", ins, attrs, n_out=4, opset=24)
    for o, n in zip(outs, named):
        assert o.dtype == bf16
        np.testing.assert_array_equal(o.astype(np.float32), refs[n].astype(np.float32))


def test_attention_softmax_precision_fp16():
    q, k, v = (rnd(1, 2, 3, 8, dtype=np.float16) * 4 for _ in range(3))
    attrs = {"qk_matmul_output_mode": 3, "softmax_precision": 1}
    y, p = run_attn([q, k, v], attrs, named=(0, 3))
    ry, _, _, rp = onnx_ref("Attention", [q, k, v], attrs, n_out=4, opset=24)
    assert y.dtype == p.dtype == np.float16
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(p, rp)


def test_attention_work_sliding_window_counts_band_pairs():
    # Sq = T = 6, causal, left window 2: rows attend 1, 2, 3, 3, 3, 3 keys = 15 pairs
    g = attn_graph([rnd(1, 2, 6, 4)] * 3, {"is_causal": 1, "left_window_size": 2})
    w = g.work("node")
    assert w.matmul_flops == 2 * 2 * 15 * (4 + 4)
    assert sum(gm.flops for gm in w.gemms) == w.matmul_flops
    assert GemmShape(4, 3, 4, 2, "attention") in w.gemms  # the 4 full-window rows form one 4 x 3 block
    assert w.transcendentals == 2 * 15 + 2 * 6


def test_attention_work_qk_output_and_nonpad_bytes():
    q, k, v = rnd(1, 2, 3, 4), rnd(1, 2, 5, 4), rnd(1, 2, 5, 4)
    nonpad = np.array([4], np.int64)
    base = attn_graph([q, k, v, None, None, None, nonpad], {}).work("node")
    assert base.bytes_read == (24 + 40 + 40) * 4 + 8  # the lengths are read too
    assert base.bytes_written == 24 * 4
    assert base.matmul_flops == 2 * 2 * 15 * 8  # upper bound: every key of the cache valid
    for mode, extra in [(0, 0), (2, 0), (3, 1)]:
        w = attn_graph([q, k, v], {"qk_matmul_output_mode": mode}, named=(0, 3)).work("node")
        assert w.bytes_written == (24 + 2 * 3 * 5) * 4  # Y + [1, 2, 3, 5] scores
        assert w.flops == w.matmul_flops + 2 * 15 * (5 + extra) + 2 * 3 * (1 + 4)
    w_all = attn_graph([q, k, v], {}, named=(0, 1, 2, 3)).work("node")
    assert w_all.bytes_written == (24 + 40 + 40 + 30) * 4


def test_attention_grad_nonpad_causal():
    check_grad("Attention", [f64(2, 2, 3, 4), f64(2, 1, 5, 4), f64(2, 1, 5, 4), None, None, None,
                             np.array([4, 5], np.int64)], {"is_causal": 1})


def test_attention_grad_sliding_window_with_cache():
    check_grad("Attention", [f64(1, 2, 3, 4), f64(1, 2, 3, 4), f64(1, 2, 3, 4), None,
                             f64(1, 2, 2, 4), f64(1, 2, 2, 4)],
               {"is_causal": 1, "left_window_size": 1}, n_out=3)


def test_attention_grad_through_present_without_cache():
    check_grad("Attention", [f64(1, 2, 3, 4), f64(1, 2, 3, 4), f64(1, 2, 3, 4)],
               {"left_window_size": 1, "right_window_size": 0}, n_out=3)


def test_attention_qk_output_has_no_gradient():
    from sim.passes.autodiff import gradients

    arrays = [f64(1, 1, 2, 4)] * 3
    g = attn_graph(arrays, {"qk_matmul_output_mode": 3}, named=(0, 3))
    g.add_input("d_o3", g.tensors["o3"])
    with pytest.raises(GraphError, match="no gradient"):
        gradients(g, ["o3"], ["x0"], ["d_o3"])


# ---------------------------------------------------------------------------- rotary backward


def test_rotary_gradient_graph_uses_one_backward_op():
    from sim.passes.autodiff import gradients

    cos, sin = rope_caches(8, 2, np.float64)
    # caches as non-trainable buffers: dX only (cache_grad=0)
    g = Graph("rope")
    g.add_input("x", TensorSpec((1, 2, 3, 6), "fp64"))
    g.add_param("cos", TensorSpec(cos.shape, "fp64"), trainable=False, value=cos)
    g.add_param("sin", TensorSpec(sin.shape, "fp64"), trainable=False, value=sin)
    g.add_input("pos", TensorSpec((1, 3), "int64"))
    (y,) = g.add_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], None,
                      {"rotary_embedding_dim": 4}, name="rope")
    g.set_outputs([y])
    g.add_input("dy", g.tensors[y])
    gg, gmap = gradients(g, [y], ["x"], ["dy"])
    new = [n for n in gg.nodes.values() if n.name not in g.nodes]
    assert [n.op for n in new] == ["RotaryEmbeddingGrad"]
    assert new[0].attrs["cache_grad"] == 0 and new[0].outputs == (gmap["x"],)
    assert new[0].inputs == ("dy", "cos", "sin", "pos")
    # caches as graph inputs (trainable): the same op also gives d_cos, d_sin (cache_grad=1)
    g2 = one_op_graph("RotaryEmbedding", [f64(1, 2, 3, 6), cos, sin, np.zeros((1, 3), np.int64)],
                      {"rotary_embedding_dim": 4})
    g2.add_input("dy", g2.tensors["node"])
    gg2, gmap2 = gradients(g2, ["node"], ["x0", "x1", "x2"], ["dy"])
    new2 = [n for n in gg2.nodes.values() if n.name not in g2.nodes]
    assert [n.op for n in new2] == ["RotaryEmbeddingGrad"]
    assert new2[0].attrs["cache_grad"] == 1
    assert list(new2[0].outputs) == [gmap2["x0"], gmap2["x1"], gmap2["x2"]]


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_grad_dx_is_the_inverse_rotation_per_onnx(interleaved):
    """dX = R(-theta) dY: onnx.reference's RotaryEmbedding with the sine negated."""
    dy = rnd(2, 3, 4, 8)
    cos, sin = rope_caches(10, 3)
    pos = RNG.integers(0, 10, (2, 4)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": 6}
    (dx,) = run_op("RotaryEmbeddingGrad", [dy, cos, sin, pos], attrs)
    (ref,) = onnx_ref("RotaryEmbedding", [dy, cos, -sin, pos], attrs, opset=23)
    np.testing.assert_allclose(dx, ref, rtol=1e-6, atol=1e-6)


def test_rotary_grad_work_hand_count():
    # B=1, H=2, S=3, rotary dim 4 (of 6): 1*2*3*4 = 24 rotated elements = 12 pairs
    dy = rnd(1, 2, 3, 6)
    cos, sin = rope_caches(16, 2)
    pos = np.zeros((1, 3), np.int64)
    attrs = {"rotary_embedding_dim": 4}
    w = one_op_graph("RotaryEmbeddingGrad", [dy, cos, sin, pos], attrs).work("node")
    assert w.flops == 12 * 6  # inverse rotation: 4 multiplies + 2 adds per pair
    assert w.bytes_read == 36 * 4 + 2 * 32 * 4 + 3 * 8  # dY, both caches, ids
    assert w.bytes_written == 36 * 4
    wc = one_op_graph("RotaryEmbeddingGrad", [dy, cos, sin, pos, rnd(1, 2, 3, 6)],
                      {**attrs, "cache_grad": 1}).work("node")
    assert wc.flops == 12 * 6 * 2  # + x1 dr + x2 di, x1 di - x2 dr per pair
    assert wc.bytes_read == w.bytes_read + 36 * 4  # X too
    assert wc.bytes_written == 36 * 4 + 2 * 32 * 4  # dX, d_cos, d_sin
