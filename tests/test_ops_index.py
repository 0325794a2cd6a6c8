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
