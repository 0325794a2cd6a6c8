"""Loss ops against onnx.reference (SoftmaxCrossEntropyLoss) and hand NumPy (MSELoss)."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec

rng = np.random.default_rng(0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2), (2, 3, 2, 2)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1])
def test_sce_matches_onnx_reference(reduction, shape, weighted, ignore):
    x = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:])).astype(np.int64)
    labels.reshape(-1)[0] = 0  # at least one label not ignored
    w = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32) if weighted else None
    attrs = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    ref = onnx_ref("SoftmaxCrossEntropyLoss", [x, labels, w], attrs, n_out=2, opset=13)
    got = run_op("SoftmaxCrossEntropyLoss", [x, labels, w], attrs)
    for r, v in zip(ref, got):
        assert v.shape == r.shape
        np.testing.assert_allclose(v, r, rtol=1e-5, atol=1e-6)


def test_sce_hand_formula_mean():
    # -log softmax(x)[label], averaged: written out for a 2x3 case
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0], np.int64)
    (loss, _) = run_op("SoftmaxCrossEntropyLoss", [x, labels])
    l0 = -(3.0 - np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0)))
    l1 = np.log(3.0)
    assert loss.shape == () and abs(float(loss) - (l0 + l1) / 2) < 1e-12


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_sce_gradient(reduction, ignore):
    x = rng.standard_normal((4, 3, 2))
    labels = np.array([[0, 2], [1, 1], [2, 0], [1, 2]], np.int64)
    w = rng.uniform(0.5, 2.0, 3)
    attrs = {"reduction": reduction} | ({"ignore_index": ignore} if ignore is not None else {})
    check_grad("SoftmaxCrossEntropyLoss", [x, labels], attrs, n_out=1)
    check_grad("SoftmaxCrossEntropyLoss", [x, labels, w], attrs, wrt=[0], n_out=1)


def test_sce_gradient_through_log_prob():
    x = rng.standard_normal((3, 5))
    labels = np.array([4, 0, 2], np.int64)
    check_grad("SoftmaxCrossEntropyLoss", [x, labels], {"reduction": "sum"}, n_out=None)


def test_sce_work_counts():
    g = Graph("sce")
    g.add_input("x", TensorSpec((8, 10)))
    g.add_input("y", TensorSpec((8,), "int64"))
    g.add_node("SoftmaxCrossEntropyLoss", ["x", "y"], ["loss"], name="loss")
    g.add_node("SoftmaxCrossEntropyLoss", ["x", "y"], ["loss2", "logp"], name="loss_lp")
    w = g.work("loss")
    # 5 FLOP + 1 exp per score (80 scores), 4 FLOP + 1 log per row (8 rows)
    assert w.flops == 5 * 80 + 4 * 8 and w.transcendentals == 80 + 8 and w.matmul_flops == 0
    # reads fp32 scores and int64 labels, writes the fp32 scalar (+ log_prob when it is named)
    assert w.bytes_read == 80 * 4 + 8 * 8 and w.bytes_written == 4
    assert g.work("loss_lp").bytes_written == 4 + 80 * 4


def test_sce_bad_labels():
    g = Graph("bad")
    g.add_input("x", TensorSpec((4, 3)))
    g.add_input("y", TensorSpec((5,), "int64"))
    with pytest.raises(GraphError, match="labels shape"):
        g.add_node("SoftmaxCrossEntropyLoss", ["x", "y"], name="loss")
    g.add_input("yf", TensorSpec((4,)))
    with pytest.raises(GraphError, match="labels must be int64"):
        g.add_node("SoftmaxCrossEntropyLoss", ["x", "yf"], name="loss")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_hand_formula(reduction):
    p = rng.standard_normal((3, 4)).astype(np.float32)
    t = rng.standard_normal((3, 4)).astype(np.float32)
    (loss,) = run_op("MSELoss", [p, t], {"reduction": reduction})
    sq = (p - t) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(loss, want, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_gradient(reduction):
    p = rng.standard_normal((3, 4))
    t = rng.standard_normal((3, 4))
    check_grad("MSELoss", [p, t], {"reduction": reduction})
    check_grad("MSELoss", [p, rng.standard_normal((4,))], {"reduction": reduction})


def test_mse_work_counts():
    g = one_op_graph("MSELoss", [np.zeros((6, 5), np.float32)] * 2)
    w = g.work("node")
    assert w.flops == 3 * 30 and w.bytes_read == 2 * 30 * 4 and w.bytes_written == 4


def test_backward_ops_directly_against_hand_formulas():
    x = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2], np.int64)
    dloss = np.array(2.0)
    (dx,) = run_op("SoftmaxCrossEntropyLossGrad", [dloss, None, x, labels], {"reduction": "mean"})
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    p[np.arange(4), labels] -= 1  # d/dx of mean cross-entropy: (softmax - onehot) / N
    np.testing.assert_allclose(dx, 2.0 * p / 4, rtol=1e-12)
    pred, target = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    (dp,) = run_op("MSELossGrad", [dloss, pred, target], {"reduction": "mean"})
    np.testing.assert_allclose(dp, 2.0 * 2 * (pred - target) / 6, rtol=1e-12)
