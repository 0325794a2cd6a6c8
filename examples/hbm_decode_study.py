"""HBM-bandwidth study for LLM decode: time per generated token and tokens/s as the memory
bandwidth and the decode batch grow.

    .venv/bin/python examples/hbm_decode_study.py [--workload llama2-7b] [--context 2048]
        [--batches 1,8,32] [--bandwidths "2 TB/s;3.35 TB/s;4.8 TB/s;6.7 TB/s"] [--hw h100]
        [--store out/hbm_decode.db] [--plot out/hbm_decode.png] [--executor local]

Each point is one KV-cache decode step (``seq=1``, a cache of ``--context`` positions) in bf16,
launched as one CUDA graph (as serving stacks run decode, so kernel launches do not hide HBM),
the HBM bandwidth a spec override, the batch a workload parameter: a ``sim.sweep`` over their
product, stored as it runs (rerun it and the points already in the store are not simulated
again). Small batches stream every weight once per token, so their step time falls almost in
proportion to the bandwidth; larger batches amortise the weights and gain less; the largest
batch's KV cache does not fit the 80 GB HBM at all, and its rows say so. The table prints the
speed-up that the fastest HBM buys at each batch, next to the bandwidth ratio.
"""

from __future__ import annotations

import argparse

import sim
from sim.study.plots import plot_lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama2-7b")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--context", type=int, default=2048, help="KV-cache positions")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--bandwidths", default="2 TB/s;3.35 TB/s;4.8 TB/s;6.7 TB/s")
    ap.add_argument("--store", default="out/hbm_decode.db")
    ap.add_argument("--plot", default="out/hbm_decode.png")
    ap.add_argument("--executor", default="local")
    args = ap.parse_args()

    bws = [b.strip() for b in args.bandwidths.split(";")]
    grid = {"memory.hbm.bandwidth": bws, "batch": [int(b) for b in args.batches.split(",")]}
    df = sim.sweep(args.workload, hw=args.hw, grid=grid, store=args.store, executor=args.executor,
                   base={"seq": 1, "kv_cache": args.context, "dtype": "bf16", "cuda_graphs": True,
                         "resident_inputs": True},
                   study="hbm-decode")
    df["ms_per_token"] = df["makespan_s"] * 1e3
    df["tokens_per_s"] = df["throughput_per_s"]
    print(f"{args.workload} decode on {args.hw} (bf16, {args.context} cached positions)")
    print(f"  {'HBM':>10s} {'batch':>6s} {'ms/token':>10s} {'tokens/s':>12s} {'memory-bound':>13s}")
    for _, r in df.iterrows():
        if isinstance(r["error"], str):
            print(f"  {r['memory.hbm.bandwidth']:>10s} {r['batch']:6d}  failed: {r['error']}")
            continue
        print(f"  {r['memory.hbm.bandwidth']:>10s} {r['batch']:6d} {r['ms_per_token']:10.3f} "
              f"{r['tokens_per_s']:12,.1f} {100 * r['bound_memory']:12.1f}%")
    lo, hi = bws[0], bws[-1]
    ratio = sim.hardware(args.hw, **{"memory.hbm.bandwidth": hi}).main_memory.bandwidth_Bps / \
        sim.hardware(args.hw, **{"memory.hbm.bandwidth": lo}).main_memory.bandwidth_Bps
    print(f"speed-up from {lo} to {hi} HBM (bandwidth ratio {ratio:.2f}x):")
    for b, g in df.groupby("batch"):
        t = dict(zip(g["memory.hbm.bandwidth"], g["makespan_s"]))
        gain = t[lo] / t[hi]
        print(f"  batch {b:4d}: " + (f"x{gain:.2f}" if gain == gain else "does not fit (see above)"))
    for path in plot_lines(df, "memory.hbm.bandwidth", "throughput_per_s", args.plot, hue="batch",
                           title=f"{args.workload} decode on {args.hw}: tokens/s vs HBM bandwidth"):
        print(f"wrote plot {path}")


if __name__ == "__main__":
    main()
