"""How much faster a sweep runs on the local process pool (and Dask) than its points one by one.

    .venv/bin/python bench/sweep_speed.py [--workers 2] [--no-dask]

The study: BERT-base training steps on an H100, 5 batch sizes x 5 HBM bandwidths x 4 dtypes
(100 points). One plan (grid expanded, every point keyed) is executed three ways, each timed
from submission to the last result (pool start-up included): in this process one point after
another, on the local process pool, and on a Dask ``LocalCluster`` (its start-up timed
separately). The process simulates one warm-up point first so the serial run is not charged
for imports. The three run interleaved in rounds of 20 points, the order rotating, so a load
that drifts on a shared machine falls on all of them alike. The tables must be identical. The
ratio depends on what else the machine is running: the script ends by timing a busy loop
serially and on the same pool, the parallelism the machine has free at that moment.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from sim.study.executors import cpu_count  # noqa: E402
from sim.study.point import run_point  # noqa: E402
from sim.study.sweep import Plan, execute, plan, table  # noqa: E402

GRID = {
    "batch": [1, 2, 4, 8, 16],
    "memory.hbm.bandwidth": ["1 TB/s", "2 TB/s", "3.35 TB/s", "4.8 TB/s", "6.7 TB/s"],
    "dtype": ["fp32", "tf32", "bf16", "fp8"],
}


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def busy(n: int) -> int:
    """A pure-Python busy loop: no memory traffic, no I/O, nothing shared."""
    total = 0
    for i in range(n):
        total += i
    return total


def headroom(workers: int) -> float:
    """How much faster the same pool runs a busy loop than this process does, right now: the
    parallelism the machine has free, the ceiling for the sweep's ratio."""
    from sim.study.executors import run_local, run_serial

    items = [2_000_000] * (4 * workers)
    _, t_serial = timed(lambda: list(run_serial(busy, items)))
    _, t_pool = timed(lambda: list(run_local(busy, items, workers)))
    return t_serial / t_pool


def chunk(p: Plan, lo: int, hi: int) -> Plan:
    """Points ``lo:hi`` of a plan, as a plan of their own."""
    return Plan(p.study, p.axes, p.points[lo:hi], p.configs[lo:hi], p.keys[lo:hi], p.metrics)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=cpu_count())
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (load drifts between them)")
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()

    p = plan("bert-base", "h100", GRID, base={"train": True})
    run_point(p.configs[0])  # warm-up: imports and first-call costs, outside every timing
    print(f"{len(p.keys)} points (bert-base training steps on h100), {args.workers} workers, "
          f"{cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    runs: dict[str, Any] = {"serial": "serial", "local": f"local:{args.workers}"}
    cluster = client = None
    t_start = 0.0
    if not args.no_dask:
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        client.submit(run_point, p.configs[0], pure=False).result()  # warm the workers
        t_start = time.perf_counter() - t0
        runs["dask"] = client
    wall = dict.fromkeys(runs, 0.0)
    tables: dict[str, list[Any]] = {k: [] for k in runs}
    size = -(-len(p.keys) // args.rounds)
    try:
        for r in range(args.rounds):
            part = chunk(p, r * size, (r + 1) * size)
            names = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # rotate who goes first
            for name in names:
                df, t = timed(lambda part=part, ex=runs[name]: table(part, execute(part, executor=ex,
                                                                                   progress=False)))
                wall[name] += t
                tables[name].append(df)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    full = {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}
    labels = {"serial": "one by one (serial, this process)",
              "local": f"local process pool, {args.workers} processes",
              "dask": f"Dask LocalCluster, {args.workers} workers"}
    print(f"{'executor':40s} {'wall s':>8s} {'speed-up':>9s}  identical table")
    ok = True
    for name in runs:
        same = "reference" if name == "serial" else ("yes" if full[name].equals(full["serial"]) else "NO")
        ok &= same != "NO"
        print(f"{labels[name]:40s} {wall[name]:8.2f} {wall['serial'] / wall[name]:8.2f}x  {same}")
    if client is not None:
        print(f"(Dask cluster start-up {t_start:.1f} s, not included)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end; a busy loop on the same pool runs "
          f"{headroom(args.workers):.2f}x faster than in this process right now (the machine's free "
          f"parallelism, the ceiling for the ratios above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
