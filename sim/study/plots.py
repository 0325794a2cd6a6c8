"""Plots of study results: a metric against an axis (lines, one per value of the other axes), a
heatmap over two axes, a Pareto front of two metrics, and a layout-search chart. Each figure is
written as PNG and SVG, titled, with units on both axes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sim.errors import SimError
from sim.study.report import METRIC_UNITS, label

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")


# ----------------------------------------------------------------------------- axis values
def numeric_axis(values: Sequence[Any]) -> tuple[list[float] | None, str]:
    """Axis values as numbers in one display unit: ``["2 TB/s", "3350 GB/s"]`` ->
    ``([2.0, 3.35], "TB/s")``; plain numbers stay as they are (unit ``""``); ``(None, "")`` for
    names (dtypes, layouts, specs).

    >>> numeric_axis(["2 TB/s", "3350 GB/s", "6.7 TB/s"])
    ([2.0, 3.35, 6.7], 'TB/s')
    >>> numeric_axis([1, 8, 32])
    ([1.0, 8.0, 32.0], '')
    >>> numeric_axis(["bf16", "fp8"])
    (None, '')
    """
    from sim.hw.units import parse_unit

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], ""
    nums, unit, kind, base = [], "", None, 1.0
    for v in values:
        m = _NUMBER.match(str(v))
        if not m or not m.group(2):
            return None, ""
        try:
            k, f = parse_unit(m.group(2))
        except KeyError:
            return None, ""
        if kind is None:
            kind, unit, base = k, m.group(2), f
        elif k != kind:
            return None, ""
        nums.append(float(m.group(1)) * f / base)
    return nums, unit


def _metric(df: Any, metric: str) -> tuple[Any, str]:
    """A metric column in display units, and its label."""
    if metric not in df.columns:
        raise SimError(f"no column {metric!r} in the results", where="--y")
    scale = METRIC_UNITS.get(metric, ("", "", 1.0))[2]
    return df[metric].astype(float) * scale, label(metric)


def _axis_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def filter_rows(df: Any, where: Mapping[str, Any] | None) -> Any:
    """Rows whose columns equal the ``where`` values (compared as text)."""
    for k, v in (where or {}).items():
        if k not in df.columns:
            raise SimError(f"no column {k!r} in the results", where="--where")
        df = df[df[k].astype(str) == str(v)]
    if not len(df):
        raise SimError("no rows left to plot", where="--where")
    return df


def varying(df: Any, columns: Sequence[str]) -> list[str]:
    """Of ``columns``, those with more than one value among the rows."""
    return [c for c in columns if c in df.columns and df[c].astype(str).nunique() > 1]


# ----------------------------------------------------------------------------- figures
def _save(fig: Any, path: str | os.PathLike[str]) -> list[str]:
    """Write ``fig`` as PNG and SVG (``path``'s stem); returns the two paths."""
    import matplotlib.pyplot as plt

    stem, ext = os.path.splitext(os.fspath(path))
    if ext.lower() not in ("", ".png", ".svg"):
        raise SimError("plots are written as .png and .svg", where=os.fspath(path))
    d = os.path.dirname(stem)
    if d:
        os.makedirs(d, exist_ok=True)
    out = [f"{stem}.png", f"{stem}.svg"]
    fig.savefig(out[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out[1], bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return out


def _figure(size: tuple[float, float] = (7.5, 4.8)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text (searchable, editable)
    fig, ax = plt.subplots(figsize=size)
    return fig, ax


def plot_lines(df: Any, x: str, y: str, path: str | os.PathLike[str], *, hue: str | None = None,
               axes: Sequence[str] = (), title: str | None = None) -> list[str]:
    """``y`` against ``x``, one line per combination of the other varying axes (``hue`` first)."""
    if x not in df.columns:
        raise SimError(f"no column {x!r} in the results", where="--x")
    df = df[df[y].notna()] if y in df.columns else df
    ys, ylabel = _metric(df, y)
    others = [c for c in ([hue] if hue else []) + [a for a in axes if a not in (x, hue)]
              if c and c in varying(df, [c])]
    fig, ax = _figure()
    xs_all, xunit = numeric_axis(list(df[x]))
    categorical = xs_all is None
    cats = list(dict.fromkeys(df[x].astype(str)))
    groups = df.groupby(others, sort=False) if others else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = (str(key[0]) if len(others) == 1
                else ", ".join(f"{c}={v}" for c, v in zip(others, key)) or y)
        xv: list[float] = ([float(cats.index(str(v))) for v in g[x]] if categorical
                           else numeric_axis(list(g[x]))[0] or [])
        pts = sorted(zip(xv, ys[g.index]))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    if categorical:
        ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 6 else 0)
    elif xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 16:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log", base=2 if all(float(v).is_integer() for v in xs_all) else 10)
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_axis_label(x, xunit))
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel.split(' (')[0]} vs {x}")
    ax.grid(True, alpha=0.3)
    if others:
        ax.legend(fontsize=8, title=", ".join(others) if len(others) == 1 else None)
    ax.set_ylim(bottom=0 if ys.min() >= 0 else None)
    return _save(fig, path)


def plot_heatmap(df: Any, x: str, y: str, hue: str, path: str | os.PathLike[str], *,
                 title: str | None = None) -> list[str]:
    """The metric ``y`` as colour over axes ``x`` (columns) and ``hue`` (rows), values written in."""
    import numpy as np

    for c in (x, hue):
        if c not in df.columns:
            raise SimError(f"no column {c!r} in the results", where="--x" if c == x else "--hue")
    ys, ylabel = _metric(df, y)
    if df.groupby([x, hue]).size().max() > 1:
        raise SimError("more than one point per cell: fix the other axes with --where FIELD=VALUE",
                       where="--kind heatmap")
    cols = _ordered(df[x])
    rows = _ordered(df[hue])
    grid = np.full((len(rows), len(cols)), np.nan)
    for i, (xv, hv) in enumerate(zip(df[x].astype(str), df[hue].astype(str))):
        grid[rows.index(hv), cols.index(xv)] = ys.iloc[i]
    fig, ax = _figure((1.2 + 1.1 * len(cols), 1.4 + 0.55 * len(rows)))
    import matplotlib

    # a point that failed (or was not run): light grey, labelled
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.88")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (r, c), v in np.ndenumerate(grid):
        text = "failed" if not np.isfinite(v) else f"{v:.3g}"
        ax.text(c, r, text, ha="center", va="center", fontsize=8,
                color="white" if np.isfinite(v) and v < mid else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(x)
    ax.set_ylabel(hue)
    fig.colorbar(im, ax=ax, label=ylabel)
    ax.set_title(title or f"{ylabel.split(' (')[0]} over {x} and {hue}")
    return _save(fig, path)


def _ordered(col: Any) -> list[str]:
    """A column's distinct values as text, in numeric order when they are quantities."""
    vals = list(dict.fromkeys(col))
    nums, _ = numeric_axis(vals)
    if nums is not None:
        vals = [v for _, v in sorted(zip(nums, vals))]
    return [str(v) for v in vals]


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both (both minimised), by ``xs``.

    >>> pareto_front([1, 2, 3, 2], [3, 1, 2, 2])
    [0, 1]
    """
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    front, best = [], float("inf")
    for i in order:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    return front


def plot_pareto(df: Any, x: str, y: str, path: str | os.PathLike[str], *, axes: Sequence[str] = (),
                title: str | None = None) -> list[str]:
    """Every point by two metrics to minimise (time and energy per sample, say), coloured by
    the first axis that varies; the front is joined and its points labelled with their values
    of the other axes. Axes spanning more than 20x are logarithmic."""
    df = df[df[x].notna() & df[y].notna()] if x in df.columns and y in df.columns else df
    if not len(df):
        raise SimError(f"no point has both {x} and {y}", where="--kind pareto")
    df = df.reset_index(drop=True)
    xs, xlabel = _metric(df, x)
    ys, ylabel = _metric(df, y)
    fig, ax = _figure((7.5, 5.2))
    shown = varying(df, axes)
    colour_by = shown[0] if shown else None
    if colour_by:
        for i, (v, g) in enumerate(df.groupby(colour_by, sort=False)):
            ax.scatter(xs[g.index], ys[g.index], s=28, color=f"C{i % 10}", label=f"{colour_by}={v}", zorder=3)
    else:
        ax.scatter(xs, ys, s=28, color="0.5", label="points", zorder=3)
    front = pareto_front(list(xs), list(ys))
    ax.plot(xs.iloc[front], ys.iloc[front], "-", color="k", lw=1.2, label="Pareto front", zorder=2)
    ax.scatter(xs.iloc[front], ys.iloc[front], s=90, facecolors="none", edgecolors="k", zorder=4)
    rest = [a for a in shown if a != colour_by] or shown
    for n, i in enumerate(front[:14]):
        row = df.iloc[i]
        ax.annotate(", ".join(f"{a}={row[a]}" for a in rest), (xs.iloc[i], ys.iloc[i]), fontsize=7,
                    xytext=(6, -10 if n % 2 else 5), textcoords="offset points")
    for axis, vals in (("x", xs), ("y", ys)):
        lo, hi = float(vals.min()), float(vals.max())
        if lo > 0 and hi / lo > 20:
            (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    what = f"{xlabel.split(' (')[0]} vs {ylabel.split(' (')[0]}"
    ax.set_title(title or f"Pareto front: {what} (lower is better)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_search(df: Any, path: str | os.PathLike[str], *, top: int = 12, capacity: float | None = None,
                title: str | None = None) -> list[str]:
    """A layout search: left, every simulated layout's step time against its memory per GPU
    (coloured by TP, the accelerator's capacity dashed, the best starred); right, the ``top``
    fastest layouts with their per-GPU TFLOP/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    if "layout" not in df.columns and "parallel" in df.columns:
        df = df.assign(layout=df["parallel"])  # a results file: the layout is the point's parallel field
    need = ("step_time_s", "memory_per_gpu_bytes", "tp", "layout")
    if any(c not in df.columns for c in need):
        raise SimError("not a layout-search result (sim search writes one)", where="--kind search")
    ok = df[df["step_time_s"].notna()].sort_values("step_time_s", kind="stable")
    if not len(ok):
        raise SimError("no simulated layout to plot", where="--kind search")
    errors = df["error"].fillna("") if "error" in df.columns else None
    pruned = int(errors.str.startswith("pruned (memory").sum()) if errors is not None else 0
    failed = int((errors.ne("") & ~errors.str.startswith("pruned")).sum()) if errors is not None else 0
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.1]})
    mem = ok["memory_per_gpu_bytes"] / 2**30
    for tp in sorted(ok["tp"].unique()):
        sel = ok["tp"] == tp
        ax.scatter(mem[sel], ok["step_time_s"][sel], s=16, alpha=0.75, label=f"TP={int(tp)}")
    best = ok.iloc[0]
    ax.scatter([best["memory_per_gpu_bytes"] / 2**30], [best["step_time_s"]], marker="*", s=220,
               color="k", label="fastest", zorder=5)
    if capacity:
        ax.axvline(capacity / 2**30, ls="--", color="C3", label=f"GPU memory {capacity / 2**30:.0f} GiB")
    ax.set_xlabel("memory per GPU (GiB, simulated)")
    ax.set_ylabel("step time (s)")
    ax.set_title(f"{len(ok)} layouts ran, {failed} out of memory in simulation, "
                 f"{pruned} pruned by the memory model", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    head = ok.head(top).iloc[::-1]
    recompute = head["recompute"] if "recompute" in head.columns else [0] * len(head)
    labels = [f"{lay}{' +recompute' if rc else ''}" for lay, rc in zip(head["layout"], recompute)]
    bars = bx.barh(range(len(head)), head["step_time_s"], color="C0")
    for b, tf in zip(bars, head.get("tflops_per_gpu", [None] * len(head))):
        if tf is not None and tf == tf:
            bx.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {tf:.0f} TFLOP/s/GPU", va="center",
                    fontsize=7)
    bx.set_yticks(range(len(head)), labels, fontsize=7)
    bx.set_xlabel("step time (s)")
    bx.set_xlim(0, head["step_time_s"].max() * 1.3)
    bx.set_title(f"fastest {len(head)} layouts", fontsize=10)
    fig.suptitle(title or "layout search", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)
