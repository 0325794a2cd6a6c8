"""Accelerator comparison for BERT training: one training step of BERT-base on A100, H100,
MI300X, TPU v4 and an Alveo U280 FPGA, at a few batch sizes, with time, throughput, energy and
MFU, and a Pareto front of step time against energy.

    .venv/bin/python examples/accelerator_bert_training.py [--workload bert-base]
        [--hw a100,h100,mi300x,tpu-v4,alveo-u280] [--batches 8,32] [--dtype bf16]
        [--store out/accelerators.db] [--plot out/accelerators.png] [--executor local]

The accelerator is a sweep axis (``hw``) like any other; a device that cannot hold a point (the
U280's 8 GiB HBM at large batches) shows its error in the table instead of stopping the study.
"""

from __future__ import annotations

import argparse

import sim
from sim.study.plots import plot_lines, plot_pareto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="bert-base")
    ap.add_argument("--hw", default="a100,h100,mi300x,tpu-v4,alveo-u280")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--store", default="out/accelerators.db")
    ap.add_argument("--plot", default="out/accelerators.png")
    ap.add_argument("--executor", default="local")
    args = ap.parse_args()

    grid = {"hw": args.hw.split(","), "batch": [int(b) for b in args.batches.split(",")]}
    df = sim.sweep(args.workload, grid=grid, store=args.store, executor=args.executor,
                   base={"train": True, "dtype": args.dtype}, study="accelerators")
    print(f"{args.workload} training step ({args.dtype}, adam)")
    print(f"  {'hardware':12s} {'batch':>6s} {'step ms':>10s} {'samples/s':>11s} {'energy J':>9s} "
          f"{'MFU':>6s} {'peak GiB':>9s}")
    for _, r in df.iterrows():
        if isinstance(r["error"], str):
            print(f"  {r['hw']:12s} {r['batch']:6d}  failed: {r['error'][:80]}")
            continue
        print(f"  {r['hw']:12s} {r['batch']:6d} {r['makespan_s'] * 1e3:10.2f} "
              f"{r['throughput_per_s']:11,.0f} {r['energy_j']:9.3f} {100 * (r['mfu'] or 0):5.1f}% "
              f"{r['peak_memory_per_device_bytes'] / 2**30:9.2f}")
    stem = args.plot.rsplit(".", 1)[0]
    written = plot_lines(df, "hw", "throughput_per_s", args.plot, hue="batch",
                         title=f"{args.workload} training throughput by accelerator")
    written += plot_pareto(df, "time_per_sample_s", "energy_per_sample_j", f"{stem}-pareto.png",
                           axes=["hw", "batch"],
                           title=f"{args.workload} training: time and energy per sample (lower is better)")
    for path in written:
        print(f"wrote plot {path}")


if __name__ == "__main__":
    main()
