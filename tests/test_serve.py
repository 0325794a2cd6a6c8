"""Serving: iteration timing against hand counts and the full-depth graph, the schedulers'
bookkeeping against hand-derived timelines, KV-cache capacity, traces, the CLI."""

import json
import math

import numpy as np
import pytest

import sim
from sim.cli import main
from sim.errors import SimError
from sim.passes.fusion import fuse
from sim.passes.precision import cast_graph
from sim.serve import IterationTimer, ServeModel, load_trace, poisson, serve
from sim.serve.scheduler import SchedulerConfig, kv_capacity_blocks, run_continuous, run_static
from sim.serve.timing import grid_points

H100 = sim.hardware("h100")
SMALL = dict(d=256, heads=8, kv_heads=2, n_layer=4, ffn=512, vocab=1000)  # a small Llama


@pytest.fixture(scope="module")
def llama7b_timer():
    return IterationTimer(ServeModel("llama2-7b"), H100, "bf16")


def test_step_from_two_layers_equals_the_full_depth_graph():
    m = ServeModel("llama2-7b", **SMALL)
    timer = IterationTimer(m, H100, "bf16")
    for batch, seq, kv in ((4, 1, 256), (1, 64, 64)):
        part = timer.step(batch, seq, kv)
        g = fuse(cast_graph(m.step_graph(batch, seq, kv), "bf16"))
        full = sum(r["end_s"] - r["start_s"] for r in sim.simulate(g, H100, host_inputs=False).ops)
        assert part.dense_s + part.head_s + part.attn_s == pytest.approx(full, rel=1e-9)


def test_decode_step_is_bandwidth_bound_by_hand(llama7b_timer):
    """Llama-2 7B, batch 1, 4096 cached tokens, bf16 on one H100: the step streams the weights
    (6,738,415,616 x 2 B) and the cache (2 x 32 layers x 4096 x 4096 x 2 B) once, so it takes
    at least their bytes over the achievable HBM bandwidth (hwspecs/h100.yaml: 3.35 TB/s x
    the fitted efficiency). The attention kernels are exactly that for the cache, plus one
    launch floor each; the GEMMs at M = 1 stream their weights at the fitted skinny-operand
    rate (sim/cost/gpu.py), somewhat below the HBM roof, and every small kernel pays the
    launch floor, so the whole step sits above the weights-and-cache roof, but within 2x."""
    t = llama7b_timer
    parts = t.step(1, 1, 4096)
    step = parts.dense_s + parts.head_s + parts.attn_s
    bw, launch = H100.memory[0].achievable_Bps, H100.launch_s
    hand = (6_738_415_616 * 2 + 2 * 32 * 4096 * 4096 * 2) / bw  # ~5.3 ms
    assert hand <= step <= 2 * hand
    # each layer's attention kernel streams its cache (2 x 4096 x 4096 x 2 B), reads q and
    # the lengths and writes y (4096 x 2 B each, 8 B), and pays one launch floor
    per_layer = (2 * 4096 * 4096 * 2 + 2 * 4096 * 2 + 8) / bw + launch
    assert parts.attn_s == pytest.approx(32 * per_layer, rel=1e-6)


def test_moe_decode_reads_only_the_chosen_experts():
    """Mixtral at batch 1 reads the 2 routed experts of 8 in each layer: the step's bytes are
    the non-expert weights plus a quarter of the expert weights (14336 x 4096 x 3 each)."""
    m = ServeModel("mixtral-8x7b", n_layer=2)
    g = cast_graph(m.step_graph(1, 1, 16), "bf16")
    expert = 3 * 4096 * 14336 * 2
    moe = [n for n in g.nodes.values() if n.op == "MoE"]
    assert len(moe) == 2
    w = g.work(moe[0])
    assert w.bytes_read == pytest.approx(2 * expert + 2 * (4096 + 8), rel=1e-9)


