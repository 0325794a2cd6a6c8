"""Comparisons, logic, IsNaN/IsInf and Where: values against onnx.reference, counts, gradients."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError

RNG = np.random.default_rng(3)
SHAPES = [((2, 1, 3), (4, 1)), ((3,), ()), ((), ()), ((1, 3), (2, 1))]


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize(("sa", "sb"), SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_comparisons_match_onnx(op, sa, sb, dtype):
    a = RNG.integers(0, 3, sa).astype(dtype)
    b = RNG.integers(0, 3, sb).astype(dtype)
    (y,) = run_op(op, [a, b])
    (ref,) = onnx_ref(op, [a, b])
    assert y.dtype == np.bool_ and y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@pytest.mark.parametrize(("sa", "sb"), SHAPES)
def test_logic_matches_onnx(op, sa, sb):
    a = RNG.random(sa) > 0.5
    b = RNG.random(sb) > 0.5
    np.testing.assert_array_equal(run_op(op, [np.asarray(a), np.asarray(b)])[0],
                                  onnx_ref(op, [np.asarray(a), np.asarray(b)])[0])


def test_not_isnan_isinf():
    a = RNG.random((2, 3)) > 0.5
    np.testing.assert_array_equal(run_op("Not", [a])[0], onnx_ref("Not", [a])[0])
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(run_op("IsNaN", [x])[0], onnx_ref("IsNaN", [x])[0])
    for attrs in ({}, {"detect_negative": 0}, {"detect_positive": 0}):
        np.testing.assert_array_equal(run_op("IsInf", [x], attrs)[0], onnx_ref("IsInf", [x], attrs)[0])


@pytest.mark.parametrize(("sc", "sx", "sy"), [((2, 1, 3), (4, 1), (3,)), ((), (2,), ()), ((3,), (3,), (3,))])
def test_where_matches_onnx_and_gradient(sc, sx, sy):
    c = np.asarray(RNG.random(sc) > 0.5)
    x = RNG.standard_normal(sx)
    y = RNG.standard_normal(sy)
    (out,) = run_op("Where", [c, x.astype(np.float32), y.astype(np.float32)])
    (ref,) = onnx_ref("Where", [c, x.astype(np.float32), y.astype(np.float32)])
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
    check_grad("Where", [c, x, y])


def test_where_with_integers():
    c = np.array([True, False, True])
    x, y = np.array([1, 2, 3], np.int64), np.array([9], np.int64)
    np.testing.assert_array_equal(run_op("Where", [c, x, y])[0], [1, 9, 3])


def test_counts():
    g = one_op_graph("Less", [np.zeros((3, 1), np.float32), np.zeros((1, 4), np.float32)])
    w = g.work("node")  # 12 compares; reads 3*4 + 4*4 bytes; writes 12 bools
    assert (w.flops, w.bytes_read, w.bytes_written) == (12, 28, 12)
    g = one_op_graph("Where", [np.zeros(5, bool), np.zeros(5, np.float32), np.zeros(5, np.float32)])
    w = g.work("node")
    assert (w.flops, w.bytes_read, w.bytes_written) == (5, 45, 20)


def test_errors():
    with pytest.raises(GraphError, match="bool"):
        one_op_graph("And", [np.zeros(2, np.float32), np.zeros(2, np.float32)])
    with pytest.raises(GraphError, match="condition must be bool"):
        one_op_graph("Where", [np.zeros(2), np.zeros(2), np.zeros(2)])
    with pytest.raises(GraphError, match="dtypes differ"):
        one_op_graph("Equal", [np.zeros(2, np.int32), np.zeros(2, np.int64)])
    with pytest.raises(GraphError, match="float input"):
        one_op_graph("IsNaN", [np.zeros(2, np.int32)])
