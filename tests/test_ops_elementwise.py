"""Elementwise ops: values against onnx.reference, FLOP/byte hand counts, gradients."""

import math
import re

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError
from sim.ops import elementwise

# inputs kept away from kinks (0, +-1, +-2.5, +-3) and domain edges
BASE = np.array([[-2.7, -1.3, -0.6], [0.35, 0.9, 1.7]])
DOMAINS = {
    "any": BASE,
    "pos": np.abs(BASE) + 0.1,
    "unit": BASE / 3.0,
    "gt1": np.abs(BASE) + 1.2,
    "tan": BASE / 2.0,
}

# (op, attrs, domain)
UNARY = [
    ("Relu", {}, "any"),
    ("Neg", {}, "any"),
    ("Abs", {}, "any"),
    ("Sqrt", {}, "pos"),
    ("Reciprocal", {}, "any"),
    ("Exp", {}, "any"),
    ("Log", {}, "pos"),
    ("Erf", {}, "any"),
    ("Gelu", {}, "any"),
    ("Gelu", {"approximate": "tanh"}, "any"),
    ("Sigmoid", {}, "any"),
    ("Tanh", {}, "any"),
    ("Softplus", {}, "any"),
    ("Softsign", {}, "any"),
    ("LeakyRelu", {}, "any"),
    ("LeakyRelu", {"alpha": 0.3}, "any"),
    ("Elu", {"alpha": 0.7}, "any"),
    ("Selu", {}, "any"),
    ("Selu", {"alpha": 1.5, "gamma": 2.0}, "any"),
    ("Celu", {"alpha": 2.0}, "any"),
    ("HardSigmoid", {}, "any"),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.4}, "any"),
    ("HardSwish", {}, "any"),
    ("Mish", {}, "any"),
    ("ThresholdedRelu", {"alpha": 0.5}, "any"),
    ("Floor", {}, "any"),
    ("Ceil", {}, "any"),
    ("Round", {}, "any"),
    ("Sign", {}, "any"),
    ("Sin", {}, "any"),
    ("Cos", {}, "any"),
    ("Tan", {}, "tan"),
    ("Asin", {}, "unit"),
    ("Acos", {}, "unit"),
    ("Atan", {}, "any"),
    ("Sinh", {}, "any"),
    ("Cosh", {}, "any"),
    ("Asinh", {}, "any"),
    ("Acosh", {}, "gt1"),
    ("Atanh", {}, "unit"),
]
IDS = [f"{op}{'-' + '-'.join(map(str, a.values())) if a else ''}" for op, a, _ in UNARY]


@pytest.mark.parametrize(("op", "attrs", "dom"), UNARY, ids=IDS)
def test_unary_values_match_onnx(op, attrs, dom):
    x = DOMAINS[dom].astype(np.float32)
    for arr in (x, x.reshape(2, 1, 3), x[0, 1].reshape(())):  # size-1 dims and rank 0
        (y,) = run_op(op, [arr], attrs)
        # some onnx.reference kernels reject rank 0: evaluate those on a 1-vector
        ref = onnx_ref(op, [arr.reshape(arr.shape or (1,))], attrs)[0].reshape(arr.shape)
        assert y.shape == arr.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(("op", "attrs", "dom"), UNARY, ids=IDS)
def test_unary_gradients(op, attrs, dom):
    check_grad(op, [DOMAINS[dom]], attrs)


# backward ops tested directly against a central difference of the ONNX forward
GRAD_OPS = [
    ("ReluGrad", "Relu", {}, "any"),
    ("AbsGrad", "Abs", {}, "any"),
    ("SqrtGrad", "Sqrt", {}, "pos"),
    ("ReciprocalGrad", "Reciprocal", {}, "any"),
    ("ExpGrad", "Exp", {}, "any"),
    ("LogGrad", "Log", {}, "pos"),
    ("ErfGrad", "Erf", {}, "any"),
    ("GeluGrad", "Gelu", {}, "any"),
    ("GeluGrad", "Gelu", {"approximate": "tanh"}, "any"),
    ("SigmoidGrad", "Sigmoid", {}, "any"),
    ("TanhGrad", "Tanh", {}, "any"),
    ("SoftplusGrad", "Softplus", {}, "any"),
    ("SoftsignGrad", "Softsign", {}, "any"),
    ("LeakyReluGrad", "LeakyRelu", {}, "any"),
    ("LeakyReluGrad", "LeakyRelu", {"alpha": 0.3}, "any"),
    ("EluGrad", "Elu", {"alpha": 0.7}, "any"),
    ("SeluGrad", "Selu", {}, "any"),
    ("SeluGrad", "Selu", {"alpha": 1.5, "gamma": 2.0}, "any"),
    ("CeluGrad", "Celu", {"alpha": 2.0}, "any"),
    ("HardSigmoidGrad", "HardSigmoid", {}, "any"),
    ("HardSigmoidGrad", "HardSigmoid", {"alpha": 0.5, "beta": 0.4}, "any"),
    ("HardSwishGrad", "HardSwish", {}, "any"),
    ("MishGrad", "Mish", {}, "any"),
    ("ThresholdedReluGrad", "ThresholdedRelu", {"alpha": 0.5}, "any"),
    ("SinGrad", "Sin", {}, "any"),
    ("CosGrad", "Cos", {}, "any"),
    ("TanGrad", "Tan", {}, "tan"),
    ("AsinGrad", "Asin", {}, "unit"),
    ("AcosGrad", "Acos", {}, "unit"),
    ("AtanGrad", "Atan", {}, "any"),
    ("SinhGrad", "Sinh", {}, "any"),
    ("CoshGrad", "Cosh", {}, "any"),
    ("AsinhGrad", "Asinh", {}, "any"),
    ("AcoshGrad", "Acosh", {}, "gt1"),
    ("AtanhGrad", "Atanh", {}, "unit"),
]
Y_FORM = {"ReluGrad", "ExpGrad", "SqrtGrad", "SigmoidGrad", "TanhGrad", "TanGrad", "ReciprocalGrad"}