def test_kv_capacity_by_hand():
    # 0.9 x 79.18 GiB less 13.48 GB of bf16 weights, over 16 tokens x 512 KiB per token
    blocks = kv_capacity_blocks(79.18 * 2**30, 6_738_415_616 * 2, 2 * 32 * 4096 * 2, 16, 0.9)
    # (76,516,878,458.9 - 13,476,831,232) B / 8,388,608 B per block = 7514.96
    assert blocks == 7514
    with pytest.raises(SimError, match="no room"):
        kv_capacity_blocks(16e9, 15e9, 1e6, 16, 0.9)


def test_grid_points_bracket_and_are_exact_below_16():
    for v in (1, 7, 16, 17, 100, 1000, 4097):
        lo, hi = grid_points(v)
        assert lo <= v <= hi and hi <= lo * 2 ** (1 / 8) + 1.5
    assert grid_points(9) == (9, 9)


def test_one_request_at_a_time_timeline(llama7b_timer):
    """Requests far apart never share an iteration: TTFT is one prefill iteration, each of the
    other tokens one decode iteration at its context (hand-derived from the scheduler rules)."""
    t = llama7b_timer
    specs = poisson(0.01, 3, 100, 5, seed=1)
    run = run_continuous(specs, t, SchedulerConfig(), 1000)
    for r in run.requests:
        assert r.first_token_s - r.spec.arrival_s == pytest.approx(t.iteration_s(0, 0, [(100, 0)]))
        decode = sum(t.iteration_s(100 + k, 1, []) for k in range(1, 5))
        assert r.finish_s - r.first_token_s == pytest.approx(decode)
    assert len(run.iterations) == 3 * 5


def test_chunked_prefill_splits_a_long_prompt(llama7b_timer):
    specs = poisson(math.inf, 1, 5000, 2)
    run = run_continuous(specs, llama7b_timer, SchedulerConfig(max_batched_tokens=2048), 1000)
    assert [i.prefill_tokens for i in run.iterations] == [2048, 2048, 904, 0]


def test_preemption_when_the_cache_is_full(llama7b_timer):
    specs = poisson(math.inf, 8, 100, 200)
    # 8 requests of up to 300 tokens need 8 x 19 blocks; 60 blocks hold three at a time
    run = run_continuous(specs, llama7b_timer, SchedulerConfig(), 60)
    assert run.preemptions > 0
    assert all(r.generated == 200 and r.finish_s is not None for r in run.requests)
    assert max(i.kv_blocks_used for i in run.iterations) <= 60


def test_static_batch_pads_and_returns_together(llama7b_timer):
    specs = poisson(math.inf, 4, 64, 8)
    run = run_static(specs, llama7b_timer, SchedulerConfig(max_num_seqs=4), 1000)
    assert len(run.iterations) == 8  # one prefill + 7 decode steps
    assert len({r.finish_s for r in run.requests}) == 1


def test_continuous_beats_static_on_ttft_under_load(llama7b_timer):
    kw = dict(rate=8, requests=60, prompt_len=256, output_len=64, timer=llama7b_timer)
    cont = serve("llama2-7b", H100, **kw).summary
    stat = serve("llama2-7b", H100, scheduler="static", **kw).summary
    assert cont["ttft_s"]["p50"] < stat["ttft_s"]["p50"]
    for s in (cont, stat):
        assert s["completed"] == 60
        assert s["throughput_tokens_per_s"] == pytest.approx(60 * 64 / s["duration_s"])


