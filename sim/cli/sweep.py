"""``sim sweep``: run a grid of what-if points (spec fields, workload parameters, dtype, options,
parallel layouts) on a local process pool, Dask or Ray, storing each point as it finishes."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add(sub: Any) -> None:
    """Register ``sim sweep``."""
    p = sub.add_parser("sweep", help="run a grid of what-if points and keep the results")
    p.add_argument("workload", help="workload YAML/ONNX/bundled name, or a study YAML (grid or zip)")
    p.add_argument("--hw", help="hardware spec name or YAML path (default h100)")
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="an axis: a spec field (memory.hbm.bandwidth), workload param (batch), dtype, "
                        "parallel, hw or a runtime option; ';' separates values that hold commas")
    p.add_argument("--zip", action="store_true", help="pair the axes side by side, not every combination")
    p.add_argument("--store", metavar="FILE", help="SQLite results file: points in it are skipped, "
                                                   "new ones appended as they finish")
    p.add_argument("--executor", help="local (default, every core), local:N, serial, dask, "
                                      "dask://host:port, ray")
    p.add_argument("--workers", type=int, help="worker processes (local pool or Dask LocalCluster)")
    p.add_argument("--metrics", help="comma-separated metrics to show (default: a readable few)")
    p.add_argument("--name", help="the study's name in the store (default 'sweep' or the study file's)")
    p.add_argument("--csv", metavar="F", help="also write the table as CSV")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only when stderr is a terminal)")
    # the base run: the same options as ``sim run``
    p.add_argument("--dtype")
    p.add_argument("--set", action="append", metavar="K=V", help="a workload param for every point")
    p.add_argument("--hw-set", action="append", metavar="FIELD=VALUE", help="a spec field for every point")
    p.add_argument("--train", action="store_true")
    p.add_argument("--loss")
    p.add_argument("--optimizer")
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--fuse", action="store_true")
    p.add_argument("--parallel", metavar="dp=N|tp=N|pp=S[,mb=M]")
    p.add_argument("--streams", type=int)
    p.add_argument("--dispatch", metavar="TIME")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--resident-inputs", action="store_true")
    p.add_argument("--no-cache-reuse", action="store_true")
    p.set_defaults(func=sweep_command)


def base_of(args: argparse.Namespace) -> dict[str, Any]:
    """The fields every point shares, from the ``sim run``-style options."""
    from sim.cli.args import parse_hw_sets, parse_sets

    base: dict[str, Any] = {f"param.{k}": v for k, v in parse_sets(args.set).items()}
    base.update({f"spec.{k}": v for k, v in parse_hw_sets(args.hw_set).items()})
    for name in ("dtype", "parallel", "loss", "optimizer", "streams", "dispatch"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    for flag in ("train", "checkpoint", "fuse", "cuda_graphs", "resident_inputs"):
        if getattr(args, flag):
            base[flag] = True
    if args.no_cache_reuse:
        base["cache_reuse"] = False
    return base


def sweep_command(args: argparse.Namespace) -> int:
    """Run ``sim sweep``; prints the table (and where it was stored)."""
    from sim.errors import SimError
    from sim.study.axes import parse_grid
    from sim.study.report import format_table
    from sim.study.sweep import execute, is_study_file, load_study, plan, table

    base = base_of(args)
    grid = parse_grid(args.grid)
    if is_study_file(args.workload):
        study = load_study(args.workload)
        study["base"] = {**study["base"], **base}
        study["grid"] = {**study["grid"], **grid}
        if args.zip:
            study["mode"] = "zip"
    else:
        study = {"workload": args.workload, "hw": "h100", "grid": grid, "base": base,
                 "mode": "zip" if args.zip else "product", "metrics": None, "study": "sweep"}
    if args.hw:
        study["hw"] = args.hw
    if args.name:
        study["study"] = args.name
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    store = args.store or study.pop("store", None)
    executor = args.executor or study.pop("executor", None) or "local"
    p = plan(study["workload"], study["hw"], study["grid"], base=study["base"], mode=study["mode"],
             study=study["study"], metrics=None)
    if metrics:
        plan(study["workload"], study["hw"], {k: v[:1] for k, v in study["grid"].items()},
             base=study["base"], metrics=metrics)  # validates the names before anything runs
    outcomes = execute(p, store, executor, workers=args.workers, progress=args.progress)
    df = table(p, outcomes)
    print(format_table(df, p.axes, metrics or study.get("metrics")))
    failed = int(df["error"].notna().sum())
    note = f"{len(df)} points, {failed} failed"
    if store:
        note += f"; {p.ran} simulated, {p.reused} already in {store}"
    print(note, file=sys.stderr)
    if args.csv:
        try:
            df.to_csv(args.csv, index=False)
        except OSError as err:
            raise SimError(f"cannot write: {err.strerror}", where=args.csv) from None
        print(f"wrote csv {args.csv}")
    return 0
