"""Cluster specs, collectives in closed form, the pipeline schedule, memory, and the cluster CLI.

Every expected value is a hand count or a textbook formula (alpha-beta collectives, the 1F1B
bubble), never the code's own output.
"""

from __future__ import annotations

import json
import math

import pytest

import sim
from sim.cluster import Fabric, Group, collective_time, parse_layout, simulate_training
from sim.cluster.collectives import bus_bandwidth
from sim.cluster.layout import check_layout
from sim.cluster.memory import param_bytes
from sim.cluster.schedule import Comm, StageTimes, simulate_schedule, task_order
from sim.cluster.training import estimate_memory
from sim.errors import OutOfMemoryError, SimError, SpecError
from sim.hw import describe

# ------------------------------------------------------------------------- specs


def test_cluster_spec_nodes_field_and_topology():
    c = sim.hardware("dgx-a100-cluster", nodes=192)
    assert (c.nodes, c.per_node, c.accelerator_count) == (192, 8, 1536)
    assert c.node.nics == 8 and c.fabric.link.bandwidth_Bps == 25e9  # 200 Gb/s HDR
    assert c.node.switch.bandwidth_Bps == 300e9
    text = describe(c)
    # bisection of a non-blocking fat tree: half the nodes' NICs: 96 x 8 x 25 GB/s = 19.2 TB/s
    assert "bisection bandwidth: 19.2 TB/s" in text
    h = sim.hardware("dgx-h100")
    assert h.nics == 8 and h.nic.bandwidth_Bps == 50e9  # 400 Gb/s NDR


def test_tpu_pod_torus_and_oversubscription():
    t = sim.hardware("tpu-v4-pod")
    assert t.accelerator_count == 4096 and t.fabric.shape == (16, 16, 16)
    # cutting a 16-long axis crosses 2 x 16 x 16 links (wrap-around) of 50 GB/s
    assert "bisection bandwidth: 25.6 TB/s" in describe(t)
    c = sim.hardware("dgx-a100-cluster", nodes=40, **{"fabric.oversubscription": 2})
    assert "bisection bandwidth: 2 TB/s" in describe(c)  # 20 x 8 x 25 GB/s / 2


def test_transport_option_and_bad_fields():
    roce = sim.hardware("dgx-a100-cluster", **{"fabric.transport": "roce"})
    assert roce.fabric.transport == "roce" and roce.fabric.link.efficiency == 0.85
    with pytest.raises(SpecError, match="fabric.transport"):
        sim.hardware("dgx-a100-cluster", **{"fabric.transport": "carrier-pigeon"})
    with pytest.raises(SpecError, match="fabric.shape"):
        sim.hardware("tpu-v4-pod", nodes=64)  # 256 chips do not fill 16x16x16
    assert sim.hardware("tpu-v4-pod", nodes=64, **{"fabric.shape": [4, 8, 8]}).accelerator_count == 256


# ------------------------------------------------------------------------- collectives
FAB = Fabric(
    per_node=8, nodes=4, intra_Bps=200e9, intra_latency_s=2e-6, nic_Bps=20e9, nics=8, net_latency_s=5e-6
)


def test_ring_allreduce_in_a_node_is_alpha_beta():
    t = collective_time("all_reduce", 1e9, FAB, Group(8, 8), "ring")
    assert t.seconds == pytest.approx(14 * 2e-6 + 14 / 8 * 1e9 / 200e9, rel=1e-12)
    # nccl-tests bus bandwidth approaches the link rate for large messages
    assert bus_bandwidth("all_reduce", 1e9, FAB, Group(8, 8), "ring") == pytest.approx(200e9, rel=5e-3)


