"""The examples run end to end (small arguments) and print what their docstrings promise."""

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_whatif_hardware(capsys, monkeypatch):
    out = run_example("whatif_hardware.py", ["--workload", "mlp-mnist", "--batch", "8"],
                      capsys, monkeypatch)
    rows = dict(re.findall(r"^  (.+?)\s+(\d+\.\d+) ms  x", out, flags=re.M))
    assert len(rows) == 9
    base = float(rows["h100 bf16 (baseline)"])
    # twice the HBM bandwidth or no launch floor can only help; fp32 without tensor cores hurts
    assert float(rows["h100 bf16, HBM 2x"]) <= base
    assert float(rows["h100 bf16, launch floor 0"]) < base
    assert float(rows["h100 fp32"]) > base


def test_batch_roofline(capsys, monkeypatch):
    out = run_example("batch_roofline.py", ["--workload", "mlp-mnist", "--batches", "1,64"],
                      capsys, monkeypatch)
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 64]
    # throughput (samples/s) grows with the batch
    assert float(rows[1][2]) > float(rows[0][2])


def test_systolic_padding(capsys, monkeypatch):
    out = run_example("systolic_padding.py", ["--hw", "tpu-v4", "--base", "1024"], capsys, monkeypatch)
    rows = {int(r.split()[0]): float(r.split()[1]) for r in out.splitlines() if r.strip()[:1].isdigit()}
    # crossing the 128-wide array (and 256) costs a step in time
    assert rows[257] > rows[256] and rows[513] > rows[512]


@pytest.mark.slow
def test_training_tradeoffs(capsys, monkeypatch):
    pytest.importorskip("sklearn")
    out = run_example("training_tradeoffs.py", ["--epochs", "1", "--sim-workload", "mlp-mnist"],
                      capsys, monkeypatch)
    assert "test accuracy" in out and "2:4" in out


def test_hbm_decode_study(capsys, monkeypatch, tmp_path):
    out = run_example("hbm_decode_study.py", ["--workload", "gpt2", "--context", "128", "--batches", "1,8",
                                              "--bandwidths", "0.25 TB/s;1 TB/s", "--executor", "serial",
                                              "--store", str(tmp_path / "d.db"),
                                              "--plot", str(tmp_path / "d.png")], capsys, monkeypatch)
    rows = {(bw, int(b)): float(ms) for bw, b, ms in
            re.findall(r"^\s+(\d+\.?\d* TB/s)\s+(\d+)\s+(\d+\.\d+)\s", out, flags=re.M)}
    assert len(rows) == 4
    # a decode step reads every weight once: at least 124.4M bf16 parameters / bandwidth
    for (bw, _), ms in rows.items():
        assert ms / 1e3 >= 124.4e6 * 2 / (float(bw.split()[0]) * 1e12)
    gain = float(re.search(r"batch\s+1: x(\d+\.\d+)", out).group(1))
    assert 1.3 < gain <= 4.0  # memory-bound at batch 1, and never beyond the bandwidth ratio
    assert (tmp_path / "d.png").exists() and (tmp_path / "d.svg").exists()


def test_accelerator_bert_training(capsys, monkeypatch, tmp_path):
    args = ["--hw", "a100,h100,alveo-u280", "--batches", "8", "--executor", "serial",
            "--store", str(tmp_path / "a.db"), "--plot", str(tmp_path / "a.png")]
    out = run_example("accelerator_bert_training.py", args, capsys, monkeypatch)
    ms = {hw: float(t) for hw, t in re.findall(r"^\s+(\S+)\s+8\s+(\d+\.\d+)\s", out, flags=re.M)}
    assert set(ms) == {"a100", "h100", "alveo-u280"}
    # H100 trains BERT faster than A100 (MLPerf Training v3.0: ~2-3x); the FPGA is far behind
    assert ms["h100"] < ms["a100"] < ms["alveo-u280"]
    assert (tmp_path / "a-pareto.png").exists() and (tmp_path / "a-pareto.svg").exists()


def test_inference_roofline(capsys, monkeypatch):
    out = run_example("inference_roofline.py", ["--layers", "2", "--prompt", "512", "--batches", "1,8"],
                      capsys, monkeypatch)
    steps = {m[0]: m[1] for m in re.findall(r"^\s+(prefill \d+ tokens|decode batch \d+)\s+[\d.]+\s+(\w+)",
                                             out, flags=re.M)}
    assert steps == {"prefill 512 tokens": "compute", "decode batch 1": "memory", "decode batch 8": "memory"}
    whatif = [float(x) for x in re.findall(r"^\s+[\d.]+x\s+\d+\s+([\d.]+)", out, flags=re.M)]
    # more HBM bandwidth speeds decode up
    assert whatif[0] == 1.0 and whatif[2] > 1.3


def test_quantised_serving(capsys, monkeypatch):
    out = run_example("quantised_serving.py", ["--layers", "2", "--steps", "4", "--batch", "8"],
                      capsys, monkeypatch)
    rows = {line[:18].strip(): [float(x) for x in line[18:].split()]
            for line in out.splitlines()[2:] if line.strip()}
    assert {"bf16", "int8 weight-only", "int4 weight-only", "fp8 (W8A8)", "bf16 + fp8 KV"} <= set(rows)
    # columns: agreement, logit error, step b=1, x, step b=8, x, weights GB, KV tokens
    assert rows["int4 weight-only"][1] > rows["int8 weight-only"][1]  # coarser weights, larger error
    assert rows["int4 weight-only"][6] < rows["int8 weight-only"][6] < rows["bf16"][6]
    assert rows["bf16 + fp8 KV"][7] > rows["bf16"][7]  # an fp8 cache holds more tokens
