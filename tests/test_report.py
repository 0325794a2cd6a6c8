"""Result aggregation, JSON, trace structure, summary text and plots (on hand-made timelines)."""

from __future__ import annotations

import dataclasses
import json

import matplotlib
import pytest

from sim.engine import FixedCost, simulate
from sim.graph import Graph, TensorSpec
from sim.hw.spec import ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel, PowerSpec, SystemSpec
from sim.report.plots import plot_memory, plot_roofline, plot_timeline
from sim.report.record import OpRecord
from sim.report.summary import fmt_bytes, fmt_si, fmt_time
from sim.report.trace import trace_events


def dev(kind: str = "gpu") -> DeviceSpec:
    return DeviceSpec(
        name=f"test-{kind}", kind=kind,
        units=(ComputeUnit("tensor", True, {"fp32": 100.0}), ComputeUnit("vector", False,
                                                                          {"fp32": 10.0})),
        memory=(MemoryLevel("hbm", 1e6, 10.0),), host_link=LinkSpec("pcie", 1000.0),
        power=PowerSpec(idle_w=2.0),
    )


def costs(node, work, spec, dtype):
    """MatMul on the tensor unit (compute-bound), the rest on the vector unit (memory-bound)."""
    if node.op == "MatMul":
        return FixedCost(2.0, unit="tensor", bound="compute", flops=work.flops, bytes=work.bytes,
                         energy_j=1.0)
    return FixedCost(1.0, unit="vector", bound="memory", flops=work.flops, bytes=work.bytes,
                     energy_j=0.5)


def mlp() -> Graph:
    g = Graph("mlp")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_param("w1", TensorSpec((8, 8)))
    g.add_param("w2", TensorSpec((8, 2)))
    g.add_node("MatMul", ["x", "w1"], ["h"], name="fc1", meta={"layer": "fc1"})
    g.add_node("Relu", ["h"], ["r"], name="relu", meta={"layer": "fc1"})
    g.add_node("MatMul", ["r", "w2"], ["y"], name="fc2", meta={"layer": "fc2"})
    g.set_outputs(["y"])
    return g


@pytest.fixture
def result():
    return simulate(mlp(), dev(), cost_fn=costs,
                    transfer_fn=lambda link, n: n / link.bandwidth_Bps)


def test_records_are_typed_and_complete(result):
    # x is 4*8*4 = 128 B over 1000 B/s: 0.128 s, then 2 + 1 + 2 s
    assert [(o.name, o.unit) for o in result.ops] == [
        ("x->gpu0", "copy:pcie in"), ("fc1", "tensor"), ("relu", "vector"), ("fc2", "tensor")]
    assert all(type(o) is OpRecord for o in result.ops)
    assert result.makespan_s == pytest.approx(5.128)
    assert result.ops[0].duration_s == pytest.approx(0.128)
    assert (result.ops[0].src, result.ops[0].dst, result.ops[0].tensor) == ("host", "gpu0", "x")
    assert result.ops[1].layer == "fc1" and result.ops[1].flops == 2 * 4 * 8 * 8
    assert result.ops[1]["flops"] == result.ops[1].flops  # reads like the earlier dict records
    rows = result.records()
    assert all(set(r) == {f.name for f in dataclasses.fields(OpRecord)} for r in rows)  # one schema
    assert json.loads(json.dumps(rows)) == rows
    assert json.loads(result.to_json())["ops"] == rows


def test_records_load_into_pandas(result):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(result.ops)
    assert list(df["name"]) == ["x->gpu0", "fc1", "relu", "fc2"]
    assert df["flops"].sum() == 512 + 32 + 128  # 2*4*8*8 + 4*8 (Relu) + 2*4*8*2
    assert (df["end_s"] - df["start_s"]).sum() == pytest.approx(5.128)
    assert pd.DataFrame(result.records()).equals(df)


def test_energy_utilisation_and_aggregation(result):
    assert result.dynamic_energy_j == pytest.approx(2.5)
    assert result.idle_energy_j == pytest.approx(2.0 * 5.128)
    u = result.utilisation["gpu0"]
    assert u["tensor"]["busy_s"] == pytest.approx(4.0)
    assert u["tensor"]["flops"] == 512 + 128  # 2*4*8*8 + 2*4*8*2
    assert u["tensor"]["peak_flops_per_s"] == 100.0
    assert u["tensor"]["flops_utilisation"] == pytest.approx(640 / 5.128 / 100.0)
    assert u["copy:pcie in"]["flops_utilisation"] is None
    agg = result.by_op_type()
    assert list(agg) == ["MatMul", "Relu", "Transfer"]
    assert agg["MatMul"]["count"] == 2 and agg["MatMul"]["time_s"] == 4.0
    assert agg["MatMul"]["bound"] == "compute" and agg["Transfer"]["bound"] == "comm"
    assert result.batch == 4 and result.throughput == pytest.approx(4 / 5.128)
    # bytes by hand (fp32): fc1 x 128 + w1 256 + h 128, relu 128 + 128, fc2 128 + w2 64 + y 32;
    # the transfer is link traffic, not memory traffic; one memory level, so nothing cached
    t = result.memory_traffic["gpu0"]
    assert t["bytes"] == 992 and t["cached_bytes"] == 0 and t["main_bytes"] == 992
    assert t["peak_Bps"] == 10.0
    assert t["bandwidth_utilisation"] == pytest.approx(992 / 5.128 / 10.0)