def test_ring_tree_hierarchical_across_nodes():
    g = Group(32, 8)  # 4 nodes of 8: B_node = 8 NICs x 20 GB/s = 160 GB/s < 200 GB/s NVLink
    S = 256e6
    ring = collective_time("all_reduce", S, FAB, g, "ring").seconds
    assert ring == pytest.approx(62 * 5e-6 + 62 / 32 * S / 160e9, rel=1e-12)
    tree = collective_time("all_reduce", S, FAB, g, "tree").seconds
    assert tree == pytest.approx(2 * (2 * 5e-6 + 7 * 2e-6) + 2 * S / 160e9, rel=1e-12)
    hier = collective_time("all_reduce", S, FAB, g, "hierarchical").seconds
    assert hier == pytest.approx(
        2 * 7 * 2e-6 + 2 * 3 * 5e-6 + 2 * (7 / 8 * S / 200e9 + 3 / 4 * S / 160e9), rel=1e-12
    )
    best = collective_time("all_reduce", S, FAB, g)
    assert best.seconds == min(ring, tree, hier)
    # small messages: latency decides (tree or hierarchical beat the 62-step ring)
    assert collective_time("all_reduce", 1e3, FAB, g).algorithm != "ring"


def test_nic_contention_and_oversubscription():
    # 8 DP groups (one per TP rank) with one member per node share the node's 8 NICs: one each
    g = Group(4, 1, concurrent=8)
    t = collective_time("all_reduce", 1e9, FAB, g, "ring")
    assert t.seconds == pytest.approx(6 * 5e-6 + 6 / 4 * 1e9 / 20e9, rel=1e-12)
    # with 4 NICs per node two groups share one NIC: half the rate
    fab4 = Fabric(8, 4, 200e9, 2e-6, 20e9, 4, 5e-6)
    t4 = collective_time("all_reduce", 1e9, fab4, g, "ring")
    assert t4.seconds == pytest.approx(6 * 5e-6 + 6 / 4 * 1e9 / 10e9, rel=1e-12)
    # beyond a leaf switch, a 2:1 taper halves the rate
    tap = Fabric(8, 64, 200e9, 2e-6, 20e9, 8, 5e-6, oversubscription=2.0, leaf_nodes=16)
    far = collective_time("all_gather", 1e9, tap, Group(32, 1, 8), "ring")
    assert far.seconds == pytest.approx(31 * 5e-6 + 31 / 32 * 1e9 / 10e9, rel=1e-12)


def test_allgather_reducescatter_alltoall_p2p():
    g = Group(8, 8)
    for kind in ("all_gather", "reduce_scatter"):
        t = collective_time(kind, 8e8, FAB, g, "ring")
        assert t.seconds == pytest.approx(7 * 2e-6 + 7 / 8 * 8e8 / 200e9, rel=1e-12)
    a2a = collective_time("all_to_all", 8e8, FAB, Group(16, 8))
    # 7/16 of the data stays in the node, 8/16 leaves over 8 NICs (x8 ranks per node)
    assert a2a.seconds == pytest.approx(5e-6 + max(7 / 16 * 8e8 / 200e9, 8 / 16 * 8e8 * 8 / 160e9), rel=1e-12)
    p2p = collective_time("p2p", 1e8, FAB, Group(2, 1, 8))
    assert p2p.seconds == pytest.approx(5e-6 + 1e8 / 20e9, rel=1e-12)


def test_torus_ring_uses_both_directions_of_every_axis():
    fab = Fabric.of(sim.hardware("tpu-v4-pod"))
    t = collective_time("all_reduce", 1e9, fab, Group(16, axes=1), "ring")
    link = 50e9 * 0.85
    assert t.seconds == pytest.approx(30 * 1e-6 + 30 / 16 * 1e9 / (2 * link), rel=1e-12)


# ------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("p,m", [(4, 8), (8, 96), (2, 3), (1, 5)])
def test_1f1b_bubble_formula(p, m):
    F, B = 1.0, 2.0
    r = simulate_schedule([StageTimes(F, B)] * p, p, m, "1f1b", 1, Comm(), [0.0] * p)
    assert r.makespan_s == pytest.approx((m + p - 1) * (F + B), rel=1e-12)
    assert r.bubble_fraction() == pytest.approx((p - 1) / (m + p - 1), rel=1e-12)
    g = simulate_schedule([StageTimes(F, B)] * p, p, m, "gpipe", 1, Comm(), [0.0] * p)
    assert g.makespan_s == pytest.approx((m + p - 1) * (F + B), rel=1e-12)


def test_interleaved_bubble_shrinks_by_chunks():
    p, m, v = 4, 8, 2
    F, B = 0.5, 1.0  # per chunk
    r = simulate_schedule([StageTimes(F, B)] * (p * v), p, m, "interleaved", v, Comm(), [0.0] * p)
    # Narayanan et al. 2021: bubble time (p-1)(tf+tb)/v with tf, tb per whole stage
    assert r.makespan_s == pytest.approx(m * v * (F + B) + (p - 1) * (F + B), rel=1e-12)


