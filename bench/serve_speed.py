"""Wall time of ``sim.serve`` on 10,000 Poisson requests (Llama-2 7B on one H100).

    .venv/bin/python bench/serve_speed.py [--requests 10000] [--rate 20]

Prints the wall time, the simulated span, iterations and engine runs: the serving loop plus
the memoised engine timings (docs/inference.md) must stay well under a minute.
"""

from __future__ import annotations

import argparse
import time

import sim
from sim.serve import serve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama2-7b")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    hw = sim.hardware(args.hw)
    for scheduler in ("continuous", "static"):
        t0 = time.perf_counter()
        s = serve(args.workload, hw, rate=args.rate, requests=args.requests, prompt_len=512,
                  output_len=128, scheduler=scheduler).summary
        wall = time.perf_counter() - t0
        print(f"{scheduler:>10}: {args.requests} requests, {s['iterations']} iterations, "
              f"{s['timing']['simulations']} engine runs, {s['duration_s']:.0f} s simulated "
              f"in {wall:.1f} s wall ({'under' if wall < 60 else 'OVER'} a minute)")


if __name__ == "__main__":
    main()
