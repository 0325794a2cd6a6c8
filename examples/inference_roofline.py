"""Teaching: LLM decode is memory-bound and prefill compute-bound, and what more HBM
bandwidth buys each.

    .venv/bin/python examples/inference_roofline.py [--workload llama2-7b] [--hw h100]
        [--prompt 2048] [--context 1024] [--batches 1,8,32,64] [--plot out/roofline.png]

A decode step multiplies every weight matrix by a handful of token vectors (one per
sequence) and reads every sequence's KV cache: about 2 FLOP per weight per sequence against
2 bytes per weight, so its arithmetic intensity is about the batch size (FLOP/byte) -- far
left of the ridge point (peak FLOP/s / HBM bandwidth, ~275 on an H100 in bf16) until the batch
reaches the hundreds, and the cache reads keep attention at ~1 FLOP/byte at any batch. A
prefill multiplies the weights by thousands of tokens at once: intensity in the thousands,
compute-bound. So decode throughput follows HBM bandwidth almost one for one, and prefill
barely notices it.
"""

from __future__ import annotations

import argparse

import sim
from sim.passes.fusion import fuse
from sim.passes.precision import cast_graph
from sim.serve import ServeModel


def _point(model: ServeModel, hw: object, dtype: str, batch: int, seq: int, cache: int
           ) -> tuple[float, float, float]:
    """(FLOPs, bytes, simulated seconds) of one step."""
    g = fuse(cast_graph(model.step_graph(batch, seq, cache), dtype))
    r = sim.simulate(g, hw, host_inputs=False)
    ops = [o for o in r.ops if o["op"] != "Transfer"]
    return sum(o["flops"] for o in ops), sum(o["bytes"] for o in ops), r.makespan_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama2-7b")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--prompt", type=int, default=2048, help="prefill tokens")
    ap.add_argument("--context", type=int, default=1024, help="cached tokens per decode sequence")
    ap.add_argument("--batches", default="1,8,32,64", help="decode batch sizes")
    ap.add_argument("--layers", type=int, help="override n_layer (a quicker, shallower model)")
    ap.add_argument("--plot", help="write the roofline with the points (PNG)")
    args = ap.parse_args()

    model = ServeModel(args.workload, **({"n_layer": args.layers} if args.layers else {}))
    hw = sim.hardware(args.hw)
    tensor = next(u for u in hw.units if u.matrix)
    peak = tensor.peak_flops[args.dtype] * tensor.efficiency.get(args.dtype, 1.0)
    bw = hw.memory[0].achievable_Bps
    ridge = peak / bw
    print(f"{args.workload} on {args.hw} ({args.dtype}): achievable {peak / 1e12:.0f} TFLOP/s, "
          f"{bw / 1e12:.2f} TB/s, ridge {ridge:.0f} FLOP/byte")
    print(f"{'step':>24} {'FLOP/byte':>10} {'bound':>8} {'ms':>9} {'TFLOP/s':>8} {'TB/s':>6}")
    points = []
    steps = [(f"prefill {args.prompt} tokens", 1, args.prompt, args.prompt)]
    steps += [(f"decode batch {b}", b, 1, args.context + 1) for b in map(int, args.batches.split(","))]
    for label, b, s, c in steps:
        flops, nbytes, t = _point(model, hw, args.dtype, b, s, c)
        inten = flops / nbytes
        points.append((label, inten, flops / t))
        print(f"{label:>24} {inten:10.1f} {'compute' if inten > ridge else 'memory':>8} "
              f"{t * 1e3:9.3f} {flops / t / 1e12:8.1f} {nbytes / t / 1e12:6.2f}")

    print("\nHBM what-if (memory.hbm.bandwidth scaled):")
    print(f"{'HBM':>10} {'decode tok/s':>14} {'x':>6} {'prefill ms':>11} {'x':>6}")
    b = int(args.batches.split(",")[-1])
    base_dec = base_pre = 0.0
    for k in (1.0, 1.5, 2.0):
        hbm = f"{hw.memory[0].bandwidth_Bps * k / 1e12} TB/s"
        hwk = sim.hardware(args.hw, **{"memory.hbm.bandwidth": hbm})
        dec = b / _point(model, hwk, args.dtype, b, 1, args.context + 1)[2]
        pre = _point(model, hwk, args.dtype, 1, args.prompt, args.prompt)[2]
        base_dec, base_pre = base_dec or dec, base_pre or pre
        print(f"{k:9.1f}x {dec:14.0f} {dec / base_dec:6.2f} {pre * 1e3:11.2f} {base_pre / pre:6.2f}")
    if args.plot:
        _plot(points, peak, bw, args.plot)
        print(f"wrote {args.plot}")


def _plot(points: list[tuple[str, float, float]], peak: float, bw: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.logspace(-1, 4, 200)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(x, np.minimum(peak, bw * x) / 1e12, "k-", label="roofline (achievable)")
    for label, inten, achieved in points:
        ax.loglog(inten, achieved / 1e12, "o")
        ax.annotate(label, (inten, achieved / 1e12), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title("decode is memory-bound, prefill compute-bound")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
