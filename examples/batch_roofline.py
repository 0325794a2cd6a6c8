"""Teaching: why batch size matters. Arithmetic intensity, roofline position and throughput
of one network as the batch grows, on one device.

    .venv/bin/python examples/batch_roofline.py [--workload resnet50] [--hw h100] [--plot out/sweep.png]

At batch 1 most GEMMs are too small to fill the machine (tile/wave quantization, launch floor)
and weights are re-read for few samples, so ops sit left on the roofline (memory or launch
bound); as the batch grows, intensity rises, more ops become compute-bound, and throughput
climbs until compute saturates while memory keeps growing linearly.
"""

from __future__ import annotations

import argparse

import sim
from sim.report.plots import plot_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="resnet50")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--plot", help="write makespan/throughput/memory against batch (PNG)")
    args = ap.parse_args()

    hw = sim.hardware(args.hw)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    print(f"{args.workload} on {args.hw} ({args.dtype})")
    print(f"{'batch':>6} {'ms':>9} {'samples/s':>11} {'TFLOP/s':>8} {'FLOP/byte':>10} "
          f"{'compute-bound':>14} {'peak MiB':>9}")
    for b in batches:
        g = sim.load(args.workload, batch=b)
        r = sim.simulate(g, hw, dtype=args.dtype)
        results.append(r)
        ops = [o for o in r.ops if o.op != "Transfer"]
        intensity = sum(o.flops for o in ops) / max(sum(o.bytes for o in ops), 1.0)
        busy = sum(o.end_s - o.start_s for o in ops) or 1.0
        compute = sum(o.end_s - o.start_s for o in ops if o.bound == "compute") / busy
        print(f"{b:6d} {r.makespan_s * 1e3:9.3f} {b / r.makespan_s:11.1f} "
              f"{r.flops / r.makespan_s / 1e12:8.1f} {intensity:10.1f} {100 * compute:13.1f}% "
              f"{r.peak_memory_bytes / 2**20:9.1f}")
    if args.plot:
        plot_sweep(batches, results, args.plot, xlabel="batch")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
