"""Layout search against hand-picked Megatron-LM layouts: GPT-3 175B on 1,024 A100s.

    .venv/bin/python bench/sweep_search.py [--nodes 128] [--batch 1536] [--executor local]

Runs ``sim search`` over the default space (TP x PP x DP splits of the cluster, microbatch
1/2/4, 1F1B and interleaved schedules, ZeRO 0/1, sequence parallelism, recomputation), then
simulates the layouts the Megatron-LM papers ran for this model with the same simulator, and
prints both side by side: the search's best must fit memory and be no slower than the best
hand-picked layout. Hand-picked layouts:

* Narayanan et al. 2021 (SC'21, "Efficient Large-Scale Language Model Training on GPU
  Clusters Using Megatron-LM"), Table 1: 175B on 1,024 A100s, batch 1,536: TP 8, PP 16 (so
  DP 8), microbatch 1, the interleaved schedule, full activation recomputation;
* the same with the plain 1F1B schedule, and TP 8 x PP 8 x DP 16;
* Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
  Table 3 style: TP 8, PP 16 with sequence parallelism (the selective recomputation of the
  paper is not modelled; no recomputation is the nearest);
* the same with ZeRO-1 (distributed optimizer).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sim.errors import SimError  # noqa: E402
from sim.study.search import search  # noqa: E402

HAND_PICKED = [
    ("Megatron-LM 2021 Table 1", "tp=8,pp=16,dp=8,mbs=1,schedule=interleaved:2", True),
    ("the same, 1F1B", "tp=8,pp=16,dp=8,mbs=1,schedule=1f1b", True),
    ("TP 8 x PP 8, 1F1B", "tp=8,pp=8,dp=16,mbs=1,schedule=1f1b", True),
    ("Korthikanti 2022, SP", "tp=8,pp=16,dp=8,mbs=1,schedule=interleaved:2,sp", False),
    ("Korthikanti 2022, SP + ZeRO-1", "tp=8,pp=16,dp=8,mbs=1,schedule=interleaved:2,zero=1,sp", False),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="gpt3-175b")
    ap.add_argument("--hw", default="dgx-a100-cluster")
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1536)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--store", default=None, help="results file (a rerun resumes)")
    args = ap.parse_args()

    from sim.cluster import simulate_training
    from sim.hw import load_hardware

    t0 = time.perf_counter()
    df, info = search(args.workload, args.hw, batch=args.batch, hw_sets={"nodes": args.nodes},
                      executor=args.executor, store=args.store, with_info=True)
    wall = time.perf_counter() - t0
    ok = df[df["step_time_s"].notna()]
    print(f"{args.workload} on {info['gpus']} x {info['device']} ({info['hardware']}), batch {args.batch}: "
          f"{info['candidates']} layouts, {info['invalid']} invalid, {info['pruned_memory']} pruned by the "
          f"memory model, {info['simulated']} simulated in {wall:.0f} s, {len(ok)} fit")
    print(f"{'':32s} {'layout':58s} {'recomp':>6s} {'step s':>7s} {'TFLOP/s/GPU':>11s} {'GiB/GPU':>8s}")
    for i, (_, r) in enumerate(ok.head(5).iterrows(), 1):
        print(f"{'search #' + str(i):32s} {r['layout']:58s} {'yes' if r['recompute'] else 'no':>6s} "
              f"{r['step_time_s']:7.2f} {r['tflops_per_gpu']:11.1f} {r['memory_per_gpu_bytes'] / 2**30:8.1f}")
    hw = load_hardware(args.hw, nodes=args.nodes)
    best_hand = None
    for name, layout, rc in HAND_PICKED:
        try:
            r = simulate_training(args.workload, hw, layout, batch=args.batch, recompute=rc, progress=False)
        except SimError as err:
            print(f"{name:32s} {layout:58s} {'yes' if rc else 'no':>6s}  does not run: {err}")
            continue
        mem = max(m.total for m in r.memory)
        print(f"{name:32s} {layout:58s} {'yes' if rc else 'no':>6s} {r.makespan_s:7.2f} "
              f"{r.tflops_per_gpu:11.1f} {mem / 2**30:8.1f}")
        best_hand = r.makespan_s if best_hand is None else min(best_hand, r.makespan_s)
    best = ok.iloc[0]
    fits = best["memory_per_gpu_bytes"] <= info["capacity"]
    print(f"search best {best['step_time_s']:.2f} s vs best hand-picked {best_hand:.2f} s: "
          f"ratio {best['step_time_s'] / best_hand:.3f} (<= 1 is no worse); fits memory: {fits} "
          f"({best['memory_per_gpu_bytes'] / 2**30:.1f} of {info['capacity'] / 2**30:.0f} GiB)")
    return 0 if fits and best["step_time_s"] <= best_hand else 1


if __name__ == "__main__":
    sys.exit(main())