def test_serving_json_is_deterministic_and_complete(tmp_path, llama7b_timer):
    a = serve("llama2-7b", H100, rate=5, requests=30, prompt_len=128, output_len=32, seed=3,
              timer=llama7b_timer)
    b = serve("llama2-7b", H100, rate=5, requests=30, prompt_len=128, output_len=32, seed=3,
              timer=llama7b_timer)
    a.write_json(tmp_path / "a.json")
    b.write_json(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    s = json.loads((tmp_path / "a.json").read_text())
    for key in ("ttft_s", "tpot_s", "latency_s"):
        assert set(s[key]) >= {"p50", "p90", "p99"}
    assert s["throughput_requests_per_s"] > 0 and s["kv_cache"]["peak_occupancy"] > 0
    a.write_trace(tmp_path / "t.json")
    ev = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert sum(e["name"] == "iteration" for e in ev) == s["iterations"]
    assert sum(e["ph"] == "b" and e["name"] == "decode" for e in ev) == 30


def test_poisson_arrivals_are_seeded():
    a, b = poisson(4.0, 2000, 10, 10, seed=5), poisson(4.0, 2000, 10, 10, seed=5)
    assert a == b
    gaps = np.diff([0.0] + [r.arrival_s for r in a])
    assert gaps.mean() == pytest.approx(0.25, rel=0.08)


def test_trace_files(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("arrival_s,prompt_len,output_len\n0.5,10,4\n0.1,20,3\n")
    reqs = load_trace(csv)
    assert [(r.arrival_s, r.prompt_len, r.output_len) for r in reqs] == [(0.1, 20, 3), (0.5, 10, 4)]
    js = tmp_path / "t.jsonl"
    js.write_text('{"arrival": 0, "prompt": 5, "output": 2}\n{"arrival": 1, "prompt": 6}\n')
    with pytest.raises(SimError, match="output_len") as err:
        load_trace(js)
    assert err.value.where.endswith("t.jsonl:2")


def test_cli_serve(tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["serve", "gpt2", "--hw", "h100", "--rate", "20", "--requests", "20",
               "--prompt-len", "64", "--output-len", "8", "--json", str(out),
               "--perfetto", str(tmp_path / "p.json")])
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["completed"] == 20 and s["workload"] == "gpt2"
    assert "TTFT" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_len,output_len\nsoon,3,4\n")
    assert main(["serve", "gpt2", "--trace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.csv:2" in err and "arrival_s" in err


def test_quantised_serving_numerics_and_speed():
    from sim.serve.quantize import numeric_change

    small = ServeModel("llama2-7b", d=256, heads=4, kv_heads=2, n_layer=2, ffn=512, vocab=512)
    prompt = np.random.default_rng(0).integers(0, 512, (2, 6))
    ch = numeric_change(small, prompt, 6, ("bf16", "int8", "int4", "fp8-kv"))
    err = {k: v["logit_rel_error"] for k, v in ch.items()}
    assert err["int8"] < err["int4"] and err["bf16"] < err["int4"] and err["int8"] < 0.1
    # the error follows the quantisation step: (2^7 - 1) / (2^3 - 1) = 18x finer for int8
    assert 8 < err["int4"] / err["int8"] < 40
    assert ch["int8"]["top1_agreement"] >= 0.75
    # int4 weights by hand: 6,607,077,376 GEMM weights at half a byte + one bf16 scale per 128,
    # the embedding (131,072,000) and 65 norm vectors of 4096 in bf16
    timers = {q: IterationTimer(ServeModel("llama2-7b"), H100, "bf16", "", q) for q in ("", "int8", "int4")}
    assert timers["int4"].weight_bytes() == 6_607_077_376 // 2 + 6_607_077_376 // 128 * 2 \
        + 131_072_000 * 2 + 65 * 4096 * 2
    steps = {q: t.iteration_s(1024, 1, []) for q, t in timers.items()}
    assert steps["int4"] < steps["int8"] < steps[""]
    assert steps["int4"] > timers["int4"].weight_bytes() / H100.memory[0].achievable_Bps


def test_tensor_parallel_rank_and_its_allreduces_by_hand():
    """Llama-2 7B over 2 GPUs of a DGX H100: a rank holds half the GEMM weights and heads;
    each layer all-reduces two [B, 1, 4096] bf16 activations over NVSwitch, a ring of 2
    members: 2 (n - 1) = 2 steps of latency (2 us) + S/n bytes at 450 GB/s x 0.8
    (hwspecs/dgx-h100.yaml)."""
    from sim.serve import _timer

    hw = sim.hardware("dgx-h100")
    t1 = _timer("llama2-7b", hw, _device_of(hw), 1, "bf16", "", "", {}, {})
    t2 = _timer("llama2-7b", hw, _device_of(hw), 2, "bf16", "", "", {}, {})
    assert t2.model.info.kv_heads == 16 and t2.model.params["ffn"] == 11008 // 2
    norms = 65 * 4096 * 2  # replicated on every rank; everything else is split in two
    assert t2.weight_bytes() == (t1.weight_bytes() - norms) / 2 + norms
    g = fuse(t2._prepared(4, 1, 64))
    res = sim.simulate(g, hw, host_inputs=False)
    ars = [r for r in res.ops if r["op"] == "AllReduce" and r["device"] == "gpu0"]
    assert len(ars) == 2 * 2  # two layers in the timed graph, two per layer
    S = 4 * 4096 * 2
    for r in ars:
        assert r["end_s"] - r["start_s"] == pytest.approx(2 * (2e-6 + S / 2 / (450e9 * 0.8)), rel=1e-6)
    s1, s2 = t1.iteration_s(4 * 1024, 4, []), t2.iteration_s(4 * 1024, 4, [])
    assert s1 / 2 < s2 < s1  # faster, but not twice: launch floors and the all-reduces


def _device_of(hw):
    return hw.devices[hw.accelerators[0]]


def test_expert_parallel_rank_dispatch_and_combine():
    """Mixtral over 4 GPUs with expert parallelism: a rank holds 2 of the 8 experts and all of
    attention. Per layer its 2 decode tokens' top-2 copies go out by an all-to-all: the
    [2 x 2, 1, 4096] bf16 buffer S, S/4 = tokens x k x hidden x 2 B / ep to each rank, in
    3 pairwise steps over its NVSwitch port (2 us, 450 GB/s x 0.8, hwspecs/dgx-h100.yaml),
    and the expert outputs come back the same way. The rank's experts serve the pairs that all
    4 ranks route to them: 4 x 2 x 2 x 2/8 = 4 token-expert pairs."""
    from sim.serve import _timer

    hw = sim.hardware("dgx-h100")
    t = _timer("mixtral-8x7b", hw, _device_of(hw), 1, "bf16", "", "", {}, {}, ep=4)
    g = t._prepared(2, 1, 64)
    moe = [n for n in g.nodes.values() if n.op == "MoE"]
    assert g.tensors[moe[0].inputs[2]].shape[0] == 2 and moe[0].attrs["global_experts"] == 8
    assert g.tensors[moe[0].inputs[0]].shape[0] == 2  # its own tokens, routed by its own router
    w = g.work(moe[0])
    assert w.matmul_flops == 2 * 4 * 4096 * 14336 * 3
    res = sim.simulate(fuse(g), hw, host_inputs=False)
    a2a = [r for r in res.ops if r["op"] == "AllToAll" and r["device"] == "gpu0"]
    assert len(a2a) == 4 and not [r for r in res.ops if r["op"] in ("AllGather", "ReduceScatter")]
    S = 2 * 2 * 4096 * 2
    for r in a2a:
        assert r["bytes"] == 3 * S / 4
        assert r["end_s"] - r["start_s"] == pytest.approx(3 * (2e-6 + S / 4 / (450e9 * 0.8)), rel=1e-6)
    s = serve("mixtral-8x7b", hw, ep=4, rate=8, requests=40, prompt_len=64, output_len=8, timer=t).summary
    assert s["ep"] == 4 and s["completed"] == 40 and s["ep_dispatcher"] == "alltoall"


def test_expert_parallel_alltoall_is_below_the_allgather_bound():
    """The all-to-all moves k/ep of a rank's tokens to each other rank where the all-gather
    dispatcher moves all of them to every rank ((ep-1) x): with top-2 over 8 ranks, 7/4 of the
    tokens' bytes against 7 x, so the step's communication is a quarter; prefill-heavy serving
    (2048-token prompts) on 8 GPUs reaches the first token sooner and finishes sooner."""
    from sim.serve import _timer

    hw = sim.hardware("dgx-h100")
    comm, summary = {}, {}
    for disp in ("alltoall", "allgather"):
        t = _timer("mixtral-8x7b", hw, _device_of(hw), 1, "bf16", "", "", {}, {}, ep=8)
        t.ep_dispatcher = disp
        res = sim.simulate(fuse(t._prepared(1, 512, 0)), hw, host_inputs=False)
        recs = [r for r in res.ops if r["unit"] == "collective" and r["device"] == "gpu0"]
        comm[disp] = sum(r["bytes"] for r in recs)
        summary[disp] = serve("mixtral-8x7b", hw, ep=8, rate=4, requests=16, prompt_len=2048,
                              output_len=4, timer=t).summary
    tokens = 512 * 4096 * 2  # one rank's 512 prefill tokens, bf16
    assert comm["alltoall"] == pytest.approx(2 * 2 * 2 * tokens * 7 / 8)  # 2 layers, dispatch + combine
    assert comm["allgather"] == pytest.approx(2 * 2 * 7 * tokens)
    for key in ("ttft_s", "latency_s"):
        assert summary["alltoall"][key]["p50"] < summary["allgather"][key]["p50"]
    with pytest.raises(SimError, match="--ep-dispatcher"):
        serve("mixtral-8x7b", hw, ep=8, requests=2, prompt_len=8, output_len=2, ep_dispatcher="ring")


def test_expert_parallel_rank_graph_runs_in_the_executor():
    """The executor runs an EP rank's graph (permute Concat, AllToAll, MoE, AllToAll, unpermute
    mean over the k copies): in the one-member view the all-to-alls are the identity, so the
    logits equal those of the rank's graph without the dispatch, value for value."""
    from sim.exec import Executor
    from sim.serve.parallel import add_ep_collectives

    m = ServeModel("mixtral-8x7b", d=64, heads=4, kv_heads=2, n_layer=2, ffn=96, vocab=50, expert_shards=4)
    g = m.step_graph(2, 3, 0)
    ep = add_ep_collectives(g, ["gpu0", "gpu1", "gpu2", "gpu3"], 2)
    assert sum(n.op == "AllToAll" for n in ep.nodes.values()) == 2 * 2
    ids = np.random.default_rng(0).integers(0, 50, (2, 3))
    ref = Executor(g, seed=0)
    want = ref.run({"input_ids": ids}).values[g.outputs[0]]
    got = Executor(ep, params=ref.params).run({"input_ids": ids}).values[ep.outputs[0]]
    np.testing.assert_array_equal(got, want)


def test_pipeline_parallel_adds_the_stage_sends_by_hand():
    """Llama-2 7B in 2 pipeline stages on 2 DGX H100 nodes: an iteration is the batch's trip
    through all 32 layers plus one activation send between the nodes: one NDR NIC
    (50 GB/s x 0.92) after 5 us + one 130 ns switch hop (hwspecs/dgx-h100*.yaml). Each of
    the 2 virtual engines serves every other request."""
    from sim.serve import _pipeline

    one = IterationTimer(ServeModel("llama2-7b"), H100, "bf16")
    two = IterationTimer(ServeModel("llama2-7b"), H100, "bf16")
    _pipeline(two, sim.hardware("dgx-h100-cluster"), 2)
    send = 5e-6 + 130e-9 + 8 * 4096 * 2 / (50e9 * 0.92)
    extra = two.iteration_s(8 * 1024, 8, []) - one.iteration_s(8 * 1024, 8, [])
    assert extra == pytest.approx(send, rel=1e-6)
    s = serve("llama2-7b", "dgx-h100-cluster", pp=2, rate=4, requests=40, prompt_len=64, output_len=8).summary
    assert s["pp"] == 2 and s["completed"] == 40
    with pytest.raises(SimError, match="cluster"):
        serve("llama2-7b", "h100", pp=2, requests=2)
