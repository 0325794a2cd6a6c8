"""Reductions, ArgMax/ArgMin, Softmax family, CumSum: onnx.reference values, counts, gradients."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError

RNG = np.random.default_rng(11)
X = RNG.uniform(0.5, 1.5, (2, 3, 4))  # positive and distinct: no ties, logs defined, no zeros

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
REDUCE_ATTRS = [
    {},
    {"axes": [1]},
    {"axes": [-1, 0], "keepdims": 0},
    {"axes": [2], "keepdims": 0},
    {"noop_with_empty_axes": 1},
    {"axes": [], "keepdims": 0},
]


def _onnx_reduce(op, x, attrs):
    attrs = dict(attrs)
    axes = attrs.pop("axes", None)
    ins = [x] if not axes else [x, np.array(axes, np.int64)]
    return onnx_ref(op, ins, attrs, opset=18)[0]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("attrs", REDUCE_ATTRS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_reduce_matches_onnx_and_gradient(op, attrs):
    x = X.astype(np.float32)
    (y,) = run_op(op, [x], attrs)
    ref = _onnx_reduce(op, x, attrs)
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5)
    check_grad(op, [X], attrs)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_rank0_and_size1(op):
    x0 = np.array(1.25, np.float32)
    (y,) = run_op(op, [x0])
    assert y.shape == ()
    np.testing.assert_allclose(y, _onnx_reduce(op, x0.reshape(1), {"keepdims": 0}), rtol=1e-6)
    x1 = X[:1, :, :1].astype(np.float32)
    np.testing.assert_allclose(run_op(op, [x1], {"axes": [0, 2]})[0], _onnx_reduce(op, x1, {"axes": [0, 2]}),
                               rtol=1e-5)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_reduce_over_an_empty_axis(op):
    x = np.zeros((2, 0, 3), np.float32)
    (y,) = run_op(op, [x], {"axes": [1]})
    np.testing.assert_array_equal(y, _onnx_reduce(op, x, {"axes": [1]}))


def test_reduce_integers():
    x = np.array([[3, -1, 4], [1, 5, -9]], np.int64)
    for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
        (y,) = run_op(op, [x], {"axes": [1]})
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, _onnx_reduce(op, x, {"axes": [1]}))


def test_reduce_max_gradient_splits_ties():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.5, 0.1]])
    dy = np.array([[6.0], [1.0]])
    y = run_op("ReduceMax", [x], {"axes": [1]})[0]
    (dx,) = run_op("ReduceExtremumGrad", [dy, x, y])
    np.testing.assert_allclose(dx, [[0, 3.0, 3.0], [1.0, 0, 0]])


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [{}, {"axis": -1, "keepdims": 0}, {"axis": 1, "select_last_index": 1},
                                   {"axis": 0, "keepdims": 0, "select_last_index": 1}])
def test_argmax_argmin_match_onnx(op, attrs):
    x = RNG.integers(0, 3, (3, 4, 2)).astype(np.float32)  # many ties
    (y,) = run_op(op, [x], attrs)
    (ref,) = onnx_ref(op, [x], attrs)
    assert y.dtype == np.int64 and y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, -2])
def test_softmax_family_matches_onnx_and_gradient(op, axis):
    attrs = {} if axis is None else {"axis": axis}
    x = X.astype(np.float32)
    (y,) = run_op(op, [x], attrs)
    np.testing.assert_allclose(y, onnx_ref(op, [x], attrs)[0], rtol=1e-5, atol=1e-7)
    check_grad(op, [X], attrs)


def test_softmax_extreme_inputs_and_size1_axis():
    x = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    np.testing.assert_allclose(run_op("Softmax", [x])[0], [[1, 0, 0]])
    np.testing.assert_allclose(run_op("Softmax", [x], {"axis": 0})[0], np.ones((1, 3)))


def test_softmax_backward_ops_by_hand():
    y = np.array([[0.2, 0.3, 0.5]])
    dy = np.array([[1.0, 0.0, -1.0]])
    (dx,) = run_op("SoftmaxGrad", [dy, y], {"axis": -1})
    dot = 0.2 - 0.5
    np.testing.assert_allclose(dx, y * (dy - dot))
    dy = np.array([[1.0, 0.0, -0.5]])  # sums to 0.5
    (dx,) = run_op("LogSoftmaxGrad", [dy, np.log(y)], {"axis": -1})
    np.testing.assert_allclose(dx, dy - y * 0.5)


@pytest.mark.parametrize("attrs", [{}, {"axis": 1, "exclusive": 1}, {"axis": -1, "reverse": 1},
                                   {"axis": 2, "reverse": 1, "exclusive": 1}])
def test_cumsum_matches_onnx_and_gradient(attrs):
    x = X.astype(np.float32)
    a = dict(attrs)
    axis = np.array(a.pop("axis", 0), np.int64)
    (ref,) = onnx_ref("CumSum", [x, axis], a)
    np.testing.assert_allclose(run_op("CumSum", [x], attrs)[0], ref, rtol=1e-6)
    check_grad("CumSum", [X], attrs)


def test_cumsum_integers():
    x = np.array([1, 2, 3, 4], np.int32)
    np.testing.assert_array_equal(run_op("CumSum", [x], {"exclusive": 1})[0], [0, 1, 3, 6])


def work_of(op, shape, attrs=None, dtype=np.float32):
    return one_op_graph(op, [np.zeros(shape, dtype)], attrs).work("node")


def test_work_hand_counts():
    w = work_of("ReduceSum", (4, 8), {"axes": [1]})  # one accumulate per input element
    assert (w.flops, w.bytes_read, w.bytes_written) == (32, 128, 16)
    w = work_of("ReduceMean", (4, 8), {"axes": [1]})  # + one divide per output
    assert w.flops == 36
    w = work_of("ReduceL2", (4, 8), {"axes": [1]})
    assert (w.flops, w.transcendentals) == (2 * 32 + 4, 4)
    w = work_of("Softmax", (4, 8))  # max, sub, exp, sum, divide
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written) == (160, 32, 128, 128)
    w = work_of("LogSoftmax", (4, 8))  # + a log per row
    assert (w.flops, w.transcendentals) == (164, 36)
    w = work_of("ArgMax", (4, 8), {"axis": 1}, np.float16)
    assert (w.flops, w.bytes_read, w.bytes_written) == (32, 64, 32)


def test_errors():
    with pytest.raises(GraphError, match="out of range"):
        one_op_graph("ReduceSum", [np.zeros((2, 3))], {"axes": [2]})
    with pytest.raises(GraphError, match="repeated axis"):
        one_op_graph("ReduceSum", [np.zeros((2, 3))], {"axes": [1, -1]})
    with pytest.raises(GraphError, match="float input"):
        one_op_graph("Softmax", [np.zeros((2, 3), np.int64)])


def test_gradient_through_a_composed_layer_norm():
    """y = (x - mean) / sqrt(var + eps), built from this family's ops, differentiated end to end."""
    from sim.exec import Executor
    from sim.graph import Graph, TensorSpec
    from sim.passes.autodiff import gradients

    x = RNG.standard_normal((3, 5))
    r = RNG.standard_normal((3, 5))
    g = Graph("ln")
    g.add_input("x", TensorSpec((3, 5), "fp64"))
    g.add_input("r", TensorSpec((3, 5), "fp64"))
    g.add_param("eps", TensorSpec((), "fp64"), "constant", trainable=False, value=np.array(1e-3))
    (mu,) = g.add_node("ReduceMean", ["x"], attrs={"axes": [-1]})
    (d,) = g.add_node("Sub", ["x", mu])
    (sq,) = g.add_node("Mul", [d, d])
    (var,) = g.add_node("ReduceMean", [sq], attrs={"axes": [-1]})
    (std,) = g.add_node("Sqrt", [g.add_node("Add", [var, "eps"])[0]])
    (y,) = g.add_node("Div", [d, std])
    (loss,) = g.add_node("ReduceSum", [g.add_node("Mul", [y, "r"])[0]], attrs={"keepdims": 0})
    g.set_outputs([loss])
    gg, gmap = gradients(g, loss, ["x"])
    gg.set_outputs([gmap["x"]])
    (dx,) = Executor(gg).run({"x": x, "r": r}).values.values()

    def f(v):
        m = v.mean(-1, keepdims=True)
        return float(np.sum(r * (v - m) / np.sqrt(((v - m) ** 2).mean(-1, keepdims=True) + 1e-3)))

    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        num[i] = (f(x + e) - f(x - e)) / 2e-6
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-8)
