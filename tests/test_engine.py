"""Engine: exact timelines on tiny graphs with injected costs and hand-built hardware."""

from __future__ import annotations

import json

import pytest

import sim
from sim.engine import FixedCost, simulate
from sim.errors import OutOfMemoryError, SpecError
from sim.graph import Graph, TensorSpec
from sim.hw.spec import ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel, PowerSpec, SystemSpec

MB = 1e6


def device(name: str = "dev", capacity: float = 1e9, host_bw: float | None = None,
           host_lat: float = 0.0, kind: str = "gpu", idle_w: float = 0.0) -> DeviceSpec:
    host = LinkSpec("pcie", host_bw, host_lat) if host_bw else None
    return DeviceSpec(
        name=name, kind=kind,
        units=(ComputeUnit("compute", True, {"fp32": 1e12}),),
        memory=(MemoryLevel("hbm", capacity, 1e12),),
        host_link=host, power=PowerSpec(idle_w=idle_w),
    )


def table(costs: dict[str, float]):
    """A cost_fn giving each node a fixed time by name."""
    def fn(node, work, dev, dtype):
        return FixedCost(costs[node.name], unit="compute", bound="compute", flops=work.flops,
                         bytes=work.bytes)
    return fn


def chain() -> Graph:
    g = Graph("chain")
    g.add_input("x", TensorSpec((1000,)))            # 4000 B
    g.add_node("Relu", ["x"], ["a"], name="A")      # 4000 B
    g.add_node("Relu", ["a"], ["b"], name="B")
    g.set_outputs(["b"])
    return g


def spans(r) -> list[tuple[str, float, float]]:
    return [(o.name, o.start_s, o.end_s) for o in r.ops]


def test_chain_on_one_unit_exact_times():
    r = simulate(chain(), device(), cost_fn=table({"A": 1.0, "B": 2.0}), host_inputs=False)
    assert spans(r) == [("A", 0.0, 1.0), ("B", 1.0, 3.0)]
    assert r.makespan_s == 3.0
    assert r.ops[0]["device"] == "gpu0" and r.ops[0]["bound"] == "compute"


def test_independent_ops_serialize_on_one_stream():
    g = Graph("par")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["x"], ["b"], name="B")
    g.set_outputs(["a", "b"])
    r = simulate(g, device(), cost_fn=table({"A": 1.0, "B": 1.0}), host_inputs=False)
    assert spans(r) == [("A", 0.0, 1.0), ("B", 1.0, 2.0)]
    # two streams: they run together and, with no memory work, do not slow each other
    r2 = simulate(g, device(), cost_fn=table({"A": 1.0, "B": 1.0}), host_inputs=False, streams=2)
    assert spans(r2) == [("A", 0.0, 1.0), ("B", 0.0, 1.0)]


def test_two_streams_share_memory_bandwidth():
    g = Graph("par")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["x"], ["b"], name="B")
    g.add_node("Relu", ["x"], ["c"], name="C")
    g.set_outputs(["a", "b", "c"])

    def fn(node, work, dev, dtype):
        # A and B memory-bound (1 s of memory traffic each); C needs 3 s but little memory
        if node.name == "C":
            return FixedCost(3.0, memory_s=0.0, bound="compute")
        return FixedCost(1.0, memory_s=1.0, bound="memory")

    r = simulate(g, device(), cost_fn=fn, host_inputs=False, streams=3)
    assert spans(r) == [("A", 0.0, 2.0), ("B", 0.0, 2.0), ("C", 0.0, 3.0)]


def test_host_input_copy_over_pcie():
    # 4000 B over 1 MB/s with 1 ms latency: 1 ms + 4 ms
    dev = device(host_bw=1 * MB, host_lat=1e-3)
    r = simulate(chain(), dev, cost_fn=table({"A": 1.0, "B": 2.0}),
                 transfer_fn=lambda link, n: link.latency_s + n / link.bandwidth_Bps)
    xfer, a, b = r.ops
    assert xfer["op"] == "Transfer" and xfer["bound"] == "comm" and xfer["bytes"] == 4000
    assert (xfer["start_s"], xfer["end_s"]) == (0.0, pytest.approx(0.005, abs=1e-15))
    assert xfer["src"] == "host" and xfer["dst"] == "gpu0" and xfer["unit"] == "copy:pcie in"
    assert a["start_s"] == xfer["end_s"] and a["end_s"] == pytest.approx(1.005)
    assert b["end_s"] == pytest.approx(3.005)


