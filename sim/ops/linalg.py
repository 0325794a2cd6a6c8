"""Linear algebra: MatMul, Gemm."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph.tensor import TensorSpec
from sim.ops.common import broadcast_shapes, io_bytes, need
from sim.ops.registry import defop
from sim.ops.work import GemmShape, Work


def _matmul_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], int, int, int, int]:
    """(output shape, batch, m, n, k) of numpy.matmul semantics (1-D operands promoted)."""
    if not a or not b:
        raise GraphError("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise GraphError(f"MatMul inner dimensions differ: {a} @ {b}")
    batch_shape = broadcast_shapes(a2[:-2], b2[:-2])
    m, k, n = a2[-2], a2[-1], b2[-1]
    out = [*batch_shape, m, n]
    if len(a) == 1:
        out.pop(-2)
    if len(b) == 1:
        out.pop(-1)
    return tuple(out), math.prod(batch_shape), m, n, k


def _matmul_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    a, b = need(specs, 2, "MatMul")
    if a.dtype != b.dtype:
        raise GraphError(f"MatMul dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorSpec(_matmul_shapes(a.shape, b.shape)[0], a.dtype)]


def _matmul_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    a, b = need(ins, 2, "MatMul")
    _, batch, m, n, k = _matmul_shapes(a.shape, b.shape)
    g = GemmShape(m, n, k, batch)
    r, w = io_bytes(ins, outs)
    return Work(flops=g.flops, matmul_flops=g.flops, bytes_read=r, bytes_written=w, gemms=(g,))


def _matmul_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    sa, sb = gb.spec(a), gb.spec(b)
    if sa.rank < 2 or sb.rank < 2:
        # promote vectors to matrices so the general rule applies
        a2 = gb.op("Reshape", [a], shape=[1, *sa.shape]) if sa.rank == 1 else a
        b2 = gb.op("Reshape", [b], shape=[*sb.shape, 1]) if sb.rank == 1 else b
        out_shape = _matmul_shapes(gb.spec(a2).shape, gb.spec(b2).shape)[0]
        dy2 = gb.op("Reshape", [dy], shape=list(out_shape))
        da2 = gb.op("MatMul", [dy2, gb.transpose_last2(b2)])
        db2 = gb.op("MatMul", [gb.transpose_last2(a2), dy2])
        da = gb.unbroadcast(da2, (1, *sa.shape) if sa.rank == 1 else sa.shape)
        db = gb.unbroadcast(db2, (*sb.shape, 1) if sb.rank == 1 else sb.shape)
        return [gb.op("Reshape", [da], shape=list(sa.shape)),
                gb.op("Reshape", [db], shape=list(sb.shape))]
    da = gb.op("MatMul", [dy, gb.transpose_last2(b)])
    db = gb.op("MatMul", [gb.transpose_last2(a), dy])
    return [gb.unbroadcast(da, sa.shape), gb.unbroadcast(db, sb.shape)]


defop(
    "MatMul",
    infer=_matmul_infer,
    work=_matmul_work,
    kernel=lambda xs, attrs: [np.matmul(xs[0], xs[1])],
    grad=_matmul_grad,
    doc="numpy.matmul semantics: batched, broadcasting, 1-D operands promoted.",
)
