"""``sim train``: the command line over Trainer, autocast, pruning and the engine."""

import json
import sys

import pytest

from sim.cli import main

pytest.importorskip("sklearn", reason="the digits dataset is bundled with scikit-learn")

MLP = """
name: tiny-mlp
params: {batch: 32}
inputs:
  x: {shape: [batch, 784]}
graph:
  - {layer: linear, name: fc1, in: x, out: h1, out_features: 64}
  - {op: Relu, in: h1, out: a1}
  - {layer: linear, name: fc2, in: a1, out: logits, out_features: 10}
outputs: [logits]
"""


@pytest.fixture
def workload(tmp_path):
    p = tmp_path / "tiny-mlp.yaml"
    p.write_text(MLP)
    return str(p)


def _train(tmp_path, capsys, *argv):
    out = tmp_path / "r.json"
    assert main(["train", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_fixed_seed_same_curve_and_json_fields(workload, tmp_path, capsys):
    a, text = _train(tmp_path, capsys, workload, "--epochs", "2", "--seed", "3", "--hw", "none")
    b, _ = _train(tmp_path, capsys, workload, "--epochs", "2", "--seed", "3", "--hw", "none")
    c, _ = _train(tmp_path, capsys, workload, "--epochs", "2", "--seed", "4", "--hw", "none")
    assert a["losses"] == b["losses"] and a["losses"] != c["losses"]
    assert len(a["losses"]) == 2 and a["losses"][1] < a["losses"][0]
    assert a["test_accuracy"] > 0.9
    assert a["step_time_s"] is None and a["peak_memory_bytes"] is None  # --hw none: no simulation
    assert "epoch   2/2" in text and "test accuracy" in text


def test_default_hw_is_h100(workload, tmp_path, capsys):
    r, text = _train(tmp_path, capsys, workload, "--epochs", "1")
    assert r["hw"] == "h100" and r["step_time_s"] > 0 and r["peak_memory_bytes"] > 0
    assert "one training step on h100" in text


def test_hw_simulates_one_step(workload, tmp_path, capsys):
    r, text = _train(tmp_path, capsys, workload, "--epochs", "1", "--hw", "h100", "--optimizer", "adamw")
    params = 784 * 64 + 64 + 64 * 10 + 10
    assert r["step_time_s"] > 0
    # AdamW in fp32 keeps param + grad + m + v: at least 16 bytes per parameter
    assert r["peak_memory_bytes"] >= 16 * params
    assert "one training step on h100" in text


@pytest.mark.slow
def test_bf16_and_pruning(workload, tmp_path, capsys):
    r, _ = _train(tmp_path, capsys, workload, "--epochs", "1", "--dtype", "bf16", "--prune", "2:4")
    assert r["dtype"] == "bf16" and r["prune"] == "2:4"
    assert r["density"] == pytest.approx(0.5, abs=0.01)  # of the two weight matrices
    assert {"accuracy_before_prune", "accuracy_after_prune", "fine_tune_losses"} <= set(r)
    assert r["test_accuracy"] > 0.85


def test_errors_are_one_line(workload, tmp_path, capsys, monkeypatch):
    assert main(["train", workload, "--dataset", "cifar"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err
    assert main(["train", workload, "--dtype", "int8"]) == 2
    assert "--dtype must be fp32, bf16 or fp16" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if scikit-learn were missing
    assert main(["train", workload]) == 2
    err = capsys.readouterr().err
    assert "needs scikit-learn" in err and err.count("\n") == 1