def test_transfers_queue_on_one_link():
    g = Graph("two-inputs")
    g.add_input("x", TensorSpec((250,)))  # 1000 B
    g.add_input("y", TensorSpec((250,)))
    g.add_node("Add", ["x", "y"], ["z"], name="add")
    g.set_outputs(["z"])
    r = simulate(g, device(host_bw=1000.0), cost_fn=table({"add": 0.5}),
                 transfer_fn=lambda link, n: n / link.bandwidth_Bps)
    assert spans(r) == [("x->gpu0", 0.0, 1.0), ("y->gpu0", 1.0, 2.0), ("add", 2.0, 2.5)]


def test_copy_overlaps_compute():
    # op A needs only parameter w; op B needs input x (copied). The copy runs during A.
    g = Graph("overlap")
    g.add_param("w", TensorSpec((250,)))
    g.add_input("x", TensorSpec((250,)))
    g.add_node("Relu", ["w"], ["a"], name="A")
    g.add_node("Add", ["x", "a"], ["b"], name="B")
    g.set_outputs(["b"])
    r = simulate(g, device(host_bw=1000.0), cost_fn=table({"A": 3.0, "B": 1.0}),
                 transfer_fn=lambda link, n: n / link.bandwidth_Bps)
    assert spans(r) == [("x->gpu0", 0.0, 1.0), ("A", 0.0, 3.0), ("B", 3.0, 4.0)]


def system_two(link_bw: float = 1000.0, link_lat: float = 0.5) -> SystemSpec:
    link = LinkSpec("nvlink", link_bw, link_lat)
    return SystemSpec("pair", {"cpu0": device("cpu", kind="cpu"), "gpu0": device("gpu")},
                      links=(("cpu0", "gpu0", link),))


def test_placement_on_two_devices_makes_a_transfer():
    g = Graph("placed")
    g.add_input("x", TensorSpec((250,)))
    g.add_node("Relu", ["x"], ["a"], name="embed.relu", meta={"layer": "embed"})
    g.add_node("Relu", ["a"], ["b"], name="body.relu", meta={"layer": "body"})
    g.set_outputs(["b"])
    r = simulate(g, system_two(), cost_fn=table({"embed.relu": 1.0, "body.relu": 2.0}),
                 placement={"embed": "cpu0"}, host_inputs=False,
                 transfer_fn=lambda link, n: link.latency_s + n / link.bandwidth_Bps)
    assert [(o.name, o.device, o.start_s, o.end_s) for o in r.ops] == [
        ("embed.relu", "cpu0", 0.0, 1.0),
        ("a->gpu0", "cpu0", 1.0, 2.5),  # 0.5 s latency + 1000 B / 1000 B/s
        ("body.relu", "gpu0", 2.5, 4.5),
    ]
    t = r.ops[1]
    assert t["op"] == "Transfer" and (t["src"], t["dst"]) == ("cpu0", "gpu0")
    # fnmatch patterns on op names work too
    r2 = simulate(g, system_two(), cost_fn=table({"embed.relu": 1.0, "body.relu": 2.0}),
                  placement={"embed.*": "cpu0"}, host_inputs=False,
                  transfer_fn=lambda link, n: link.latency_s + n / link.bandwidth_Bps)
    assert [o.device for o in r2.ops] == ["cpu0", "cpu0", "gpu0"]
    # a's buffer on cpu0 is freed after the copy; gpu0 holds the copy and b
    assert r.peak_memory_by_device == {"cpu0": 2000.0, "gpu0": 2000.0}


def test_unknown_placement_device_is_a_spec_error():
    with pytest.raises(SpecError, match="gpu7"):
        simulate(chain(), device(), cost_fn=table({"A": 1.0, "B": 1.0}), placement={"A": "gpu7"})


def memory_graph() -> Graph:
    # x(400) -> A -> a(400) -> B -> b(800) ; C(a, b) -> c(400)
    g = Graph("mem")
    g.add_input("x", TensorSpec((100,)))
    g.add_param("w", TensorSpec((200,)))                       # 800 B resident
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Concat", ["a", "a"], ["b"], {"axis": 0}, name="B")
    g.add_node("Add", ["b", "w"], ["c"], name="C")
    g.add_node("Relu", ["c"], ["d"], name="D")
    g.set_outputs(["d"])
    return g


