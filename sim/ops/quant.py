"""Weight-only quantised matrix multiply: ``MatMulNBits``, after ONNX Runtime's
``com.microsoft.MatMulNBits``.

Inputs ``(A [..., K], B uint8 [N, k_blocks, block_size * bits / 8], scales [N, k_blocks])``
(``scales`` may also be flat ``[N * k_blocks]``); attributes ``K``, ``N``, ``bits`` (4 or 8)
and ``block_size`` (a power of two >= 16). ``B`` holds the transposed weight ``W^T`` [N, K]
in blocks of ``block_size`` along K, ``bits`` per value, low nibble first for 4 bits; the
zero point is the symmetric default ``2^(bits-1)`` (explicit ``zero_points`` are not
supported). ``Y = A @ W`` with ``W[k, n] = (q[n, k] - 2^(bits-1)) * scales[n, k // block_size]``
dequantised inside the GEMM (W4A16 / W8A16 kernels such as Marlin or TRT-LLM's weight-only
GEMMs), so the weights move as ``bits`` per value plus one scale per block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.dtypes import is_float, itemsize
from sim.errors import GraphError
from sim.ops.common import need
from sim.ops.registry import defop
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec


def _dims(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, int]:
    a, b, scales = need(specs, 3, "MatMulNBits")
    if len(specs) > 3 and any(s is not None for s in specs[3:]):
        raise GraphError("MatMulNBits: zero_points, g_idx and bias inputs are not supported")
    try:
        K, N, bits, bs = (int(attrs[k]) for k in ("K", "N", "bits", "block_size"))
    except KeyError as err:
        raise GraphError(f"MatMulNBits needs attribute {err.args[0]!r}") from None
    if bits not in (4, 8):
        raise GraphError(f"MatMulNBits bits must be 4 or 8, got {bits}")
    if bs < 16 or bs & (bs - 1):
        raise GraphError(f"MatMulNBits block_size must be a power of two >= 16, got {bs}")
    if not is_float(a.dtype) or a.shape[-1:] != (K,):
        raise GraphError(f"MatMulNBits A must be float [..., {K}], got {a}")
    blocks = -(-K // bs)
    if b.dtype != "uint8" or b.shape != (N, blocks, bs * bits // 8):
        raise GraphError(f"MatMulNBits B must be uint8 {(N, blocks, bs * bits // 8)}, got {b}")
    if scales.dtype != a.dtype or scales.shape not in ((N, blocks), (N * blocks,)):
        raise GraphError(f"MatMulNBits scales must be {a.dtype} [{N}, {blocks}], got {scales}")
    return {"K": K, "N": N, "bits": bits, "bs": bs, "blocks": blocks,
            "M": math.prod(a.shape[:-1])}


def _infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    d = _dims(specs, attrs)
    a = specs[0]
    assert a is not None
    return [TensorSpec((*a.shape[:-1], d["N"]), a.dtype)]


def _work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """One GEMM (m = rows of A, n = N, k = K; B at ``bits/8`` bytes per weight plus its
    scales, ``GemmShape.b_bytes``): 2 M N K matmul FLOPs, plus the dequantisation (a subtract
    and a multiply per weight, once per kernel: 2 N K vector FLOPs). Bytes: A, the packed
    weight, the scales and Y once each."""
    d = _dims(ins, attrs)
    scales = ins[2]
    assert scales is not None
    # B streams at bits/8 bytes per weight plus its block's share of a scale
    b_bytes = d["bits"] / 8 + itemsize(scales.dtype) / d["bs"]
    g = GemmShape(d["M"], d["N"], d["K"], b_bytes=b_bytes)
    mm = g.flops
    r = sum(s.nbytes for s in ins if s is not None)
    return Work(flops=mm + 2.0 * d["N"] * d["K"], matmul_flops=mm, bytes_read=r,
                bytes_written=sum(o.nbytes for o in outs), gemms=(g,))


def unpack(b: np.ndarray, bits: int, K: int) -> np.ndarray:
    """Packed ``[N, blocks, blob]`` uint8 -> quantised values ``[N, K]`` (int32)."""
    b = np.asarray(b, dtype=np.uint8)
    N = b.shape[0]
    if bits == 8:
        q = b.reshape(N, -1).astype(np.int32)
    else:
        lo, hi = b & 0x0F, b >> 4
        q = np.stack([lo, hi], axis=-1).reshape(N, -1).astype(np.int32)
    return q[:, :K]


def pack(q: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Quantised values ``[N, K]`` (0 .. 2^bits - 1) -> packed ``[N, blocks, blob]`` uint8
    (K padded with the zero point to whole blocks)."""
    N, K = q.shape
    blocks = -(-K // block_size)
    full = np.full((N, blocks * block_size), 1 << (bits - 1), dtype=np.uint8)
    full[:, :K] = q
    if bits == 4:
        full = (full[:, 0::2] | (full[:, 1::2] << 4)).astype(np.uint8)
    return full.reshape(N, blocks, block_size * bits // 8)


def dequantize(b: np.ndarray, scales: np.ndarray, bits: int, block_size: int, K: int) -> np.ndarray:
    """``W^T`` [N, K] as floats from the packed values and per-block scales."""
    q = unpack(b, bits, K).astype(np.float64) - (1 << (bits - 1))
    s = np.asarray(scales, dtype=np.float64).reshape(q.shape[0], -1)
    return q * np.repeat(s, block_size, axis=1)[:, :K]


def quantize(w_t: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax quantisation of ``W^T`` [N, K] per block of ``block_size`` along K:
    (packed B, scales [N, blocks]) with ``scale = max|w| / (2^(bits-1) - 1)``."""
    N, K = w_t.shape
    blocks = -(-K // block_size)
    pad = np.zeros((N, blocks * block_size))
    pad[:, :K] = w_t
    grouped = pad.reshape(N, blocks, block_size)
    qmax = (1 << (bits - 1)) - 1
    scales = np.abs(grouped).max(axis=-1) / qmax
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(grouped / safe[..., None]), -qmax - 1, qmax) + (1 << (bits - 1))
    return pack(q.reshape(N, -1)[:, :K].astype(np.uint8), bits, block_size), scales


def _kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b, scales = xs[0], xs[1], xs[2]
    K, bits, bs = int(attrs["K"]), int(attrs["bits"]), int(attrs["block_size"])
    w_t = dequantize(b, scales, bits, bs, K)
    return [(a.astype(np.float64) @ w_t.T).astype(a.dtype)]


defop(
    "MatMulNBits",
    infer=_infer,
    work=_work,
    kernel=_kernel,
    no_grad="quantised inference op (weights are integers)",
    doc=__doc__.split("\n\n")[1] if __doc__ else "",
)
