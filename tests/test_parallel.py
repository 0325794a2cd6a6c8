"""Collectives in the engine (exact ring timings), data parallelism and GPipe pipelines."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.engine import FixedCost, simulate
from sim.errors import SpecError
from sim.exec import Executor
from sim.graph import Graph, TensorSpec
from sim.hw.spec import ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel, SystemSpec
from sim.passes.parallel import (
    bubble_fraction,
    data_parallel,
    parse_parallel,
    pipeline_parallel,
    stage_split,
    tensor_parallel,
)
from sim.passes.training import training_graph

GB = 1e9


def device(capacity: float = 1e10) -> DeviceSpec:
    return DeviceSpec(name="d", kind="gpu", units=(ComputeUnit("compute", True, {"fp32": 1e12}),),
                      memory=(MemoryLevel("hbm", capacity, 1e12),))


def names(n: int) -> list[str]:
    return [f"gpu{i}" for i in range(n)]


def ring_system(n: int, bw: float = 100e9, lat: float = 0.0) -> SystemSpec:
    """``n`` devices, link i <-> i+1 (mod n) of ``bw`` bytes/s per direction."""
    link = LinkSpec("ring", bw, lat, energy_per_byte_j=1e-12)
    d = names(n)
    return SystemSpec("ring", {x: device() for x in d},
                      links=tuple((d[i], d[(i + 1) % n], link) for i in range(n)))


def switch_system(n: int, bw: float = 100e9, lat: float = 0.0) -> SystemSpec:
    return SystemSpec("sw", {x: device() for x in names(n)}, switch=LinkSpec("nvswitch", bw, lat))


def linear(link: LinkSpec, nbytes: float) -> float:
    """latency + bytes / bandwidth (the ring formula's transfer time)."""
    return link.latency_s + nbytes / link.bandwidth_Bps


def zero(link: LinkSpec, nbytes: float) -> float:
    return 0.0


def collective_graph(op: str, n: int, numel: int, **attrs) -> Graph:
    g = Graph(op)
    for i in range(n):
        g.add_input(f"x{i}", TensorSpec((numel,)))
    outs = g.add_node(op, [f"x{i}" for i in range(n)], [f"y{i}" for i in range(n)],
                      {"group": names(n), **attrs}, name="c", meta={"device": "gpu0"})
    g.set_outputs(list(outs))
    return g


# ------------------------------------------------------------------ exact collective timings
def test_ring_allreduce_1gb_over_100gbs_links():
    lat = 1e-6
    g = collective_graph("AllReduce", 4, 250_000_000)  # 1 GB of fp32 per member
    r = simulate(g, ring_system(4, lat=lat), host_inputs=False, transfer_fn=linear)
    want = 2 * 3 / 4 * GB / 100e9 + 6 * lat  # 15 ms + 6 latencies
    assert r.makespan_s == pytest.approx(want, rel=1e-12)
    assert [o.device for o in r.ops] == names(4)
    for o in r.ops:
        assert (o.op, o.bound, o.unit) == ("AllReduce", "comm", "collective")
        assert o.start_s == 0.0 and o.end_s == pytest.approx(want, rel=1e-12)
        assert o.bytes == 6 * 0.25 * GB  # 2(n-1) chunks of S/n sent by each member
        assert o.energy_j == pytest.approx(6 * 0.25 * GB * 1e-12)
        assert o.steps == 6 and o.chunk_bytes == 0.25 * GB
    assert sum(o.flops for o in r.ops) == 3 * 250_000_000
    # outputs live on their members (inputs too: resident)
    assert r.peak_memory_by_device == {d: 2 * GB for d in names(4)}


@pytest.mark.parametrize("op", ["AllGather", "ReduceScatter"])
def test_ring_allgather_reducescatter_take_n_minus_1_steps(op):
    lat = 2e-6
    numel = 25_000_000 if op == "AllGather" else 100_000_000  # 100 MB shard / 400 MB input
    g = collective_graph(op, 4, numel)
    r = simulate(g, ring_system(4, lat=lat), host_inputs=False, transfer_fn=linear)
    want = 3 * (lat + 100e6 / 100e9)  # (n-1) steps of 100 MB
    assert r.makespan_s == pytest.approx(want, rel=1e-12)


def test_switch_allreduce_uses_each_senders_port():
    g = collective_graph("AllReduce", 8, 100_000_000)  # 400 MB
    r = simulate(g, switch_system(8, bw=400e9, lat=3e-6), host_inputs=False, transfer_fn=linear)
    assert r.makespan_s == pytest.approx(14 * (3e-6 + 50e6 / 400e9), rel=1e-12)


def test_group_of_one_and_one_member_form():
    g = Graph("one")
    g.add_input("x", TensorSpec((1000,)))
    g.add_node("AllReduce", ["x"], ["y"], {"group": ["gpu0"]}, name="c")
    g.set_outputs(["y"])
    r = simulate(g, ring_system(2), host_inputs=False, transfer_fn=linear)
    assert r.makespan_s == 0.0 and len(r.ops) == 1
    # one member's view of a 4-way all-reduce: the full ring is timed over the group
    g = Graph("spmd")
    g.add_input("x", TensorSpec((250_000_000,)))
    g.add_node("AllReduce", ["x"], ["y"], {"group": names(4)}, name="c")
    g.set_outputs(["y"])
    r = simulate(g, ring_system(4), host_inputs=False, transfer_fn=linear)
    assert r.makespan_s == pytest.approx(0.015, rel=1e-12)
    assert sorted(o.device for o in r.ops) == names(4)
    assert r.peak_memory_by_device["gpu0"] == 2 * GB and r.peak_memory_by_device["gpu1"] == 0


def test_collective_waits_for_every_member():
    g = Graph("late")
    for i in range(4):
        g.add_input(f"in{i}", TensorSpec((250_000_000,)))
        g.add_node("Relu", [f"in{i}"], [f"x{i}"], name=f"r{i}", meta={"device": f"gpu{i}"})
    g.add_node("AllReduce", [f"x{i}" for i in range(4)], [f"y{i}" for i in range(4)],
               {"group": names(4)}, name="c")
    g.set_outputs([f"y{i}" for i in range(4)])
    times = {"r0": 0.1, "r1": 0.2, "r2": 1.0, "r3": 0.3}

    def cost(node, work, spec, dtype):
        return FixedCost(times[node.name])

    r = simulate(g, ring_system(4), host_inputs=False, transfer_fn=linear, cost_fn=cost)
    ar = [o for o in r.ops if o.op == "AllReduce"]
    assert {o.start_s for o in ar} == {1.0}
    assert r.makespan_s == pytest.approx(1.015, rel=1e-12)


def test_collective_contends_with_copies_on_its_links():
    g = collective_graph("AllReduce", 4, 250_000_000)
    # a 1 GB copy gpu0 -> gpu1 over the same ring link, wanted at time 0
    g.add_input("big", TensorSpec((250_000_000,)))
    g.add_node("Relu", ["big"], ["a"], name="A", meta={"device": "gpu0"})
    g.add_node("Relu", ["a"], ["b"], name="B", meta={"device": "gpu1"})
    g.set_outputs([*g.outputs, "b"])

    def cost(node, work, spec, dtype):
        return FixedCost(0.0)

    r = simulate(g, ring_system(4), host_inputs=False, transfer_fn=linear, cost_fn=cost)
    copy = [o for o in r.ops if o.op == "Transfer"]
    assert len(copy) == 1 and copy[0]["end_s"] - copy[0]["start_s"] == pytest.approx(0.01)
    # the ring waits 10 ms for the copy on link gpu0 -> gpu1: 15 ms + 10 ms
    ar_end = max(o.end_s for o in r.ops if o.op == "AllReduce")
    assert ar_end == pytest.approx(0.025, rel=1e-12)
    alone = simulate(collective_graph("AllReduce", 4, 250_000_000), ring_system(4),
                     host_inputs=False, transfer_fn=linear)
    assert alone.makespan_s == pytest.approx(0.015, rel=1e-12)


def test_unknown_group_device_is_a_spec_error():
    g = collective_graph("AllReduce", 2, 10)
    g.nodes["c"].attrs["group"] = ["gpu0", "gpu9"]
    with pytest.raises(SpecError, match="gpu9"):
        simulate(g, ring_system(2), host_inputs=False)


def test_trace_and_json_include_collectives(tmp_path):
    r = simulate(collective_graph("AllReduce", 2, 1000), ring_system(2), host_inputs=False,
                 transfer_fn=linear)
    r.write_trace(str(tmp_path / "t.json"))
    assert "AllReduce" in (tmp_path / "t.json").read_text()
    assert "AllReduce" in r.summary() or r.by_op_type()["AllReduce"]["bound"] == "comm"


# ------------------------------------------------------------------ data parallelism
def linear_model(batch: int, fin: int = 3, fout: int = 2) -> Graph:
    g = Graph("lin")
    g.add_input("x", TensorSpec((batch, fin), "fp64"))
    g.add_param("w", TensorSpec((fin, fout), "fp64"))
    g.add_node("MatMul", ["x", "w"], ["y"], name="fc")
    g.set_outputs(["y"])
    return g


def test_data_parallel_step_equals_the_global_batch_gradient():
    n, per, lr = 4, 2, 0.1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n * per, 3))
    y = rng.standard_normal((n * per, 2))
    w0 = rng.standard_normal((3, 2))
    dp = data_parallel(training_graph(linear_model(per), "mse", "sgd", lr=lr), names(n))
    feeds = {}
    for k, d in enumerate(names(n)):
        feeds[f"{d}/x"] = x[k * per:(k + 1) * per]
        feeds[f"{d}/labels"] = y[k * per:(k + 1) * per]
    vals = Executor(dp, params={"w": w0}).run(feeds).values
    # hand formula: mean squared error over the global batch, one SGD step
    grad = 2 * x.T @ (x @ w0 - y) / y.size
    for d in names(n):
        np.testing.assert_allclose(vals[f"{d}/w.new"], w0 - lr * grad, rtol=1e-12)
    assert dp.meta["updates"]["gpu0/w.new"] == "w" and dp.meta["batch"] == n * per
    ars = [nd for nd in dp.nodes.values() if nd.op == "AllReduce"]
    assert len(ars) == 1 and ars[0].attrs["group"] == names(n)
    assert {dp.nodes[f"{d}/fc"].meta["device"] for d in names(n)} == set(names(n))


