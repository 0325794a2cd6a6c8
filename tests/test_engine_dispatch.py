"""Host-side dispatch: exact timelines with injected costs, the host-bound total, the CLI."""

from __future__ import annotations

import json

import pytest

import sim
from sim.cli import main
from sim.cli.args import parse_dispatch
from sim.engine import FixedCost, simulate
from sim.errors import SpecError
from sim.graph import Graph, TensorSpec
from sim.hw.arch import Arch
from sim.hw.spec import ComputeUnit, DeviceSpec, MemoryLevel
from sim.report.trace import trace_json


def device(host_dispatch: float = 0.0) -> DeviceSpec:
    return DeviceSpec(name="dev", kind="gpu", units=(ComputeUnit("compute", True, {"fp32": 1e12}),),
                      memory=(MemoryLevel("hbm", 1e9, 1e12),), arch=Arch(host_dispatch=host_dispatch))


def table(costs: dict[str, float]):
    def fn(node, work, dev, dtype):
        return FixedCost(costs[node.name], bound="compute", flops=work.flops, bytes=work.bytes)
    return fn


def chain(*ops: tuple[str, str, dict]) -> Graph:
    """A chain x -> op1 -> op2 ... of (name, op type, attrs) on a 10-element tensor."""
    g = Graph("chain")
    g.add_input("x", TensorSpec((10,)))
    prev = "x"
    for name, op, attrs in ops:
        g.add_node(op, [prev], [name.lower()], attrs, name=name)
        prev = name.lower()
    g.set_outputs([prev])
    return g


def relus(n: int) -> Graph:
    return chain(*[(f"K{i}", "Relu", {}) for i in range(n)])


def spans(r) -> list[tuple[str, float, float]]:
    return [(o.name, o.start_s, o.end_s) for o in r.ops]


def waits(r) -> list[float]:
    return [o.host_wait_s for o in r.ops]


def test_short_kernels_are_host_bound():
    # three 1 s kernels, 5 s of host time each: kernel k is issued at 5k and ends 1 s later
    r = simulate(relus(3), device(), cost_fn=table(dict.fromkeys(["K0", "K1", "K2"], 1.0)),
                 host_inputs=False, dispatch_s=5.0)
    assert spans(r) == [("K0", 5.0, 6.0), ("K1", 10.0, 11.0), ("K2", 15.0, 16.0)]
    # the stream sat idle 0-5, 6-10, 11-15 waiting for the host
    assert waits(r) == [5.0, 4.0, 4.0]
    assert r.host_bound_s == 13.0 and r.host_bound_by_device == {"gpu0": 13.0}
    assert [o.bound for o in r.ops] == ["compute"] * 3  # each op keeps its own bound
    assert "host-bound   gpu0: 81.2% of the makespan" in r.summary()
    d = json.loads(r.to_json())
    assert d["host_bound_s"] == 13.0 and d["host_bound_by_device"] == {"gpu0": 13.0}
    tr = json.loads(trace_json(r))
    ev = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    assert [e["args"]["host_wait_s"] for e in ev] == [5.0, 4.0, 4.0]


def test_long_kernels_are_device_bound():
    # 1 s of host time, 5 s kernels: only the first waits for its issue, the rest queue
    r = simulate(relus(3), device(), cost_fn=table(dict.fromkeys(["K0", "K1", "K2"], 5.0)),
                 host_inputs=False, dispatch_s=1.0)
    assert spans(r) == [("K0", 1.0, 6.0), ("K1", 6.0, 11.0), ("K2", 11.0, 16.0)]
    assert waits(r) == [1.0, 0.0, 0.0]
    assert r.host_bound_s == 1.0


def test_views_and_depend_cost_no_dispatch():
    g = chain(("A", "Relu", {}), ("V", "Reshape", {"shape": [2, 5]}),
              ("F", "Flatten", {"axis": 0}), ("I", "Identity", {}), ("B", "Relu", {}))
    r = simulate(g, device(), cost_fn=table({"A": 1.0, "V": 0.0, "F": 0.0, "I": 0.0, "B": 1.0}),
                 host_inputs=False, dispatch_s=5.0)
    by = {o.name: (o.start_s, o.end_s, o.host_wait_s) for o in r.ops}
    # B is the host's second kernel: issued at 10, not 25
    assert by["A"] == (5.0, 6.0, 5.0)
    assert by["V"] == by["F"] == by["I"] == (6.0, 6.0, 0.0)
    assert by["B"] == (10.0, 11.0, 4.0)


def test_depend_costs_no_dispatch():
    g = Graph("dep")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["x"], ["b"], name="B")
    g.add_node("Depend", ["a", "b"], ["d"], name="D")
    g.add_node("Relu", ["d"], ["c"], name="C")
    g.set_outputs(["c"])
    r = simulate(g, device(), cost_fn=table({"A": 1.0, "B": 1.0, "D": 0.0, "C": 1.0}),
                 host_inputs=False, dispatch_s=5.0)
    by = {o.name: (o.start_s, o.end_s) for o in r.ops}
    assert by["A"] == (5.0, 6.0) and by["B"] == (10.0, 11.0)
    assert by["D"] == (11.0, 11.0) and by["C"] == (15.0, 16.0)


