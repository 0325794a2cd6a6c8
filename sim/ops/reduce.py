"""Reductions: ReduceSum ... ReduceLogSumExp, ArgMax/ArgMin, Softmax family, CumSum.

Attributes follow ONNX (opset 18 for Reduce*, with ``axes`` an attribute in our IR;
opset 13 for Softmax/LogSoftmax/Hardmax: one ``axis``, default -1).

FLOP conventions (per *input* element unless stated):

==================  =====  ===============  =============================================
op                  FLOP   transcendentals  counted as
==================  =====  ===============  =============================================
ReduceSum/Max/Min   1      0                one accumulate per input element
ReduceProd          1      0                one multiply per input element
ReduceMean          1      0                + 1 per output element (the divide)
ReduceL1            2      0                abs, accumulate
ReduceSumSquare     2      0                square, accumulate
ReduceL2            2      0                + 1 per output (sqrt, a transcendental)
ReduceLogSum        1      0                + 1 per output (log, a transcendental)
ReduceLogSumExp     4      1                max, sub, exp, accumulate; + 2 per output (log, +max)
ArgMax/ArgMin       1      0                one compare per input element
Softmax             5      1                max, sub, exp, sum, divide
LogSoftmax          5      1                max, sub, exp, sum, sub; + 1 per row (log)
Hardmax             1      0                one compare per input element
CumSum              1      0                one add per element
SoftmaxGrad         4      0                dy*y, row sum, sub, mul
LogSoftmaxGrad      4      1                exp(y), row sum of dy, mul, sub
ReduceExtremumGrad  3      0                compare, count ties, select
==================  =====  ===============  =============================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.ops.common import as_tuple, io_bytes, need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work, reduction_layout
from sim.tensor import TensorSpec

# --------------------------------------------------------------------------- helpers

Attrs = dict[str, Any]
Arr = np.ndarray


def reduce_axes(attrs: Attrs, rank: int) -> tuple[int, ...]:
    """The normalised, sorted axes a Reduce* op reduces (``()`` reduces nothing).

    Empty ``axes`` reduce all axes unless ``noop_with_empty_axes=1``.

    >>> reduce_axes({"axes": [-1, 0]}, 3), reduce_axes({}, 2), reduce_axes({"noop_with_empty_axes": 1}, 2)
    ((0, 2), (0, 1), ())
    """
    axes = as_tuple(attrs.get("axes"))
    if not axes:
        return () if int(attrs.get("noop_with_empty_axes", 0)) else tuple(range(rank))
    normed = [norm_axis(a, rank) for a in axes]
    if len(set(normed)) != len(normed):
        raise GraphError(f"repeated axis in axes {list(axes)}")
    return tuple(sorted(normed)) if rank else ()


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _keep(attrs: Attrs) -> bool:
    return bool(int(attrs.get("keepdims", 1)))


def _reduce_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Reduce")
    return [x.with_shape(reduced_shape(x.shape, reduce_axes(attrs, x.rank), _keep(attrs)))]


def _float_reduce_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Reduce")
    if not is_float(x.dtype):
        raise GraphError(f"needs a float input, got {x.dtype}")
    return _reduce_infer(specs, attrs)


def _reduce_work(per_in: float, per_out: float = 0.0, trans_in: float = 0.0, trans_out: float = 0.0):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
        n_in = sum(s.numel for s in ins[:1] if s is not None)
        n_out = outs[0].numel
        r, w = io_bytes(ins, outs)
        x = ins[0]
        return Work(
            flops=per_in * n_in + per_out * n_out,
            transcendentals=trans_in * n_in + trans_out * n_out,
            bytes_read=r,
            bytes_written=w,
            reduction=reduction_layout(x.shape, reduce_axes(attrs, x.rank)) if x is not None else None,
        )

    return work


def _reducer(fn: Callable[[Arr, tuple[int, ...], bool], Any]):
    """A Reduce* kernel from ``fn(x, axes, keepdims)`` (``axes=()`` reduces nothing)."""

    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        x = xs[0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = fn(x, reduce_axes(attrs, x.ndim), _keep(attrs))
        return [np.asarray(y).astype(x.dtype)]

    return kernel


def _expand_back(gb: Any, node: Any, t: Any) -> str:
    """Reshape a reduced tensor ``t`` to keepdims form and expand it to the input shape."""
    x = gb.spec(node.inputs[0])
    kshape = reduced_shape(x.shape, reduce_axes(node.attrs, x.rank), True)
    if gb.spec(t).shape != kshape:
        t = gb.op("Reshape", [t], shape=list(kshape), allowzero=1)
    if kshape != x.shape:
        t = gb.op("Expand", [t], shape=list(x.shape))
    return t


def _keepdims(gb: Any, node: Any, t: Any) -> str:
    """Reshape a reduced tensor ``t`` to keepdims form (broadcastable against the input)."""
    x = gb.spec(node.inputs[0])
    kshape = reduced_shape(x.shape, reduce_axes(node.attrs, x.rank), True)
    return t if gb.spec(t).shape == kshape else gb.op("Reshape", [t], shape=list(kshape), allowzero=1)


def _count(gb: Any, node: Any) -> int:
    x = gb.spec(node.inputs[0])
    return math.prod(x.shape[a] for a in reduce_axes(node.attrs, x.rank))


# --------------------------------------------------------------------------- Reduce*


def _sum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [_expand_back(gb, node, dys[0])]


def _mean_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    scaled = gb.op("Mul", [dy, gb.const(1.0 / max(_count(gb, node), 1), gb.spec(dy).dtype)])
    return [_expand_back(gb, node, scaled)]


def _extremum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy, y = _keepdims(gb, node, dys[0]), _keepdims(gb, node, node.outputs[0])
    return [gb.op("ReduceExtremumGrad", [dy, node.inputs[0], y])]


def _prod_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    # d prod / dx_i = prod / x_i (inputs must be nonzero)
    dyy = gb.op("Mul", [dys[0], node.outputs[0]])
    return [gb.op("Div", [_expand_back(gb, node, dyy), node.inputs[0]])]


def _l1_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [gb.op("Mul", [_expand_back(gb, node, dys[0]), gb.op("Sign", [node.inputs[0]])])]


def _l2_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    ratio = gb.op("Div", [dys[0], node.outputs[0]])  # dy / ||x||
    return [gb.op("Mul", [_expand_back(gb, node, ratio), node.inputs[0]])]


def _sum_square_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x = node.inputs[0]
    two_x = gb.op("Add", [x, x])
    return [gb.op("Mul", [_expand_back(gb, node, dys[0]), two_x])]


def _log_sum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    ratio = gb.op("Div", [dys[0], gb.op("Exp", [node.outputs[0]])])  # dy / sum(x)
    return [_expand_back(gb, node, ratio)]


def _log_sum_exp_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x = node.inputs[0]
    soft = gb.op("Exp", [gb.op("Sub", [x, _keepdims(gb, node, node.outputs[0])])])
    return [gb.op("Mul", [_expand_back(gb, node, dys[0]), soft])]


def _logsumexp(x: Arr, axes: tuple[int, ...], keep: bool) -> Arr:
    if not axes:
        return x
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


def _lowest(dt: np.dtype) -> Any:
    """The identity of max: what ReduceMax gives over an empty set (ONNX)."""
    if dt == np.bool_:
        return False
    return -np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).min


def _highest(dt: np.dtype) -> Any:
    if dt == np.bool_:
        return True
    return np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).max


_REDUCE: tuple[tuple[str, Callable[..., Any], Any, Any, str | None], ...] = (
    ("ReduceSum", lambda x, ax, k: np.sum(x, axis=ax, keepdims=k), _reduce_work(1), _sum_grad, None),
    ("ReduceMean", lambda x, ax, k: np.sum(x, axis=ax, keepdims=k) / math.prod(x.shape[a] for a in ax),
     _reduce_work(1, 1), _mean_grad, None),
    ("ReduceMax", lambda x, ax, k: np.max(x, axis=ax, keepdims=k, initial=_lowest(x.dtype)), _reduce_work(1),
     _extremum_grad, None),
    ("ReduceMin", lambda x, ax, k: np.min(x, axis=ax, keepdims=k, initial=_highest(x.dtype)), _reduce_work(1),
     _extremum_grad, None),
    ("ReduceProd", lambda x, ax, k: np.prod(x, axis=ax, keepdims=k), _reduce_work(1), _prod_grad,
     "gradient assumes nonzero inputs"),
    ("ReduceL1", lambda x, ax, k: np.sum(np.abs(x), axis=ax, keepdims=k), _reduce_work(2), _l1_grad, None),
    ("ReduceL2", lambda x, ax, k: np.sqrt(np.sum(np.square(x), axis=ax, keepdims=k)),
     _reduce_work(2, 1, 0, 1), _l2_grad, None),
    ("ReduceSumSquare", lambda x, ax, k: np.sum(np.square(x), axis=ax, keepdims=k), _reduce_work(2),
     _sum_square_grad, None),
    ("ReduceLogSum", lambda x, ax, k: np.log(np.sum(x, axis=ax, keepdims=k)), _reduce_work(1, 1, 0, 1),
     _log_sum_grad, None),
    ("ReduceLogSumExp", _logsumexp, _reduce_work(4, 2, 1, 1), _log_sum_exp_grad, None),
)

for _name, _fn, _work, _grad, _note in _REDUCE:
    defop(
        _name,
        infer=_reduce_infer if _name in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                         "ReduceSumSquare", "ReduceMean") else _float_reduce_infer,
        work=_work,
        kernel=_reducer(_fn),
        grad=_grad,
        doc="attrs: axes (default: all), keepdims=1, noop_with_empty_axes=0 (then nothing is "
            "reduced and only the elementwise part applies)." + (f" Note: {_note}." if _note else ""),
    )


def _extremum_grad_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, x, y = xs
    hit = x == y
    count = np.sum(hit, axis=tuple(i for i in range(x.ndim) if y.shape[i] == 1 and x.shape[i] != 1),
                   keepdims=True)
    return [np.where(hit, dy / np.maximum(count, 1), 0).astype(dy.dtype)]


def _extremum_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    """3 FLOP per element of x (the output's shape; dy and y are the reduced size)."""
    r, w = io_bytes(ins, outs)
    return Work(flops=3 * outs[0].numel, bytes_read=r, bytes_written=w)


defop(
    "ReduceExtremumGrad",
    infer=lambda specs, attrs: [need(specs, 3, "ReduceExtremumGrad")[1]],
    work=_extremum_grad_work,
    kernel=_extremum_grad_kernel,
    no_grad="backward op",
    doc="(dy, x, y), dy and y in keepdims form: dy shared equally among the inputs equal to y "
        "(ReduceMax and ReduceMin).",
)

# --------------------------------------------------------------------------- ArgMax, ArgMin


def _arg_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "ArgMax/ArgMin")
    axis = norm_axis(int(attrs.get("axis", 0)), x.rank)
    return [TensorSpec(reduced_shape(x.shape, (axis,), _keep(attrs)), "int64")]