def test_data_parallel_needs_a_training_graph():
    with pytest.raises(sim.errors.GraphError, match="training graph"):
        data_parallel(linear_model(2), names(2))


def _mlp_step(batch: int) -> Graph:
    g = sim.load("workloads/mlp-mnist.yaml", batch=batch, in_features=4096, hidden=8192, classes=4096)
    return training_graph(g, "cross_entropy", "sgd")


def _compute_s(r, dev: str) -> float:
    return sum(o.end_s - o.start_s for o in r.ops if o.device == dev and o.bound != "comm")


def test_data_parallel_on_dgx_h100():
    from sim.cost import transfer_time
    from sim.hw import load_hardware

    devs = names(8)
    one = sim.simulate(_mlp_step(16384), "dgx-h100", "bf16", host_inputs=False)
    dp = sim.simulate(data_parallel(_mlp_step(16384 // 8), devs, bucket_bytes=None), "dgx-h100", "bf16",
                  host_inputs=False)
    per_dev = [_compute_s(dp, d) for d in devs]
    assert max(per_dev) == pytest.approx(min(per_dev))
    ratio = _compute_s(one, "gpu0") / per_dev[0]
    assert 6.0 < ratio <= 8.0  # ~n-fold (launch floors and the loss keep it under 8)
    switch = load_hardware("dgx-h100").switch
    ars = [o for o in dp.ops if o.op == "AllReduce" and o.device == "gpu0"]
    assert len(ars) == 4  # fc1/fc2 weight and bias
    for o in ars:
        assert o.steps == 14 and o.bound == "comm"
    # the first all-reduce (fc2's bias, issued first) runs alone: the ring formula exactly
    first = min(ars, key=lambda o: o.start_s)
    assert first["end_s"] - first["start_s"] == pytest.approx(
        14 * transfer_time(switch, first["chunk_bytes"]), rel=1e-9)
    # they queue on the switch ports: together they last at least the formula's sum
    window = max(o.end_s for o in ars) - min(o.start_s for o in ars)
    total = sum(14 * transfer_time(switch, o.chunk_bytes) for o in ars)
    assert window >= total * (1 - 1e-9)
    assert dp.makespan_s <= per_dev[0] + total * (1 + 1e-9)
    assert dp.throughput > one.throughput


def test_single_weight_allreduce_time_on_dgx_h100():
    from sim.cost import transfer_time
    from sim.hw import load_hardware

    g = Graph("lin")
    g.add_input("x", TensorSpec((64, 1024)))
    g.add_param("w", TensorSpec((1024, 1024)))
    g.add_node("MatMul", ["x", "w"], ["y"], name="fc")
    g.set_outputs(["y"])
    dp = data_parallel(training_graph(g, "mse"), names(8))
    r = simulate(dp, "dgx-h100", host_inputs=False)
    (ar,) = [o for o in r.ops if o.op == "AllReduce" and o.device == "gpu3"]
    switch = load_hardware("dgx-h100").switch
    assert ar.chunk_bytes == 1024 * 1024 * 4 / 8
    assert ar.end_s - ar.start_s == pytest.approx(14 * transfer_time(switch, 1024 * 1024 * 4 / 8),
                                                       rel=1e-12)


# ------------------------------------------------------------------ pipeline parallelism
def relu_chain(length: int, width: int = 1000) -> Graph:
    g = Graph("chain")
    g.add_input("x", TensorSpec((width,)))
    prev = "x"
    for i in range(length):
        (prev,) = g.add_node("Relu", [prev], [f"a{i}"], name=f"n{i}")
    g.set_outputs([prev])
    return g


@pytest.mark.parametrize("stages, micro", [(4, 8), (2, 1), (4, 4), (3, 16)])
def test_gpipe_bubble_matches_formula(stages, micro):
    t = 0.5  # each stage: two nodes of t

    def cost(node, work, spec, dtype):
        return FixedCost(t if node.op == "Relu" else 0.0)  # Depend (the schedule's order): free

    p = pipeline_parallel(relu_chain(2 * stages), names(stages), micro)
    r = simulate(p, switch_system(stages), host_inputs=False, cost_fn=cost, transfer_fn=zero)
    assert r.makespan_s == pytest.approx((micro + stages - 1) * 2 * t)
    assert bubble_fraction(r, names(stages)) == pytest.approx((stages - 1) / (micro + stages - 1))


def test_gpipe_with_copy_time():
    p = pipeline_parallel(relu_chain(4), names(2), 3)
    r = simulate(p, switch_system(2, bw=4000.0), host_inputs=False,
                 cost_fn=lambda node, *a: FixedCost(1.0 if node.op == "Relu" else 0.0),
                 transfer_fn=linear)
    # stage 0: 2 s per microbatch; copy 4000 B at 4000 B/s: 1 s; stage 1: 2 s per microbatch
    assert r.makespan_s == pytest.approx(3 * 2 + 1 + 2)


def test_stage_split_balances_flops():
    g = Graph("mm")
    g.add_input("x", TensorSpec((64, 64)))
    prev = "x"
    sizes = [64, 64, 64, 64]
    for i, k in enumerate(sizes):
        g.add_param(f"w{i}", TensorSpec((64, k)))
        (prev,) = g.add_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}")
        (prev,) = g.add_node("Relu", [prev], [f"r{i}"], name=f"relu{i}")
    g.set_outputs([prev])
    split = stage_split(g, 2)
    assert [split[f"mm{i}"] for i in range(4)] == [0, 0, 1, 1]
    assert split["relu1"] == 0 and split["relu3"] == 1
    p = pipeline_parallel(g, ["gpu0", "gpu1"], 2)
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    ex = Executor(p)
    vals = ex.run({"mb0/x": x, "mb1/x": 2 * x}).values
    ws = [ex.params[f"w{i}"] for i in range(4)]
    h = x
    for w in ws:
        h = np.maximum(h @ w, 0)
    scale = float(np.abs(h).max())
    np.testing.assert_allclose(vals["mb0/r3"], h, rtol=1e-4, atol=1e-5 * scale)
    # a ReLU net without biases is 1-homogeneous
    np.testing.assert_allclose(vals["mb1/r3"], 2 * h, rtol=1e-4, atol=1e-5 * scale)
    assert p.meta["stage_devices"] == ["gpu0", "gpu1"]


def mlp(batch: int) -> Graph:
    g = Graph("mlp")
    g.add_input("x", TensorSpec((batch, 5), "fp64"))
    for i, (a, b) in enumerate([(5, 4), (4, 3)]):
        g.add_param(f"w{i}", TensorSpec((a, b), "fp64"))
        g.add_param(f"b{i}", TensorSpec((b,), "fp64"))
    g.add_node("MatMul", ["x", "w0"], ["h"], name="fc0")
    g.add_node("Add", ["h", "b0"], ["hb"], name="bias0")
    g.add_node("Tanh", ["hb"], ["t"], name="act")
    g.add_node("MatMul", ["t", "w1"], ["o"], name="fc1")
    g.add_node("Add", ["o", "b1"], ["y"], name="bias1")
    g.set_outputs(["y"])
    return g


@pytest.mark.parametrize("bucket", [None, 25 * 2**20, 8 * 4 * 4])
def test_data_parallel_adam_mlp_replicas_agree_with_one_device(bucket):
    n, per = 3, 2
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n * per, 5))
    y = rng.standard_normal((n * per, 3))
    full = training_graph(mlp(n * per), "mse", "adam", lr=0.01)
    dp = data_parallel(training_graph(mlp(per), "mse", "adam", lr=0.01, checkpoint=True), names(n),
                       bucket_bytes=bucket)
    ars = {nd.meta["param"]: nd for nd in dp.nodes.values() if nd.op == "AllReduce"}
    if bucket is None:  # one all-reduce per gradient
        assert sorted(ars) == ["b0", "b1", "w0", "w1"]
        assert dp.meta["buckets"] == [["b1"], ["w1"], ["b0"], ["w0"]]
        for d in names(n):
            upd = dp.nodes[f"{d}/w0.update"]
            assert upd.inputs[1] in ars["w0"].outputs and upd.meta["device"] == d
    elif bucket > 1000:  # 4 + 12 + 3 + 20 fp64 values: one bucket, in backward order
        assert dp.meta["buckets"] == [["b1", "w1", "b0", "w0"]]
        (ar,) = ars.values()
        assert ar.inputs[0] == "gpu0/bucket0" and dp.tensors[ar.inputs[0]].shape == (3 + 12 + 4 + 20,)
    else:  # 128 bytes: b1, w1 (24 + 96 bytes), b0 (32) reach 152 >= 128; w0 closes at the end
        assert dp.meta["buckets"] == [["b1", "w1", "b0"], ["w0"]]
        assert len(ars) == len(dp.meta["buckets"])
    want = Executor(full).run({"x": x, "labels": y}).values
    feeds = {}
    for k, d in enumerate(names(n)):
        feeds[f"{d}/x"] = x[k * per:(k + 1) * per]
        feeds[f"{d}/labels"] = y[k * per:(k + 1) * per]
    got = Executor(dp).run(feeds).values
    for p in ["w0", "b0", "w1", "b1"]:
        for d in names(n):
            np.testing.assert_allclose(got[f"{d}/{p}.new"], want[f"{p}.new"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got[f"{d}/{p}.m.new"], want[f"{p}.m.new"], rtol=1e-10, atol=1e-14)
    # the mean of the replicas' losses is the global loss
    np.testing.assert_allclose(np.mean([got[f"{d}/loss"] for d in names(n)]), want["loss"], rtol=1e-12)


def test_collective_output_out_of_memory():
    from sim.errors import OutOfMemoryError

    g = collective_graph("AllGather", 2, 1000)  # 4000 B in, 8000 B out per member
    small = SystemSpec("s", {d: device(capacity=10_000) for d in names(2)}, switch=LinkSpec("sw", 1e9))
    with pytest.raises(OutOfMemoryError) as e:
        simulate(g, small, host_inputs=False, transfer_fn=linear)
    assert (e.value.op, e.value.device, e.value.needed_bytes) == ("c", "gpu0", 8000)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_pipeline_training_step_accumulates_microbatch_gradients(checkpoint):
    m, per = 3, 2
    rng = np.random.default_rng(4)
    x = rng.standard_normal((m * per, 5))
    y = rng.standard_normal((m * per, 3))
    full = training_graph(mlp(m * per), "mse", "momentum", lr=0.05)
    step = training_graph(mlp(per), "mse", "momentum", lr=0.05, checkpoint=checkpoint, segment=2)
    p = pipeline_parallel(step, ["gpu0", "gpu1"], m)
    assert p.meta["stages"]["fc0"] == 0 and p.meta["stages"]["fc1"] == 1
    assert p.nodes["mb0/loss"].meta["device"] == "gpu1"
    assert p.nodes["w0.update"].meta["device"] == "gpu0" and p.nodes["w1.update"].meta["device"] == "gpu1"
    assert len([nd for nd in p.nodes.values() if nd.op == "MomentumUpdate"]) == 4
    want = Executor(full).run({"x": x, "labels": y}).values
    feeds = {}
    for j in range(m):
        feeds[f"mb{j}/x"] = x[j * per:(j + 1) * per]
        feeds[f"mb{j}/labels"] = y[j * per:(j + 1) * per]
    got = Executor(p).run(feeds).values
    for name in ["w0.new", "b0.new", "w1.new", "b1.new", "w1.velocity.new"]:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.mean([got[t] for t in p.meta["losses"]]), want["loss"], rtol=1e-12)
    assert set(p.meta["updates"]) <= set(p.outputs)


