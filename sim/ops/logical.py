"""Comparisons, boolean logic, NaN/Inf tests and Where.

Comparisons and logic ops broadcast multidirectionally and produce ``bool``; each costs
1 FLOP per output element (a compare or a bit op). Where costs 1 FLOP (a select) per output
element and is the only differentiable op here (for its two value inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, elementwise_work, need
from sim.ops.registry import add_traits, defop, registered_count, registered_since
from sim.tensor import TensorSpec

_FIRST = registered_count()  # this module's ops are the ones registered after the mark

Attrs = dict[str, Any]


def _compare_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    a, b = need(specs, 2, "comparison")
    if a.dtype != b.dtype:
        raise GraphError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorSpec(broadcast_shapes(a.shape, b.shape), "bool")]


def _bool_infer(n: int):
    def infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
        xs = need(specs, n, "logic op")
        for s in xs:
            if s.dtype != "bool":
                raise GraphError(f"needs bool inputs, got {s.dtype}")
        return [TensorSpec(broadcast_shapes(*(s.shape for s in xs)), "bool")]

    return infer


def _binary_kernel(fn: Callable[[Any, Any], Any]):
    def kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
        return [np.asarray(fn(xs[0], xs[1]))]

    return kernel


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
}
_LOGIC: dict[str, Callable[[Any, Any], Any]] = {
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
}

for _name, _fn in _COMPARE.items():
    defop(_name, infer=_compare_infer, work=elementwise_work(1), kernel=_binary_kernel(_fn),
          no_grad="boolean output")

for _name, _fn in _LOGIC.items():
    defop(_name, infer=_bool_infer(2), work=elementwise_work(1), kernel=_binary_kernel(_fn),
          no_grad="boolean op")

defop(
    "Not",
    infer=_bool_infer(1),
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.logical_not(xs[0])],
    no_grad="boolean op",
)


def _float_test_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "IsNaN/IsInf")
    if not is_float(x.dtype):
        raise GraphError(f"needs a float input, got {x.dtype}")
    return [x.with_dtype("bool")]


def _isinf(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    pos = bool(int(attrs.get("detect_positive", 1)))
    neg = bool(int(attrs.get("detect_negative", 1)))
    return [np.isinf(x) & (((x > 0) & pos) | ((x < 0) & neg))]


defop(
    "IsNaN",
    infer=_float_test_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.isnan(xs[0])],
    no_grad="boolean output",
)

defop(
    "IsInf",
    infer=_float_test_infer,
    work=elementwise_work(1),
    kernel=_isinf,
    no_grad="boolean output",
    doc="attrs: detect_positive=1, detect_negative=1.",
)

# --------------------------------------------------------------------------- Where


def _where_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    c, x, y = need(specs, 3, "Where")
    if c.dtype != "bool":
        raise GraphError(f"Where condition must be bool, got {c.dtype}")
    if x.dtype != y.dtype:
        raise GraphError(f"operand dtypes differ: {x.dtype} and {y.dtype}")
    return [x.with_shape(broadcast_shapes(c.shape, x.shape, y.shape))]


def _where_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    c, x, y = node.inputs
    zero = gb.const(0.0, gb.spec(dy).dtype)
    dx = gb.op("Where", [c, dy, zero])
    dyy = gb.op("Where", [c, zero, dy])
    return [None, gb.unbroadcast(dx, gb.spec(x).shape), gb.unbroadcast(dyy, gb.spec(y).shape)]


defop(
    "Where",
    infer=_where_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.asarray(np.where(xs[0], xs[1], xs[2])).astype(xs[1].dtype)],
    grad=_where_grad,
    doc="(condition, x, y) -> x where condition else y, broadcasting all three.",
)

add_traits("elementwise", *registered_since(_FIRST))