def _arg_kernel(fn: Callable[..., Any]):
    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        x = xs[0]
        axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
        if int(attrs.get("select_last_index", 0)):
            flipped = np.flip(x, axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis, keepdims=True)
        else:
            idx = fn(x, axis=axis, keepdims=True)
        if not _keep(attrs):
            idx = np.squeeze(idx, axis=axis)
        return [np.asarray(idx, dtype=np.int64)]

    return kernel


for _name, _afn in (("ArgMax", np.argmax), ("ArgMin", np.argmin)):
    defop(
        _name,
        infer=_arg_infer,
        work=_reduce_work(1),
        kernel=_arg_kernel(_afn),
        no_grad="integer output",
        doc="attrs: axis=0, keepdims=1, select_last_index=0.",
    )

# --------------------------------------------------------------------------- Softmax family


def _axis(attrs: Attrs, rank: int) -> int:
    return norm_axis(int(attrs.get("axis", -1)), rank)


def _softmax(x: Arr, axis: int) -> Arr:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: Arr, axis: int) -> Arr:
    s = x - np.max(x, axis=axis, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _row_work(per_elem: float, trans_elem: float, per_row: float = 0.0, trans_row: float = 0.0):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
        x = outs[0]
        n = x.numel
        rows = n // x.shape[_axis(attrs, x.rank)] if x.rank and x.numel else n
        r, w = io_bytes(ins, outs)
        return Work(flops=per_elem * n + per_row * rows, transcendentals=trans_elem * n + trans_row * rows,
                    bytes_read=r, bytes_written=w, rows=rows, kernel="softmax")

    return work


def _softmax_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Softmax")
    if not is_float(x.dtype):
        raise GraphError(f"needs a float input, got {x.dtype}")
    _axis(attrs, x.rank)
    return [x]


def _axis_kernel(fn: Callable[[Arr, int], Arr]):
    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        x = xs[0]
        if x.ndim == 0:
            return [np.asarray(fn(x.reshape(1), 0).reshape(()), dtype=x.dtype)]
        return [np.asarray(fn(x, _axis(attrs, x.ndim))).astype(x.dtype)]

    return kernel


defop(
    "Softmax",
    infer=_softmax_infer,
    work=_row_work(5, 1),
    kernel=_axis_kernel(_softmax),
    grad=lambda gb, node, dys: [gb.op("SoftmaxGrad", [dys[0], node.outputs[0]], **node.attrs)],
    doc="attrs: axis=-1 (opset 13: normalise along one axis).",
)

defop(
    "LogSoftmax",
    infer=_softmax_infer,
    work=_row_work(5, 1, 1, 1),
    kernel=_axis_kernel(_log_softmax),
    grad=lambda gb, node, dys: [gb.op("LogSoftmaxGrad", [dys[0], node.outputs[0]], **node.attrs)],
    doc="attrs: axis=-1.",
)


def _hardmax(x: Arr, axis: int) -> Arr:
    idx = np.argmax(x, axis=axis, keepdims=True)
    out = np.zeros_like(x)
    np.put_along_axis(out, idx, 1, axis=axis)
    return out


defop(
    "Hardmax",
    infer=_softmax_infer,
    work=_row_work(1, 0),
    kernel=_axis_kernel(_hardmax),
    grad=lambda gb, node, dys: [None],
    doc="attrs: axis=-1; one-hot of the first maximum. Piecewise constant: zero gradient.",
)


def _softmax_grad(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, y = xs
    axis = _axis(attrs, y.ndim) if y.ndim else None
    dot = np.sum(dy * y, axis=axis, keepdims=True)
    return [np.asarray(y * (dy - dot)).astype(dy.dtype)]


def _log_softmax_grad(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, y = xs
    axis = _axis(attrs, y.ndim) if y.ndim else None
    return [np.asarray(dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)).astype(dy.dtype)]


defop(
    "SoftmaxGrad",
    infer=lambda specs, attrs: [need(specs, 2, "SoftmaxGrad")[0]],
    work=_row_work(4, 0),
    kernel=_softmax_grad,
    no_grad="backward op",
    doc="(dy, y) -> y * (dy - sum(dy * y, axis)); attrs: axis.",
)

defop(
    "LogSoftmaxGrad",
    infer=lambda specs, attrs: [need(specs, 2, "LogSoftmaxGrad")[0]],
    work=_row_work(4, 1),
    kernel=_log_softmax_grad,
    no_grad="backward op",
    doc="(dy, y) -> dy - exp(y) * sum(dy, axis); attrs: axis.",
)

# --------------------------------------------------------------------------- CumSum


def _cumsum_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "CumSum")
    norm_axis(int(attrs.get("axis", 0)), x.rank)
    return [x]


def _cumsum(xs: list[Any], attrs: Attrs) -> list[Arr]:
    x = xs[0]
    if x.ndim == 0:
        return [np.zeros_like(x) if int(attrs.get("exclusive", 0)) else np.array(x)]
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    rev = bool(int(attrs.get("reverse", 0)))
    v = np.flip(x, axis) if rev else x
    c = np.cumsum(v, axis=axis, dtype=x.dtype)
    if int(attrs.get("exclusive", 0)):
        c = c - v
    return [np.ascontiguousarray(np.flip(c, axis) if rev else c)]


def _cumsum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    attrs = dict(node.attrs)
    attrs["reverse"] = 0 if int(attrs.get("reverse", 0)) else 1
    return [gb.op("CumSum", [dys[0]], **attrs)]


defop(
    "CumSum",
    infer=_cumsum_infer,
    work=_reduce_work(1),
    kernel=_cumsum,
    grad=_cumsum_grad,
    doc="attrs: axis=0 (an input in ONNX), exclusive=0, reverse=0.",
)