def test_pipeline_training_overlaps_stages():
    g = Graph("mm")
    g.add_input("x", TensorSpec((8, 16)))
    prev = "x"
    for i in range(4):
        g.add_param(f"w{i}", TensorSpec((16, 16)))
        (prev,) = g.add_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}")
    g.set_outputs([prev])
    tg = training_graph(g, "mse", "sgd")
    p = pipeline_parallel(tg, names(2), 4)

    def cost(node, work, spec, dtype):
        return FixedCost(1.0 if node.op in ("MatMul", "Gemm") else 0.0)

    r = simulate(p, switch_system(2), host_inputs=False, cost_fn=cost, transfer_fn=zero)
    serial = sum(1.0 for o in r.ops if o.op in ("MatMul", "Gemm"))
    assert serial == 4 * 11  # per microbatch: 4 forward + 7 backward GEMMs (none for dx)
    # two devices share the work: faster than one, never faster than half
    assert serial / 2 <= r.makespan_s < serial
    assert bubble_fraction(r, names(2)) < 0.5
    # stage 1 (mm2, mm3: 2 forward + 4 backward GEMMs per microbatch) is the bottleneck, and
    # it cannot start before stage 0's first forward (2 GEMMs)
    stage1 = [o for o in r.ops if o.device == "gpu1" and o.op in ("MatMul", "Gemm")]
    assert len(stage1) == 4 * 6 and r.makespan_s >= 4 * 6 + 2
    # gradients stay on their stage: only activations and their gradients cross
    crossing = [o.tensor for o in r.ops if o.op == "Transfer"]
    assert crossing and not any("grad_acc" in t for t in crossing)


