"""``sim train --dtype bf16|fp16``: the executor trains the autocast graph (fp32 master weights
and optimizer states, matrix ops low, norms and the loss fp32), checked through the command."""

import json

import numpy as np
import pytest

import sim.cli.train as train_cli
from sim.cli import main
from sim.training.trainer import Trainer

pytest.importorskip("sklearn", reason="the digits dataset is bundled with scikit-learn")

TINY = """
name: tiny-ln-mlp
params: {batch: 16}
inputs:
  x: {shape: [batch, 64]}
graph:
  - {layer: linear, name: fc1, in: x, out: h1, out_features: 32}
  - {op: Relu, in: h1, out: a1}
  - {layer: layernorm, name: ln, in: a1, out: n1}
  - {layer: linear, name: fc2, in: n1, out: logits, out_features: 10}
outputs: [logits]
"""

# unit roundoff (half an ulp of 1) of the low dtypes: 8 and 11 significand bits
UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
STEPS = 20


class _Recording(Trainer):
    """The command's Trainer, kept with the loss of every step."""

    made: list["_Recording"] = []

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.step_losses: list[float] = []
        _Recording.made.append(self)

    def step(self, x, y):
        loss = super().step(x, y)
        self.step_losses.append(loss)
        return loss


def _train(tmp_path, monkeypatch, capsys, dtype):
    wl = tmp_path / "tiny.yaml"
    wl.write_text(TINY)
    out = tmp_path / f"{dtype}.json"
    monkeypatch.setattr(train_cli, "Trainer", _Recording)
    _Recording.made.clear()
    assert main(["train", str(wl), "--epochs", "1", "--batch", "16", "--dtype", dtype, "--hw", "none",
                 "--optimizer", "adam", "--lr", "1e-3", "--json", str(out)]) == 0
    (trainer,) = _Recording.made
    return trainer, json.loads(out.read_text()), capsys.readouterr().out


def _relative(trainer, ref):
    """Relative difference of the first STEPS losses of two runs."""
    got, want = np.array(trainer.step_losses[:STEPS]), np.array(ref.step_losses[:STEPS])
    return np.abs(got - want) / np.abs(want)


def _dtypes(graph, names):
    return {t: graph.tensors[t].dtype for t in names}


def test_bf16_trains_the_autocast_graph(tmp_path, monkeypatch, capsys):
    ref, _, text32 = _train(tmp_path, monkeypatch, capsys, "fp32")
    tr, report, text = _train(tmp_path, monkeypatch, capsys, "bf16")
    g = tr.graph
    # (c) by hand, PyTorch's CUDA autocast lists: the linear layers (Gemm, matrix ops) take bf16
    # casts of x, the weights and biases and give bf16; ReLU runs in its input's dtype (bf16);
    # layer norm is an fp32 op (its bf16 input cast up); fc2 casts the fp32 norm output down;
    # the logits are cast back to fp32 for the loss, which is fp32
    assert _dtypes(g, ["h1", "a1", "n1", "logits", "loss"]) == {
        "h1": "bf16", "a1": "bf16", "n1": "fp32", "logits": "fp32", "loss": "fp32"}
    ops = {n.name: (n.op, [g.tensors[t].dtype for t in n.inputs if t]) for n in g.nodes.values()}
    assert ops["fc1"] == ("Gemm", ["bf16"] * 3) and ops["fc2"] == ("Gemm", ["bf16"] * 3)
    assert ops["ln"] == ("LayerNormalization", ["fp32"] * 3)
    assert ops["loss"][1][0] == "fp32"
    casts = sorted(n.inputs[0] for n in g.nodes.values() if n.op == "Cast" and n.meta.get("cast"))
    assert casts == sorted(["x", "fc1.weight", "fc1.bias", "a1", "n1", "fc2.weight", "fc2.bias",
                            g.nodes["fc2"].outputs[0]])
    # (a) master weights and Adam states stay fp32 in the graph and in the executor's arrays
    masters = [p for p in g.params if g.param_info[p].trainable]
    assert sorted(masters) == sorted(["fc1.weight", "fc1.bias", "ln.weight", "ln.bias", "fc2.weight",
                                      "fc2.bias"])
    states = [f"{p}.{s}" for p in masters for s in ("m", "v")]
    for p in masters + states:
        assert g.params[p].dtype == "fp32" and tr.params[p].dtype == np.float32, p
    assert tr.steps == len(tr.step_losses) > STEPS
    # (b) the same minibatches (same seed) as the fp32 run: the first steps' losses differ by
    # bf16 rounding. Each forward rounds x, the weights, fc1's output, fc2's input and output
    # to bf16 (relative error <= u = 2^-8 each); cross-entropy's gradient in the logits has an
    # L1 norm <= 2 and the logits are O(1), so the loss moves by a few u; Adam steps of 1e-3
    # keep the two runs' weights within lr-sized differences over 20 steps. Bound: 4u relative.
    # Rounding is really there: more than u/64, far above fp32's ~1e-7.
    rel = _relative(tr, ref)
    u = UNIT_ROUNDOFF["bf16"]
    assert rel.max() <= 4 * u and rel.max() >= u / 64, rel.max()
    assert report["precision"] == "autocast" and report["loss_scale"] == 1.0
    assert "bf16 mixed precision (autocast" in text and "fp32 master weights" in text
    assert "mixed precision" not in text32 and ", fp32\n" in text32


def test_fp16_uses_the_static_loss_scale(tmp_path, monkeypatch, capsys):
    ref, _, _ = _train(tmp_path, monkeypatch, capsys, "fp32")
    tr, report, text = _train(tmp_path, monkeypatch, capsys, "fp16")
    g = tr.graph
    # the backward pass is seeded with 1024 and every update divides it out
    assert report["loss_scale"] == 1024.0 and "static loss scale 1024" in text
    assert g.params["loss.scale"].dtype == "fp32"
    updates = [n for n in g.nodes.values() if n.op == "AdamUpdate"]
    assert len(updates) == 6 and all(n.attrs["grad_scale"] == 1 / 1024 for n in updates)
    assert g.tensors["h1"].dtype == "fp16" and g.tensors["n1"].dtype == "fp32"
    # fp16 has 3 more significand bits than bf16: the same bound in its unit roundoff
    rel = _relative(tr, ref)
    u = UNIT_ROUNDOFF["fp16"]
    assert rel.max() <= 4 * u and rel.max() >= u / 64, rel.max()
