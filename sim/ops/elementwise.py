"""Elementwise ops: arithmetic with broadcasting, activations, math functions.

Binary and variadic ops broadcast multidirectionally (ONNX/NumPy). Each differentiable unary
op ``X`` has a backward op ``XGrad`` taking ``(dy, t)`` where ``t`` is the forward input, or
the forward output for ops whose derivative is cheapest from it (Exp, Sqrt, Sigmoid, Tanh,
Tan, Reciprocal, Relu); it computes ``dy * f'(t)`` in one pass, as fused backward kernels do.

FLOP conventions, per output element (a transcendental also counts 1 FLOP). ``work`` uses
these numbers and ``tests/test_ops_elementwise.py`` checks every row against it; with ``k``
inputs, Max/Min/Sum cost ``k-1`` and Mean ``k`` FLOPs, and MaxMinGrad ``k+1``.

============================================  ====  =====  ======================================
op                                            FLOP  trans  counted as
============================================  ====  =====  ======================================
Add Sub Mul Div Neg Abs Relu Sign             1     0      one arithmetic op, compare or select
Floor Ceil Round BitShift Mod                 1     0
Sqrt Reciprocal Exp Log Erf Tanh Pow          1     1      one transcendental
Sin Cos Tan Asin Acos Atan                    1     1
Sinh Cosh Asinh Acosh Atanh                   1     1
LeakyRelu PRelu ThresholdedRelu Clip          2     0      compare and select/scale (or min, max)
Sigmoid                                       4     1      neg, exp, add, divide
Softsign                                      3     0      abs, add, divide
Softplus                                      3     2      exp, add, log
HardSigmoid                                   4     0      mul, add, min, max
HardSwish                                     5     0      HardSigmoid and a multiply
Elu                                           4     1      exp, sub, mul, select
Selu                                          5     1      Elu and a scale
Celu                                          7     1      div, exp, sub, mul, min, max, add
Mish                                          5     3      exp, add, log, tanh, mul
Gelu                                          5     1      scale, erf, add, mul, mul
Gelu(approximate=tanh)                        9     1      cube (2), fma (2), scale, tanh, +, *, *
ReluGrad ThresholdedReluGrad ExpGrad          1     0      select, or the multiply by dy
LeakyReluGrad LogGrad AbsGrad SqrtGrad        2     0      derivative and the multiply by dy
SigmoidGrad TanhGrad ReciprocalGrad           3     0      y(1-y), 1-y^2, -y^2 and the multiply
TanGrad                                       3     0      1+y^2 and the multiply
AtanGrad AtanhGrad                            4     0      square, add/sub, divide, multiply
AsinGrad AcosGrad AsinhGrad AcoshGrad         5     1      square, sub, sqrt, divide, multiply
SinGrad CosGrad SinhGrad CoshGrad             2     1      the derivative's transcendental
SoftsignGrad HardSigmoidGrad HardSwishGrad    5     0
SoftplusGrad                                  5     1      sigmoid and the multiply
EluGrad CeluGrad                              4     1
SeluGrad ErfGrad                              5     1      (Erf: square, neg, exp, scale, mul)
MishGrad                                      10    3
GeluGrad                                      11    2      cdf (erf) + x * pdf (exp)
GeluGrad(approximate=tanh)                    17    1
PowGrad                                       6     2      both operand gradients
PReluGrad                                     4     0      both operand gradients
ClipGrad                                      2     0      two compares and a select
============================================  ====  =====  ======================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, elementwise_work, io_bytes, need, same_as_first
from sim.ops.registry import add_traits, defop, registered_count, registered_since
from sim.ops.work import Work
from sim.tensor import TensorSpec

_FIRST = registered_count()  # this module's ops are the ones registered after the mark

Arr = np.ndarray
Attrs = dict[str, Any]

def erf(x: Arr) -> Arr:
    """The error function, elementwise, keeping the input's float dtype.

    scipy's vectorised erf, imported on first use: ``import scipy.special`` costs more than the
    whole op library, and only the Erf and exact Gelu kernels need it."""
    from scipy.special import erf as erf_impl  # type: ignore[import-untyped]

    return np.asarray(erf_impl(x)).astype(x.dtype, copy=False)


def _binary_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    a, b = need(specs, 2, "binary op")
    if a.dtype != b.dtype:
        raise GraphError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorSpec(broadcast_shapes(a.shape, b.shape), a.dtype)]


def _grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, t = need(specs, 2, "backward op")
    return [dy.with_shape(broadcast_shapes(dy.shape, t.shape))]


def _like(v: Any, x: Arr) -> Arr:
    return np.asarray(v).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- Add, Sub, Mul, Div


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


def _div(a: Arr, b: Arr) -> Arr:
    if np.issubdtype(a.dtype, np.integer):  # C-style: truncate toward zero
        q = np.floor_divide(a, b)
        return q + ((np.remainder(a, b) != 0) & ((a < 0) ^ (b < 0))).astype(q.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):  # x/0 -> inf, 0/0 -> nan (IEEE)
        return np.divide(a, b)


def _div_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    (y,) = node.outputs
    da = gb.op("Div", [dy, b])
    db = gb.op("Neg", [gb.op("Div", [gb.op("Mul", [dy, y]), b])])  # -dy * a / b^2
    return [gb.unbroadcast(da, gb.spec(a).shape), gb.unbroadcast(db, gb.spec(b).shape)]


defop(
    "Div",
    infer=_binary_infer,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [_div(xs[0], xs[1])],
    grad=_div_grad,
    doc="Integer division truncates toward zero (ONNX).",
)

# --------------------------------------------------------------------------- Pow, Mod, BitShift


def _pow_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    a, b = need(specs, 2, "Pow")
    return [a.with_shape(broadcast_shapes(a.shape, b.shape))]


def _pow(a: Arr, b: Arr) -> Arr:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(a, b.astype(a.dtype)).astype(a.dtype)


def _pow_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    a, b = node.inputs
    da, db = gb.op("PowGrad", [dys[0], a, b], n_out=2)
    grad_b = gb.unbroadcast(db, gb.spec(b).shape) if is_float(gb.spec(b).dtype) else None
    return [gb.unbroadcast(da, gb.spec(a).shape), grad_b]


defop(
    "Pow",
    infer=_pow_infer,
    work=elementwise_work(1, 1),
    kernel=lambda xs, attrs: [_pow(xs[0], xs[1])],
    grad=_pow_grad,
    doc="The exponent may have another dtype (ONNX T1); the output has the base's dtype.",
)


def _pow_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    dy, a, b = need(specs, 3, "PowGrad")
    s = dy.with_shape(broadcast_shapes(dy.shape, a.shape, b.shape))
    return [s, s]


def _pow_grad_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, a, b = xs
    b = b.astype(a.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        da = dy * b * np.power(a, b - 1)
        safe = np.where(a > 0, a, 1)
        db = np.where(a > 0, dy * np.power(a, b) * np.log(safe), 0)
    return [_like(da, dy), _like(db, dy)]


defop(
    "PowGrad",
    infer=_pow_grad_infer,
    work=elementwise_work(6, 2),
    kernel=_pow_grad_kernel,
    no_grad="backward op",
    doc="(dy, a, b) -> (dy*b*a^(b-1), dy*a^b*log a); the exponent gradient is 0 where a <= 0.",
)


def _mod(xs: list[Any], attrs: Attrs) -> list[Arr]:
    a, b = xs
    with np.errstate(divide="ignore", invalid="ignore"):
        return [np.fmod(a, b) if int(attrs.get("fmod", 0)) else np.mod(a, b)]


def _mod_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    q = gb.op("Div", [a, b])
    if int(node.attrs.get("fmod", 0)):  # C fmod truncates the quotient: sign(q) * floor(|q|)
        q = gb.op("Mul", [gb.op("Sign", [q]), gb.op("Floor", [gb.op("Abs", [q])])])
    else:  # Python-style mod floors it
        q = gb.op("Floor", [q])
    db = gb.op("Neg", [gb.op("Mul", [dy, q])])
    return [gb.unbroadcast(dy, gb.spec(a).shape), gb.unbroadcast(db, gb.spec(b).shape)]


defop(
    "Mod",
    infer=_binary_infer,
    work=elementwise_work(1),
    kernel=_mod,
    grad=_mod_grad,
    doc="fmod=0: the result has the divisor's sign (Python %); fmod=1: C fmod (the dividend's sign).",
)


def _bitshift(xs: list[Any], attrs: Attrs) -> list[Arr]:
    a, b = xs
    direction = str(attrs.get("direction", "")).upper()
    if direction == "LEFT":
        return [np.left_shift(a, b)]
    if direction == "RIGHT":
        return [np.right_shift(a, b)]
    raise GraphError(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")


def _bitshift_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (out,) = _binary_infer(specs, attrs)
    if out.dtype not in ("uint8", "int8", "int16", "int32", "int64"):
        raise GraphError(f"BitShift needs an integer input, got {out.dtype}")
    if str(attrs.get("direction", "")).upper() not in ("LEFT", "RIGHT"):
        raise GraphError("BitShift needs direction LEFT or RIGHT")
    return [out]


defop(
    "BitShift",
    infer=_bitshift_infer,
    work=elementwise_work(1),
    kernel=_bitshift,
    no_grad="integer op",
    doc="attrs: direction (LEFT | RIGHT).",
)

# --------------------------------------------------------------------------- Neg, Relu


defop(
    "Neg",
    infer=same_as_first,
    work=elementwise_work(1),
    kernel=lambda xs, attrs: [np.negative(xs[0])],
    grad=lambda gb, node, dys: [gb.op("Neg", [dys[0]])],
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

# --------------------------------------------------------------------------- unary table


@dataclass(frozen=True)
class Unary:
    """A unary elementwise op and (optionally) its backward op ``<name>Grad``."""

    name: str
    fn: Callable[[Arr, Attrs], Any]
    flops: float
    trans: float = 0.0
    deriv: Callable[[Arr, Attrs], Any] | None = None  # f'(t), t the input ("x") or output ("y")
    uses: str = "x"
    grad_flops: float = 2.0
    grad_trans: float = 0.0
    ints: bool = False  # integer inputs allowed (ONNX)
    zero_grad: bool = False  # piecewise constant: the gradient is zero almost everywhere
    doc: str = ""
    work: Callable[..., Work] | None = None  # overrides flops/trans (attribute-dependent work)
    grad_work: Callable[..., Work] | None = None


def _sigmoid(x: Arr) -> Arr:
    # overflow-free in both directions
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: Arr) -> Arr:
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


def _gelu(x: Arr, attrs: Attrs) -> Arr:
    if _gelu_mode(attrs) == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2.0)))


def _gelu_deriv(x: Arr, attrs: Attrs) -> Arr:
    if _gelu_mode(attrs) == "tanh":
        t = np.tanh(_SQRT_2_PI * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_PI * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + erf(x / math.sqrt(2.0)))
    return cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu_mode(attrs: Attrs) -> str:
    mode = str(attrs.get("approximate", "none"))
    if mode not in ("none", "tanh"):
        raise GraphError(f"Gelu approximate must be 'none' or 'tanh', got {mode!r}")
    return mode


def _gelu_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    tanh = _gelu_mode(attrs) == "tanh"
    return elementwise_work(9 if tanh else 5, 1)(ins, outs, attrs)


def _gelu_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    tanh = _gelu_mode(attrs) == "tanh"
    return elementwise_work(17 if tanh else 11, 1 if tanh else 2)(ins, outs, attrs)



def _a(attrs: Attrs, default: float) -> float:
    return float(attrs.get("alpha", default))


def _hard_sigmoid(x: Arr, attrs: Attrs) -> Arr:
    return np.clip(_a(attrs, 0.2) * x + float(attrs.get("beta", 0.5)), 0, 1)


def _mish_deriv(x: Arr, attrs: Attrs) -> Arr:
    t = np.tanh(_softplus(x))
    return t + x * _sigmoid(x) * (1 - t * t)


UNARY: tuple[Unary, ...] = (
    Unary("Abs", lambda x, a: np.abs(x), 1, deriv=lambda x, a: np.sign(x), ints=True),
    Unary("Sqrt", lambda x, a: np.sqrt(x), 1, 1, lambda y, a: 0.5 / y, "y"),
    Unary("Reciprocal", lambda x, a: 1 / x, 1, 1, lambda y, a: -y * y, "y", 3),
    Unary("Exp", lambda x, a: np.exp(x), 1, 1, lambda y, a: y, "y", 1),
    Unary("Log", lambda x, a: np.log(x), 1, 1, lambda x, a: 1 / x),
    Unary("Erf", lambda x, a: erf(x), 1, 1,
          lambda x, a: 2 / math.sqrt(math.pi) * np.exp(-x * x), grad_flops=5, grad_trans=1),
    Unary("Gelu", _gelu, 5, 1, _gelu_deriv, doc="attrs: approximate = none | tanh (ONNX opset 20).",
          work=_gelu_work, grad_work=_gelu_grad_work),
    Unary("Sigmoid", lambda x, a: _sigmoid(x), 4, 1, lambda y, a: y * (1 - y), "y", 3),
    Unary("Tanh", lambda x, a: np.tanh(x), 1, 1, lambda y, a: 1 - y * y, "y", 3),
    Unary("Softplus", lambda x, a: _softplus(x), 3, 2, lambda x, a: _sigmoid(x), grad_flops=5,
          grad_trans=1),
    Unary("Softsign", lambda x, a: x / (1 + np.abs(x)), 3, 0,
          lambda x, a: 1 / (1 + np.abs(x)) ** 2, grad_flops=5),
    Unary("LeakyRelu", lambda x, a: np.where(x >= 0, x, _a(a, 0.01) * x), 2, 0,
          lambda x, a: np.where(x >= 0, 1, _a(a, 0.01)), doc="attrs: alpha=0.01."),
    Unary("Elu", lambda x, a: np.where(x > 0, x, _a(a, 1.0) * np.expm1(np.minimum(x, 0))), 4, 1,
          lambda x, a: np.where(x > 0, 1, _a(a, 1.0) * np.exp(np.minimum(x, 0))), grad_flops=4,
          grad_trans=1, doc="attrs: alpha=1."),
    Unary("Selu", lambda x, a: float(a.get("gamma", _SELU_GAMMA))
          * np.where(x > 0, x, _a(a, _SELU_ALPHA) * np.expm1(np.minimum(x, 0))), 5, 1,
          lambda x, a: float(a.get("gamma", _SELU_GAMMA))
          * np.where(x > 0, 1, _a(a, _SELU_ALPHA) * np.exp(np.minimum(x, 0))), grad_flops=5,
          grad_trans=1, doc="attrs: alpha=1.6733, gamma=1.0507."),
    Unary("Celu", lambda x, a: np.maximum(x, 0)
          + np.minimum(0, _a(a, 1.0) * np.expm1(np.minimum(x, 0) / _a(a, 1.0))), 7, 1,
          lambda x, a: np.where(x > 0, 1, np.exp(np.minimum(x, 0) / _a(a, 1.0))), grad_flops=4,
          grad_trans=1, doc="attrs: alpha=1."),
    Unary("HardSigmoid", _hard_sigmoid, 4, 0,
          lambda x, a: np.where(np.abs(_hard_sigmoid(x, a) - 0.5) < 0.5, _a(a, 0.2), 0),
          grad_flops=5, doc="attrs: alpha=0.2, beta=0.5."),
    Unary("HardSwish", lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1), 5, 0,
          lambda x, a: np.where(x > 3, 1.0, np.where(x < -3, 0.0, x / 3 + 0.5)), grad_flops=5),
    Unary("Mish", lambda x, a: x * np.tanh(_softplus(x)), 5, 3, _mish_deriv, grad_flops=10,
          grad_trans=3),
    Unary("ThresholdedRelu", lambda x, a: np.where(x > _a(a, 1.0), x, 0), 2, 0,
          lambda x, a: (x > _a(a, 1.0)), grad_flops=1, doc="attrs: alpha=1."),
    Unary("Floor", lambda x, a: np.floor(x), 1, zero_grad=True),
    Unary("Ceil", lambda x, a: np.ceil(x), 1, zero_grad=True),
    Unary("Round", lambda x, a: np.round(x), 1, zero_grad=True, doc="Halves round to even."),
    Unary("Sign", lambda x, a: np.sign(x), 1, ints=True, zero_grad=True),
    Unary("Sin", lambda x, a: np.sin(x), 1, 1, lambda x, a: np.cos(x), grad_trans=1),
    Unary("Cos", lambda x, a: np.cos(x), 1, 1, lambda x, a: -np.sin(x), grad_trans=1),
    Unary("Tan", lambda x, a: np.tan(x), 1, 1, lambda y, a: 1 + y * y, "y", 3),
    Unary("Asin", lambda x, a: np.arcsin(x), 1, 1, lambda x, a: 1 / np.sqrt(1 - x * x),
          grad_flops=5, grad_trans=1),
    Unary("Acos", lambda x, a: np.arccos(x), 1, 1, lambda x, a: -1 / np.sqrt(1 - x * x),
          grad_flops=5, grad_trans=1),
    Unary("Atan", lambda x, a: np.arctan(x), 1, 1, lambda x, a: 1 / (1 + x * x), grad_flops=4),
    Unary("Sinh", lambda x, a: np.sinh(x), 1, 1, lambda x, a: np.cosh(x), grad_trans=1),
    Unary("Cosh", lambda x, a: np.cosh(x), 1, 1, lambda x, a: np.sinh(x), grad_trans=1),
    Unary("Asinh", lambda x, a: np.arcsinh(x), 1, 1, lambda x, a: 1 / np.sqrt(x * x + 1),
          grad_flops=5, grad_trans=1),
    Unary("Acosh", lambda x, a: np.arccosh(x), 1, 1, lambda x, a: 1 / np.sqrt(x * x - 1),
          grad_flops=5, grad_trans=1),
    Unary("Atanh", lambda x, a: np.arctanh(x), 1, 1, lambda x, a: 1 / (1 - x * x), grad_flops=4),
)


def _unary_infer(u: Unary):
    def infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
        (x,) = need(specs, 1, u.name)
        if not u.ints and not is_float(x.dtype):
            raise GraphError(f"{u.name} needs a float input, got {x.dtype}")
        if u.name == "Gelu":
            _gelu_mode(attrs)
        return [x]

    return infer


def _unary_kernel(u: Unary):
    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        x = xs[0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [_like(u.fn(x, attrs), x)]

    return kernel


def _unary_grad_rule(u: Unary):
    def grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
        if u.zero_grad:
            return [None]
        t = node.inputs[0] if u.uses == "x" else node.outputs[0]
        return [gb.op(f"{u.name}Grad", [dys[0], t], **node.attrs)]

    return grad


def _unary_grad_kernel(u: Unary):
    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        dy, t = xs
        assert u.deriv is not None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [_like(dy * u.deriv(t, attrs), dy)]

    return kernel


for _u in UNARY:
    defop(
        _u.name,
        infer=_unary_infer(_u),
        work=_u.work or elementwise_work(_u.flops, _u.trans),
        kernel=_unary_kernel(_u),
        grad=_unary_grad_rule(_u) if (_u.deriv is not None or _u.zero_grad) else None,
        no_grad=None if (_u.deriv is not None or _u.zero_grad) else "not differentiable",
        doc=_u.doc,
    )
    if _u.deriv is not None:
        defop(
            f"{_u.name}Grad",
            infer=_grad_infer,
            work=_u.grad_work or elementwise_work(_u.grad_flops, _u.grad_trans),
            kernel=_unary_grad_kernel(_u),
            no_grad="backward op",
            doc=f"dx = dy * {_u.name}'(x), inputs (dy, {_u.uses}) ({_u.uses} = forward {_u.uses}).",
        )


# --------------------------------------------------------------------------- PRelu, Clip


def _prelu_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    x, slope = need(specs, 2, "PRelu")
    if x.dtype != slope.dtype:
        raise GraphError(f"operand dtypes differ: {x.dtype} and {slope.dtype}")
    return [x.with_shape(broadcast_shapes(x.shape, slope.shape))]


def _prelu_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x, slope = node.inputs
    dx, ds = gb.op("PReluGrad", [dys[0], x, slope], n_out=2)
    return [gb.unbroadcast(dx, gb.spec(x).shape), gb.unbroadcast(ds, gb.spec(slope).shape)]


defop(
    "PRelu",
    infer=_prelu_infer,
    work=elementwise_work(2),
    kernel=lambda xs, attrs: [np.where(xs[0] < 0, xs[1] * xs[0], xs[0]).astype(xs[0].dtype)],
    grad=_prelu_grad,
    doc="y = x if x >= 0 else slope * x; slope broadcasts to x.",
)


def _prelu_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    dy, x, s = need(specs, 3, "PReluGrad")
    out = dy.with_shape(broadcast_shapes(dy.shape, x.shape, s.shape))
    return [out, out]


def _prelu_grad_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, x, s = xs
    neg = x < 0
    return [_like(dy * np.where(neg, s, 1), dy), _like(np.where(neg, dy * x, 0), dy)]


defop(
    "PReluGrad",
    infer=_prelu_grad_infer,
    work=elementwise_work(4),
    kernel=_prelu_grad_kernel,
    no_grad="backward op",
    doc="(dy, x, slope) -> (dx, dslope before reducing over broadcast axes).",
)


def _clip_bounds(xs: list[Any], attrs: Attrs) -> tuple[Any, Any]:
    lo = xs[1] if len(xs) > 1 and xs[1] is not None else attrs.get("min")
    hi = xs[2] if len(xs) > 2 and xs[2] is not None else attrs.get("max")
    return lo, hi


def _clip_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Clip")
    for s in specs[1:3]:
        if s is not None and s.numel != 1:
            raise GraphError(f"Clip bounds must be scalars, got shape {s.shape}")
    return [x]


def _clip_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    x = xs[0]
    lo, hi = _clip_bounds(xs, attrs)
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype).reshape(()))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype).reshape(()))
    return [np.array(y, dtype=x.dtype)]


def _clip_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dx = gb.op("ClipGrad", [dys[0], *node.inputs], **node.attrs)
    return [dx] + [None] * (len(node.inputs) - 1)


defop(
    "Clip",
    infer=_clip_infer,
    work=elementwise_work(2),
    kernel=_clip_kernel,
    grad=_clip_grad,
    doc="min/max as optional scalar inputs or attributes; no gradient flows to the bounds.",
)


def _clip_grad_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, x = xs[0], xs[1]
    lo, hi = _clip_bounds(xs[1:], attrs)
    keep = np.ones(x.shape, dtype=bool)
    if lo is not None:
        keep &= x >= np.asarray(lo).reshape(())
    if hi is not None:
        keep &= x <= np.asarray(hi).reshape(())
    return [_like(np.where(keep, dy, 0), dy)]


defop(
    "ClipGrad",
    infer=lambda specs, attrs: [need(specs, 2, "ClipGrad")[0]],
    work=elementwise_work(2),
    kernel=_clip_grad_kernel,
    no_grad="backward op",
    doc="(dy, x, [min], [max]) -> dy where min <= x <= max else 0.",
)

# --------------------------------------------------------------------------- Max Min Sum Mean


def _variadic_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    xs = [s for s in specs if s is not None]
    if not xs:
        raise GraphError("needs at least one input")
    if len({s.dtype for s in xs}) > 1:
        raise GraphError(f"operand dtypes differ: {sorted({s.dtype for s in xs})}")
    return [xs[0].with_shape(broadcast_shapes(*(s.shape for s in xs)))]


def _variadic_work(extra: float):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
        k = len([s for s in ins if s is not None])
        return elementwise_work(k - 1 + extra)(ins, outs, attrs)

    return work


def _fold(fn: Callable[[Arr, Arr], Arr]):
    def kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
        arrs = [x for x in xs if x is not None]
        acc = arrs[0]
        for a in arrs[1:]:
            acc = fn(acc, a)
        shape = np.broadcast_shapes(*(a.shape for a in arrs))
        return [np.array(np.broadcast_to(acc, shape), dtype=arrs[0].dtype)]

    return kernel


def _sum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [gb.unbroadcast(dys[0], gb.spec(x).shape) for x in node.inputs]


def _mean_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    spec = gb.spec(dys[0])
    scaled = gb.op("Mul", [dys[0], gb.const(1.0 / len(node.inputs), spec.dtype)])
    return [gb.unbroadcast(scaled, gb.spec(x).shape) for x in node.inputs]


def _maxmin_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    k = len(node.inputs)
    outs = gb.op("MaxMinGrad", [dys[0], node.outputs[0], *node.inputs], n_out=k)
    outs = [outs] if k == 1 else list(outs)
    return [gb.unbroadcast(d, gb.spec(x).shape) for d, x in zip(outs, node.inputs)]


defop("Max", infer=_variadic_infer, work=_variadic_work(0), kernel=_fold(np.maximum), grad=_maxmin_grad)
defop("Min", infer=_variadic_infer, work=_variadic_work(0), kernel=_fold(np.minimum), grad=_maxmin_grad)
defop("Sum", infer=_variadic_infer, work=_variadic_work(0), kernel=_fold(np.add), grad=_sum_grad)


def _mean_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    (s,) = _fold(np.add)(xs, attrs)
    return [_like(s / len([x for x in xs if x is not None]), s)]


defop("Mean", infer=_variadic_infer, work=_variadic_work(1), kernel=_mean_kernel, grad=_mean_grad)


def _maxmin_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    dy = need(specs, 3, "MaxMinGrad")[0]
    return [dy] * (len(specs) - 2)


def _maxmin_grad_kernel(xs: list[Any], attrs: Attrs) -> list[Arr]:
    dy, y, *ins = xs
    taken = np.zeros(dy.shape, dtype=bool)
    outs = []
    for x in ins:
        hit = (np.broadcast_to(x, dy.shape) == y) & ~taken
        taken |= hit
        outs.append(_like(np.where(hit, dy, 0), dy))
    return outs


def _maxmin_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    k = len(ins) - 2
    n = outs[0].numel
    r, w = io_bytes(ins, outs)
    return Work(flops=(k + 1) * n, bytes_read=r, bytes_written=w)


defop(
    "MaxMinGrad",
    infer=_maxmin_grad_infer,
    work=_maxmin_grad_work,
    kernel=_maxmin_grad_kernel,
    no_grad="backward op",
    doc="(dy, y, x0..xk-1) -> k gradients: dy goes to the first input equal to y (Max or Min).",
)

add_traits("elementwise", *registered_since(_FIRST))
