"""Elementwise ops: arithmetic with broadcasting and activations."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph.tensor import TensorSpec
from sim.ops.common import broadcast_shapes, elementwise_work, need, same_as_first
from sim.ops.registry import defop


def _binary_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    a, b = need(specs, 2, "binary op")
    if a.dtype != b.dtype:
        raise GraphError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorSpec(broadcast_shapes(a.shape, b.shape), a.dtype)]


def _add_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    return [gb.unbroadcast(dy, gb.spec(a).shape), gb.unbroadcast(dy, gb.spec(b).shape)]


defop(
    "Add",
    infer=_binary_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.add(xs[0], xs[1])],
    grad=_add_grad,
)


def _relu_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [gb.op("ReluGrad", [dys[0], node.outputs[0]])]


defop(
    "Relu",
    infer=same_as_first,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.maximum(xs[0], 0).astype(xs[0].dtype)],
    grad=_relu_grad,
)

defop(
    "ReluGrad",
    infer=lambda specs, attrs: [need(specs, 2, "ReluGrad")[0]],
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.where(xs[1] > 0, xs[0], 0).astype(xs[0].dtype)],
    no_grad="backward op",
    doc="dx = dy where y > 0 else 0; inputs (dy, y).",
)


def _sub_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    return [gb.unbroadcast(dy, gb.spec(a).shape), gb.unbroadcast(gb.op("Neg", [dy]), gb.spec(b).shape)]


defop(
    "Sub",
    infer=_binary_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.subtract(xs[0], xs[1])],
    grad=_sub_grad,
)


def _mul_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    return [gb.unbroadcast(gb.op("Mul", [dy, b]), gb.spec(a).shape),
            gb.unbroadcast(gb.op("Mul", [dy, a]), gb.spec(b).shape)]


defop(
    "Mul",
    infer=_binary_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.multiply(xs[0], xs[1])],
    grad=_mul_grad,
)

defop(
    "Neg",
    infer=same_as_first,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.negative(xs[0])],
    grad=lambda gb, node, dys: [gb.op("Neg", [dys[0]])],
)
