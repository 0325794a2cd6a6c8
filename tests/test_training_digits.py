"""Training for real on scikit-learn's digits: accuracy, reproducibility, mixed precision, pruning."""

import numpy as np
import pytest
from test_training import mlp

import sim
from sim.passes.precision import amp
from sim.passes.sparsity import prune
from sim.training import Trainer, load_dataset, resize_bilinear

pytest.importorskip("sklearn", reason="the digits dataset is bundled with scikit-learn")


def test_dataset_adapts_to_the_input_shape():
    d = load_dataset("digits", (32, 784))
    assert d.x_train.shape == (1438, 784) and d.x_test.shape == (359, 784)
    assert d.x_train.dtype == np.float32 and abs(float(d.x_train.mean())) < 1e-3
    assert load_dataset("digits", (8, 1, 32, 32)).x_test.shape == (359, 1, 32, 32)
    assert load_dataset("digits", (8, 64)).x_test.shape == (359, 64)
    # bilinear resizing keeps a constant image constant and the mean of a ramp
    assert np.allclose(resize_bilinear(np.full((1, 8, 8), 3.0), 28, 28), 3.0)


@pytest.mark.slow
def test_mlp_mnist_reaches_95_percent():
    # workloads/mlp-mnist.yaml: 784-128-10, digits resized 8x8 -> 28x28
    g = sim.load("workloads/mlp-mnist.yaml", batch=32)
    d = load_dataset("digits", g.inputs["x"].shape)
    tr = Trainer(g, optimizer="adam", lr=1e-3)
    hist = tr.fit(d.x_train, d.y_train, 4, d.x_test, d.y_test)
    assert hist.losses[-1] < hist.losses[0]
    assert hist.epochs[-1].test_accuracy >= 0.95


@pytest.mark.slow
def test_lenet5_reaches_95_percent():
    # workloads/lenet5.yaml: tanh LeNet-5 on 32x32 inputs (digits resized 8x8 -> 32x32)
    g = sim.load("workloads/lenet5.yaml", batch=32)
    d = load_dataset("digits", g.inputs["x"].shape)
    tr = Trainer(g, optimizer="adam", lr=2e-3)
    hist = tr.fit(d.x_train, d.y_train, 2, d.x_test, d.y_test)
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