def test_peak_memory_is_a_hand_count_of_live_tensors():
    r = simulate(memory_graph(), device(), cost_fn=table(dict.fromkeys("ABCD", 1.0)),
                 host_inputs=False)
    # t=0 resident: w 800 + x 400 = 1200; A starts: +a 400 -> 1600.
    # t=1: A ends, x freed -> 1200; B starts: +b 800 -> 2000.
    # t=2: a freed -> 1600; C: +c 800 -> 2400.  t=3: b freed -> 1600; D: +d 800 -> 2400.
    # t=4: c freed -> 1600 (w 800 + d 800).
    assert r.peak_memory_bytes == 2400.0
    assert r.memory_timeline["gpu0"] == [(0.0, 1600.0), (1.0, 2000.0), (2.0, 2400.0),
                                         (3.0, 2400.0), (4.0, 1600.0)]


def test_inplace_update_allocates_nothing():
    g = Graph("update")
    g.add_param("w", TensorSpec((250,)))   # 1000 B
    g.add_input("dw", TensorSpec((250,)))  # 1000 B
    g.add_node("Sub", ["w", "dw"], ["w_new"], name="upd", meta={"inplace": {0: 0}})
    g.set_outputs(["w_new"])
    r = simulate(g, device(), cost_fn=table({"upd": 1.0}), host_inputs=False)
    assert r.peak_memory_bytes == 2000.0
    g2 = Graph("not-inplace")
    g2.add_param("w", TensorSpec((250,)))
    g2.add_input("dw", TensorSpec((250,)))
    g2.add_node("Sub", ["w", "dw"], ["w_new"], name="upd")
    g2.set_outputs(["w_new"])
    assert simulate(g2, device(), cost_fn=table({"upd": 1.0}), host_inputs=False
                    ).peak_memory_bytes == 3000.0


def test_out_of_memory_names_device_op_and_bytes():
    with pytest.raises(OutOfMemoryError) as info:
        simulate(memory_graph(), device(capacity=2000.0), cost_fn=table(dict.fromkeys("ABCD", 1.0)),
                 host_inputs=False)
    err = info.value
    assert (err.device, err.op, err.needed_bytes) == ("gpu0", "C", 800.0)
    assert err.free_bytes == 400.0 and err.capacity_bytes == 2000.0
    assert "gpu0" in str(err) and "'C'" in str(err)


def test_parameters_that_do_not_fit_fail_at_start():
    g = Graph("huge")
    g.add_param("w", TensorSpec((1000,)))
    g.add_input("x", TensorSpec((1000,)))
    g.add_node("Add", ["x", "w"], ["y"], name="add")
    g.set_outputs(["y"])
    with pytest.raises(OutOfMemoryError, match="parameter w"):
        simulate(g, device(capacity=1000.0), cost_fn=table({"add": 1.0}))


def test_energy_is_dynamic_plus_idle():
    def fn(node, work, dev, dtype):
        return FixedCost(1.0, energy_j=5.0)
    r = simulate(chain(), device(idle_w=10.0), cost_fn=fn, host_inputs=False)
    assert r.makespan_s == 2.0
    assert r.energy_j == pytest.approx(10.0 + 10.0 * 2.0)


def test_utilisation_and_by_op_type():
    r = simulate(chain(), device(), cost_fn=table({"A": 1.0, "B": 3.0}), host_inputs=False)
    u = r.utilisation["gpu0"]["compute"]
    assert u["busy"] == 1.0 and u["busy_s"] == 4.0
    # Relu: 1000 FLOP each -> 2000 FLOP over 4 s against a 1e12 FLOP/s peak
    assert u["achieved_flops_per_s"] == 500.0
    assert u["flops_utilisation"] == pytest.approx(5e-10)
    agg = r.by_op_type()
    assert agg["Relu"]["count"] == 2 and agg["Relu"]["time_s"] == 4.0


def test_number_cost_and_deterministic_json_and_trace(tmp_path):
    def run():
        r = simulate(memory_graph(), device(host_bw=1e6), cost_fn=lambda n, w, d, t: 1e-3)
        r.write_json(tmp_path / "r.json")
        r.write_trace(tmp_path / "t.json")
        return (tmp_path / "r.json").read_bytes(), (tmp_path / "t.json").read_bytes()
    assert run() == run()
    doc = json.loads(run()[0])
    assert doc["makespan_s"] > 0 and len(doc["ops"]) == 5