_erf = np.vectorize(math.erf)
# onnx.reference evaluates erf in float32: too coarse for a difference quotient
FORWARD_F64 = {
    "Erf": _erf,
    "Gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
}


GRAD_IDS = [f"{g[0]}{i}" for i, g in enumerate(GRAD_OPS)]


@pytest.mark.parametrize(("gop", "op", "attrs", "dom"), GRAD_OPS, ids=GRAD_IDS)
def test_backward_ops_match_reference_derivative(gop, op, attrs, dom):
    x = DOMAINS[dom]
    dy = np.linspace(-1.0, 2.0, x.size).reshape(x.shape)
    h = 1e-6
    if op in FORWARD_F64 and not attrs:
        f = FORWARD_F64[op]
    else:
        def f(v):
            return onnx_ref(op, [v], attrs)[0]
    deriv = (f(x + h) - f(x - h)) / (2 * h)
    t = f(x) if gop in Y_FORM else x
    (dx,) = run_op(gop, [dy, t], attrs)
    np.testing.assert_allclose(dx, dy * deriv, rtol=1e-6, atol=1e-8)


def test_piecewise_constant_ops_have_zero_gradient():
    for op in ("Floor", "Ceil", "Round", "Sign", "ThresholdedRelu"):
        check_grad(op, [BASE])


# --------------------------------------------------------------------------- binary, broadcasting

RNG = np.random.default_rng(7)
A = RNG.uniform(0.5, 2.0, (2, 1, 3))
B = RNG.uniform(0.5, 2.0, (4, 1))
SHAPES = [((2, 1, 3), (4, 1)), ((3,), ()), ((), (2, 3)), ((1, 1), (1,))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize(("sa", "sb"), SHAPES)
def test_binary_broadcasting_matches_onnx(op, sa, sb):
    a = RNG.uniform(0.5, 2.0, sa).astype(np.float32)
    b = RNG.uniform(-1.5, 1.5, sb).astype(np.float32)
    (y,) = run_op(op, [a, b])
    (ref,) = onnx_ref(op, [a, b])
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-6)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Mod"])
def test_integer_binary_ops_match_onnx(op):
    a = np.array([[7, -7, 5], [-9, 0, 12]], dtype=np.int64)
    b = np.array([2, 3, -4], dtype=np.int64)
    (y,) = run_op(op, [a, b])
    (ref,) = onnx_ref(op, [a, b])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign"])
def test_integer_unary_ops_match_onnx(op):
    a = np.array([-3, 0, 4], dtype=np.int32)
    np.testing.assert_array_equal(run_op(op, [a])[0], onnx_ref(op, [a])[0])


def test_pow_with_integer_exponent_and_integer_base():
    a = np.array([1.5, -2.0, 3.0], dtype=np.float32)
    e = np.array([2, 3, 0], dtype=np.int64)
    (y,) = run_op("Pow", [a, e])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, onnx_ref("Pow", [a, e])[0])
    ai = np.array([2, 3, -2], dtype=np.int32)
    np.testing.assert_array_equal(run_op("Pow", [ai, e])[0], onnx_ref("Pow", [ai, e])[0])


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_on_floats(fmod):
    a = np.array([5.5, -5.5, 7.0, -7.0], dtype=np.float32)
    b = np.array([2.0, 2.0, -3.0, -3.0], dtype=np.float32)
    np.testing.assert_allclose(run_op("Mod", [a, b], {"fmod": fmod})[0],
                               onnx_ref("Mod", [a, b], {"fmod": fmod})[0])


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(direction):
    a = np.array([16, 4, 1], dtype=np.uint8)
    b = np.array([1, 2, 3], dtype=np.uint8)
    np.testing.assert_array_equal(run_op("BitShift", [a, b], {"direction": direction})[0],
                                  onnx_ref("BitShift", [a, b], {"direction": direction})[0])


