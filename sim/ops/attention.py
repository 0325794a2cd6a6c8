"""Attention ops: fused scaled dot-product attention and rotary position embedding.

``Attention`` follows the ONNX ``Attention`` operator (opsets 23-25): inputs ``Q, K, V`` and
the optional ``attn_mask``, ``past_key``, ``past_value`` and ``nonpad_kv_seqlen`` (opset 24:
per-batch count of valid keys of a padded, externally managed KV cache; not together with
``past_key``); attributes ``is_causal``, ``scale``, ``softcap``, ``softmax_precision``,
``qk_matmul_output_mode``, ``left_window_size`` / ``right_window_size`` (opset 25 sliding
window, -1 = unbounded), ``q_num_heads`` / ``kv_num_heads`` (3-D inputs); grouped-query
attention when K/V have fewer heads than Q. Outputs ``Y``, ``present_key`` /
``present_value`` (the cache with the new keys/values appended; K and V in 4-D form without a
cache) and ``qk_matmul_output`` [B, q_heads, Sq, total keys]: mode 0 the scaled QK^T (as the
opset-25 spec says; onnx.reference returns the softcapped scores there when softcap is set),
1 after softcap, 2 after softcap and the additive mask (causal, window and padding included),
3 the softmax probabilities. All four outputs are always inferred; name only those needed ('' for
the others), as the work estimate charges every named output's bytes. Causal masking and the
window are offset-aligned (bottom-right): query i is at absolute position i + past (or
nonpad_kv_seqlen[b] - Sq with nonpad_kv_seqlen), as onnx.reference does. Fully masked rows give
0. Kernels follow onnx.reference's order of operations (sqrt(scale) applied to Q and K, softcap,
mask add, softmax in ``softmax_precision`` if given, probabilities cast to the input dtype
before PV); fp16/bf16 inputs are computed in their storage dtype with the same per-step
rounding (the executor tells the kernel the input dtypes, see ``sim.ops.registry.dtype_aware``).
``qk_matmul_output`` has no gradient; ``AttentionGrad`` computes in the kernel's compute
dtype and ignores ``softmax_precision``.

``RotaryEmbedding`` follows the ONNX opset-23 operator of that name.

Backward-only ops: ``AttentionGrad`` (FlashAttention-style: recomputes the probabilities
from Q and K instead of storing the S x S matrix) and ``RotaryEmbeddingGrad``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.dtypes import is_float, itemsize, to_numpy
from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, io_bytes, need
from sim.ops.registry import DTYPES_ATTR, add_traits, defop, dtype_aware
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec

# ---------------------------------------------------------------------------- shapes

# ONNX TensorProto element types allowed for softmax_precision, by our dtype names.
SOFTMAX_PRECISIONS = {1: "fp32", 10: "fp16", 11: "fp64", 16: "bf16"}


def _pad(specs: list[Any], n: int) -> list[Any]:
    return list(specs) + [None] * (n - len(specs))


def _windows(attrs: dict[str, Any]) -> tuple[int, int]:
    left = int(attrs.get("left_window_size", -1))
    right = int(attrs.get("right_window_size", -1))
    if left < -1 or right < -1:
        raise GraphError(f"left_window_size {left} / right_window_size {right} must be -1 or >= 0")
    return left, right


def _attn_dims(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, int]:
    """Batch, heads, lengths and head sizes of an Attention node (validating them)."""
    q, k, v = need(specs, 3, "Attention")
    mask, pk, pv, nonpad = _pad(specs, 7)[3:7]
    if not (q.rank == k.rank == v.rank) or q.rank not in (3, 4):
        raise GraphError(f"Attention wants Q, K, V all 3-D or all 4-D, got {q.shape}, {k.shape}, {v.shape}")
    if not (q.dtype == k.dtype == v.dtype) or not is_float(q.dtype):
        raise GraphError(f"Attention Q, K, V must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.rank == 4:
        B, Hq, Sq, D = q.shape
        _, Hkv, Skv, Dk = k.shape
        Dv = v.shape[3]
        if v.shape[:3] != (B, Hkv, Skv) or k.shape[0] != B:
            raise GraphError(f"Attention K {k.shape} and V {v.shape} do not match Q {q.shape}")
    else:
        if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
            raise GraphError("3-D Attention inputs need q_num_heads and kv_num_heads")
        Hq, Hkv = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        B, Sq, hq = q.shape
        _, Skv, hk = k.shape
        hv = v.shape[2]
        if Hq <= 0 or Hkv <= 0 or hq % Hq or hk % Hkv or hv % Hkv:
            raise GraphError(f"hidden sizes {hq}, {hk}, {hv} do not split into {Hq}/{Hkv} heads")
        D, Dk, Dv = hq // Hq, hk // Hkv, hv // Hkv
        if v.shape[:2] != (B, Skv) or k.shape[0] != B:
            raise GraphError(f"Attention K {k.shape} and V {v.shape} do not match Q {q.shape}")
    if D != Dk:
        raise GraphError(f"Attention Q head size {D} differs from K head size {Dk}")
    if Hq % Hkv:
        raise GraphError(f"Attention needs q heads ({Hq}) to be a multiple of kv heads ({Hkv})")
    P = 0
    if (pk is None) != (pv is None):
        raise GraphError("Attention needs past_key and past_value together")
    if pk is not None and pv is not None:
        P = pk.shape[2] if pk.rank == 4 else -1
        if pk.shape != (B, Hkv, P, D) or pv.shape != (B, Hkv, P, Dv):
            raise GraphError(f"past_key {pk.shape} / past_value {pv.shape} do not match "
                             f"[{B}, {Hkv}, past, {D}] / [{B}, {Hkv}, past, {Dv}]")
    if nonpad is not None:
        if pk is not None:
            raise GraphError("nonpad_kv_seqlen cannot be combined with past_key / past_value")
        if nonpad.shape != (B,) or nonpad.dtype not in ("int64", "int32"):
            raise GraphError(f"nonpad_kv_seqlen must be int [{B}], got {nonpad}")
    T = P + Skv
    if mask is not None:
        if mask.dtype != "bool" and mask.dtype != q.dtype:
            raise GraphError(f"attn_mask must be bool or {q.dtype}, got {mask.dtype}")
        if mask.rank == 0 or mask.shape[-1] > T:
            raise GraphError(f"attn_mask {mask.shape} has more than {T} key positions")
        padded = (*mask.shape[:-1], T)
        if broadcast_shapes(padded, (B, Hq, Sq, T)) != (B, Hq, Sq, T):
            raise GraphError(f"attn_mask {mask.shape} does not broadcast to {(B, Hq, Sq, T)}")
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise GraphError(f"qk_matmul_output_mode must be 0, 1, 2 or 3, got {mode}")
    sp = attrs.get("softmax_precision")
    if sp is not None and int(sp) not in SOFTMAX_PRECISIONS:
        raise GraphError(f"softmax_precision {sp} is not one of {sorted(SOFTMAX_PRECISIONS)} "
                         "(ONNX float, float16, double, bfloat16)")
    _windows(attrs)
    return {"B": B, "Hq": Hq, "Hkv": Hkv, "Sq": Sq, "Skv": Skv, "P": P, "T": T, "D": D, "Dv": Dv,
            "nonpad": int(nonpad is not None)}


def _attn_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    d = _attn_dims(specs, attrs)
    q = specs[0]
    assert q is not None
    if q.rank == 4:
        y = TensorSpec((d["B"], d["Hq"], d["Sq"], d["Dv"]), q.dtype)
    else:
        y = TensorSpec((d["B"], d["Sq"], d["Hq"] * d["Dv"]), q.dtype)
    return [y, TensorSpec((d["B"], d["Hkv"], d["T"], d["D"]), q.dtype),
            TensorSpec((d["B"], d["Hkv"], d["T"], d["Dv"]), q.dtype),
            TensorSpec((d["B"], d["Hq"], d["Sq"], d["T"]), q.dtype)]


def causal_blocks(Sq: int, T: int, offset: int) -> list[tuple[int, int]]:
    """Query x key rectangles whose areas sum to the attended (query, key) pairs of a causal mask.

    Query ``i`` attends key ``j`` iff ``j <= i + offset`` (offset = past length). Rows that see
    every key form one rectangle; the staircase of partial rows is folded (row ``a`` paired with
    row ``b`` has a constant total length), as load-balanced causal kernels schedule it; an odd
    middle row is its own 1-row block. Fully masked rows do no work.

    >>> causal_blocks(4, 4, 0)   # 1 + 2 + 3 + 4 = 10 pairs
    [(1, 4), (1, 4), (1, 2)]
    """
    counts = [min(max(i + offset + 1, 0), T) for i in range(Sq)]
    full = sum(1 for c in counts if c == T)
    stair = [c for c in counts if 0 < c < T]
    blocks = [(full, T)] if full else []
    L = len(stair)
    if L >= 2:
        blocks.append((L // 2, stair[0] + stair[-1]))
    if L % 2:
        blocks.append((1, stair[L // 2]))
    return blocks


def window_counts(Sq: int, T: int, offset: int, causal: bool, left: int, right: int) -> list[int]:
    """Keys attended by each query row under ``is_causal`` and a sliding window.

    Query ``i`` sits at absolute position ``p = i + offset`` and attends key ``j`` iff
    ``p - left <= j <= p + right`` (a bound of -1 is unbounded) and, with ``causal``, ``j <= p``.

    >>> window_counts(4, 6, 2, True, 2, -1)   # positions 2..5, 3 keys each
    [3, 3, 3, 3]
    """
    out = []
    for i in range(Sq):
        p = i + offset
        hi = T - 1
        if causal:
            hi = min(hi, p)
        if right >= 0:
            hi = min(hi, p + right)
        lo = max(0, p - left) if left >= 0 else 0
        out.append(max(0, hi - lo + 1))
    return out


def _pair_blocks(d: dict[str, int], attrs: dict[str, Any]) -> list[tuple[int, int]]:
    """Query x key blocks of attended pairs (see ``causal_blocks`` / ``window_counts``).

    With ``nonpad_kv_seqlen`` the valid lengths are runtime values: the count assumes a full
    cache (every key valid, causal offset T - Sq), an upper bound."""
    causal = bool(int(attrs.get("is_causal", 0)))
    offset = d["T"] - d["Sq"] if d["nonpad"] else d["P"]
    left, right = _windows(attrs)
    if left < 0 and right < 0:
        if causal:
            return causal_blocks(d["Sq"], d["T"], offset)
        return [(d["Sq"], d["T"])]
    counts = window_counts(d["Sq"], d["T"], offset, causal, left, right)
    return [(counts.count(c), c) for c in sorted(set(counts), reverse=True) if c > 0]


# The GEMMs of a fused attention kernel (forward and backward) carry this tag, so a spec can
# give them the efficiency such kernels reach (``arch.kernel_efficiency.attention``).
KERNEL = "attention"


def _qk_named(outs: list[TensorSpec], d: dict[str, int]) -> bool:
    """Whether the named outputs include qk_matmul_output (recognised by its shape)."""
    shape = (d["B"], d["Hq"], d["Sq"], d["T"])
    kv = {(d["B"], d["Hkv"], d["T"], d["D"]), (d["B"], d["Hkv"], d["T"], d["Dv"])}
    if shape in kv:  # Hq == Hkv and Sq == T == D (or Dv): tell them apart by count only
        return len(outs) == 4
    return any(o.shape == shape for o in outs[1:])


def _attn_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """Work of a fused (flash-style) attention kernel.

    GEMMs, per (batch, head) and per block of attended (query, key) pairs (``causal_blocks``
    with ``is_causal``, rows grouped by key count with a sliding window, one Sq x T block
    otherwise): scores ``QK^T`` (m = queries, n = keys, k = D) and ``PV`` (m = queries, n = Dv,
    k = keys), each with batch = B * q_heads. Only the N attended pairs are counted (N =
    sum_i min(i + past + 1, T) for a causal mask, Sq(Sq+1)/2 when square): matmul FLOPs
    = 2 * B * Hq * N * (D + Dv). With ``nonpad_kv_seqlen`` N assumes a full cache (the lengths
    are runtime values): an upper bound.
    Vector FLOPs per attended pair: scale 1, mask add 1 (with a mask), softcap 3 (divide, tanh,
    multiply), running max 1, subtract 1, exp 1, running sum 1; per query row: one reciprocal
    and Dv multiplies for the final normalisation. Transcendentals: one exp per pair (plus one
    tanh per pair with softcap) and one reciprocal per row. The online-softmax rescaling of
    partial outputs is not counted.
    ``qk_matmul_output``, when named, is written in full (B * Hq * Sq * T elements, its bytes
    are counted with the other outputs); in mode 3 the stored probabilities are normalised,
    1 more multiply per attended pair. It is recognised among the named outputs by its shape.
    Bytes: Q, K, V, mask, KV cache and nonpad lengths read once, Y (and every other named
    output) written once; without qk_matmul_output the S x T score matrix never goes to memory.
    """
    d = _attn_dims(ins, attrs)
    blocks = _pair_blocks(d, attrs)
    bh = d["B"] * d["Hq"]
    n_pairs = sum(m * n for m, n in blocks)
    gemms = [GemmShape(m, n, d["D"], bh, KERNEL) for m, n in blocks]
    gemms += [GemmShape(m, d["Dv"], n, bh, KERNEL) for m, n in blocks]
    mm = 2.0 * bh * n_pairs * (d["D"] + d["Dv"])
    has_mask = len(ins) > 3 and ins[3] is not None
    softcap = float(attrs.get("softcap", 0.0) or 0.0) > 0
    per_pair = 5 + (1 if has_mask else 0) + (3 if softcap else 0)
    if int(attrs.get("qk_matmul_output_mode", 0)) == 3 and _qk_named(outs, d):
        per_pair += 1
    rows = bh * d["Sq"]
    vec = bh * n_pairs * per_pair + rows * (1 + d["Dv"])
    trans = bh * n_pairs * (2 if softcap else 1) + rows
    r, w = io_bytes(ins, outs)
    return Work(flops=mm + vec, matmul_flops=mm, transcendentals=trans,
                bytes_read=r, bytes_written=w, gemms=tuple(gemms))


# ---------------------------------------------------------------------------- kernels

# Attribute under which the executor hands dtype-aware kernels the input dtype names.
def _storage(xs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    """Float inputs back in their fp16 / bf16 storage dtype (exact: they were rounded to it),
    so the kernel rounds every step as onnx.reference does; others unchanged."""
    names = attrs.get(DTYPES_ATTR) or ()
    out = list(xs)
    for i, (x, name) in enumerate(zip(xs, names)):
        if x is not None and name in ("fp16", "bf16"):
            out[i] = x.astype(to_numpy(name))
    return out


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in a's dtype (NumPy may promote bf16 to fp32)."""
    r = np.matmul(a, b)
    return r if r.dtype == a.dtype else r.astype(a.dtype)


