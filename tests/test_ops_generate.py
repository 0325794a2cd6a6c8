"""Tensor-making ops against onnx.reference and hand values."""

import numpy as np
import pytest
from helpers import one_op_graph, onnx_ref, run_op

from sim.errors import GraphError
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.ops.registry import get_op
from sim.passes.autodiff import gradients


def _run_no_inputs(op, attrs):
    g = Graph(op)
    (y,) = g.add_node(op, [], None, attrs, name="node")
    g.set_outputs([y])
    from sim.exec import execute

    return execute(g.verify())[y], g


def test_constant_forms():
    v, g = _run_no_inputs("Constant", {"value": np.arange(6, dtype=np.int32).reshape(2, 3)})
    assert v.dtype == np.int32 and v.shape == (2, 3) and v[1, 2] == 5
    v, g = _run_no_inputs("Constant", {"value_float": 1.5})
    assert v.dtype == np.float32 and v.shape == () and v == 1.5
    v, _ = _run_no_inputs("Constant", {"value_ints": [1, 2, 3]})
    assert v.dtype == np.int64 and list(v) == [1, 2, 3]
    v, _ = _run_no_inputs("Constant", {"value_floats": [1.0, 2.0]})
    assert v.dtype == np.float32
    assert g.work("node").bytes == 0
    with pytest.raises(GraphError, match="exactly one"):
        _run_no_inputs("Constant", {"value_int": 1, "value_float": 2.0})


@pytest.mark.parametrize(
    "shape,value", [([2, 3], None), ([4], np.array([7], np.int32)), ([], np.array([1.5]))]
)
def test_constant_of_shape_matches_onnx(shape, value):
    attrs = {"shape": shape} if value is None else {"shape": shape, "value": value}
    got, g = _run_no_inputs("ConstantOfShape", attrs)
    from onnx import numpy_helper

    ref_attrs = {} if value is None else {"value": numpy_helper.from_array(value.reshape(1))}
    (ref,) = onnx_ref("ConstantOfShape", [np.array(shape, np.int64)], ref_attrs)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    assert g.work("node").bytes_written == got.nbytes


@pytest.mark.parametrize(
    "start,limit,delta",
    [(3, 9, 3), (10, 4, -2), (np.float32(1.0), np.float32(2.0), np.float32(0.3)), (0, 0, 1), (5, 1, 1)],
)
def test_range_matches_onnx(start, limit, delta):
    got, _ = _run_no_inputs("Range", {"start": start, "limit": limit, "delta": delta})
    arrs = [np.array(v, dtype=np.float32 if isinstance(v, np.floating) else np.int64)
            for v in (start, limit, delta)]
    (ref,) = onnx_ref("Range", arrs)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_range_zero_delta():
    with pytest.raises(GraphError, match="delta"):
        _run_no_inputs("Range", {"start": 0, "limit": 3, "delta": 0})


@pytest.mark.parametrize("k,dtype", [(0, None), (1, "int32"), (-2, "fp64")])
def test_eyelike_matches_onnx(k, dtype):
    x = np.zeros((3, 4), np.float32)
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    (got,) = run_op("EyeLike", [x], attrs)
    onnx_dt = {"int32": 6, "fp64": 11}
    ref_attrs = {"k": k} if dtype is None else {"k": k, "dtype": onnx_dt[dtype]}
    (ref,) = onnx_ref("EyeLike", [x], ref_attrs)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"end": -1}, {"start": -2, "end": 10}])
def test_shape_matches_onnx(attrs):
    x = np.zeros((2, 3, 4, 5), np.float32)
    (got,) = run_op("Shape", [x], attrs)
    (ref,) = onnx_ref("Shape", [x], attrs)
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.int64
    assert one_op_graph("Shape", [x], attrs).work("node").bytes == 0


def test_size():
    (got,) = run_op("Size", [np.zeros((2, 3, 4), np.float32)])
    assert got == 24 and got.dtype == np.int64 and got.shape == ()


def test_no_grad_reasons():
    for op in ("Constant", "Range"):
        assert get_op(op).no_grad


@pytest.mark.parametrize("op", ["ConstantOfShape", "EyeLike", "Shape", "Size"])
def test_value_independent_ops_give_no_gradient(op):
    # the output does not depend on the input values: the rule gives None for every input
    g = Graph(op)
    x = g.add_input("x", TensorSpec((3, 3), "fp32"))
    attrs = {"shape": [3, 3]} if op == "ConstantOfShape" else {}
    g.add_node(op, [x], None, attrs, name="node")
    assert get_op(op).grad(None, g.nodes["node"], [None]) == [None]


def _cos_chain_graph():
    """y = x * 2 + ConstantOfShape(like x, value 1.5) * x, the ConstantOfShape fed by x."""
    g = Graph("cos-chain")
    x = g.add_input("x", TensorSpec((2, 3), "fp64"))
    (two,) = g.add_node("Constant", [], None, {"value": np.array(2.0)}, name="two")
    (c,) = g.add_node("ConstantOfShape", [x], None, {"shape": [2, 3], "value": np.array([1.5])},
                      name="c")
    (a,) = g.add_node("Mul", [x, two], None, {}, name="a")
    (b,) = g.add_node("Mul", [c, x], None, {}, name="b")
    (y,) = g.add_node("Add", [a, b], None, {}, name="y")
    (s,) = g.add_node("ReduceSum", [y], None, {"keepdims": 0}, name="s")
    g.set_outputs([s])
    return g.verify()


def test_gradient_through_constant_of_shape():
    g = _cos_chain_graph()
    gg, gmap = gradients(g, g.outputs[0], ["x"])
    gg.set_outputs([gmap["x"]])
    x = np.random.default_rng(0).standard_normal((2, 3))
    dx = execute(gg.verify(), {"x": x})[gmap["x"]]
    # d/dx sum(2x + 1.5x) = 3.5 everywhere: the ConstantOfShape branch adds nothing
    np.testing.assert_allclose(dx, np.full((2, 3), 3.5), rtol=0, atol=1e-12)
    # central differences of the forward graph agree
    eps = 1e-6
    num = np.zeros_like(x)
    for j in range(x.size):
        d = np.zeros(x.size)
        d[j] = eps
        fp = execute(g, {"x": x + d.reshape(x.shape)})[g.outputs[0]]
        fm = execute(g, {"x": x - d.reshape(x.shape)})[g.outputs[0]]
        num.reshape(-1)[j] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-7)


def test_wavenet_training_graph_builds():
    # wavenet.yaml zero-initialises its skip sum with ConstantOfShape: training must build
    import sim

    g = sim.load("workloads/wavenet.yaml", batch=1, seq=32, layers=2, skip_ch=8)
    assert any(n.op == "ConstantOfShape" for n in g.nodes.values())
    t = sim.training_graph(g, loss="cross_entropy", optimizer="sgd")
    t.verify()
    assert "loss" in t.outputs and any(o.endswith(".new") for o in t.outputs)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic,size", [(1, 10), (0, 10), (1, 1)])
def test_windows_match_onnx(op, periodic, size):
    got, g = _run_no_inputs(op, {"size": size, "periodic": periodic})
    (ref,) = onnx_ref(op, [np.array(size, np.int64)], {"periodic": periodic}, opset=17)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert g.work("node").bytes_written == 4 * size


def test_window_by_hand_and_dtype():
    got, g = _run_no_inputs("HannWindow", {"size": 4, "output_datatype": "fp64"})
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.5], atol=1e-15)  # periodic: N = 4
    assert got.dtype == np.float64
    w = g.work("node")
    assert w.transcendentals == 4 and w.flops == 6 * 4