def test_prelu_matches_onnx():
    x = BASE.reshape(2, 3, 1).repeat(2, axis=2).astype(np.float32)
    slope = np.array([[0.1], [0.2], [0.3]], dtype=np.float32)
    np.testing.assert_allclose(run_op("PRelu", [x, slope])[0], onnx_ref("PRelu", [x, slope])[0])


def test_clip_attrs_inputs_and_ints_match_onnx():
    x = BASE.astype(np.float32)
    lo, hi = np.array(-1.0, np.float32), np.array(0.5, np.float32)
    ref = onnx_ref("Clip", [x, lo, hi])[0]
    np.testing.assert_allclose(run_op("Clip", [x, lo, hi])[0], ref)
    np.testing.assert_allclose(run_op("Clip", [x], {"min": -1.0, "max": 0.5})[0], ref)
    np.testing.assert_allclose(run_op("Clip", [x, None, hi])[0], onnx_ref("Clip", [x, None, hi])[0])
    xi = np.array([-5, 2, 9], np.int64)
    np.testing.assert_array_equal(run_op("Clip", [xi], {"min": 0, "max": 4})[0], [0, 2, 4])


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_match_onnx(op):
    xs = [RNG.standard_normal(s).astype(np.float32) for s in [(2, 1, 3), (4, 1), (3,)]]
    (y,) = run_op(op, xs)
    b = np.broadcast_arrays(*xs)
    # onnx.reference's Mean accumulates in place and cannot broadcast: use the hand formula there
    ref = (b[0] + b[1] + b[2]) / 3 if op == "Mean" else onnx_ref(op, xs)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    np.testing.assert_allclose(run_op(op, xs[:1])[0], xs[0])


# --------------------------------------------------------------------------- gradients

GRADS = [
    ("Add", [A, B], {}, None),
    ("Sub", [A, B], {}, None),
    ("Mul", [A, B], {}, None),
    ("Div", [A, B], {}, None),
    ("Pow", [A, B - 1.0], {}, None),
    ("Pow", [A, np.array([2, 3, 1])], {}, [0]),
    ("Mod", [A * 3, B], {"fmod": 1}, None),
    ("Mod", [-A * 3, B], {"fmod": 1}, None),
    ("Mod", [-A * 3, B], {}, None),
    ("PRelu", [BASE.reshape(2, 3, 1), np.array([[0.1], [0.2], [0.3]])], {}, None),
    ("Clip", [BASE, np.array(-1.0), np.array(0.5)], {}, [0]),
    ("Clip", [BASE], {"min": -2.0}, None),
    ("Max", [A, B, BASE[0] + 0.01], {}, None),
    ("Min", [A, B], {}, None),
    ("Sum", [A, B, BASE[0]], {}, None),
    ("Mean", [A, B, BASE[0]], {}, None),
]


@pytest.mark.parametrize(("op", "xs", "attrs", "wrt"), GRADS, ids=[f"{g[0]}{i}" for i, g in enumerate(GRADS)])
def test_binary_and_variadic_gradients(op, xs, attrs, wrt):
    check_grad(op, xs, attrs, wrt=wrt)


def test_backward_ops_of_binary_ops():
    dy = np.array([1.0, -2.0, 0.5])
    x = np.array([-1.5, 0.5, 2.0])
    dx, ds = run_op("PReluGrad", [dy, x, np.array([0.25])])
    np.testing.assert_allclose(dx, [0.25, -2.0, 0.5])
    np.testing.assert_allclose(ds, [-1.5, 0, 0])
    (dx,) = run_op("ClipGrad", [dy, x], {"min": 0.0, "max": 1.0})
    np.testing.assert_allclose(dx, [0, -2.0, 0])
    da, db = run_op("PowGrad", [dy, np.array([2.0, 3.0, 0.0]), np.array([3.0, 0.5, 2.0])])
    np.testing.assert_allclose(da, [12.0, -2.0 * 0.5 / np.sqrt(3.0), 0.0])
    np.testing.assert_allclose(db, [8.0 * np.log(2.0), -2.0 * np.sqrt(3.0) * np.log(3.0), 0.0])
    d0, d1 = run_op("MaxMinGrad", [dy, np.array([2.0, 2.0, 1.0]), np.array([2.0, 1.0, 1.0]),
                                   np.array([0.0, 2.0, 1.0])])
    np.testing.assert_allclose(d0, [1.0, 0, 0.5])  # a tie goes to the first input
    np.testing.assert_allclose(d1, [0, -2.0, 0])
    (dx,) = run_op("ReluGrad", [dy, np.array([0.0, 1.0, 3.0])])
    np.testing.assert_allclose(dx, [0, -2.0, 0.5])


