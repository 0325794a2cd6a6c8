"""Indexing ops against onnx.reference, hand counts, and finite-difference gradients."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "shape,idx,axis",
    [
        ((5, 3), [[0, 1], [4, -1]], 0),
        ((2, 5, 3), [1, -2, 0], 1),
        ((2, 3, 4), [[3, 0, -4]], -1),
        ((4,), 2, 0),  # scalar index drops the axis
    ],
)
def test_gather_matches_onnx(shape, idx, axis):
    data = RNG.standard_normal(shape).astype(np.float32)
    ind = np.array(idx, dtype=np.int64)
    (got,) = run_op("Gather", [data, ind], {"axis": axis})
    (ref,) = onnx_ref("Gather", [data, ind], {"axis": axis})
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_gather_work_reads_only_fetched_rows():
    # embedding: 1000 x 16 fp32 table, 2 x 3 int64 token ids
    data = np.zeros((1000, 16), np.float32)
    ind = np.zeros((2, 3), np.int64)
    g = one_op_graph("Gather", [data, ind])
    w = g.work("node")
    assert w.flops == 0
    assert w.bytes_read == 6 * 8 + 6 * 16 * 4
    assert w.bytes_written == 6 * 16 * 4


def test_gather_grad_repeated_and_negative_indices():
    data = RNG.standard_normal((5, 3))
    ind = np.array([[0, 4], [-1, 0]], dtype=np.int64)  # row 4 and row 0 both twice
    check_grad("Gather", [data, ind], {"axis": 0})
    check_grad("Gather", [RNG.standard_normal((2, 4, 3)), np.array([3, -1, 1], np.int64)], {"axis": 1})


def test_gather_grad_values_scatter_add():
    data = np.zeros((4, 2))
    ind = np.array([1, 1, 3], np.int64)
    dy = np.arange(6, dtype=np.float64).reshape(3, 2)
    (dx,) = run_op("GatherGrad", [dy, ind], {"axis": 0, "shape": [4, 2]})
    np.testing.assert_array_equal(dx, [[0, 0], [0 + 2, 1 + 3], [0, 0], [4, 5]])
    assert data.shape == dx.shape


def test_gather_rejects_float_indices():
    with pytest.raises(GraphError, match="integer"):
        one_op_graph("Gather", [np.zeros((3, 2)), np.zeros(2)])


def test_gather_elements_matches_onnx_and_grad():
    data = RNG.standard_normal((2, 4)).astype(np.float32)
    ind = np.array([[0, 2, -1, 1], [3, 3, 0, 0]], np.int64)
    (got,) = run_op("GatherElements", [data, ind], {"axis": 1})
    (ref,) = onnx_ref("GatherElements", [data, ind], {"axis": 1})
    np.testing.assert_array_equal(got, ref)
    check_grad("GatherElements", [RNG.standard_normal((2, 4)), ind], {"axis": 1})
    check_grad("GatherElements", [RNG.standard_normal((3, 2)), np.array([[0, 2], [2, 2]])], {"axis": 0})


@pytest.mark.parametrize(
    "dshape,idx,b",
    [
        ((2, 2), [[0, 0], [1, 1]], 0),
        ((2, 2), [[1], [0]], 0),
        ((2, 2, 2), [[0, 1], [1, 0]], 0),
        ((2, 2, 2), [[1], [0]], 1),
        ((2, 3, 4), [[[2, -1]], [[0, 1]]], 1),
    ],
)
def test_gather_nd_matches_onnx_and_grad(dshape, idx, b):
    data = RNG.standard_normal(dshape).astype(np.float32)
    ind = np.array(idx, np.int64)
    (got,) = run_op("GatherND", [data, ind], {"batch_dims": b})
    (ref,) = onnx_ref("GatherND", [data, ind], {"batch_dims": b})
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    check_grad("GatherND", [data.astype(np.float64), ind], {"batch_dims": b})


@pytest.mark.parametrize("red", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_matches_onnx(red):
    data = RNG.standard_normal((3, 4)).astype(np.float32)
    ind = np.array([[1, -1], [0, 2], [3, 3]] if red != "none" else [[1, -1], [0, 2], [3, 0]], np.int64)
    upd = RNG.standard_normal((3, 2)).astype(np.float32)
    attrs = {"axis": 1, "reduction": red}
    (got,) = run_op("ScatterElements", [data, ind, upd], attrs)
    (ref,) = onnx_ref("ScatterElements", [data, ind, upd], attrs, opset=18)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("red", ["none", "add"])
def test_scatter_grads(red):
    data = RNG.standard_normal((3, 4))
    ind = np.array([[1, 3], [0, 2], [3, 0]], np.int64)
    upd = RNG.standard_normal((3, 2))
    check_grad("ScatterElements", [data, ind, upd], {"axis": 1, "reduction": red})
    nd_ind = np.array([[0, 1], [2, 3]], np.int64)
    check_grad("ScatterND", [data, nd_ind, RNG.standard_normal(2)], {"reduction": red})


@pytest.mark.parametrize("red", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_matches_onnx(red):
    data = RNG.standard_normal((4, 3, 2)).astype(np.float32)
    ind = np.array([[0], [2], [-1]] if red == "none" else [[0], [2], [0]], np.int64)
    upd = RNG.standard_normal((3, 3, 2)).astype(np.float32)
    (got,) = run_op("ScatterND", [data, ind, upd], {"reduction": red})
    ind_ref = np.where(ind < 0, ind + 4, ind)  # onnx.reference wants non-negative here
    (ref,) = onnx_ref("ScatterND", [data, ind_ref, upd], {"reduction": red}, opset=18)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_scatter_work_counts():
    g = one_op_graph("ScatterElements", [np.zeros((3, 4), np.float32), np.zeros((3, 2), np.int64),
                                         np.zeros((3, 2), np.float32)], {"reduction": "add"})
    w = g.work("node")
    assert w.flops == 6
    assert w.bytes_read == 48 + 48 + 24 and w.bytes_written == 48


@pytest.mark.parametrize("largest,axis,k", [(1, -1, 2), (0, 0, 3), (1, 1, 0)])
def test_topk_matches_onnx(largest, axis, k):
    x = np.array([[3, 1, 3, 2], [0, 5, 5, 5], [1, 1, 1, 1], [9, 8, 7, 6]], np.float32)
    got = run_op("TopK", [x], {"k": k, "axis": axis, "largest": largest})
    ref = onnx_ref("TopK", [x, np.array([k], np.int64)], {"axis": axis, "largest": largest}, n_out=2)
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert got[1].dtype == np.int64


def test_topk_grad_and_work():
    check_grad("TopK", [RNG.standard_normal((3, 5))], {"k": 2}, n_out=1)
    g = one_op_graph("TopK", [np.zeros((4, 8), np.float32)], {"k": 4})
    w = g.work("node")
    assert w.flops == 32 * 2  # compares: n * log2(k)
    assert w.bytes_read == 128 and w.bytes_written == 16 * 4 + 16 * 8


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_onehot_matches_onnx(axis):
    ind = np.array([[0, 3], [-1, 7]], np.int64)  # 7 is out of range -> all off
    vals = np.array([2.0, 5.0], np.float32)
    (got,) = run_op("OneHot", [ind, None, vals], {"depth": 5, "axis": axis})
    (ref,) = onnx_ref("OneHot", [ind, np.array(5, np.int64), vals], {"axis": axis})
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("upper,k", [(1, 0), (0, 0), (1, -1), (0, 2)])
def test_trilu_matches_onnx_and_grad(upper, k):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    (got,) = run_op("Trilu", [x], {"upper": upper, "k": k})
    (ref,) = onnx_ref("Trilu", [x, np.array(k, np.int64)], {"upper": upper})
    np.testing.assert_array_equal(got, ref)
    check_grad("Trilu", [x.astype(np.float64)], {"upper": upper, "k": k})


def test_gather_elements_grad_and_gather_nd_grad_by_hand():
    dy = np.array([[1.0, 2.0], [3.0, 4.0]])
    ind = np.array([[0, 0], [2, 0]], np.int64)
    (dx,) = run_op("GatherElementsGrad", [dy, ind], {"axis": 1, "shape": [2, 3]})
    np.testing.assert_array_equal(dx, [[3.0, 0.0, 0.0], [4.0, 0.0, 3.0]])
    g = one_op_graph("GatherElementsGrad", [dy, ind], {"axis": 1, "shape": [2, 3]})
    assert g.work("node").flops == 4  # one add per scattered element
    dy2 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    nd = np.array([[1], [1], [0]], np.int64)  # rows of a [2, 2] tensor
    (dx2,) = run_op("GatherNDGrad", [dy2, nd], {"shape": [2, 2]})
    np.testing.assert_array_equal(dx2, [[5.0, 6.0], [4.0, 6.0]])


@pytest.mark.parametrize("batch_axis,time_axis,lens", [(1, 0, [4, 3, 2, 1]), (0, 1, [1, 2, 3, 4])])
def test_reverse_sequence_matches_onnx_and_grad(batch_axis, time_axis, lens):
    x = RNG.standard_normal((4, 4, 2)).astype(np.float32)
    ln = np.array(lens, np.int64)
    attrs = {"batch_axis": batch_axis, "time_axis": time_axis}
    (got,) = run_op("ReverseSequence", [x, ln], attrs)
    (ref,) = onnx_ref("ReverseSequence", [x, ln], attrs)
    np.testing.assert_array_equal(got, ref)
    check_grad("ReverseSequence", [x.astype(np.float64), ln], attrs)


@pytest.mark.parametrize("mode,starts", [("linear", [0, 2]), ("circular", [3, 4])])
def test_tensor_scatter_matches_onnx(mode, starts):
    cache = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    upd = RNG.standard_normal((2, 3, 2, 4)).astype(np.float32)
    idx = np.array(starts, np.int64)
    (got,) = run_op("TensorScatter", [cache, upd, idx], {"mode": mode, "axis": -2})
    (ref,) = onnx_ref("TensorScatter", [cache, upd, idx], {"mode": mode, "axis": -2}, opset=24)
    np.testing.assert_array_equal(got, ref)
    w = one_op_graph("TensorScatter", [cache, upd, idx], {"mode": mode}).work("node")
    assert w.bytes_read == upd.nbytes + 16 and w.bytes_written == upd.nbytes  # in place


def test_tensor_scatter_rejects_bad_update():
    with pytest.raises(GraphError, match="does not fit"):
        one_op_graph("TensorScatter", [np.zeros((2, 3, 4), np.float32), np.zeros((2, 5, 4), np.float32)])
