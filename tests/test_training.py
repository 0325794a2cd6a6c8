"""Training pass: loss + autodiff + optimizer updates, checkpointing, FLOP accounting."""

import numpy as np
import pytest

from sim.errors import GraphError
from sim.exec import Executor
from sim.graph import Graph, TensorSpec
from sim.passes.training import forward_node_names, training_graph


def mlp(batch=8, sizes=(12, 16, 16, 5), name="mlp") -> Graph:
    """Linear layers as MatMul + Add, Relu between them."""
    g = Graph(name)
    h = g.add_input("x", TensorSpec((batch, sizes[0])))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = g.add_param(f"fc{i}.w", TensorSpec((a, b)), "he")
        bias = g.add_param(f"fc{i}.b", TensorSpec((b,)), "normal", std=0.1)
        (h,) = g.add_node("MatMul", [h, w], name=f"fc{i}")
        (h,) = g.add_node("Add", [h, bias], name=f"fc{i}.bias")
        if i < len(sizes) - 2:
            (h,) = g.add_node("Relu", [h], name=f"act{i}")
    g.set_outputs([h])
    return g.verify()


def _feeds(g, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.inputs["x"].shape).astype(np.float32)
    n, c = g.tensors[g.outputs[0]].shape
    return {"x": x, "labels": rng.integers(0, c, n).astype(np.int64)}


def _numpy_sgd_step(params, x, labels, lr):
    """Hand-written forward/backward of the 3-layer MLP above with softmax cross-entropy."""
    W = [params[f"fc{i}.w"].astype(np.float64) for i in range(3)]
    B = [params[f"fc{i}.b"].astype(np.float64) for i in range(3)]
    x = x.astype(np.float64)
    z0 = x @ W[0] + B[0]
    a0 = np.maximum(z0, 0)
    z1 = a0 @ W[1] + B[1]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W[2] + B[2]
    z = z2 - z2.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    dz2 = p.copy()
    dz2[np.arange(n), labels] -= 1
    dz2 /= n
    dW2, dB2 = a1.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ W[2].T) * (z1 > 0)
    dW1, dB1 = a0.T @ dz1, dz1.sum(0)
    dz0 = (dz1 @ W[1].T) * (z0 > 0)
    dW0, dB0 = x.T @ dz0, dz0.sum(0)
    grads = {"fc0.w": dW0, "fc0.b": dB0, "fc1.w": dW1, "fc1.b": dB1, "fc2.w": dW2, "fc2.b": dB2}
    return loss, {k: params[k] - lr * grads[k] for k in grads}


def test_sgd_step_matches_hand_numpy():
    g = mlp()
    t = training_graph(g, "cross_entropy", "sgd", lr=0.1)
    ex = Executor(t, seed=3)
    feeds = _feeds(g)
    out = ex.run(feeds).values
    loss, new = _numpy_sgd_step(ex.params, feeds["x"], feeds["labels"], 0.1)
    assert abs(float(out["loss"]) - loss) < 1e-5
    for p, v in new.items():
        np.testing.assert_allclose(out[f"{p}.new"], v, rtol=1e-4, atol=1e-6)
    assert t.meta["updates"]["fc0.w.new"] == "fc0.w"
    assert int(out["optimizer.step.new"]) == 1


def test_structure_names_states_and_inplace():
    g = mlp()
    t = training_graph(g, optimizer="adamw", lr=1e-3, weight_decay=0.05)
    assert t.inputs["labels"] == TensorSpec((8,), "int64")
    upd = t.nodes["fc1.w.update"]
    assert upd.op == "AdamWUpdate" and upd.attrs["weight_decay"] == 0.05
    assert upd.meta["inplace"] == {0: 0, 1: 2, 2: 3}
    assert t.param_info["fc1.w.m"].options["role"] == "optimizer_state"
    assert not t.param_info["fc1.w.m"].trainable
    # gradient nodes are named after (and point at) the forward node they differentiate
    grads = [n for n in t.nodes.values() if n.meta.get("forward") == "fc1"]
    assert grads and all(n.name.startswith("fc1.grad") for n in grads)
    # the input graph is untouched
    assert "labels" not in g.inputs and len(g.nodes) == 8
    assert forward_node_names(t) == [n.name for n in g.topo_order()]
    # trainable parameter count is the forward graph's; optimizer states are not trainable
    assert t.param_count == g.param_count


def test_adam_two_steps_with_persistent_state():
    g = mlp()
    t = training_graph(g, optimizer="adam", lr=1e-2)
    ex = Executor(t, seed=0)
    feeds = _feeds(g)
    losses = []
    for _ in range(3):
        out = ex.run(feeds).values
        losses.append(float(out["loss"]))
        for o, p in t.meta["updates"].items():
            ex.params[p] = out[o]
    assert int(ex.params["optimizer.step"]) == 3
    assert losses[2] < losses[1] < losses[0]


