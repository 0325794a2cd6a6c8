"""Matplotlib plots of a ``Result`` (Agg backend, files only): timeline, roofline, memory,
utilisation, and sweeps over several results.

Usage::

    r = sim.simulate(sim.load("mlp-mnist"), "h100")
    r.plot("out/mlp.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sim.errors import SimError  # noqa: E402

if TYPE_CHECKING:
    from sim.report.result import Result

BOUND_COLORS = {"compute": "tab:blue", "memory": "tab:orange", "launch": "tab:gray",
                "comm": "tab:green"}


def _color(bound: str) -> str:
    return BOUND_COLORS.get(bound, "tab:purple")


def plot_timeline(result: Result, ax: Any) -> None:
    """A Gantt chart: one row per device unit, bars coloured by what bound each op."""
    tracks: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for r in result.ops:
        if r.end_s <= r.start_s:
            continue  # zero-time ops (views, reshapes) draw nothing and get no row
        key = (r.device, r.unit)
        tracks.setdefault(key, {}).setdefault(r.bound, []).append(
            (r.start_s * 1e3, (r.end_s - r.start_s) * 1e3))
    keys = sorted(tracks, key=lambda k: (k[0], k[1].startswith("copy:"), k[1]))
    for i, key in enumerate(keys):
        for bound, bars in sorted(tracks[key].items()):
            ax.broken_barh(bars, (i - 0.4, 0.8), facecolors=_color(bound), linewidth=0)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([f"{d}/{u}" for d, u in keys], fontsize=7)
    ax.set_xlabel("time (ms)")
    ax.set_xlim(0, max(result.makespan_s * 1e3, 1e-9))
    ax.set_title("timeline")
    seen = sorted({r.bound for r in result.ops})
    for b in seen:
        ax.bar(0, 0, color=_color(b), label=b)
    if seen:
        ax.legend(fontsize=7, loc="upper right")


def plot_roofline(result: Result, ax: Any, device: str | None = None) -> None:
    """Ops as points (FLOP/byte, achieved FLOP/s) under the device's compute and memory roofs."""
    ops = [r for r in result.ops if r.op != "Transfer"]
    if device is None:
        device = ops[0]["device"] if ops else next(iter(result.devices), None)
    pts = [r for r in ops if r.device == device and r.flops > 0 and r.bytes > 0
           and r.end_s > r.start_s]
    info = result.devices.get(device or "", {})
    for bound in sorted({r.bound for r in pts}):
        sel = [r for r in pts if r.bound == bound]
        ax.scatter([r.flops / r.bytes for r in sel],
                   [r.flops / (r.end_s - r.start_s) for r in sel],
                   s=8, color=_color(bound), label=bound, alpha=0.7)
    bw = info.get("bandwidth_Bps")
    dtypes: dict[str, float] = {}
    for r in pts:
        dtypes[r.dtype] = dtypes.get(r.dtype, 0.0) + r.flops
    dtype = max(sorted(dtypes), key=lambda k: dtypes[k]) if dtypes else ""
    peak = max((rates.get(dtype, 0.0) for rates in info.get("peak_flops", {}).values()), default=0.0)
    if bw and peak:
        lo = min([1e-2] + [r.flops / r.bytes for r in pts])
        hi = max([1e4] + [r.flops / r.bytes for r in pts])
        ridge = peak / bw
        xs = [lo, ridge, hi]
        ax.plot(xs, [min(peak, x * bw) for x in xs], color="black", linewidth=1,
                label=f"roof ({dtype}, {peak / 1e12:.0f} TFLOP/s, {bw / 1e12:.2f} TB/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"roofline: {device}")
    if pts or (bw and peak):
        ax.legend(fontsize=7, loc="lower right")


def plot_memory(result: Result, ax: Any) -> None:
    """Bytes in use over time per device (steps), with capacity when the peak comes near it."""
    end = result.makespan_s * 1e3
    for d, tl in result.memory_timeline.items():
        if not tl:
            continue
        xs = [t * 1e3 for t, _ in tl] + [end]
        ys = [b / 2**30 for _, b in tl] + [tl[-1][1] / 2**30]
        ax.step(xs, ys, where="post", label=d)
        cap = result.devices.get(d, {}).get("capacity_bytes")
        oom = result.meta.get("oom") or {}
        if cap and (result.peak_memory_by_device.get(d, 0.0) > 0.25 * cap or oom.get("device") == d):
            ax.axhline(cap / 2**30, linestyle="--", linewidth=0.8, color="gray",
                       label=f"{d} capacity {cap / 2**30:.1f} GiB")
        if oom.get("device") == d:
            need = float(oom["needed_bytes"]) / 2**30
            ax.axhline(need, linestyle=":", linewidth=1.2, color="red",
                       label=f"{d} step needs {need:.1f} GiB")
            ax.plot([float(oom["time_s"]) * 1e3], [float(oom["in_use_bytes"] + oom["alloc_bytes"]) / 2**30],
                    "rx", label=f"out of memory at {oom['op']}")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("memory in use (GiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("memory" + (" (OUT OF MEMORY)" if result.meta.get("oom") else ""))
    if result.memory_timeline:
        ax.legend(fontsize=7)


def plot_utilisation(result: Result, ax: Any) -> None:
    """Busy fraction of the makespan per device unit (bars), FLOP/s fraction of peak (dots), and
    each device's main-memory bandwidth used as a fraction of its peak (orange bars)."""
    rows = [(f"{d}/{u}", s) for d, units in result.utilisation.items() for u, s in units.items()
            if s["busy_s"] > 0 or s["flops"] > 0]
    ys = range(len(rows))
    ax.barh(list(ys), [100 * s["busy"] for _, s in rows], color="tab:blue", label="busy")
    fl = [(i, 100 * s["flops_utilisation"]) for i, (_, s) in enumerate(rows)
          if s["flops_utilisation"] is not None]
    if fl:
        ax.scatter([v for _, v in fl], [i for i, _ in fl], color="tab:red", zorder=3,
                   label="FLOP/s of peak")
    bw = [(f"{d}/{t['level']}", 100 * t["bandwidth_utilisation"])
          for d, t in result.memory_traffic.items() if t["bandwidth_utilisation"] is not None]
    if bw:
        ax.barh([len(rows) + i for i in range(len(bw))], [v for _, v in bw], color="tab:orange",
                label="bandwidth of peak")
    names = [name for name, _ in rows] + [name for name, _ in bw]
    ax.set_yticks(list(range(len(names))))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of makespan / % of peak")
    ax.set_title("utilisation")
    if names:
        ax.legend(fontsize=7, loc="lower right")


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save atomically (``sim.io.atomic_path``), in the format the extension names (PNG if none)."""
    from sim.io import atomic_path

    fmt = os.path.splitext(os.fspath(path))[1].lower().lstrip(".") or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        plt.close(fig)
        raise SimError(f"unknown plot format .{fmt}; use one of "
                       f"{', '.join('.' + f for f in sorted(fig.canvas.get_supported_filetypes()))}",
                       where=os.fspath(path))
    try:
        with atomic_path(path, "plot") as tmp:
            fig.savefig(tmp, dpi=110, format=fmt)
    finally:
        plt.close(fig)


def plot_result(result: Result, path: str | os.PathLike[str]) -> None:
    """Write one figure with timeline, roofline, memory and utilisation panels to ``path``."""
    fig = plt.figure(figsize=(13, 10))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1])
    timeline = fig.add_subplot(grid[0, :])
    plot_timeline(result, timeline)
    oom = result.meta.get("oom")
    if oom:
        timeline.axvline(float(oom["time_s"]) * 1e3, color="red", linewidth=1.0)
    plot_roofline(result, fig.add_subplot(grid[1, 0]))
    plot_memory(result, fig.add_subplot(grid[1, 1]))
    plot_utilisation(result, fig.add_subplot(grid[1, 2]))
    title = f"{result.graph} on {result.hardware}: {result.makespan_s * 1e3:.3f} ms"
    if oom:
        need, cap = float(oom["needed_bytes"]) / 2**30, float(oom["capacity_bytes"]) / 2**30
        title += f" (OUT OF MEMORY on {oom['device']}: the step needs {need:.1f} GiB of {cap:.1f})"
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_sweep(xs: Sequence[float], results: Sequence[Result], path: str | os.PathLike[str],
               xlabel: str = "batch") -> None:
    """Makespan, throughput and peak memory against a swept parameter (one result per x).

    Usage::

        rs = [sim.simulate(sim.load("resnet50", batch=b), "h100") for b in (1, 8, 32)]
        plot_sweep([1, 8, 32], rs, "out/sweep.png")
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].plot(xs, [r.makespan_s * 1e3 for r in results], marker="o")
    axes[0].set_ylabel("makespan (ms)")
    tp = [(x, r.throughput) for x, r in zip(xs, results) if r.throughput is not None]
    axes[1].plot([x for x, _ in tp], [t for _, t in tp], marker="o")
    axes[1].set_ylabel("throughput (samples/s)")
    axes[2].plot(xs, [r.peak_memory_bytes / 2**30 for r in results], marker="o")
    axes[2].set_ylabel("peak memory (GiB)")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    if results:
        fig.suptitle(f"{results[0].graph} on {results[0].hardware}")
    fig.tight_layout()
    _save(fig, path)
