"""Teaching: systolic-array utilisation. The same GEMM on a TPU's 128x128 MXUs, on a generic
systolic ASIC and on an H100, as one dimension crosses the array size.

    .venv/bin/python examples/systolic_padding.py [--dim n] [--hw tpu-v4,systolic-asic,h100]

A systolic array of R x C processing elements takes operand tiles of R x C: a 129-wide
matrix needs two tiles, the second almost empty, so the time steps up at multiples of the
array size and the achieved fraction of peak drops right after each step (padding), while
small matrices pay the array's fill and drain. GPUs quantise too, by tile and by wave of
tiles over the SMs.
"""

from __future__ import annotations

import argparse

import sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", default="n", choices=["m", "n", "k"], help="which GEMM dimension to sweep")
    ap.add_argument("--hw", default="tpu-v4,systolic-asic,h100")
    ap.add_argument("--base", type=int, default=4096, help="size of the other two dimensions")
    args = ap.parse_args()

    sizes = [64, 127, 128, 129, 192, 255, 256, 257, 384, 512, 513]
    names = args.hw.split(",")
    hws = {name: sim.hardware(name) for name in names}
    print(f"bf16 GEMM, {args.dim} swept, other dimensions {args.base}: time (us) / % of peak")
    print(f"{args.dim:>6} " + " ".join(f"{n:>22}" for n in names))
    for s in sizes:
        dims = {"M": args.base, "N": args.base, "K": args.base, args.dim.upper(): s}
        g = sim.load("gemm", **dims)
        cells = []
        for name in names:
            r = sim.simulate(g, hws[name], dtype="bf16", host_inputs=False)
            (rec,) = [o for o in r.ops if o.op == "MatMul"]
            t = rec.end_s - rec.start_s
            peak = max(u.peak_flops.get("bf16", 0.0) for u in hws[name].units)
            cells.append(f"{t * 1e6:10.2f} {100 * rec['flops'] / t / peak:9.1f}%")
        print(f"{s:6d} " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