# ------------------------------------------------------------------ tensor parallelism
def tiny_gpt2(batch: int = 2, seq: int = 8) -> Graph:
    return sim.load("workloads/gpt2.yaml", batch=batch, seq=seq, vocab=64, n_ctx=seq, d=32, heads=4,
                    n_layer=2)


def tiny_llama() -> Graph:  # swiglu MLP, grouped-query rotary attention, no biases
    return sim.load("workloads/llama2-7b.yaml", batch=2, seq=8, vocab=64, d=32, heads=4, kv_heads=2,
                    n_layer=2, ffn=48)


def _shard_values(tp: Graph, full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The original parameter values, each shard the ``i``-th slice of ``meta['shards']`` (the
    pass's own constants keep their values)."""
    out = {}
    for name in tp.params:
        if name in tp.meta["shards"]:
            p, axis, i = tp.meta["shards"][name]
            n = len(tp.meta["tp_devices"])
            size = full[p].shape[axis] // n
            out[name] = np.take(full[p], range(i * size, (i + 1) * size), axis=axis)
        elif name in full:
            out[name] = full[name]
    return out


@pytest.mark.parametrize("make, n", [(tiny_gpt2, 2), (tiny_gpt2, 4), (tiny_llama, 2)])
def test_tensor_parallel_computes_the_original_outputs(make, n):
    g = make()
    tp = tensor_parallel(g, names(n))
    ref = Executor(g, seed=1)
    ids = np.random.default_rng(0).integers(0, 64, (2, 8))
    want = ref.run({"input_ids": ids}).values[g.outputs[0]]
    got = Executor(tp, params=_shard_values(tp, ref.params)).run(
        {f"{d}/input_ids": ids for d in names(n)}).values
    assert len(tp.outputs) == n
    for o in tp.outputs:
        np.testing.assert_allclose(got[o], want, rtol=1e-4, atol=1e-5)


def test_tensor_parallel_structure_and_flops():
    n, b, s, d, v = 4, 2, 8, 32, 64
    g = tiny_gpt2(b, s)
    tp = tensor_parallel(g, names(n))
    ars = [nd for nd in tp.nodes.values() if nd.op == "AllReduce"]
    # the vocabulary-parallel embedding's all-reduce, then one all-reduce (sum) after each
    # row-parallel linear: 2 per block, 2 blocks
    assert [nd.meta["layer"] for nd in ars] == ["wte", "h.0.attn.o", "h.0.mlp.fc2", "h.1.attn.o",
                                                "h.1.mlp.fc2"]
    for nd in ars:
        assert nd.attrs["group"] == names(n) and nd.attrs["reduction"] == "sum"
        assert [tp.tensors[t].shape for t in nd.inputs] == [(b, s, d)] * n
    # shards: q/fc1 columns, o/fc2 rows, the (tied) token embedding's rows; row biases only on
    # rank 0; the position embedding and norms replicated
    assert tp.params["h.0.attn.q.weight.tp3"].shape == (d, d // n)
    assert tp.params["h.0.attn.q.bias.tp3"].shape == (d // n,)
    assert tp.params["h.0.mlp.fc1.weight.tp0"].shape == (d, 4 * d // n)
    assert tp.params["h.0.mlp.fc2.weight.tp1"].shape == (4 * d // n, d)
    assert "h.0.attn.q.weight" not in tp.params and tp.params["h.0.mlp.fc2.bias"].shape == (d,)
    assert tp.nodes["gpu0/h.0.mlp.fc2.gemm"].inputs[2] == "h.0.mlp.fc2.bias"
    assert len(tp.nodes["gpu1/h.0.mlp.fc2.gemm"].inputs) == 2
    assert {"wpe.weight", "h.0.norm1.weight", "ln_f.weight"} <= set(tp.params)
    assert "wte.weight" not in tp.params and tp.params["wte.weight.tp3"].shape == (v // n, d)
    assert tp.nodes["gpu2/h.1.attn.sdpa"].meta == {**g.nodes["h.1.attn.sdpa"].meta, "device": "gpu2",
                                                 "tp": "sharded", "tp_rank": 2, "origin": "h.1.attn.sdpa"}
    assert tp.tensors["gpu2/h.1.attn.sdpa"].shape == (b, 4 // n, s, d // 4)
    # outside the vocabulary-parallel embedding and LM head (the masked lookups, and the logits'
    # all-gather), the split work adds up exactly; the replicated work is done n times; each
    # block all-reduce adds (n - 1) per element of one member's tensor
    vocab = set(tp.meta["tp_vocab"]["embedding"] + tp.meta["tp_vocab"]["lm_head"])
    replicated = sum(g.work(nd).flops for nd in g.nodes.values()
                     if nd.name not in vocab and tp.nodes[f"gpu0/{nd.name}"].meta["tp"] == "replicated")
    assert replicated > 0
    rest = sum(tp.work(nd).flops for nd in tp.nodes.values()
               if nd.meta.get("origin") not in vocab and nd.meta.get("layer") != "wte"
               and nd.op not in ("AllGather",))
    blocks = sum(g.work(nd).flops for nd in g.nodes.values() if nd.name not in vocab)
    assert rest == pytest.approx(blocks + (n - 1) * replicated + (len(ars) - 1) * (n - 1) * b * s * d,
                                 rel=1e-12)
    # the LM head: 1/n of its GEMM on every rank (hand count 2 b s d V / n)
    for dev in names(n):
        head = [nd for nd in tp.nodes.values() if nd.meta["device"] == dev and nd.meta.get("origin") in vocab
                and nd.op == "Gemm"]
        assert sum(tp.work(nd).matmul_flops for nd in head) == 2 * b * s * d * v // n
    gemm = sum(g.work(nd).matmul_flops for nd in g.nodes.values()
               if nd.name not in vocab and tp.nodes[f"gpu0/{nd.name}"].meta["tp"] in ("column", "row"))
    per_dev = sum(tp.work(nd).matmul_flops for nd in tp.nodes.values()
                  if nd.meta.get("device") == "gpu1" and nd.meta.get("tp") in ("column", "row"))
    assert per_dev == pytest.approx(gemm / n, rel=1e-12)


def test_tensor_parallel_rejects_bad_inputs():
    with pytest.raises(sim.errors.GraphError, match="does not split"):
        tensor_parallel(tiny_gpt2(), names(3))
    with pytest.raises(sim.errors.GraphError, match="not yet placed"):
        tensor_parallel(data_parallel(training_graph(tiny_gpt2(), "cross_entropy", "sgd"), names(2)),
                        names(2))
    with pytest.raises(sim.errors.GraphError, match="no attention or mlp"):
        tensor_parallel(relu_chain(2), names(2))


@pytest.mark.parametrize("n", [2, 4])
def test_tensor_parallel_timing_on_dgx_h100(n):
    from sim.cost import transfer_time
    from sim.hw import load_hardware

    # one GPT-2-small block (d 768, 12 heads, batch 8 x 1024 tokens), small vocabulary
    b, s, d = 8, 1024, 768
    g = sim.load("workloads/gpt2.yaml", batch=b, seq=s, vocab=512, n_ctx=s, d=d, heads=12, n_layer=1)
    single = tensor_parallel(g, ["gpu0"])
    one = sim.simulate(single, "dgx-h100", "bf16", host_inputs=False)
    tp = tensor_parallel(g, names(n))
    r = sim.simulate(tp, "dgx-h100", "bf16", host_inputs=False)

    def block_gemm_s(res, graph, dev):
        return sum(o.end_s - o.start_s for o in res.ops if o.device == dev
                   and o.op in ("Gemm", "MatMul") and graph.nodes[o.name].meta["tp"] != "replicated")

    base = block_gemm_s(one, single, "gpu0")
    for dev in names(n):
        # ~1/n of the GEMM time (the cost model runs narrower GEMMs less efficiently)
        t = block_gemm_s(r, tp, dev)
        assert base / n <= t * (1 + 1e-9) and t < 2 * base / n
    ars = [o for o in r.ops if o.op == "AllReduce" and o.device == "gpu0"]
    assert len(ars) == 3  # the vocabulary-parallel embedding's, two per block
    switch = load_hardware("dgx-h100").switch
    chunk = b * s * d * 2 / n  # bf16 activations, S/n per step
    for o in ars:  # each runs alone (the next layer waits for it): the ring formula exactly
        assert o.chunk_bytes == chunk and o.steps == 2 * (n - 1)
        ring = 2 * (n - 1) * transfer_time(switch, chunk)
        assert o.end_s - o.start_s == pytest.approx(ring, rel=1e-9)


def test_parse_parallel_tp():
    assert parse_parallel("tp=4") == ("tp", 4, 1)
    with pytest.raises(SpecError, match="expected"):
        parse_parallel("tp=2,mb=2")


@pytest.mark.slow
def test_data_parallel_buckets_gpt2_dp8_no_slower():
    step = training_graph(sim.load("workloads/gpt2.yaml", batch=1), "cross_entropy", "adamw")
    per_param = data_parallel(step, names(8), bucket_bytes=None)
    bucketed = data_parallel(step, names(8))
    n_buckets = len(bucketed.meta["buckets"])
    size = [[step.tensors[step.meta["grads"][p]].nbytes for p in b] for b in bucketed.meta["buckets"]]
    # every bucket but the last reaches 25 MiB with its last gradient, not before (fp32 gradients)
    for b in size:
        assert sum(b[:-1]) < 25 * 2**20
    assert all(sum(b) >= 25 * 2**20 for b in size[:-1])
    assert sum(len(b) for b in bucketed.meta["buckets"]) == len(set(step.meta["grads"].values()))
    ra = sim.simulate(per_param, "dgx-h100", "bf16", host_inputs=False)
    rb = sim.simulate(bucketed, "dgx-h100", "bf16", host_inputs=False)
    count = lambda r: sum(1 for o in r.ops if o.op == "AllReduce" and o.device == "gpu0")  # noqa: E731
    assert count(ra) == len(per_param.meta["buckets"]) == 196
    assert count(rb) == n_buckets
    assert rb.makespan_s <= ra.makespan_s


# ------------------------------------------------------------------ sim run --parallel
def test_cli_parallel_dp_and_pp(tmp_path, capsys):
    import json

    from sim.cli import main

    out = tmp_path / "dp.json"
    rc = main(["run", "mlp-mnist", "--hw", "dgx-h100", "--train", "--optimizer", "sgd",
               "--set", "batch=64", "--parallel", "dp=4", "--json", str(out), "--top", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mlp-mnist.train.dp4" in text and "batch 64" in text
    data = json.loads(out.read_text())
    ars = [o for o in data["ops"] if o["op"] == "AllReduce"]
    assert {o["device"] for o in ars} == {"gpu0", "gpu1", "gpu2", "gpu3"}
    assert len(ars) == 1 * 4  # the four gradients in one 25 MiB bucket, one record per member
    computed = {o["device"] for o in data["ops"] if o["bound"] != "comm"}
    assert {"gpu0", "gpu1", "gpu2", "gpu3"} <= computed and "gpu4" not in computed
    assert any(o["name"].startswith("gpu3/") for o in data["ops"])  # replicas named per device
    rc = main(["run", "mlp-mnist", "--hw", "dgx-h100", "--set", "batch=64", "--parallel", "pp=2,mb=4",
               "--top", "3"])
    assert rc == 0 and "mlp-mnist.pp2x4" in capsys.readouterr().out


@pytest.mark.parametrize("spec, msg", [
    ("dp=3", "does not split"), ("dp=16", "needs 16 devices"), ("pp=2,dp=2", "batch"),
    ("mb=2", "expected"), ("dp=0", ">= 1"), ("dp=x", "integer"),
])
def test_cli_parallel_bad_specs_exit_2(spec, msg, capsys):
    from sim.cli import main

    assert main(["run", "mlp-mnist", "--hw", "dgx-h100", "--train", "--parallel", spec]) == 2
    assert msg in capsys.readouterr().err


def test_cli_dp_needs_train(capsys):
    from sim.cli import main

    assert main(["run", "mlp-mnist", "--hw", "dgx-h100", "--parallel", "dp=2"]) == 2
    assert "--train" in capsys.readouterr().err


def test_switch_alltoall_pairwise_by_hand():
    """AllToAll of S = 400 MB per member over 8 NVSwitch ports of 400 GB/s and 3 us: each
    member streams its 7 chunks of S/8 through its own port, ``7 (alpha + S/(8 B))``; with no
    latency the bandwidth term equals the cluster model's ``(n-1)/n S / B``."""
    from sim.cluster.collectives import Fabric, Group, collective_time

    g = collective_graph("AllToAll", 8, 100_000_000)
    r = simulate(g, switch_system(8, bw=400e9, lat=3e-6), host_inputs=False, transfer_fn=linear)
    assert r.makespan_s == pytest.approx(7 * (3e-6 + 50e6 / 400e9), rel=1e-12)
    assert all(o.bytes == 7 * 50e6 and o.steps == 7 for o in r.ops)
    r0 = simulate(g, switch_system(8, bw=400e9), host_inputs=False, transfer_fn=linear)
    closed = collective_time("all_to_all", 400e6, Fabric(8, 1, 400e9, 0.0, 0.0, 0, 0.0), Group(8, 8))
    assert r0.makespan_s == pytest.approx(closed.seconds, rel=1e-12)
