"""``sim plot RESULTS``: draw a results store (lines, a heatmap, a Pareto front or a layout
search) as PNG and SVG."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add(sub: Any) -> None:
    """Register ``sim plot``."""
    p = sub.add_parser("plot", help="plot a results store: lines, heatmap, Pareto front, layout search")
    p.add_argument("file", help="results file written by sim sweep / sim search")
    p.add_argument("--x", help="axis (or, for pareto, metric) on the x axis")
    p.add_argument("--y", help="metric on the y axis (default makespan_s; pareto: energy per sample)")
    p.add_argument("--hue", help="the axis that tells lines apart (heatmap: the rows)")
    p.add_argument("--kind", choices=("line", "heatmap", "pareto", "search"), default=None,
                   help="default: line, or search for a layout-search file")
    p.add_argument("--where", action="append", metavar="FIELD=VALUE", help="keep only these rows")
    p.add_argument("--study", help="only this study's points")
    p.add_argument("--title")
    p.add_argument("--out", metavar="FILE", help="PNG path (an SVG is written beside it); "
                                                 "default: the results file's name")
    p.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from sim.errors import SimError
    from sim.study import plots
    from sim.study.report import axis_columns
    from sim.study.store import read_results

    df = read_results(args.file)
    if args.study:
        df = df[df["study"] == args.study]
    where = {}
    for item in args.where or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise SimError(f"expected FIELD=VALUE, got {item!r}", where="--where")
        where[k.strip()] = v.strip()
    df = plots.filter_rows(df, where).reset_index(drop=True)
    axes = axis_columns(df)
    kind = args.kind or ("search" if "step_time_s" in df.columns and df["study"].eq("search").all()
                         else "line")
    out = args.out or os.path.splitext(args.file)[0] + (f"-{kind}" if kind != "line" else "") + ".png"
    if kind == "pareto":
        per_sample = df["time_per_sample_s"].notna().any() if "time_per_sample_s" in df.columns else False
        x = args.x or ("time_per_sample_s" if per_sample else "makespan_s")
        y = args.y or ("energy_per_sample_j" if per_sample else "energy_j")
        paths = plots.plot_pareto(df, x, y, out, axes=axes, title=args.title)
    elif kind == "search":
        paths = plots.plot_search(df, out, title=args.title)
    else:
        if not args.x:
            raise SimError(f"name the x axis (axes in the file: {', '.join(axes) or 'none'})", where="--x")
        if kind == "heatmap":
            if not args.hue:
                raise SimError("a heatmap needs --hue (its rows)", where="--hue")
            paths = plots.plot_heatmap(df, args.x, args.y or "makespan_s", args.hue, out, title=args.title)
        else:
            paths = plots.plot_lines(df, args.x, args.y or "makespan_s", out, hue=args.hue, axes=axes,
                                     title=args.title)
    for p in paths:
        print(f"wrote plot {p}")
    return 0