def test_mse_loss_and_momentum():
    g = mlp(sizes=(6, 8, 3))
    t = training_graph(g, "mse", "momentum", lr=0.01, momentum=0.9)
    assert t.inputs["labels"] == g.tensors[g.outputs[0]]
    assert not any(n.op == "Neg" for n in t.nodes.values())  # target gradient removed as dead code
    assert "fc0.w.velocity" in t.params


def test_flops_are_about_three_forward_passes():
    # GEMM-heavy MLP: every MatMul of the forward pass (2*N*in*out FLOP) has two backward
    # MatMuls of the same size (dX = dY W^T, dW = X^T dY), except the first layer, whose input
    # needs no gradient. So backward matmul FLOPs = 2 F - F_first exactly.
    sizes = (256, 512, 512, 10)
    n = 64
    g = mlp(n, sizes)
    t = training_graph(g, optimizer="sgd", lr=0.1)
    fwd = [2.0 * n * a * b for a, b in zip(sizes[:-1], sizes[1:])]
    F = sum(fwd)
    mm = sum(t.work(x).matmul_flops for x in t.nodes.values())
    assert mm == 3 * F - fwd[0]
    ratio = t.flops / g.flops
    assert 2.6 < ratio < 3.05, ratio


def test_checkpoint_recompute_gives_identical_step():
    g = mlp(sizes=(12, 16, 16, 16, 16, 5))
    plain = training_graph(g, optimizer="adam", lr=1e-2)
    ckpt = training_graph(g, optimizer="adam", lr=1e-2, checkpoint=True, segment=6)
    rec = [n for n in ckpt.nodes.values() if "recompute" in n.meta]
    assert rec and all(n.name.endswith(".recompute") or ".recompute_" in n.name for n in rec)
    # recompute adds forward FLOPs, never more than one forward pass
    assert plain.flops < ckpt.flops <= plain.flops + g.flops
    a = Executor(plain, seed=1).run(_feeds(g)).values
    b = Executor(ckpt, seed=1).run(_feeds(g)).values
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_bad_arguments():
    g = mlp()
    with pytest.raises(GraphError, match="unknown optimizer 'lion'"):
        training_graph(g, optimizer="lion")
    with pytest.raises(GraphError, match="unknown hyperparameter 'gamma'"):
        training_graph(g, optimizer="sgd", gamma=0.1)
    with pytest.raises(GraphError, match="unknown loss"):
        training_graph(g, loss="hinge")


def test_checkpointing_trades_time_for_memory_on_h100():
    import sim

    g = mlp(1024, (512,) * 9 + (10,))
    plain = training_graph(g, optimizer="adamw")
    ckpt = training_graph(g, optimizer="adamw", checkpoint=True, segment=6)
    a = sim.simulate(plain, "h100", host_inputs=False)
    b = sim.simulate(ckpt, "h100", host_inputs=False)
    # each stored activation is 1024 x 512 fp32 = 2 MiB (one per layer: the weight gradient's
    # GEMM reads it through a transposed view, sim.passes.layout); with two layers per segment
    # about half of them are recomputed instead of kept, at the price of the recompute kernels
    # (measured: 3.0 x 2 MiB less at the peak)
    assert b.peak_memory_bytes <= a.peak_memory_bytes - 2 * 2**21
    assert b.makespan_s > a.makespan_s
    # the recompute chains wait for the backward pass (Depend nodes, in place: no memory)
    gates = [n for n in ckpt.nodes.values() if n.op == "Depend"]
    assert gates and all(n.meta["inplace"] == {0: 0} for n in gates)


