"""Training for real on scikit-learn's digits: accuracy, reproducibility, mixed precision, pruning."""

import numpy as np
import pytest
from test_training import mlp

from sim.graph import Graph, TensorSpec
from sim.passes.precision import amp
from sim.passes.sparsity import prune
from sim.passes.trainer import Trainer, load_dataset, resize_bilinear

pytest.importorskip("sklearn", reason="the digits dataset is bundled with scikit-learn")


def lenet(batch: int = 32, side: int = 28) -> Graph:
    """LeNet-5 style: conv5-relu-pool, conv5-relu-pool, three linear layers."""
    g = Graph("lenet")
    h = g.add_input("x", TensorSpec((batch, 1, side, side)))
    for i, (cin, cout, pad) in enumerate([(1, 6, 2), (6, 16, 0)]):
        g.add_param(f"conv{i}.w", TensorSpec((cout, cin, 5, 5)), "he")
        g.add_param(f"conv{i}.b", TensorSpec((cout,)), "zeros")
        (h,) = g.add_node("Conv", [h, f"conv{i}.w", f"conv{i}.b"], name=f"conv{i}",
                          attrs={"pads": [pad] * 4})
        (h,) = g.add_node("Relu", [h], name=f"conv{i}.act")
        (h,) = g.add_node("MaxPool", [h], [f"pool{i}"], name=f"pool{i}",
                          attrs={"kernel_shape": [2, 2], "strides": [2, 2]})
    (h,) = g.add_node("Flatten", [h], name="flat")
    n = g.tensors[h].shape[1]
    for i, (a, b) in enumerate([(n, 120), (120, 84), (84, 10)]):
        g.add_param(f"fc{i}.w", TensorSpec((a, b)), "he")
        g.add_param(f"fc{i}.b", TensorSpec((b,)), "zeros")
        (h,) = g.add_node("MatMul", [h, f"fc{i}.w"], name=f"fc{i}")
        (h,) = g.add_node("Add", [h, f"fc{i}.b"], name=f"fc{i}.bias")
        if i < 2:
            (h,) = g.add_node("Relu", [h], name=f"fc{i}.act")
    g.set_outputs([h])
    return g.verify()


def test_dataset_adapts_to_the_input_shape():
    d = load_dataset("digits", (32, 784))
    assert d.x_train.shape == (1438, 784) and d.x_test.shape == (359, 784)
    assert d.x_train.dtype == np.float32 and abs(float(d.x_train.mean())) < 1e-3
    assert load_dataset("digits", (8, 1, 32, 32)).x_test.shape == (359, 1, 32, 32)
    assert load_dataset("digits", (8, 64)).x_test.shape == (359, 64)
    # bilinear resizing keeps a constant image constant and the mean of a ramp
    assert np.allclose(resize_bilinear(np.full((1, 8, 8), 3.0), 28, 28), 3.0)


@pytest.mark.slow
def test_mlp_reaches_95_percent():
    g = mlp(32, (784, 128, 64, 10))
    d = load_dataset("digits", g.inputs["x"].shape)
    tr = Trainer(g, optimizer="adam", lr=1e-3)
    hist = tr.fit(d.x_train, d.y_train, 4, d.x_test, d.y_test)
    assert hist.losses[-1] < hist.losses[0]
    assert hist.epochs[-1].test_accuracy >= 0.95


@pytest.mark.slow
def test_lenet_reaches_95_percent():
    g = lenet(32, 28)
    d = load_dataset("digits", g.inputs["x"].shape)
    tr = Trainer(g, optimizer="adam", lr=2e-3)
    hist = tr.fit(d.x_train, d.y_train, 4, d.x_test, d.y_test)
    assert hist.epochs[-1].test_accuracy >= 0.95


def test_fixed_seed_gives_the_same_loss_curve():
    g = mlp(32, (64, 32, 10))
    d = load_dataset("digits", g.inputs["x"].shape)
    curves = []
    for seed in (5, 5, 6):
        tr = Trainer(g, optimizer="momentum", lr=0.05, seed=seed)
        curves.append(tr.fit(d.x_train[:320], d.y_train[:320], 2).losses)
    assert curves[0] == curves[1]
    assert curves[0] != curves[2]


@pytest.mark.slow
def test_bf16_amp_trains_as_well():
    g = mlp(32, (784, 128, 64, 10))
    d = load_dataset("digits", g.inputs["x"].shape)
    accs = {}
    for name, model in (("fp32", g), ("bf16", amp(g, "bf16"))):
        tr = Trainer(model, optimizer="adam", lr=1e-3)
        accs[name] = tr.fit(d.x_train, d.y_train, 3, d.x_test, d.y_test).epochs[-1].test_accuracy
    assert accs["bf16"] >= 0.95
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.02


@pytest.mark.slow
def test_2_4_pruning_and_fine_tuning_keeps_accuracy():
    g = mlp(32, (784, 128, 64, 10))
    d = load_dataset("digits", g.inputs["x"].shape)
    tr = Trainer(g, optimizer="adam", lr=1e-3)
    tr.fit(d.x_train, d.y_train, 3)
    dense = tr.accuracy(d.x_test, d.y_test)
    masks, _ = prune(g, tr.params, "2:4")
    tr.set_masks(masks)
    pruned = tr.accuracy(d.x_test, d.y_test)
    tr.fit(d.x_train, d.y_train, 1)
    tuned = tr.accuracy(d.x_test, d.y_test)
    assert all(np.count_nonzero(tr.params[p]) * 2 == tr.params[p].size for p in masks)
    assert tuned >= 0.95 and tuned >= pruned - 0.01 and dense - tuned <= 0.02
