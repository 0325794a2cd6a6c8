"""``sim search``: the fastest parallel layout for training a transformer on a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add(sub: Any) -> None:
    """Register ``sim search``."""
    p = sub.add_parser("search", help="find the fastest TP/PP/DP/ZeRO layout to train a model on a cluster")
    p.add_argument("workload", help="transformer workload (bundled name or YAML path)")
    p.add_argument("--hw", required=True, help="cluster or node spec (e.g. dgx-a100-cluster)")
    p.add_argument("--set", action="append", metavar="K=V",
                   help="workload params (batch=N is the global batch in sequences; nodes=N for a cluster)")
    p.add_argument("--hw-set", action="append", metavar="FIELD=VALUE", help="override a spec field")
    p.add_argument("--tp", help="tensor-parallel sizes to try, e.g. 1,2,4,8 (default: divisors of a node)")
    p.add_argument("--pp", help="pipeline sizes to try (default: divisors of the layers that fit)")
    p.add_argument("--mbs", default="1,2,4", help="microbatch sizes (default 1,2,4)")
    p.add_argument("--schedule", default="1f1b,interleaved:2",
                   help="pipeline schedules (1f1b, gpipe, interleaved:V)")
    p.add_argument("--zero", default="0,1", help="ZeRO stages (default 0,1)")
    p.add_argument("--sp", default="false,true", help="sequence parallelism choices")
    p.add_argument("--recompute", default="false,true", help="activation recomputation choices")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--top", type=int, default=10, help="how many layouts to print")
    p.add_argument("--store", metavar="FILE", help="SQLite results file (resumes a stopped search)")
    p.add_argument("--executor", default="local",
                   help="local (default), local:N, serial, dask, dask://host:port, ray")
    p.add_argument("--workers", type=int)
    p.add_argument("--csv", metavar="F", help="write every candidate as CSV")
    p.add_argument("--plot", metavar="F", help="write the search plot (PNG and SVG)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=search_command)


def _ints(text: str | None, where: str) -> list[int] | None:
    from sim.errors import SimError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SimError(f"expected integers separated by commas, got {text!r}", where=where) from None


def _bools(text: str, where: str) -> list[bool]:
    from sim.errors import SimError

    out = []
    for x in (t.strip().lower() for t in text.split(",") if t.strip()):
        if x not in ("true", "false", "1", "0", "yes", "no"):
            raise SimError(f"expected true/false values, got {x!r}", where=where)
        out.append(x in ("true", "1", "yes"))
    return out


def search_command(args: argparse.Namespace) -> int:
    from sim.cli.args import parse_hw_sets, parse_sets
    from sim.errors import SimError
    from sim.study.search import Space, search

    sets = parse_sets(args.set)
    batch = sets.pop("batch", None)
    if not isinstance(batch, int) or batch < 1:
        raise SimError("give the global batch in sequences, e.g. --set batch=1536", where="--set batch")
    schedules = [s.strip() for s in args.schedule.split(",") if s.strip()]
    space = Space(tp=_ints(args.tp, "--tp"), pp=_ints(args.pp, "--pp"), mbs=_ints(args.mbs, "--mbs") or [1],
                  schedules=schedules, zero=_ints(args.zero, "--zero") or [0], sp=_bools(args.sp, "--sp"),
                  recompute=_bools(args.recompute, "--recompute"))
    df, info = search(args.workload, args.hw, batch=batch, space=space, store=args.store,
                      executor=args.executor, workers=args.workers, sets=sets,
                      hw_sets=parse_hw_sets(args.hw_set), optimizer=args.optimizer, dtype=args.dtype,
                      progress=args.progress, with_info=True)
    ok = df[df["step_time_s"].notna()]
    print(f"{args.workload} on {info['hardware']} ({info['gpus']} GPUs, "
          f"{info['capacity'] / 2**30:.0f} GiB each), global batch {batch}: {info['candidates']} layouts, "
          f"{info['pruned_memory']} pruned by the memory model, {info['invalid']} invalid, "
          f"{info['simulated']} to simulate ({info['reused']} already in the store), {len(ok)} ran")
    if not len(ok):
        print("no layout fits and runs", file=sys.stderr)
        return 1
    head = ok.head(args.top)
    print(f"{'#':>3s}  {'layout':58s} {'recomp':>6s} {'step s':>8s} {'TFLOP/s/GPU':>11s} {'MFU':>6s} "
          f"{'mem GiB':>8s} {'est GiB':>8s}")
    for i, (_, r) in enumerate(head.iterrows(), 1):
        print(f"{i:3d}  {r['layout']:58s} {'yes' if r['recompute'] else 'no':>6s} {r['step_time_s']:8.3f} "
              f"{r['tflops_per_gpu']:11.1f} {100 * r['mfu']:5.1f}% {r['memory_per_gpu_bytes'] / 2**30:8.1f} "
              f"{r['estimated_memory_bytes'] / 2**30:8.1f}")
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote csv {args.csv}")
    if args.plot:
        from sim.study.plots import plot_search

        for p in plot_search(df, args.plot, capacity=info["capacity"],
                             title=f"{args.workload} on {info['gpus']} x {info['device']}, batch {batch}"):
            print(f"wrote plot {p}")
    return 0
