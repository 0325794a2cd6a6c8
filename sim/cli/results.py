"""``sim results FILE``: print a results store as a table."""

from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any) -> None:
    """Register ``sim results``."""
    p = sub.add_parser("results", help="print the points of a results store")
    p.add_argument("file", help="results file written by sim sweep / sim search")
    p.add_argument("--study", help="only this study's points")
    p.add_argument("--sort", metavar="COLUMN", help="sort by a metric or axis (ascending)")
    p.add_argument("--metrics", help="comma-separated metrics to show")
    p.add_argument("--csv", metavar="F", help="write the whole table as CSV")
    p.set_defaults(func=results_command)


def results_command(args: argparse.Namespace) -> int:
    from sim.errors import SimError
    from sim.study.report import axis_columns, format_table
    from sim.study.store import read_results

    df = read_results(args.file)
    if args.study:
        if args.study not in set(df["study"]):
            known = ", ".join(sorted(set(df["study"]))) or "none"
            raise SimError(f"no study {args.study!r} in the file (studies: {known})", where="--study")
        df = df[df["study"] == args.study]
    if args.sort:
        if args.sort not in df.columns:
            raise SimError(f"no column {args.sort!r}", where="--sort")
        df = df.sort_values(args.sort, kind="stable")
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    for m in metrics or []:
        if m not in df.columns:
            raise SimError(f"no column {m!r}", where="--metrics")
    axes = ["study", *axis_columns(df)] if df["study"].nunique() > 1 else axis_columns(df)
    print(format_table(df, axes, metrics))
    print(f"{len(df)} points, {int(df['error'].notna().sum())} failed")
    if args.csv:
        df.drop(columns=["config"]).to_csv(args.csv, index=False)
        print(f"wrote csv {args.csv}")
    return 0
