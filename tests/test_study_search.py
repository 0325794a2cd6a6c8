"""Layout search: the space counted by hand, memory pruning against a hand lower bound, the best
layout against hand-picked ones simulated directly, resuming from the store, and the judged
case (GPT-3 175B on 1,024 A100s against the Megatron-LM layout)."""

import pytest

from sim.cli import main
from sim.study.search import Space, enumerate_layouts, search

GPT2 = {"n_layer": 12, "d": 768, "heads": 12, "seq": 1024, "vocab": 50257, "ffn": 3072, "kv_heads": 12}


def test_the_space_is_every_split_of_the_gpus():
    one = Space(mbs=(1,), schedules=("1f1b",), zero=(0,), sp=(False,), recompute=(False,))
    got = {(c.tp, c.pp, c.dp) for c in enumerate_layouts(8, 8, GPT2, 32, one)}
    # tp divides the node, pp the 12 layers, tp * pp * dp = 8
    assert got == {(1, 1, 8), (1, 2, 4), (1, 4, 2), (2, 1, 4), (2, 2, 2), (2, 4, 1), (4, 1, 2), (4, 2, 1),
                   (8, 1, 1)}
    full = enumerate_layouts(8, 8, GPT2, 32, Space(mbs=(1, 2), schedules=("1f1b", "interleaved:2"),
                                                   zero=(0, 1), sp=(False, True), recompute=(False, True)))
    # no schedule choice without a pipeline, no ZeRO without data parallelism, no SP without TP
    assert all(c.schedule == "1f1b" for c in full if c.pp == 1)
    assert all(c.zero == 0 for c in full if c.dp == 1)
    assert all(not c.sp for c in full if c.tp == 1)


SMALL = Space(tp=(1, 2, 4, 8), pp=(1, 2, 4), mbs=(1,), schedules=("1f1b",), zero=(0,), sp=(False,),
              recompute=(False, True))


def test_memory_pruning_and_the_best_layout(tmp_path):
    from sim.cluster import simulate_training
    from sim.hw import load_hardware

    cap = "1.5 GiB"  # a small GPU: GPT-2's 124M parameters under Adam need 16 B each before activations
    hw_sets = {"devices.gpu.memory.hbm.capacity": cap}
    df, info = search("gpt2", "dgx-a100", batch=32, space=SMALL, hw_sets=hw_sets, executor="serial",
                      store=tmp_path / "s.db", progress=False, with_info=True)
    assert info["gpus"] == 8 and info["capacity"] == 1.5 * 2**30
    pruned = df["error"].fillna("").str.startswith("pruned (memory")
    assert pruned.any() and info["pruned_memory"] == pruned.sum()
    # every layout whose weights, fp32 gradients and Adam states alone (16 B per parameter,
    # 124.4M of them, split tp x pp ways) overflow the GPU is pruned before simulation
    lower = 16 * 124.4e6 / (df["tp"] * df["pp"])
    assert pruned[lower > info["capacity"]].all()
    ran = df[df["step_time_s"].notna()]
    assert len(ran) and (ran["memory_per_gpu_bytes"] <= info["capacity"]).all()
    assert list(ran["step_time_s"]) == sorted(ran["step_time_s"])
    # the winner is no slower than hand-picked layouts simulated directly
    hw = load_hardware("dgx-a100", **hw_sets)
    for layout, rc in (("tp=2,pp=1,dp=4,mbs=1", False), ("tp=4,pp=1,dp=2,mbs=1", False),
                       ("tp=2,pp=2,dp=2,mbs=1", True)):
        direct = simulate_training("gpt2", hw, layout, batch=32, recompute=rc, progress=False)
        assert ran["step_time_s"].iloc[0] <= direct.makespan_s
        row = ran[(ran["layout"] == f"{layout},schedule=1f1b,zero=0") & (ran["recompute"] == int(rc))]
        assert len(row) == 1 and row["step_time_s"].iloc[0] == direct.makespan_s


def test_cli_search_resumes_and_plots(tmp_path, capsys):
    args = ["search", "gpt2", "--hw", "dgx-a100", "--set", "batch=16", "--tp", "2,4", "--pp", "1,2",
            "--mbs", "1", "--schedule", "1f1b", "--zero", "0", "--sp", "false", "--recompute", "false",
            "--executor", "serial", "--store", str(tmp_path / "s.db"), "--plot", str(tmp_path / "s.png")]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "4 layouts" in first.out and "TFLOP/s/GPU" in first.out
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.svg").exists()
    assert main(args) == 0
    assert "4 already in the store" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "s.db"), "--out", str(tmp_path / "p.png")]) == 0  # a search plot
    assert main(["search", "gpt2", "--hw", "dgx-a100", "--set", "batch=16", "--tp", "x"]) == 2
    assert main(["search", "gpt2", "--hw", "dgx-a100"]) == 2  # no batch
    assert capsys.readouterr().err.count("sim: error: ") == 2


@pytest.mark.slow
def test_gpt3_175b_on_1024_a100s_beats_the_megatron_layout():
    from sim.cluster import simulate_training
    from sim.hw import load_hardware

    # the Megatron-LM split with every schedule/ZeRO/SP/recomputation choice (the whole space is
    # bench/sweep_search.py's job: a few hundred layouts in a few minutes)
    space = Space(tp=(8,), pp=(16,), mbs=(1,), schedules=("1f1b", "interleaved:2"), zero=(0, 1),
                  sp=(False, True), recompute=(False, True))
    df, info = search("gpt3-175b", "dgx-a100-cluster", batch=1536, space=space, hw_sets={"nodes": 128},
                      executor="local", progress=False, with_info=True)
    best = df.iloc[0]
    assert info["gpus"] == 1024 and best["memory_per_gpu_bytes"] <= info["capacity"]
    # Narayanan et al. 2021, Table 1: TP 8, PP 16, microbatch 1, interleaved, full recomputation
    hw = load_hardware("dgx-a100-cluster", nodes=128)
    megatron = simulate_training("gpt3-175b", hw, "tp=8,pp=16,dp=8,mbs=1,schedule=interleaved:2",
                                 batch=1536, recompute=True, progress=False)
    assert best["step_time_s"] <= megatron.makespan_s