def test_sequence_output_scores_classes_on_the_last_axis():
    g = Graph("seq")
    g.add_input("x", TensorSpec((2, 3, 4)))
    g.add_param("w", TensorSpec((4, 5)), "he")
    g.add_node("MatMul", ["x", "w"], ["logits"], name="head")
    g.set_outputs(["logits"])
    t = training_graph(g, optimizer="sgd", lr=0.1)
    assert t.inputs["labels"] == TensorSpec((2, 3), "int64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y = rng.integers(0, 5, (2, 3))
    ex = Executor(t, seed=0)
    z = (x @ ex.params["w"]).reshape(6, 5).astype(np.float64)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = -logp[np.arange(6), y.reshape(-1)].mean()
    assert abs(float(ex.run({"x": x, "labels": y}).values["loss"]) - want) < 1e-5
    # an explicit class axis 1 treats the output as [N, C, d]
    assert training_graph(g, class_axis=1).inputs["labels"].shape == (2, 5)


# ----------------------------------------------------------------- training mode
TRAIN_MODE_YAML = """
name: trainmode
params: {batch: 6}
inputs:
  x: {shape: [batch, 2, 5, 5], dtype: fp64}
graph:
  - {layer: conv2d, name: conv, in: x, out_channels: 3, kernel: 3, bias: false}
  - {layer: batchnorm, name: bn}
  - {layer: flatten, name: flat}
  - {layer: dropout, name: drop, rate: 0.5}
  - {layer: linear, name: fc, out_features: 4, out: logits}
outputs: [logits]
"""


def _train_mode_net():
    from sim.frontends.yaml_loader import load_yaml_text

    return load_yaml_text(TRAIN_MODE_YAML, "trainmode.yaml")


def test_training_graph_runs_batchnorm_and_dropout_in_training_mode():
    g = _train_mode_net()
    assert {n.op: int(n.attrs.get("training_mode", 0)) for n in g} == {
        "Conv": 0, "BatchNormalization": 0, "Flatten": 0, "Dropout": 0, "Gemm": 0}
    t = training_graph(g, optimizer="sgd", lr=0.1)
    bn = t.nodes["bn"]
    assert bn.attrs["training_mode"] == 1
    assert t.nodes["drop"].attrs["training_mode"] == 1
    assert t.outputs[:3] == ["loss", "bn.running_mean.new", "bn.running_var.new"]
    assert t.meta["updates"]["bn.running_mean.new"] == "bn.running_mean"
    # train=False keeps the inference-mode forward (and updates no statistics)
    frozen = training_graph(g, optimizer="sgd", lr=0.1, train=False)
    assert frozen.nodes["bn"].attrs.get("training_mode", 0) == 0
    assert not any(o.startswith("bn.running") for o in frozen.outputs)


def test_trainer_updates_running_statistics_and_redraws_dropout_masks():
    from sim.training import Trainer

    g = _train_mode_net()
    tr = Trainer(g, optimizer="sgd", lr=0.0)  # lr 0: the weights stay, only the masks change
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 5, 5))
    y = rng.integers(0, 4, 6).astype(np.int64)
    conv = Executor(g, params=tr.params).run({"x": x}, keep=["conv"]).values["conv"]
    losses = [tr.step(x, y) for _ in range(3)]
    # running = running * 0.9 + batch * 0.1 (ONNX momentum 0.9), three times from 0 and 1
    mean, var = conv.mean(axis=(0, 2, 3)), conv.var(axis=(0, 2, 3))
    np.testing.assert_allclose(tr.params["bn.running_mean"], mean * (1 - 0.9**3), rtol=1e-12)
    np.testing.assert_allclose(tr.params["bn.running_var"], 0.9**3 + var * (1 - 0.9**3), rtol=1e-12)
    # a new dropout mask every step: same weights and batch, different losses
    assert len(set(losses)) == 3
    # the loss of a step is the cross-entropy of the logits with that step's mask: recompute
    # the first by hand from the conv output, batch statistics and the seed's mask
    from sim.ops.shape import dropout_mask

    P = tr.params
    h = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    h = (h * P["bn.weight"][None, :, None, None] + P["bn.bias"][None, :, None, None]).reshape(6, -1)
    h = h * dropout_mask(h.shape, 0.5, tr.dropout_seeds["drop"]) / 0.5
    z = h @ P["fc.weight"] + P["fc.bias"]
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    assert losses[0] == pytest.approx(-logp[np.arange(6), y].mean(), rel=1e-12)


def test_batchnorm_counts_its_batches_as_torch_does():
    """nn.BatchNorm2d in training mode adds 1 to its int64 num_batches_tracked each step; the
    trained graph carries the same count, one tiny kernel per layer (torch: 53 add_ for
    ResNet-50's 53 batch norms)."""
    import sim
    from sim.passes.runtime import kernel_count
    from sim.training import Trainer

    g = sim.load("resnet50", batch=2)
    before = kernel_count(training_graph(g, optimizer="sgd", momentum=0.9, train=False))
    t = training_graph(g, optimizer="sgd", momentum=0.9)
    counts = [p for p in t.params if p.endswith(".num_batches_tracked")]
    assert len(counts) == 53 and all(t.params[p].dtype == "int64" for p in counts)
    assert kernel_count(t) == before + 53
    tr = Trainer(_train_mode_net(), optimizer="sgd", lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        tr.step(rng.standard_normal((6, 2, 5, 5)), rng.integers(0, 4, 6))
    assert int(tr.params["bn.num_batches_tracked"]) == 3