def test_1f1b_order_and_in_flight():
    assert [k for k, _, _ in task_order("1f1b", 4, 0, 6)] == list("FFFFBFBFBBBB")
    assert [k for k, _, _ in task_order("1f1b", 4, 3, 6)] == list("FBFBFBFBFBFB")


def test_dp_reduce_after_backward_is_added_exactly():
    ar = 0.25
    comm = Comm(dp_reduce=lambda b: ar)
    r = simulate_schedule(
        [StageTimes(1.0, 2.0, grad_bytes=1.0)], 1, 4, "1f1b", 1, comm, [0.1], overlap=False, bucket_bytes=10.0
    )
    assert r.makespan_s == pytest.approx(4 * 3.0 + ar + 0.1, rel=1e-12)
    assert r.exposed["dp"] == pytest.approx(ar)


def test_p2p_on_the_critical_path():
    # two stages, one microbatch: F0, send, F1, B1, send back, B0
    c = 0.3
    r = simulate_schedule(
        [StageTimes(1.0, 2.0)] * 2, 2, 1, "1f1b", 1, Comm(p2p_fwd_s=c, p2p_bwd_s=c), [0.0, 0.0]
    )
    assert r.makespan_s == pytest.approx(2 * (1.0 + 2.0) + 2 * c, rel=1e-12)


# ------------------------------------------------------------------------- layouts, memory
def test_layout_parse_and_refusals():
    lay = parse_layout("tp=8,pp=8,dp=24,mbs=2,schedule=interleaved:2,zero=1,sp")
    assert (lay.gpus, lay.mbs, lay.chunks, lay.zero, lay.sp) == (1536, 2, 2, 1, True)
    assert lay.microbatches(2304) == 48
    ok = dict(gpus=64, layers=24, heads=16, batch=64)
    with pytest.raises(SimError, match="tp"):
        check_layout(parse_layout("tp=3,pp=2,dp=8"), **{**ok, "gpus": 48})
    with pytest.raises(SimError, match="more stages"):
        check_layout(parse_layout("tp=1,pp=32,dp=2"), **ok)
    with pytest.raises(SimError, match="accelerators"):
        check_layout(parse_layout("tp=2,pp=2,dp=2"), **ok)
    with pytest.raises(SimError, match="batch"):
        check_layout(parse_layout("tp=2,pp=2,dp=16,mbs=3"), **ok)
    with pytest.raises(SimError, match="schedule"):
        parse_layout("tp=2,schedule=zigzag")


def test_rank_placement_tp_in_node_then_pp_then_dp():
    lay = parse_layout("tp=4,pp=4,dp=8")
    assert (lay.stride("tp"), lay.stride("pp"), lay.stride("dp")) == (1, 4, 16)
    assert (lay.per_node("tp", 8), lay.per_node("pp", 8), lay.per_node("dp", 8)) == (4, 2, 1)
    other = parse_layout("tp=4,pp=4,dp=8,order=tp-dp-pp")
    assert (other.stride("dp"), other.stride("pp")) == (4, 32)


def test_mixed_precision_bytes_per_param_and_zero():
    assert sum(param_bytes("adam", True, 2)) == 18  # 2 + 4 + 12 (Megatron-LM's count)
    assert sum(param_bytes("adam", False, 2)) == 8
    base = dict(layers=24, hidden=1024, heads=16, seq=1024, vocab=51200, batch=64)
    z0 = estimate_memory("tp=1,pp=1,dp=8", **base)[0].components
    z1 = estimate_memory("tp=1,pp=1,dp=8,zero=1", **base)[0].components
    z3 = estimate_memory("tp=1,pp=1,dp=8,zero=3", **base)[0].components
    assert z1["optimizer states"] == pytest.approx(z0["optimizer states"] / 8)
    assert z1["gradients"] == z0["gradients"]
    assert z3["weights"] == pytest.approx(z0["weights"] / 8)


# ------------------------------------------------------------------------- end to end
SMALL = dict(n_layer=4, d=256, heads=8, seq=256, vocab=1024)