def test_trace_is_valid_chrome_json(tmp_path):
    r = simulate(chain(), device(host_bw=1e6), cost_fn=table({"A": 1.0, "B": 2.0}))
    r.write_trace(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    events = doc["traceEvents"]
    assert all({"ph", "ts", "pid", "tid"} <= set(e) for e in events)
    xs = [e for e in events if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in xs][1:] == [("A", 4000.0, 1e6), ("B", 1004000.0,
                                                                                     2e6)]
    assert {e["tid"] for e in xs if e["cat"] == "Transfer"}.isdisjoint(
        {e["tid"] for e in xs if e["cat"] == "Relu"})
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and all("bytes" in e["args"] for e in counters)
    names = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names == {"compute", "copy:pcie in"}


def test_summary_mentions_makespan_and_top_ops():
    r = simulate(chain(), device(), cost_fn=table({"A": 1.0, "B": 2.0}), host_inputs=False)
    text = r.summary(top=1)
    assert "makespan     3.000 s" in text
    assert "throughput" in text  # batch 1000 inferred from the input's leading dimension
    assert "top 1 ops" in text and " B " in text and "compute" in text


def test_dtype_casts_the_graph_first():
    seen = []

    def fn(node, work, dev, dtype):
        seen.append((node.name, dtype, work.bytes))
        return 1.0
    r = sim.simulate(chain(), device(), "bf16", cost_fn=fn, host_inputs=False)
    assert seen == [("A", "bf16", 4000.0), ("B", "bf16", 4000.0)]
    # bf16: x 2000 B resident + a 2000 B, then a + b
    assert r.dtype == "bf16" and r.peak_memory_bytes == 4000.0


def test_bandwidth_sharing_with_staggered_starts():
    g = Graph("stagger")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["p"], name="P")        # 1 s of pure compute on stream 0 ...
    g.add_node("Relu", ["x"], ["a"], name="A")        # ... while A streams 2 s of memory
    g.add_node("Relu", ["p"], ["b"], name="B")        # B (1 s of memory) starts when P ends
    g.set_outputs(["a", "b"])

    def fn(node, work, dev, dtype):
        return {"P": FixedCost(1.0), "A": FixedCost(2.0, memory_s=2.0, bound="memory"),
                "B": FixedCost(1.0, memory_s=1.0, bound="memory")}[node.name]

    r = simulate(g, device(), cost_fn=fn, host_inputs=False, streams=2)
    # 0-1: A alone (1 s served, 1 s left). 1-3: A and B share: each gets 1 s over 2 s.
    assert spans(r) == [("P", 0.0, 1.0), ("A", 0.0, 3.0), ("B", 1.0, 3.0)]


def test_route_through_the_host_when_devices_have_no_direct_link():
    sysm = SystemSpec("two-pcie", {"gpu0": device("a", host_bw=1000.0),
                                   "gpu1": device("b", host_bw=500.0)})
    g = Graph("hop")
    g.add_input("x", TensorSpec((250,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["a"], ["b"], name="B")
    g.set_outputs(["b"])
    r = simulate(g, sysm, cost_fn=table({"A": 1.0, "B": 1.0}), placement={"B": "gpu1"},
                 host_inputs=False, transfer_fn=lambda link, n: n / link.bandwidth_Bps)
    # 1000 B: gpu0 -> host at 1000 B/s (1 s), host -> gpu1 at 500 B/s (2 s)
    assert [(o.name, o.src or o.device, o.start_s, o.end_s)
            for o in r.ops] == [("A", "gpu0", 0.0, 1.0), ("a->gpu1", "gpu0", 1.0, 2.0),
                                ("a->gpu1", "host", 2.0, 4.0), ("B", "gpu1", 4.0, 5.0)]


def test_no_route_is_a_spec_error():
    sysm = SystemSpec("islands", {"gpu0": device("a"), "gpu1": device("b")})
    g = chain()
    with pytest.raises(SpecError, match="no link from gpu0 to gpu1"):
        simulate(g, sysm, cost_fn=table({"A": 1.0, "B": 1.0}), placement={"B": "gpu1"},
                 host_inputs=False)


def test_engine_schedules_the_graph_as_given_and_the_public_simulate_casts():
    from sim.passes.precision import cast_graph

    g = sim.load("mlp-mnist", batch=8)
    plain = simulate(g, "h100")
    assert plain.dtype is None and {o.dtype for o in plain.ops if o.op != "Transfer"} == {"fp32"}
    cast = sim.simulate(g, "h100", dtype="bf16")
    assert cast.dtype == "bf16" and {o.dtype for o in cast.ops if o.op != "Transfer"} == {"bf16"}
    by_hand = simulate(cast_graph(g, "bf16"), "h100")  # the same pass, run by the caller
    assert by_hand.to_json() == cast.to_json()
    with pytest.raises(TypeError):
        simulate(g, "h100", "bf16")  # the engine takes no dtype: it runs no passes