def test_json_round_trip(result, tmp_path):
    result.write_json(tmp_path / "sub" / "r.json")
    doc = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert doc["makespan_s"] == result.makespan_s
    assert doc["peak_memory_bytes"] == result.peak_memory_bytes
    assert doc["memory_timeline"]["gpu0"][0] == [0.0, result.memory_timeline["gpu0"][0][1]]
    assert doc["by_op_type"]["MatMul"]["count"] == 2


def test_trace_tracks_and_counters(result):
    ev = trace_events(result)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    assert sorted(names.values()) == ["copy:pcie in", "tensor", "vector"]
    procs = [e["args"]["name"] for e in ev if e["name"] == "process_name"]
    assert procs == ["gpu0 (test-gpu)"]
    fc1 = next(e for e in ev if e.get("name") == "fc1")
    assert fc1["ph"] == "X" and fc1["ts"] == pytest.approx(128000.0) and fc1["dur"] == 2e6
    assert names[(fc1["pid"], fc1["tid"])] == "tensor"
    counters = [e for e in ev if e["ph"] == "C"]
    assert [c["args"]["bytes"] for c in counters] == [b for _, b in result.memory_timeline["gpu0"]]


def test_two_streams_get_two_tracks():
    g = Graph("par")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["x"], ["b"], name="B")
    g.set_outputs(["a", "b"])
    r = simulate(g, dev(), cost_fn=lambda *a: 1.0, host_inputs=False, streams=2)
    ev = trace_events(r)
    xs = [e for e in ev if e["ph"] == "X"]
    assert len({e["tid"] for e in xs}) == 2
    assert sorted(o.stream for o in r.ops) == [0, 1]


def test_multi_device_trace_has_a_process_per_device():
    sysm = SystemSpec("pair", {"cpu0": dev("cpu"), "gpu0": dev("gpu")}, host="cpu0",
                      links=(("cpu0", "gpu0", LinkSpec("pcie", 1000.0)),))
    r = simulate(mlp(), sysm, cost_fn=costs, placement={"fc1": "cpu0"},
                 transfer_fn=lambda link, n: n / link.bandwidth_Bps)
    # "fc1" matches node fc1 and, by layer, relu. x starts on the host cpu0 (no copy);
    # relu's output r is copied to gpu0 for fc2.
    assert [(o.name, o.device) for o in r.ops] == [
        ("fc1", "cpu0"), ("relu", "cpu0"), ("r->gpu0", "cpu0"), ("fc2", "gpu0")]
    assert r.ops[2]["end_s"] - r.ops[2]["start_s"] == pytest.approx(4 * 8 * 4 / 1000.0)
    ev = trace_events(r)
    assert len({e["pid"] for e in ev if e["ph"] == "X"}) == 2
    assert r.idle_energy_j == pytest.approx(2 * 2.0 * r.makespan_s)


def test_summary_text(result):
    text = result.summary(top=2)
    lines = text.splitlines()
    assert lines[0] == "mlp on test-gpu"
    assert "makespan     5.128 s" in text
    assert "throughput   0.8 samples/s (batch 4)" in text
    assert "top 2 ops by time" in text
    top = [ln.split()[0] for ln in lines[lines.index("  top 2 ops by time") + 1:][:2]]
    assert top == ["fc1", "fc2"]
    assert "gpu0/tensor: busy 78.0%" in text
    # 992 B over 5.128 s = 193 B/s against a 10 B/s peak (the fixed costs ignore bandwidth)
    assert "gpu0/hbm: 193.45 B/s, 1934.5% of peak bandwidth (992 B moved)" in text


def test_formatters():
    assert fmt_time(0.0012) == "1.200 ms" and fmt_time(2.5e-6) == "2.500 us"
    assert fmt_bytes(3 * 2**30) == "3.00 GiB" and fmt_bytes(10) == "10 B"
    assert fmt_si(2.5e12, "FLOP/s") == "2.50 TFLOP/s"


def test_plot_writes_a_png_with_three_panels(result, tmp_path):
    path = tmp_path / "p.png"
    result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_panels_draw_the_records(result):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    plot_timeline(result, axes[0])
    plot_roofline(result, axes[1])
    plot_memory(result, axes[2])
    # timeline: one row per device unit
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [
        "gpu0/tensor", "gpu0/vector", "gpu0/copy:pcie in"]
    # roofline: one scatter point per op with FLOPs and bytes, plus the roof line
    points = sum(len(c.get_offsets()) for c in axes[1].collections)
    assert points == 3
    assert axes[1].lines and max(axes[1].lines[0].get_ydata()) == 100.0
    plt.close(fig)


def test_utilisation_panel_and_sweep(result, tmp_path):
    import matplotlib.pyplot as plt

    from sim.report.plots import plot_sweep, plot_utilisation

    fig, ax = plt.subplots()
    plot_utilisation(result, ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "gpu0/copy:pcie in", "gpu0/tensor", "gpu0/vector", "gpu0/hbm"]
    assert [round(p.get_width(), 1) for p in ax.patches] == [
        round(100 * 0.128 / 5.128, 1), round(100 * 4 / 5.128, 1), round(100 * 1 / 5.128, 1),
        round(100 * 992 / 5.128 / 10.0, 1)]
    plt.close(fig)
    rs = [simulate(mlp(), dev(), cost_fn=lambda *a, k=k: float(k), host_inputs=False)
          for k in (1, 2)]
    plot_sweep([1, 2], rs, tmp_path / "sweep.png", xlabel="seconds per op")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