def test_single_gpu_layout_matches_the_engine_step():
    """tp=pp=dp=1: the per-layer decomposition reproduces the engine's whole-step time."""
    from sim.passes.precision import cast_graph

    r = simulate_training(
        "gpt2", "a100", "tp=1,pp=1,dp=1,mbs=2", batch=2, sets=SMALL, amp=False, dtype="bf16"
    )
    g = sim.load("gpt2", **SMALL, batch=2)
    # the cluster stage charges its update one pass and one kernel per parameter
    step = cast_graph(sim.training_graph(g, "cross_entropy", "adam", impl="per_param"), "bf16")
    ref = sim.simulate(step, "a100", host_inputs=False).makespan_s
    assert r.makespan_s == pytest.approx(ref, rel=0.02)


def test_tp_splits_the_layer_work():
    kw = dict(batch=8, sets=SMALL, dtype="bf16")
    one = simulate_training("gpt2", "dgx-a100", "tp=1,pp=1,dp=8", **kw)
    two = simulate_training("gpt2", "dgx-a100", "tp=2,pp=1,dp=4", **kw)
    f1, f2 = one.model.parts["block"].flops_fwd, two.model.parts["block"].flops_fwd
    # the split GEMMs and attention halve; the replicated norms/adds (small) and the all-reduce adds stay
    assert f2 == pytest.approx(f1 / 2, rel=0.02)
    assert two.model.parts["block"].fwd_comm_s > 0 and one.model.parts["block"].fwd_comm_s == 0


def test_tp_stage_is_vocabulary_parallel():
    """tp=2: the rank graph holds V'/2 rows of the (tied) token table, V' = 1024 padded to a
    multiple of 128 x 2; the LM head's GEMMs are 1/2 of the hand count 3 x 2 x tokens x d x V';
    the embedding's all-reduce is in the pre part, the cross-entropy's and the LM head's input
    gradient's in the post part."""
    from sim.cluster.layout import padded_vocab
    from sim.cluster.stage import stage_model

    d, seq, mbs = SMALL["d"], SMALL["seq"], 2
    vp = padded_vocab(SMALL["vocab"], 2)
    m = stage_model("gpt2", sim.hardware("dgx-a100"), tp=2, mbs=mbs, sets=SMALL, dtype="bf16")
    one = stage_model("gpt2", sim.hardware("dgx-a100"), tp=1, mbs=mbs, sets=SMALL, dtype="bf16")
    n_ctx = 1024  # gpt2's position table (not split)
    assert m.vocab == vp and m.parts["pre"].params == vp // 2 * d + n_ctx * d
    assert one.parts["pre"].params == padded_vocab(SMALL["vocab"], 1) * d + n_ctx * d
    head = 3 * 2 * mbs * seq * d * vp
    post = m.parts["post"]
    assert post.flops_fwd + post.flops_bwd == pytest.approx(head / 2, rel=0.05)
    assert m.parts["pre"].fwd_comm_s > 0 and post.fwd_comm_s > 0 and post.bwd_comm_s > 0
    assert one.parts["pre"].fwd_comm_s == 0 and one.parts["post"].fwd_comm_s == 0


def test_out_of_memory_names_rank_and_component():
    with pytest.raises(OutOfMemoryError, match=r"stage 0 .*optimizer states"):
        simulate_training(
            "gpt3-175b", "dgx-a100", "tp=8,pp=1,dp=1", batch=1, sets=dict(n_layer=96), dtype="bf16"
        )


