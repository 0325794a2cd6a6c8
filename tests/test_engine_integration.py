"""Engine with the real cost model and bundled hardware specs."""

from __future__ import annotations

import os

import pytest

import sim
from sim.errors import OutOfMemoryError
from sim.graph import Graph, TensorSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv_block(batch: int = 32, ch: int = 256, hw: int = 56) -> Graph:
    """conv3x3 -> relu -> conv3x3 -> add (residual) -> relu -> global pool -> fc."""
    g = Graph("convblock")
    g.add_input("x", TensorSpec((batch, ch, hw, hw)))
    g.add_param("w1", TensorSpec((ch, ch, 3, 3)))
    g.add_param("w2", TensorSpec((ch, ch, 3, 3)))
    g.add_param("fc", TensorSpec((ch, 1000)))
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    g.add_node("Conv", ["x", "w1"], ["c1"], conv, name="conv1")
    g.add_node("Relu", ["c1"], ["r1"], name="relu1")
    g.add_node("Conv", ["r1", "w2"], ["c2"], conv, name="conv2")
    g.add_node("Add", ["c2", "x"], ["s"], name="add")
    g.add_node("Relu", ["s"], ["r2"], name="relu2")
    g.add_node("GlobalAveragePool", ["r2"], ["p"], name="pool")
    g.add_node("Reshape", ["p"], ["f"], {"shape": [batch, ch]}, name="flat")
    g.add_node("MatMul", ["f", "fc"], ["y"], name="fc")
    g.set_outputs(["y"])
    return g.verify()


def gpt3_weights(layers: int = 96, d: int = 12288, tokens: int = 2048) -> Graph:
    """The GEMM chain of GPT-3 175B: 12 d^2 weights per layer (Q, K, V, proj, two MLP matrices)."""
    g = Graph("gpt3-gemms")
    g.add_input("h", TensorSpec((tokens, d)))
    h = "h"
    for i in range(layers):
        for j, (a, b) in enumerate(((d, d), (d, d), (d, d), (d, d), (d, 4 * d), (4 * d, d))):
            w = g.add_param(f"l{i}.w{j}", TensorSpec((a, b)))
            (h,) = g.add_node("MatMul", [h, w], [f"l{i}.mm{j}"], name=f"l{i}.mm{j}")
    g.set_outputs([h])
    return g


def by_name(result) -> dict:
    return {o.name: o for o in result.ops}


def test_convs_are_compute_bound_and_elementwise_memory_bound():
    r = sim.simulate(conv_block(), "h100", "bf16")
    ops = by_name(r)
    assert ops["conv1"]["bound"] == "compute" and ops["conv2"]["bound"] == "compute"
    assert ops["conv1"]["unit"] == "tensor"
    assert ops["relu1"]["bound"] == "memory" and ops["add"]["bound"] == "memory"
    # the engine keeps each op's own cost: makespan = input copy + the chain of ops
    chain = sum(o.end_s - o.start_s for o in r.ops if o.op != "Transfer")
    copy = sum(o.end_s - o.start_s for o in r.ops if o.op == "Transfer")
    assert r.makespan_s == pytest.approx(chain + copy)
    assert copy > 0
    r = sim.simulate(conv_block(), "h100", "bf16", host_inputs=False)
    assert r.utilisation["gpu0"]["tensor"]["flops_utilisation"] > 0.3
    assert r.energy_j > r.idle_energy_j > 0


def test_newer_gpus_are_faster():
    g = conv_block()
    t = {hw: sim.simulate(g, hw, "fp16").makespan_s for hw in ("h100", "a100", "v100")}
    assert t["h100"] < t["a100"] < t["v100"]


def test_resnet50_h100_beats_a100_beats_v100():
    g = sim.load(os.path.join(ROOT, "workloads", "resnet50.yaml"), batch=32)
    t = {hw: sim.simulate(g, hw, "fp16").makespan_s for hw in ("h100", "a100", "v100")}
    assert t["h100"] < t["a100"] < t["v100"]
    r = sim.simulate(g, "h100", "bf16")
    convs = [o for o in r.ops if o.op == "Conv"]
    assert len(convs) == 53 and sum(o.bound == "compute" for o in convs) >= 10
    eltwise = [o for o in r.ops if o.op in ("Relu", "Add", "BatchNormalization")]
    assert eltwise and all(o.bound in ("memory", "launch") for o in eltwise)
    assert r.throughput is not None and r.batch == 32


def test_gpt3_175b_does_not_fit_one_h100():
    g = gpt3_weights()
    assert g.param_count == pytest.approx(174e9, rel=0.01)
    with pytest.raises(OutOfMemoryError) as info:
        sim.simulate(g, "h100", "bf16")
    err = info.value
    assert err.device == "gpu0" and err.op.startswith("parameter ")
    assert err.capacity_bytes == pytest.approx(79.18 * 2**30)
    assert err.needed_bytes > err.free_bytes


def test_gpt3_175b_workload_does_not_fit_one_h100():
    g = sim.load(os.path.join(ROOT, "workloads", "gpt3-175b.yaml"))
    with pytest.raises(OutOfMemoryError):
        sim.simulate(g, "h100", "bf16")


def test_real_costs_are_deterministic(tmp_path):
    a, b = (sim.simulate(conv_block(batch=2, ch=16, hw=8), "h100") for _ in range(2))
    assert a.to_json() == b.to_json()


def test_placement_on_a_dgx_moves_tensors_over_nvswitch_and_pcie():
    from sim.cost import transfer_time

    dgx = sim.hardware("dgx-h100")
    g = conv_block(batch=8, ch=64, hw=28)
    r = sim.simulate(g, dgx, "bf16", placement={"conv2": "gpu1", "pool": dgx.host})
    ops = by_name(r)
    assert ops["conv1"]["device"] == "gpu0" and ops["conv2"]["device"] == "gpu1"
    assert ops["pool"]["device"] == dgx.host
    hop = ops["r1->gpu1"]
    assert (hop["src"], hop["dst"], hop["bound"]) == ("gpu0", "gpu1", "comm")
    nbytes = 8 * 64 * 28 * 28 * 2  # bf16 activations
    assert hop["bytes"] == nbytes
    assert hop["end_s"] - hop["start_s"] == pytest.approx(transfer_time(dgx.switch, nbytes))
    assert hop["start_s"] == ops["relu1"]["end_s"] and ops["conv2"]["start_s"] == hop["end_s"]
    assert ops["r2->" + dgx.host]["dst"] == dgx.host
    assert r.peak_memory_by_device["gpu1"] > 0 and r.peak_memory_by_device["gpu2"] == 0
    assert "gpu2" not in r.summary()
