"""Hardware what-ifs on one workload: faster HBM, another accelerator, bf16 vs fp32.

    .venv/bin/python examples/whatif_hardware.py [--workload gpt2] [--batch 8]

Every variant is a spec override or another bundled spec; nothing in the code changes.
Prints one line per variant: makespan, speed-up over the baseline, and the share of time
bound by compute, memory and launch overhead (what a what-if can and cannot buy).
"""

from __future__ import annotations

import argparse
from collections import Counter

import sim
from sim.report import Result


def shares(result: Result) -> str:
    by = Counter[str]()
    for rec in result.ops:
        by[rec.bound] += rec.end_s - rec.start_s
    total = sum(by.values()) or 1.0
    return "  ".join(f"{k} {100 * v / total:4.1f}%" for k, v in sorted(by.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="gpt2")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    graph = sim.load(args.workload, batch=args.batch)
    variants = [
        ("h100 bf16 (baseline)", sim.hardware("h100"), "bf16"),
        ("h100 fp32", sim.hardware("h100"), "fp32"),
        ("h100 tf32", sim.hardware("h100"), "tf32"),
        ("h100 bf16, HBM 2x", sim.hardware("h100", **{"memory.hbm.bandwidth": "6.7 TB/s"}), "bf16"),
        ("h100 bf16, launch floor 0", sim.hardware("h100", **{"launch": "0 us"}), "bf16"),
        ("h200 bf16", sim.hardware("h200"), "bf16"),
        ("a100 bf16", sim.hardware("a100"), "bf16"),
        ("mi300x bf16", sim.hardware("mi300x"), "bf16"),
        ("tpu-v5e bf16", sim.hardware("tpu-v5e"), "bf16"),
    ]
    base = None
    print(f"{args.workload}, batch {args.batch}: {graph.flops / 1e9:.1f} GFLOP per forward pass")
    for label, hw, dtype in variants:
        r = sim.simulate(graph, hw, dtype=dtype)
        base = base or r.makespan_s
        print(f"  {label:28s} {r.makespan_s * 1e3:8.3f} ms  x{base / r.makespan_s:5.2f}   {shares(r)}")


if __name__ == "__main__":
    main()
