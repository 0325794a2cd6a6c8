"""``sim run`` end to end on a tiny ONNX model: summary, JSON, trace, plot, typed errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sim.cli import main


@pytest.fixture
def model(tmp_path):
    w = numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_run_prints_summary_and_writes_files(model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", str(model), "--hw", "h100", "--set", "batch=4", "--dtype", "bf16",
               "--json", str(out / "r.json"), "--trace", str(out / "t.json"),
               "--plot", str(out / "p.png"), "--top", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tiny on h100 (bf16)" in text and "makespan" in text and "top 2 ops" in text
    doc = json.loads((out / "r.json").read_text())
    assert doc["batch"] == 4 and doc["dtype"] == "bf16" and doc["makespan_s"] > 0
    assert {o["op"] for o in doc["ops"]} == {"MatMul", "Relu", "Transfer"}
    trace = json.loads((out / "t.json").read_text())
    assert any(e["ph"] == "X" for e in trace["traceEvents"])
    assert (out / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_hw_set_override_changes_the_result(model, tmp_path, capsys):
    base, slow = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["run", str(model), "--set", "batch=4096", "--json", str(base)]) == 0
    assert main(["run", str(model), "--set", "batch=4096", "--json", str(slow),
                 "--hw-set", "host_link.bandwidth=1 GB/s"]) == 0
    a, b = (json.loads(p.read_text()) for p in (base, slow))
    assert b["makespan_s"] > a["makespan_s"]


def test_hw_set_takes_plain_numbers(model, tmp_path, capsys):
    # a Relu on 4096 x 8 fp32 is memory-bound: halving HBM efficiency (a bare number, not a
    # quantity) doubles its memory time (cold reads: no L2 reuse), so its memory_s doubles
    runs = {}
    for eff in ("0.897", "0.4485"):
        path = tmp_path / f"{eff}.json"
        assert main(["run", str(model), "--set", "batch=4096", "--json", str(path),
                     "--hw-set", f"memory.hbm.efficiency={eff}", "--hw-set", "arch.sms=66",
                     "--no-cache-reuse"]) == 0
        runs[eff] = {o["op"]: o for o in json.loads(path.read_text())["ops"]}
    assert runs["0.4485"]["Relu"]["memory_s"] == pytest.approx(2 * runs["0.897"]["Relu"]["memory_s"])
    assert main(["run", str(model), "--hw-set", "memory.hbm.efficiency=1.5"]) == 2
    assert "memory.hbm.efficiency" in capsys.readouterr().err


def test_bad_placement_exits_2_and_oom_is_a_result(model, capsys):
    assert main(["run", str(model), "--set", "batch=4", "--place", "mm=gpu9"]) == 2
    assert "gpu9" in capsys.readouterr().err
    assert main(["run", str(model), "--set", "batch=4", "--place", "oops"]) == 2
    capsys.readouterr()
    assert main(["run", str(model), "--set", "batch=4096",
                 "--hw-set", "memory.hbm.capacity=1 KB"]) == 0
    out, err = capsys.readouterr()
    assert "OUT OF MEMORY on gpu0" in out and "stopped there" in out
    assert "OUT OF MEMORY on gpu0" in err and len(err.strip().splitlines()) == 1


def test_train_and_fuse_change_the_graph(model, tmp_path, capsys):
    paths = {k: tmp_path / f"{k}.json" for k in ("fwd", "train", "fused")}
    assert main(["run", str(model), "--set", "batch=4", "--json", str(paths["fwd"])]) == 0
    assert main(["run", str(model), "--set", "batch=4", "--train", "--optimizer", "sgd",
                 "--json", str(paths["train"])]) == 0
    assert main(["run", str(model), "--set", "batch=4", "--fuse", "--json", str(paths["fused"])]) == 0
    docs = {k: json.loads(p.read_text()) for k, p in paths.items()}
    ops = {k: [o["op"] for o in d["ops"] if o["op"] != "Transfer"] for k, d in docs.items()}
    assert sorted(ops["fwd"]) == ["MatMul", "Relu"]
    assert "SGDUpdate" in ops["train"] and docs["train"]["graph"].endswith(".train")
    assert len(ops["fused"]) == 1


def test_resident_inputs_and_streams(model, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", str(model), "--set", "batch=4", "--resident-inputs", "--streams", "2",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [o["op"] for o in doc["ops"]] == ["MatMul", "Relu"]


def test_run_options_are_one_typed_record():
    """``sim run``'s arguments become one frozen RunOptions: values parsed once, typed."""
    import dataclasses

    from sim.cli import build_parser
    from sim.cli.options import RunOptions

    args = build_parser().parse_args([
        "run", "gpt2", "--hw", "a100", "--set", "batch=8", "--hw-set", "memory.hbm.bandwidth=2 TB/s",
        "--place", "embed*=host", "--dispatch", "8 us", "--no-cache-reuse", "--train", "--streams", "2"])
    opts = RunOptions.from_args(args)
    assert opts.sets == {"batch": 8} and opts.hw_sets == {"memory.hbm.bandwidth": "2 TB/s"}
    assert opts.placement == {"embed*": "host"} and opts.dispatch_s == pytest.approx(8e-6)
    assert opts.cache_reuse is False and opts.train is True and opts.streams == 2 and opts.hw == "a100"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.train = False  # type: ignore[misc]


def test_inference_reads_a_weight_transpose_as_the_gemm_layout_flag(tmp_path):
    """``MatMul(x, Transpose(w))`` (PyTorch's F.linear as exported): one GEMM, no transpose
    kernel, no transposed copy of the weight in memory."""
    n, k = 1024, 2048
    w = numpy_helper.from_array(np.ones((n, k), np.float32), "w")  # [out, in], as nn.Linear stores it
    g = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], name="wt", perm=[1, 0]),
         helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm")],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], [w])
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "r.json"
    assert main(["run", str(path), "--hw", "h100", "--resident-inputs", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    (tr,) = [o for o in doc["ops"] if o["op"] == "Transpose"]
    assert tr["end_s"] - tr["start_s"] == 0.0
    # peak: the weight, x and y (fp32), and no second n x k buffer
    want = 4 * (n * k + 4 * k + 4 * n)
    assert max(doc["peak_memory_by_device"].values()) == want


def test_fp8_runs_the_matmul_on_fp8_operands_and_says_so(model, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", str(model), "--set", "batch=4", "--dtype", "fp8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "precision: fp8 (E4M3) GEMMs in a bf16 model" in text
    ops = {o["name"]: o for o in json.loads(out.read_text())["ops"]}
    # the weight is stored in fp8, x quantised by one kernel; the GEMM reads 1-byte operands
    # (x 4x16, w 16x8) and writes its bf16 result (4x8)
    (gemm,) = [o for o in ops.values() if o["op"] == "Fused"]
    assert gemm["dtype"] == "fp8" and gemm["bytes"] == 4 * 16 + 16 * 8 + 4 * 8 * 2
    assert [o["op"] for o in ops.values()].count("Cast") == 1