def _to4(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, S, H*d] -> [B, H, S, d]."""
    B, S, hd = x.shape
    return x.reshape(B, S, heads, hd // heads).transpose(0, 2, 1, 3)


def _to3(x: np.ndarray) -> np.ndarray:
    """[B, H, S, d] -> [B, S, H*d]."""
    B, H, S, dd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, S, H * dd)


def _position_bias(Sq: int, T: int, offset: Any, dt: np.dtype, allowed: Any) -> np.ndarray:
    """0 / -inf by ``allowed(p - j)`` for query position p = i + offset and key j: [Sq, T] for a
    scalar offset, [B, 1, Sq, T] for a per-batch one."""
    i = np.arange(Sq)[:, None]
    j = np.arange(T)[None, :]
    off = np.asarray(offset)
    diff = (i + off.reshape(-1, 1, 1)) - j if off.ndim else (i + int(off)) - j
    b = np.where(allowed(diff), dt.type(0), dt.type(-np.inf))
    return b.reshape(b.shape[0], 1, Sq, T) if off.ndim else b


def _bias(mask: Any, nonpad: Any, attrs: dict[str, Any], Sq: int, T: int, past: int,
          dt: np.dtype) -> np.ndarray:
    """The additive bias (0 / -inf / mask values): attn_mask padded to T keys, causal mask,
    sliding window and key padding, broadcastable to [B, H, Sq, T]."""
    bias = np.zeros((Sq, T), dtype=dt)
    if mask is not None:
        padw = T - mask.shape[-1]
        if mask.dtype == np.bool_:
            m = np.where(mask, dt.type(0), dt.type(-np.inf))
        else:
            m = mask.astype(dt, copy=False)
        if padw:
            m = np.concatenate([m, np.full((*m.shape[:-1], padw), -np.inf, dt)], axis=-1)
        bias = bias + m
    offset: Any = past if nonpad is None else np.asarray(nonpad).reshape(-1).astype(np.int64) - Sq
    if int(attrs.get("is_causal", 0)):
        bias = bias + _position_bias(Sq, T, offset, dt, lambda d: d >= 0)
    left, right = _windows(attrs)
    if left >= 0 or right >= 0:
        def inside(d: np.ndarray) -> np.ndarray:
            ok = np.ones(d.shape, dtype=bool)
            if left >= 0:
                ok &= d <= left
            if right >= 0:
                ok &= -d <= right
            return ok

        bias = bias + _position_bias(Sq, T, offset, dt, inside)
    if nonpad is not None:
        valid = np.arange(T)[None, :] < np.asarray(nonpad).reshape(-1, 1)
        pad = np.where(valid, dt.type(0), dt.type(-np.inf))
        bias = bias + pad.reshape(pad.shape[0], 1, 1, T)
    return bias


def _prepare(xs: list[Any], attrs: dict[str, Any]):
    """Inputs in [B, H, S, d] form, the K/V caches concatenated, and the additive bias."""
    q, k, v, mask, pk, pv, nonpad = _pad(xs, 7)[:7]
    three_d = q.ndim == 3
    if three_d:
        q = _to4(q, int(attrs["q_num_heads"]))
        k = _to4(k, int(attrs["kv_num_heads"]))
        v = _to4(v, int(attrs["kv_num_heads"]))
    if pk is not None:
        k = np.concatenate([pk, k], axis=2)
        v = np.concatenate([pv, v], axis=2)
    past = 0 if pk is None else pk.shape[2]
    bias = _bias(mask, nonpad, attrs, q.shape[2], k.shape[2], past, q.dtype)
    return q, k, v, bias, three_d


def _scale(attrs: dict[str, Any], head: int) -> float:
    s = attrs.get("scale")
    return float(s) if s is not None else 1.0 / float(np.sqrt(head))


def _scores(q: np.ndarray, k: np.ndarray, attrs: dict[str, Any]):
    """(scaled QK^T, softcapped scores, tanh of the capped scores or None), in q's dtype.

    sqrt(scale) multiplies Q and K each (onnx.reference's order of rounding)."""
    kr = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
    sc = q.dtype.type(np.sqrt(_scale(attrs, q.shape[-1])))
    raw = _mm(q * sc, np.swapaxes(kr * sc, -1, -2))
    cap = float(attrs.get("softcap", 0.0) or 0.0)
    if cap <= 0:
        return raw, raw, None
    th = np.tanh(raw / cap)
    return raw, th * cap, th


def _softmax(s: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Softmax over keys; rows whose bias is all -inf (no attendable key) give 0."""
    smax = np.max(s, axis=-1, keepdims=True)
    zero, one = np.zeros((), s.dtype), np.ones((), s.dtype)
    e = np.exp(s - np.where(np.isneginf(smax), zero, smax))
    tot = np.sum(e, axis=-1, keepdims=True)
    p = e / np.where(tot == zero, one, tot)
    dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    return np.where(dead, zero, p)


def _probs(q: np.ndarray, k: np.ndarray, bias: np.ndarray, attrs: dict[str, Any]):
    """(probabilities in q's dtype, tanh of the capped scores or None): the gradient's forward."""
    _, s, th = _scores(q, k, attrs)
    return _softmax(s + bias, bias).astype(q.dtype), th


@dtype_aware
def _attn_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    q, k, v, bias, three_d = _prepare(_storage(_pad(xs, 7)[:7], attrs), attrs)
    dt = q.dtype
    raw, capped, _ = _scores(q, k, attrs)
    masked = capped + bias
    sp = attrs.get("softmax_precision")
    x = masked if sp is None else masked.astype(to_numpy(SOFTMAX_PRECISIONS[int(sp)]))
    p = _softmax(x, bias)
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    qk = (raw, capped, masked, p)[mode].astype(dt)
    y = _mm(p.astype(dt), np.repeat(v, q.shape[1] // k.shape[1], axis=1))
    return [_to3(y) if three_d else y, k, v, qk]


def _unbroadcast(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _group_sum(x: np.ndarray, kv_heads: int) -> np.ndarray:
    """Sum the q-head copies of each kv head: [B, Hq, ...] -> [B, Hkv, ...]."""
    B, Hq = x.shape[:2]
    return x.reshape(B, kv_heads, Hq // kv_heads, *x.shape[2:]).sum(axis=2)


def _attn_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    xs = _pad(xs, 11)
    q, k, v, bias, three_d = _prepare([*xs[:6], xs[10]], attrs)
    mask, pk = xs[3], xs[4]
    y, dy, dpres_k, dpres_v = xs[6:10]
    Hkv, reps = k.shape[1], q.shape[1] // k.shape[1]
    if three_d:
        y, dy = _to4(y, q.shape[1]), _to4(dy, q.shape[1])
    kr, vr = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
    p, th = _probs(q, k, bias, attrs)
    dv = _group_sum(np.swapaxes(p, -1, -2) @ dy, Hkv)
    dp = dy @ np.swapaxes(vr, -1, -2)
    rowdot = np.sum(dy * y, axis=-1, keepdims=True)
    ds = p * (dp - rowdot)  # gradient of the (masked) logits
    dlogit = ds
    if th is not None:
        dlogit = ds * (1.0 - th * th)
    sc = q.dtype.type(_scale(attrs, q.shape[-1]))
    dq = (dlogit @ kr) * sc
    dk = _group_sum(np.swapaxes(dlogit, -1, -2) @ q, Hkv) * sc
    if dpres_k is not None:
        dk = dk + dpres_k
    if dpres_v is not None:
        dv = dv + dpres_v
    past = 0 if pk is None else pk.shape[2]
    dk_new, dv_new = dk[:, :, past:], dv[:, :, past:]
    if three_d:
        dq, dk_new, dv_new = _to3(dq), _to3(dk_new), _to3(dv_new)
    out = [dq, dk_new, dv_new]
    if pk is not None:
        out += [dk[:, :, :past], dv[:, :, :past]]
    if int(attrs.get("mask_grad", 0)):
        dm = ds[..., : mask.shape[-1]]
        out.append(_unbroadcast(dm, mask.shape))
    return out


# ---------------------------------------------------------------------------- gradient


def is_constant(graph: Any, tensor: str, _memo: dict[str, bool] | None = None) -> bool:
    """True if ``tensor`` is a non-trainable parameter or computed only from such."""
    memo = {} if _memo is None else _memo
    if tensor in memo:
        return memo[tensor]
    if tensor in graph.params:
        res = not graph.param_info[tensor].trainable
    elif tensor in graph.inputs:
        res = False
    else:
        node = graph.producer(tensor)
        res = node is not None and all(is_constant(graph, t, memo) for t in node.inputs if t)
    memo[tensor] = res
    return res


def _attn_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    ins = _pad(list(node.inputs), 7)
    q, k, v, mask, pk, pv, nonpad = (t or "" for t in ins[:7])
    if len(dys) > 3 and dys[3]:
        raise GraphError("qk_matmul_output has no gradient (it is a diagnostic output)",
                         where=f"node {node.name!r} (Attention)")
    y = node.outputs[0]
    if not y:
        raise GraphError("the Attention gradient needs output Y named (AttentionGrad reads it)",
                         where=f"node {node.name!r} (Attention)")
    dy = dys[0]
    if dy is None:
        spec = gb.spec(y)
        dy = gb.const(0.0, spec.dtype, spec.shape)
    dpk = dys[1] if len(dys) > 1 and dys[1] else ""
    dpv = dys[2] if len(dys) > 2 and dys[2] else ""
    mask_grad = int(bool(mask) and gb.spec(mask).dtype != "bool" and not is_constant(gb.graph, mask))
    attrs = {**node.attrs, "mask_grad": mask_grad}
    n_out = 3 + (2 if pk else 0) + mask_grad
    outs = gb.op("AttentionGrad", [q, k, v, mask, pk, pv, y, dy, dpk, dpv, nonpad], n_out=n_out,
                 **attrs)
    dq, dk, dv = outs[:3]
    dpast_k = outs[3] if pk else None
    dpast_v = outs[4] if pk else None
    dmask = outs[-1] if mask_grad else None
    return [dq, dk, dv, dmask, dpast_k, dpast_v, None]


defop(
    "Attention",
    infer=_attn_infer,
    work=_attn_work,
    kernel=_attn_kernel,
    grad=_attn_grad,
    doc=__doc__.split("\n\n")[1] if __doc__ else "",
)


def _attn_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    specs = _pad(specs, 11)
    _attn_dims([*specs[:6], specs[10]], attrs)
    if specs[6] is None or specs[7] is None:
        raise GraphError("AttentionGrad needs Y and dY (inputs 6 and 7)")
    outs = [s for s in specs[:3] if s is not None]
    pk, pv = specs[4], specs[5]
    if pk is not None and pv is not None:
        outs += [pk, pv]
    if int(attrs.get("mask_grad", 0)):
        if specs[3] is None:
            raise GraphError("AttentionGrad mask_grad=1 needs attn_mask")
        outs.append(specs[3])
    return outs


def _attn_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """Work of a FlashAttention-style backward kernel.

    Five GEMMs per block of attended pairs, batch = B * q_heads: recompute S = QK^T
    (k = D), dP = dY V^T (k = Dv), dV = P^T dY (m = keys, n = Dv, k = queries),
    dQ = dS K (n = D, k = keys), dK = dS^T Q (m = keys, n = D, k = queries). Matmul FLOPs
    = 2 * B * Hq * N * (3D + 2Dv), which is 2.5x the forward's 2 * B * Hq * N * (D + Dv) when
    D = Dv (N = attended pairs, as in the forward). Vector FLOPs per pair: the forward's softmax
    recompute (scale, mask, subtract, exp: 3 + mask + softcap 3) plus dS = P * (dP - rowdot) (2),
    scale (1) and softcap derivative (3); per query row the rowdot sum(dY * Y) (2 Dv).
    Transcendentals: one exp per pair (+ one tanh with softcap). Attended pairs follow the
    forward (causal, sliding window; a full cache with nonpad_kv_seqlen). Bytes: Q, K, V, mask,
    cache, Y and dY read once; dQ, dK, dV (and cache / mask gradients) written once.
    """
    ins = _pad(ins, 11)
    d = _attn_dims([*ins[:6], ins[10]], attrs)
    blocks = _pair_blocks(d, attrs)
    bh = d["B"] * d["Hq"]
    D, Dv = d["D"], d["Dv"]
    n_pairs = sum(m * n for m, n in blocks)
    gemms: list[GemmShape] = []
    for m, n in blocks:
        gemms += [GemmShape(m, n, D, bh, KERNEL), GemmShape(m, n, Dv, bh, KERNEL),
                  GemmShape(n, Dv, m, bh, KERNEL), GemmShape(m, D, n, bh, KERNEL),
                  GemmShape(n, D, m, bh, KERNEL)]
    mm = 2.0 * bh * n_pairs * (3 * D + 2 * Dv)
    has_mask = ins[3] is not None
    softcap = float(attrs.get("softcap", 0.0) or 0.0) > 0
    per_pair = 3 + (1 if has_mask else 0) + (6 if softcap else 0) + 3
    vec = bh * n_pairs * per_pair + bh * d["Sq"] * 2 * Dv
    trans = bh * n_pairs * (2 if softcap else 1)
    r, w = io_bytes(ins, outs)
    return Work(flops=mm + vec, matmul_flops=mm, transcendentals=trans,
                bytes_read=r, bytes_written=w, gemms=tuple(gemms))


defop(
    "AttentionGrad",
    infer=_attn_grad_infer,
    work=_attn_grad_work,
    kernel=_attn_grad_kernel,
    no_grad="backward op",
    doc="Inputs (Q, K, V, attn_mask, past_key, past_value, Y, dY, d_present_key, "
        "d_present_value, nonpad_kv_seqlen); outputs dQ, dK, dV, then d_past_key, d_past_value with a cache, "
        "then d_attn_mask with mask_grad=1. Attributes as Attention's.",
)


# ---------------------------------------------------------------------------- rotary


def _rope_dims(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, int]:
    x, cos, sin = need(specs, 3, "RotaryEmbedding")
    pos = _pad(specs, 4)[3]
    if x.rank == 4:
        B, H, S, Dh = x.shape
    elif x.rank == 3:
        H = int(attrs.get("num_heads", 0) or 0)
        B, S, hid = x.shape
        if H <= 0 or hid % H:
            raise GraphError(f"3-D RotaryEmbedding input needs num_heads dividing {hid}")
        Dh = hid // H
    else:
        raise GraphError(f"RotaryEmbedding input must be 3-D or 4-D, got {x.shape}")
    rd = int(attrs.get("rotary_embedding_dim", 0) or 0) or Dh
    if rd > Dh or rd % 2:
        raise GraphError(f"rotary_embedding_dim {rd} must be even and at most the head size {Dh}")
    if cos.shape != sin.shape:
        raise GraphError(f"cos_cache {cos.shape} and sin_cache {sin.shape} differ")
    if pos is not None:
        if pos.shape != (B, S) or pos.dtype not in ("int64", "int32"):
            raise GraphError(f"position_ids must be int [{B}, {S}], got {pos}")
        if cos.rank != 2 or cos.shape[1] != rd // 2:
            raise GraphError(f"with position_ids the caches must be [max_pos, {rd // 2}], got {cos.shape}")
    elif cos.shape != (B, S, rd // 2):
        raise GraphError(f"without position_ids the caches must be [{B}, {S}, {rd // 2}], got {cos.shape}")
    return {"B": B, "H": H, "S": S, "Dh": Dh, "rd": rd}


def _rope_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    _rope_dims(specs, attrs)
    assert specs[0] is not None
    return [specs[0]]


def _rope_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """6 FLOP per rotated pair (4 multiplies, 2 adds), i.e. 3 per rotated element.

    Bytes: X read and Y written once, position_ids read once, and of each cache only the rows
    used (B * S * rd/2 elements, at most the whole cache).
    """
    d = _rope_dims(ins, attrs)
    x, cos = ins[0], ins[1]
    assert x is not None and cos is not None
    rot = d["B"] * d["H"] * d["S"] * d["rd"]
    used = min(cos.numel, d["B"] * d["S"] * d["rd"] // 2)
    pos = _pad(ins, 4)[3]
    r = x.nbytes + 2 * used * itemsize(cos.dtype) + (pos.nbytes if pos is not None else 0)
    return Work(flops=3 * rot, bytes_read=r, bytes_written=sum(o.nbytes for o in outs))


def _rope_split(x: np.ndarray, attrs: dict[str, Any]):
    """X as [B, S, H, Dh] plus a function undoing that."""
    shape = x.shape
    if x.ndim == 4:
        return x.transpose(0, 2, 1, 3), lambda y: y.transpose(0, 2, 1, 3)
    H = int(attrs["num_heads"])
    return x.reshape(shape[0], shape[1], H, -1), lambda y: y.reshape(shape)


def _rope_tables(cos: np.ndarray, sin: np.ndarray, pos: np.ndarray | None):
    if pos is not None:
        cos, sin = cos[pos], sin[pos]
    return cos[:, :, None, :], sin[:, :, None, :]


def _halves(x: np.ndarray, rd: int, interleaved: bool):
    xr = x[..., :rd]
    if interleaved:
        return xr[..., 0::2], xr[..., 1::2]
    return xr[..., : rd // 2], xr[..., rd // 2:]


def _join(a: np.ndarray, b: np.ndarray, rest: np.ndarray, interleaved: bool) -> np.ndarray:
    if interleaved:
        rot = np.stack([a, b], axis=-1).reshape(*a.shape[:-1], 2 * a.shape[-1])
    else:
        rot = np.concatenate([a, b], axis=-1)
    return np.concatenate([rot, rest], axis=-1)


def _rope_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, cos, sin, pos = _pad(xs, 4)[:4]
    x4, back = _rope_split(x, attrs)
    rd = int(attrs.get("rotary_embedding_dim", 0) or 0) or x4.shape[-1]
    inter = bool(int(attrs.get("interleaved", 0)))
    c, s = _rope_tables(cos, sin, pos)
    x1, x2 = _halves(x4, rd, inter)
    y = _join(c * x1 - s * x2, s * x1 + c * x2, x4[..., rd:], inter)
    return [back(y).astype(x.dtype)]


def _rope_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    ins = _pad(list(node.inputs), 4)
    x, cos, sin, pos = (t or "" for t in ins[:4])
    g = gb.graph
    cache_grad = int(not (is_constant(g, cos) and is_constant(g, sin)))
    attrs = {**node.attrs, "cache_grad": cache_grad}
    if cache_grad:
        dx, dcos, dsin = gb.op("RotaryEmbeddingGrad", [dys[0], cos, sin, pos, x], n_out=3, **attrs)
        return [dx, dcos, dsin, None]
    dx = gb.op("RotaryEmbeddingGrad", [dys[0], cos, sin, pos], **attrs)
    return [dx, None, None, None]


defop(
    "RotaryEmbedding",
    infer=_rope_infer,
    work=_rope_work,
    kernel=_rope_kernel,
    grad=_rope_grad,
    doc="ONNX RotaryEmbedding-23: inputs (X, cos_cache, sin_cache, position_ids); attributes "
        "interleaved, rotary_embedding_dim, num_heads (3-D X).",
)


def _rope_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    specs = _pad(specs, 5)
    dy, cos, sin, pos, x = specs[:5]
    _rope_dims([dy, cos, sin, pos], attrs)
    assert dy is not None and cos is not None and sin is not None
    if int(attrs.get("cache_grad", 0)):
        if x is None:
            raise GraphError("RotaryEmbeddingGrad cache_grad=1 needs X (input 4)")
        return [dy, cos, sin]
    return [dy]


def _rope_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """dX: the inverse rotation, 6 FLOP per rotated pair. With cache_grad, 6 more FLOP per pair
    for dcos/dsin (x1 dr + x2 di, x1 di - x2 dr) accumulated over heads. Bytes: inputs once,
    outputs once."""
    ins = _pad(ins, 5)
    d = _rope_dims(ins[:4], attrs)
    rot = d["B"] * d["H"] * d["S"] * d["rd"]
    cg = int(attrs.get("cache_grad", 0))
    r, w = io_bytes(ins, outs)
    return Work(flops=3 * rot * (2 if cg else 1), bytes_read=r, bytes_written=w)


def _rope_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, cos, sin, pos, x = _pad(xs, 5)[:5]
    d4, back = _rope_split(dy, attrs)
    rd = int(attrs.get("rotary_embedding_dim", 0) or 0) or d4.shape[-1]
    inter = bool(int(attrs.get("interleaved", 0)))
    c, s = _rope_tables(cos, sin, pos)
    dr, di = _halves(d4, rd, inter)
    dx = back(_join(c * dr + s * di, -s * dr + c * di, d4[..., rd:], inter)).astype(dy.dtype)
    if not int(attrs.get("cache_grad", 0)):
        return [dx]
    x4, _ = _rope_split(x, attrs)
    x1, x2 = _halves(x4, rd, inter)
    gc = np.sum(x1 * dr + x2 * di, axis=2)  # [B, S, rd/2]
    gs = np.sum(x1 * di - x2 * dr, axis=2)
    if pos is None:
        return [dx, gc.astype(cos.dtype), gs.astype(sin.dtype)]
    dcos = np.zeros(cos.shape, dtype=gc.dtype)
    dsin = np.zeros(sin.shape, dtype=gs.dtype)
    np.add.at(dcos, pos, gc)
    np.add.at(dsin, pos, gs)
    return [dx, dcos, dsin]


defop(
    "RotaryEmbeddingGrad",
    infer=_rope_grad_infer,
    work=_rope_grad_work,
    kernel=_rope_grad_kernel,
    no_grad="backward op",
    doc="Inputs (dY, cos_cache, sin_cache, position_ids, X); outputs dX, and with cache_grad=1 "
        "d_cos_cache, d_sin_cache (X needed then). Attributes as RotaryEmbedding's.",
)

add_traits("strided_operands", "Attention")