def test_cli_cluster_run_writes_json(tmp_path, capsys):
    from sim.cli import main

    out = tmp_path / "step.json"
    rc = main(
        [
            "run",
            "gpt2",
            "--set",
            "n_layer=4",
            "--set",
            "d=256",
            "--set",
            "heads=8",
            "--set",
            "seq=256",
            "--set",
            "batch=32",
            "--hw",
            "dgx-a100-cluster",
            "--hw-set",
            "nodes=2",
            "--train",
            "--dtype",
            "bf16",
            "--checkpoint",
            "--parallel",
            "tp=2,pp=2,dp=4,mbs=2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["gpus"] == 16 and d["microbatches"] == 4 and d["makespan_s"] > 0
    assert 0 < d["mfu"] < 1 and d["bubble_fraction"] == pytest.approx(d["bubble_fraction"])
    text = capsys.readouterr().out
    assert "pipeline bubble" in text and "memory stage 0" in text


@pytest.mark.parametrize(
    "layout,field", [("tp=5,pp=2,dp=8", "tp"), ("tp=2,pp=8,dp=1", "pp"), ("tp=2,pp=2,dp=2", "dp")]
)
def test_cli_bad_layout_exits_2(layout, field, capsys):
    from sim.cli import main

    rc = main(
        [
            "run",
            "gpt2",
            "--set",
            "n_layer=4",
            "--set",
            "heads=12",
            "--set",
            "batch=16",
            "--hw",
            "dgx-a100-cluster",
            "--hw-set",
            "nodes=2",
            "--train",
            "--parallel",
            layout,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"--parallel {field}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_megatron_flops_formula():
    r = simulate_training("gpt2", "dgx-a100", "tp=1,pp=2,dp=4", batch=8, sets=SMALL, recompute=True)
    B, s, l, h, V = 8, 256, 4, 256, r.vocab
    assert r.hardware_flops == pytest.approx(
        96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h)), rel=1e-12
    )
    assert math.isclose(
        r.model_flops, 72 * B * s * l * h * h * (1 + s / (6 * h)) + 6 * B * s * h * V, rel_tol=1e-12
    )


def test_zero_and_interleaved_end_to_end():
    kw = dict(batch=32, sets=SMALL, dtype="bf16", recompute=True)
    hw = sim.hardware("dgx-a100-cluster", nodes=2)
    base = simulate_training("gpt2", hw, "tp=2,pp=2,dp=4,mbs=1", **kw)
    z1 = simulate_training("gpt2", hw, "tp=2,pp=2,dp=4,mbs=1,zero=1", **kw)
    o0 = base.memory[0].components["optimizer states"]
    assert z1.memory[0].components["optimizer states"] == pytest.approx(o0 / 4)
    assert z1.exposed_comm()["zero"] > 0  # the updated weights are all-gathered after the step
    inter = simulate_training("gpt2", hw, "tp=2,pp=2,dp=4,mbs=1,schedule=interleaved:2", **kw)
    assert inter.bubble_fraction < base.bubble_fraction
    assert len(inter.stages) == 4 and base.microbatches == inter.microbatches == 8


def test_trace_has_one_process_per_stage(tmp_path):
    r = simulate_training(
        "gpt2",
        sim.hardware("dgx-a100-cluster", nodes=2),
        "tp=2,pp=4,dp=2,mbs=1",
        batch=8,
        sets=SMALL,
        dtype="bf16",
    )
    path = tmp_path / "t.json"
    r.write_trace(path)
    ev = json.loads(path.read_text())["traceEvents"]
    names = {e["pid"] for e in ev if e.get("name") == "process_name"}
    assert names == {0, 1, 2, 3}
    fb = [e for e in ev if e.get("ph") == "X" and e["name"].split()[0] in ("F", "B")]
    assert len(fb) == 2 * 4 * 4  # F and B of 4 microbatches on each of 4 stages


def test_amp_flag_keeps_fp32_master_weights_and_states(tmp_path, capsys):
    """--amp: >= 16 B per parameter (fp32 weights, grads, Adam m and v); --dtype alone: 8."""
    from sim.cli import main

    base = [
        "run",
        "gpt2",
        "--set",
        "n_layer=2",
        "--set",
        "batch=1",
        "--set",
        "seq=64",
        "--train",
        "--dtype",
        "bf16",
    ]
    pure, mixed = tmp_path / "pure.json", tmp_path / "amp.json"
    assert main([*base, "--json", str(pure)]) == 0
    assert "the whole step cast to bf16" in capsys.readouterr().out
    assert main([*base, "--amp", "--json", str(mixed)]) == 0
    assert "bf16 mixed" in capsys.readouterr().out
    params = sim.load("gpt2", n_layer=2, batch=1, seq=64).param_count
    peak_pure = json.loads(pure.read_text())["peak_memory_bytes"]
    peak_amp = json.loads(mixed.read_text())["peak_memory_bytes"]
    assert peak_amp >= 16 * params > peak_pure >= 8 * params
