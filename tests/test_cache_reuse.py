"""On-chip reuse between ops: cached reads in op_cost, the engine's per-device LRU (hand numbers)."""

from __future__ import annotations

import pytest

import sim
from sim.cost import op_cost, reuse_capacity, reuse_level
from sim.engine import simulate
from sim.engine.cache import ReuseCache
from sim.graph import Graph, TensorSpec
from sim.hw import DeviceSpec, load_hardware
from sim.ops.work import Work

MB = 1e6


def h100(**changes) -> DeviceSpec:
    d = load_hardware("h100", **changes)
    assert isinstance(d, DeviceSpec)
    return d


# Spec numbers (hwspecs/h100.yaml), written out so the tests do not read them back from the code.
HBM_BPS = 3.35e12 * 0.885
L2_BPS = 5.5e12
LAUNCH_S = 4.89e-6
L2_USABLE = 50e6 * 0.5


# ------------------------------------------------------------------ sim.cost


def test_reuse_level_is_the_spec_choice():
    lv, frac = reuse_level(h100())  # type: ignore[misc]
    assert (lv.name, frac) == ("l2", 0.5)
    assert reuse_capacity(h100()) == L2_USABLE
    assert reuse_level(h100(**{"memory.l2.reuse": 0})) is None  # l2 stated off: no reuse
    # stating reuse on a deeper level moves it there
    lv, frac = reuse_level(h100(**{"memory.l2.reuse": 0, "memory.smem.reuse": 0.25}))  # type: ignore[misc]
    assert (lv.name, frac) == ("smem", 0.25)
    lv, frac = reuse_level(load_hardware("tpu-v4"))  # type: ignore[arg-type,misc]
    assert (lv.name, frac) == ("cmem", 1.0)  # no reuse stated: the level after HBM, whole
    assert reuse_level(load_hardware("xeon-8480")) is None  # type: ignore[arg-type]
    assert reuse_level(load_hardware("alveo-u280")) is None  # type: ignore[arg-type]


def test_cached_reads_stream_from_l2_writes_from_hbm():
    n = 1e6
    w = Work(flops=n, bytes_read=4 * n, bytes_written=4 * n)  # fp32 Relu on 1M elements
    cold = op_cost(w, h100(), "fp32")
    warm = op_cost(w, h100(), "fp32", cached_read_bytes=4 * n)
    assert cold.memory_s == pytest.approx(8e6 / HBM_BPS, rel=1e-12)
    assert warm.memory_s == pytest.approx(4e6 / L2_BPS + 4e6 / HBM_BPS, rel=1e-12)
    assert warm.time_s == pytest.approx(LAUNCH_S + 4e6 / L2_BPS + 4e6 / HBM_BPS, rel=1e-12)
    assert warm.cached_bytes == 4e6 and cold.cached_bytes == 0.0
    assert warm.energy_j < cold.energy_j  # 5 pJ/B from L2 instead of 31 pJ/B from HBM
    # clamped to the bytes read; half cached is half at each rate
    assert op_cost(w, h100(), "fp32", cached_read_bytes=1e9) == warm
    half = op_cost(w, h100(), "fp32", cached_read_bytes=2e6)
    assert half.memory_s == pytest.approx(2e6 / L2_BPS + 6e6 / HBM_BPS, rel=1e-12)


def test_zero_cached_bytes_is_bit_identical_and_cpu_fpga_unaffected():
    w = Work(flops=3e6, bytes_read=8e6, bytes_written=4e6)
    for name in ("h100", "tpu-v4", "xeon-8480", "alveo-u280", "systolic-asic"):
        d = load_hardware(name)
        assert isinstance(d, DeviceSpec)
        assert op_cost(w, d, "fp32", cached_read_bytes=0.0) == op_cost(w, d, "fp32")
    for name in ("xeon-8480", "alveo-u280"):
        d = load_hardware(name)
        assert isinstance(d, DeviceSpec)
        base = op_cost(w, d, "fp32")
        assert op_cost(w, d, "fp32", cached_read_bytes=8e6).time_s == base.time_s


# ------------------------------------------------------------------ the LRU


def test_lru_evicts_least_recent_first_and_big_tensors_flush():
    c = ReuseCache(25.0)
    for name in ("a", "b", "c"):
        c.touch(name, 8.0)
    c.touch("a", 8.0)  # a is now most recent
    c.touch("d", 8.0)  # 32 > 25: evict b (least recent)
    assert c.resident() == ["c", "a", "d"] and c.used == 24.0
    c.release("a")
    assert c.resident() == ["c", "d"] and c.used == 16.0
    c.touch("huge", 26.0)  # larger than the cache: never enters, pushes everything out
    assert c.resident() == [] and c.used == 0.0


# ------------------------------------------------------------------ the engine


def relu_chain(n: int) -> Graph:
    g = Graph("chain")
    g.add_input("x", TensorSpec((n,)))
    g.add_node("Relu", ["x"], ["y"], name="A")
    g.add_node("Relu", ["y"], ["z"], name="B")
    g.set_outputs(["z"])
    return g