def test_cuda_graphs_launch_once():
    r = simulate(relus(3), device(), cost_fn=table(dict.fromkeys(["K0", "K1", "K2"], 1.0)),
                 host_inputs=False, dispatch_s=5.0, cuda_graphs=True)
    assert spans(r) == [("K0", 5.0, 6.0), ("K1", 6.0, 7.0), ("K2", 7.0, 8.0)]
    assert r.host_bound_s == 5.0


def test_spec_value_and_override():
    costs = table(dict.fromkeys(["K0", "K1"], 1.0))
    r = simulate(relus(2), device(5.0), cost_fn=costs, host_inputs=False)
    assert spans(r) == [("K0", 5.0, 6.0), ("K1", 10.0, 11.0)]
    r = simulate(relus(2), device(5.0), cost_fn=costs, host_inputs=False,
                 dispatch_s=0)
    assert spans(r) == [("K0", 0.0, 1.0), ("K1", 1.0, 2.0)] and r.host_bound_s == 0.0
    r = simulate(relus(2), device(), cost_fn=costs, host_inputs=False, dispatch_s="2 s")
    assert spans(r) == [("K0", 2.0, 3.0), ("K1", 4.0, 5.0)]
    with pytest.raises(SpecError):
        simulate(relus(2), device(), cost_fn=costs, dispatch_s=-1.0)
    with pytest.raises(SpecError):
        simulate(relus(2), device(), cost_fn=costs, dispatch_s="3 GB")


def test_yaml_spec_key_sets_the_dispatch_time():
    # arch.host_dispatch in a spec (here as an override of the YAML) is parsed as a time and
    # gives the same timeline as passing dispatch_s; 3 us per op on 2 unit-cost ops by hand
    h = sim.hardware("h100", **{"arch.host_dispatch": "3 us"})
    assert h.arch.host_dispatch == pytest.approx(3e-6)
    costs = table(dict.fromkeys(["K0", "K1"], 1e-6))
    r = simulate(relus(2), h, cost_fn=costs, host_inputs=False)
    assert [n for n, _, _ in spans(r)] == ["K0", "K1"]
    assert [t for _, *ts in spans(r) for t in ts] == pytest.approx([3e-6, 4e-6, 6e-6, 7e-6])
    with pytest.raises(SpecError, match="arch.host_dispatch"):
        sim.hardware("h100", **{"arch.host_dispatch": "3 GB"})


def test_two_streams_wait_counts_idle_device_time():
    # independent kernels on two streams, issued 5 s apart; neither queues on a stream
    g = Graph("par")
    g.add_input("x", TensorSpec((10,)))
    g.add_node("Relu", ["x"], ["a"], name="A")
    g.add_node("Relu", ["x"], ["b"], name="B")
    g.set_outputs(["a", "b"])
    r = simulate(g, device(), cost_fn=table({"A": 10.0, "B": 10.0}), host_inputs=False,
                 streams=2, dispatch_s=5.0)
    assert spans(r) == [("A", 5.0, 15.0), ("B", 10.0, 20.0)]
    # the device idled only 0-5: B's wait for its issue overlaps A's run and is not counted
    assert waits(r) == [5.0, 0.0] and r.host_bound_s == 5.0


@pytest.mark.parametrize("workload", ["resnet50", "bert-base"])
def test_zero_dispatch_is_todays_timeline(workload):
    g = sim.load(f"workloads/{workload}.yaml", batch=1)
    base = sim.simulate(g, "h100", "bf16")
    zero = sim.simulate(g, "h100", "bf16", dispatch_s=0.0)
    assert zero.ops == base.ops and zero.makespan_s == base.makespan_s
    assert all(o.get("host_wait_s", 0.0) == 0.0 for o in base.ops) and base.host_bound_s == 0.0
    assert "host-bound" not in base.summary()
    # with 8 us per kernel the host needs (kernels x 8 us) before the last kernel can start
    slow = sim.simulate(g, "h100", "bf16", dispatch_s=8e-6)
    kernels = [o for o in slow.ops if o.op not in
               ("Transfer", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Depend")]
    last = max(o.start_s for o in kernels)
    assert last >= len(kernels) * 8e-6 * (1 - 1e-9)
    assert slow.makespan_s > base.makespan_s and slow.host_bound_s > 0


def test_parse_dispatch():
    assert parse_dispatch("10 us") == pytest.approx(1e-5)
    assert parse_dispatch("0.5 ms") == pytest.approx(5e-4)
    assert parse_dispatch("2e-6") == 2e-6
    with pytest.raises(SpecError):
        parse_dispatch("10 GB")


def test_cli_dispatch(capsys):
    # at batch 1 its kernels take 5-8 us each on the H100 (launch floor, fp32 GEMVs): a host
    # issuing one every 12 us leaves the GPU waiting
    assert main(["run", "mlp-mnist", "--set", "batch=1", "--dispatch", "12 us", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "host-bound   gpu0:" in out
    assert main(["run", "mlp-mnist", "--set", "batch=1", "--dispatch", "8 us",
                 "--cuda-graphs", "--top", "0"]) == 0
    assert main(["run", "mlp-mnist", "--dispatch", "lots"]) == 2
    assert "--dispatch" in capsys.readouterr().err
