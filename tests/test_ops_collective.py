"""Collective ops: AllReduce, AllGather, ReduceScatter, AllToAll (values, shapes, work, gradients)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, run_op

from sim.errors import GraphError

G4 = ["gpu0", "gpu1", "gpu2", "gpu3"]


def _xs(n: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(n)]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_allreduce_all_members(reduction):
    xs = _xs(4, (3, 5))
    outs = run_op("AllReduce", xs, {"group": G4, "reduction": reduction})
    want = xs[0] + xs[1] + xs[2] + xs[3]
    if reduction == "mean":
        want = want / 4
    assert len(outs) == 4
    for o in outs:
        np.testing.assert_allclose(o, want, rtol=1e-12)


def test_allreduce_max_is_the_elementwise_maximum_and_has_no_gradient():
    xs = _xs(4, (3, 5))
    outs = run_op("AllReduce", xs, {"group": G4, "reduction": "max"})
    want = np.maximum(np.maximum(xs[0], xs[1]), np.maximum(xs[2], xs[3]))
    for o in outs:
        np.testing.assert_array_equal(o, want)
    with pytest.raises(GraphError, match="no gradient"):
        check_grad("AllReduce", [xs[0]], {"group": G4, "reduction": "max"})


def test_allreduce_one_member_view_is_identity():
    (x,) = _xs(1, (2, 3))
    (y,) = run_op("AllReduce", [x], {"group": G4})
    np.testing.assert_array_equal(y, x)
    (y1,) = run_op("AllReduce", [x], {"group": ["gpu0"]})
    np.testing.assert_array_equal(y1, x)


def test_allgather_all_members_and_one_member():
    xs = _xs(4, (2, 3))
    outs = run_op("AllGather", xs, {"group": G4, "axis": 1})
    want = np.concatenate(xs, axis=1)
    assert want.shape == (2, 12)
    for o in outs:
        np.testing.assert_array_equal(o, want)
    (one,) = run_op("AllGather", [xs[0]], {"group": G4})
    np.testing.assert_array_equal(one, np.concatenate([xs[0]] * 4, axis=0))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reducescatter_all_members(reduction):
    xs = _xs(4, (8, 3))
    outs = run_op("ReduceScatter", xs, {"group": G4, "reduction": reduction})
    total = sum(xs)
    if reduction == "mean":
        total = total / 4
    for j, o in enumerate(outs):
        np.testing.assert_allclose(o, total[2 * j:2 * j + 2], rtol=1e-12)
    (one,) = run_op("ReduceScatter", [xs[0]], {"group": G4})
    np.testing.assert_array_equal(one, xs[0][:2])


def test_shapes_and_dtypes():
    x = np.zeros((8, 6), np.float32)
    g = one_op_graph("AllGather", [x, x], {"group": ["a", "b"], "axis": -1})
    assert [g.tensors[o].shape for o in g.outputs] == [(8, 12), (8, 12)]
    g = one_op_graph("ReduceScatter", [x], {"group": ["a", "b", "c", "d"]})
    assert g.tensors[g.outputs[0]].shape == (2, 6) and g.tensors[g.outputs[0]].dtype == "fp32"


@pytest.mark.parametrize("attrs, n_in, msg", [
    ({}, 1, "group"),
    ({"group": "gpu0"}, 1, "group"),
    ({"group": ["a", "a"]}, 2, "repeats"),
    ({"group": ["a", "b", "c"]}, 2, "1 input"),
    ({"group": ["a", "b"], "algorithm": "tree"}, 2, "algorithm"),
    ({"group": ["a", "b"], "reduction": "prod"}, 2, "reduction"),
])
def test_bad_attributes(attrs, n_in, msg):
    x = np.zeros((4,), np.float32)
    with pytest.raises(GraphError, match=msg):
        one_op_graph("AllReduce", [x] * n_in, attrs)


def test_reducescatter_needs_divisible_axis():
    with pytest.raises(GraphError, match="equal parts"):
        one_op_graph("ReduceScatter", [np.zeros((6, 2), np.float32)], {"group": G4})


def test_work_hand_counts():
    x = np.zeros((1000,), np.float32)  # 4000 bytes
    g = one_op_graph("AllReduce", [x] * 4, {"group": G4})
    w = g.work(g.nodes["node"])
    assert w.flops == 3 * 1000  # (n-1) adds per element, over the whole group
    assert (w.bytes_read, w.bytes_written) == (4 * 4000, 4 * 4000)
    assert w.matmul_flops == 0
    g = one_op_graph("AllReduce", [x] * 4, {"group": G4, "reduction": "mean"})
    assert g.work(g.nodes["node"]).flops == 3 * 1000 + 1000
    g = one_op_graph("AllReduce", [x], {"group": G4})  # one member: its share
    w = g.work(g.nodes["node"])
    assert w.flops == 750 and (w.bytes_read, w.bytes_written) == (4000, 4000)
    g = one_op_graph("AllGather", [x] * 4, {"group": G4})
    w = g.work(g.nodes["node"])
    assert w.flops == 0 and (w.bytes_read, w.bytes_written) == (4 * 4000, 4 * 16000)
    g = one_op_graph("ReduceScatter", [x] * 4, {"group": G4})
    w = g.work(g.nodes["node"])
    assert w.flops == 3000 and (w.bytes_read, w.bytes_written) == (4 * 4000, 4 * 1000)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_allreduce_grad(reduction):
    check_grad("AllReduce", _xs(3, (2, 4)), {"group": ["a", "b", "c"], "reduction": reduction}, n_out=3)


def test_allgather_grad():
    check_grad("AllGather", _xs(3, (2, 4)), {"group": ["a", "b", "c"], "axis": 1}, n_out=3)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reducescatter_grad(reduction):
    check_grad("ReduceScatter", _xs(2, (4, 3)), {"group": ["a", "b"], "reduction": reduction}, n_out=2)


def test_one_member_allreduce_grad():
    check_grad("AllReduce", _xs(1, (3,)), {"group": G4})


def test_alltoall_all_members_is_the_chunk_transpose():
    """Member j receives chunk j of every member, in member order (torch all_to_all_single):
    with 4 members of 8 rows, rows [2j, 2j+2) of member i land at rows [2i, 2i+2) of member j."""
    xs = _xs(4, (8, 3))
    outs = run_op("AllToAll", xs, {"group": G4})
    for j, o in enumerate(outs):
        for i in range(4):
            np.testing.assert_array_equal(o[2 * i:2 * i + 2], xs[i][2 * j:2 * j + 2])
    twice = run_op("AllToAll", outs, {"group": G4})  # its own inverse
    for a, b in zip(twice, xs):
        np.testing.assert_array_equal(a, b)
    (one,) = run_op("AllToAll", [xs[0][:7]], {"group": G4})  # one member: identity, any length
    np.testing.assert_array_equal(one, xs[0][:7])
    with pytest.raises(GraphError, match="does not split into 4"):
        one_op_graph("AllToAll", [np.zeros((6, 2))] * 4, {"group": G4})


def test_alltoall_work_and_grad():
    x = np.zeros((8, 125), np.float32)  # 1000 fp32 elements, 4000 B
    g = one_op_graph("AllToAll", [x] * 4, {"group": G4})
    w = g.work(g.nodes["node"])
    assert w.flops == 0 and (w.bytes_read, w.bytes_written) == (4 * 4000, 4 * 4000)
    check_grad("AllToAll", _xs(2, (4, 3)), {"group": ["a", "b"]}, n_out=2)
    check_grad("AllToAll", _xs(3, (2, 6)), {"group": ["a", "b", "c"], "axis": 1}, n_out=3)