# --------------------------------------------------------------------------- work


def work_of(op, shapes, attrs=None, dtype=np.float32):
    g = one_op_graph(op, [np.zeros(s, dtype) for s in shapes], attrs)
    return g.work("node")


def test_flop_and_byte_hand_counts():
    w = work_of("Add", [(4,), (4,)])  # adding two 4-vectors: 4 FLOPs, 32 B in, 16 B out
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written) == (4, 0, 32, 16)
    w = work_of("Mul", [(3, 1), (1, 4)])  # broadcast: 12 outputs
    assert (w.flops, w.bytes_read, w.bytes_written) == (12, 28, 48)
    w = work_of("Sigmoid", [(10,)])  # neg, exp, add, div per element
    assert (w.flops, w.transcendentals) == (40, 10)
    w = work_of("Gelu", [(2, 5)])
    assert (w.flops, w.transcendentals) == (50, 10)
    w = work_of("Gelu", [(2, 5)], {"approximate": "tanh"})
    assert (w.flops, w.transcendentals) == (90, 10)
    w = work_of("Sum", [(6,), (6,), (6,)])  # two adds per element
    assert (w.flops, w.bytes_read, w.bytes_written) == (12, 72, 24)
    w = work_of("Mean", [(6,), (6,)])
    assert w.flops == 12
    w = work_of("Softplus", [(8,)], dtype=np.float16)
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written) == (24, 16, 16, 16)
    w = work_of("TanhGrad", [(5,), (5,)])
    assert (w.flops, w.bytes_read, w.bytes_written) == (15, 40, 20)
    w = work_of("GeluGrad", [(5,), (5,)])
    assert (w.flops, w.transcendentals) == (55, 10)


def _flop_table():
    """Rows (op, attrs, FLOP, transcendentals) of the table in sim.ops.elementwise's docstring."""
    lines = elementwise.__doc__.splitlines()
    rulers = [i for i, line in enumerate(lines) if line.startswith("====")]
    rows = []
    for line in lines[rulers[1] + 1:rulers[2]]:
        cols = re.split(r"\s{2,}", line.strip())
        for name in cols[0].split():
            m = re.fullmatch(r"(\w+)(?:\((\w+)=(\w+)\))?", name)
            attrs = {m.group(2): m.group(3)} if m.group(2) else {}
            rows.append((m.group(1), attrs, float(cols[1]), float(cols[2])))
    return rows


N_INPUTS = {"PowGrad": 3, "PReluGrad": 3}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "PRelu"}


@pytest.mark.parametrize(("op", "attrs", "flops", "trans"), _flop_table())
def test_docstring_flop_table_matches_work(op, attrs, flops, trans):
    n = N_INPUTS.get(op, 2 if op in BINARY or op.endswith("Grad") else 1)
    dtype = np.uint8 if op == "BitShift" else np.float32
    attrs = {**attrs, "direction": "LEFT"} if op == "BitShift" else attrs
    w = work_of(op, [(7,)] * n, attrs, dtype)
    assert (w.flops, w.transcendentals) == (7 * flops, 7 * trans)
    assert w.bytes_read == 7 * n * np.dtype(dtype).itemsize


def test_errors():
    with pytest.raises(GraphError, match="dtypes differ"):
        one_op_graph("Add", [np.zeros(2, np.float32), np.zeros(2, np.float64)])
    with pytest.raises(GraphError, match="float input"):
        one_op_graph("Sqrt", [np.zeros(2, np.int32)])
    with pytest.raises(GraphError, match="approximate"):
        one_op_graph("Gelu", [np.zeros(2, np.float32)], {"approximate": "fast"})
    with pytest.raises(GraphError, match="do not broadcast"):
        one_op_graph("Mul", [np.zeros(2), np.zeros(3)])
    with pytest.raises(GraphError, match="direction"):
        one_op_graph("BitShift", [np.zeros(2, np.uint8), np.zeros(2, np.uint8)])


def test_bf16_gelu_computes_in_fp32_and_rounds():
    import ml_dtypes

    x = np.array([-1.0, 0.5, 2.0]).astype(ml_dtypes.bfloat16)
    (y,) = run_op("Gelu", [x])
    assert y.dtype == ml_dtypes.bfloat16
    ref = onnx_ref("Gelu", [x.astype(np.float32)])[0]
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=1e-2)
