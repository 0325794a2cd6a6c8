"""Reductions: ReduceSum ... ReduceLogSumExp, ArgMax/ArgMin, Softmax family, CumSum.

Attributes follow ONNX (opset 18 for Reduce*, with ``axes`` an attribute in our IR;
opset 13 for Softmax/LogSoftmax/Hardmax: one ``axis``, default -1).

FLOP conventions (per *input* element unless stated):

=================  =====  ===============  =============================================
op                 FLOP   transcendentals  counted as
=================  =====  ===============  =============================================
ReduceSum/Max/Min  1      0                one accumulate per input element
ReduceProd         1      0                one multiply per input element
ReduceMean         1      0                + 1 per output element (the divide)
ReduceL1           2      0                abs, accumulate
ReduceSumSquare    2      0                square, accumulate
ReduceL2           2      0                + 2 per output (sqrt, 1 transcendental)
ReduceLogSum       1      0                + 2 per output (log, 1 transcendental)
ReduceLogSumExp    4      1                max, sub, exp, accumulate; + 2 per output (log)
ArgMax/ArgMin      1      0                one compare per input element
Softmax            5      1                max, sub, exp, sum, divide
LogSoftmax         5      1                max, sub, exp, sum, sub; + 2 per row (log)
Hardmax            1      0                one compare per input element
CumSum             1      0                one add per element
SoftmaxGrad        4      0                dy*y, row sum, sub, mul
LogSoftmaxGrad     4      1                exp(y), row sum of dy, mul, sub
=================  =====  ===============  =============================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph.tensor import TensorSpec
from sim.ops.common import as_tuple, io_bytes, need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work

# --------------------------------------------------------------------------- helpers


def reduce_axes(attrs: dict[str, Any], rank: int) -> tuple[int, ...] | None:
    """The normalised, sorted axes a Reduce* op reduces; ``None`` for a no-op.

    >>> reduce_axes({"axes": [-1, 0]}, 3), reduce_axes({}, 2), reduce_axes({"noop_with_empty_axes": 1}, 2)
    ((0, 2), (0, 1), None)
    """
    axes = as_tuple(attrs.get("axes"))
    if not axes:
        return None if int(attrs.get("noop_with_empty_axes", 0)) else tuple(range(rank))
    normed = [norm_axis(a, rank) for a in axes]
    if len(set(normed)) != len(normed):
        raise GraphError(f"repeated axis in axes {list(axes)}")
    return tuple(sorted(normed)) if rank else ()


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: bool) -> tuple[int, ...]:
    if axes is None:
        return shape
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _keep(attrs: dict[str, Any]) -> bool:
    return bool(int(attrs.get("keepdims", 1)))


def _reduce_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Reduce")
    axes = reduce_axes(attrs, x.rank)
    return [x.with_shape(reduced_shape(x.shape, axes, _keep(attrs)))]


def _reduce_work(per_in: float, per_out: float = 0.0, trans_in: float = 0.0, trans_out: float = 0.0):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        n_in = sum(s.numel for s in ins[:1] if s is not None)
        n_out = outs[0].numel
        r, w = io_bytes(ins, outs)
        return Work(
            flops=per_in * n_in + per_out * n_out,
            transcendentals=trans_in * n_in + trans_out * n_out,
            bytes_read=r,
            bytes_written=w,
        )

    return work


def _np_axes(attrs: dict[str, Any], rank: int) -> tuple[int, ...] | None:
    return reduce_axes(attrs, rank)


def _reducer(fn: Any, post: Any = None):
    """A Reduce* kernel from a NumPy reduction ``fn(x, axis=, keepdims=)``."""

    def kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        x = xs[0]
        axes = _np_axes(attrs, x.ndim)
        if axes is None:
            y = np.array(x)
        else:
            y = np.asarray(fn(x, axis=axes, keepdims=_keep(attrs)))
        if post is not None and axes is not None:
            y = post(y)
        return [np.asarray(y).astype(x.dtype, copy=False)]

    return kernel


def _broadcast_back(gb: Any, node: Any, t: str) -> str:
    """Reshape a reduced tensor ``t`` to keepdims form and expand it to the input shape."""
    x = gb.spec(node.inputs[0])
    axes = reduce_axes(node.attrs, x.rank)
    if axes is None:
        return t
    kshape = reduced_shape(x.shape, axes, True)
    if gb.spec(t).shape != kshape:
        t = gb.op("Reshape", [t], shape=list(kshape), allowzero=1)
    if kshape != x.shape:
        t = gb.op("Expand", [t], shape=list(x.shape))
    return t


# --------------------------------------------------------------------------- ReduceSum


def _reduce_sum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [_broadcast_back(gb, node, dys[0])]


defop(
    "ReduceSum",
    infer=_reduce_infer,
    work=_reduce_work(1),
    kernel=_reducer(np.sum),
    grad=_reduce_sum_grad,
    doc="attrs: axes (default all), keepdims=1, noop_with_empty_axes=0.",
)