def ops_by_name(r) -> dict:
    return {o.name: o for o in r.ops if o.op != "Transfer"}


def test_second_op_of_a_chain_reads_from_l2_at_the_l2_rate():
    n = 1_000_000  # 4 MB fp32: fits the 25 MB usable L2
    r = simulate(relu_chain(n), h100(), host_inputs=False)
    ops = ops_by_name(r)
    assert ops["A"]["cached_bytes"] == 0.0  # graph input: cold
    assert ops["B"]["cached_bytes"] == 4e6
    a = ops["A"]["end_s"] - ops["A"]["start_s"]
    b = ops["B"]["end_s"] - ops["B"]["start_s"]
    assert a == pytest.approx(LAUNCH_S + 8e6 / HBM_BPS, rel=1e-12)
    assert b == pytest.approx(LAUNCH_S + 4e6 / L2_BPS + 4e6 / HBM_BPS, rel=1e-12)
    assert r.makespan_s == pytest.approx(a + b, rel=1e-12)


def test_tensor_bigger_than_the_usable_l2_is_not_reused():
    n = 8_000_000  # 32 MB fp32 > 25 MB usable
    r = simulate(relu_chain(n), h100(), host_inputs=False)
    ops = ops_by_name(r)
    assert ops["B"]["cached_bytes"] == 0.0
    assert ops["B"]["end_s"] - ops["B"]["start_s"] == pytest.approx(
        LAUNCH_S + 64e6 / HBM_BPS, rel=1e-12)
    # 20 MB fits on its own (the 20 MB input it replaces is evicted)
    ops = ops_by_name(simulate(relu_chain(5_000_000), h100(), host_inputs=False))
    assert ops["B"]["cached_bytes"] == 20e6


def test_engine_evicts_in_lru_order():
    m = 2_000_000  # 8 MB fp32; three fit the 25 MB usable L2, four do not
    g = Graph("fan")
    g.add_input("x", TensorSpec((m,)))
    for name in ("A", "B", "C"):
        g.add_node("Relu", ["x"], [name.lower()], name=name)
    g.add_node("Add", ["a", "b"], ["d"], name="D")
    g.add_node("Add", ["d", "c"], ["e"], name="E")
    g.set_outputs(["e"])
    ops = ops_by_name(simulate(g, h100(), host_inputs=False))
    assert [ops[k]["cached_bytes"] for k in "ABC"] == [0.0, 8e6, 8e6]  # x, touched by A
    # after C: [a, b, x, c] is 32 MB, so a (least recent) went; x then freed -> [b, c]
    assert ops["D"]["cached_bytes"] == 8e6  # b hits, a misses
    # after D: a, b, d touched -> [c, a, b, d] evicts c; a and b freed -> [d]
    assert ops["E"]["cached_bytes"] == 8e6  # d hits, c misses


def test_a_weight_read_twice_in_a_pass_hits():
    g = Graph("shared_weight")
    g.add_input("x", TensorSpec((64, 1024)))
    g.add_param("w", TensorSpec((1024, 1024)))
    g.add_node("MatMul", ["x", "w"], ["y"], name="A")
    g.add_node("MatMul", ["y", "w"], ["z"], name="B")
    g.set_outputs(["z"])
    ops = ops_by_name(simulate(g, h100(), host_inputs=False))
    assert ops["A"]["cached_bytes"] == 0.0  # parameters start cold
    assert ops["B"]["cached_bytes"] == 4 * 1024 * 1024 + 4 * 64 * 1024  # w and y


def test_cache_reuse_off_is_the_cold_model_and_runs_are_deterministic():
    from sim.engine.scheduler import compute_dtype
    from sim.passes.precision import cast_graph

    g = sim.load("bert-base", batch=8)
    r = sim.simulate(g, "h100", "bf16", cache_reuse=False)
    cast = cast_graph(g, "bf16")
    spec = h100()
    nodes = {n.name: n for n in cast}
    for o in r.ops:
        if o.op == "Transfer":
            continue
        assert o.cached_bytes == 0.0
        node = nodes[o.name]
        c = op_cost(cast.work(node), spec, compute_dtype(cast, node),
                    sparsity=node.meta.get("sparsity"))
        assert o.end_s - o.start_s == pytest.approx(c.time_s, rel=1e-12, abs=1e-15)
    on1 = sim.simulate(g, "h100", "bf16")
    on2 = sim.simulate(g, "h100", "bf16")
    assert on1.to_json() == on2.to_json()
    assert on1.makespan_s < r.makespan_s
    assert sum(o.get("cached_bytes", 0.0) for o in on1.ops) > 0


def test_cli_no_cache_reuse(capsys):
    from sim.cli import main

    assert main(["run", "mlp-mnist", "--hw", "h100", "--no-cache-reuse", "--top", "1"]) == 0
    off = capsys.readouterr().out
    assert main(["run", "mlp-mnist", "--hw", "h100", "--top", "1"]) == 0
    on = capsys.readouterr().out
    assert off != on
