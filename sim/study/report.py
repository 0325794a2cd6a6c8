"""Results as text: the columns a reader wants, in readable units.

>>> METRIC_UNITS["makespan_s"]
('makespan', 'ms', 1000.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim.study.point import METRICS

# metric -> (label, display unit, factor from the stored SI value)
METRIC_UNITS: dict[str, tuple[str, str, float]] = {
    "makespan_s": ("makespan", "ms", 1e3),
    "step_time_s": ("step time", "s", 1.0),
    "throughput_per_s": ("throughput", "samples/s", 1.0),
    "time_per_sample_s": ("time per sample", "ms", 1e3),
    "energy_per_sample_j": ("energy per sample", "mJ", 1e3),
    "tokens_per_s": ("throughput", "tokens/s", 1.0),
    "bubble_fraction": ("pipeline bubble", "%", 100.0),
    "estimated_memory_bytes": ("memory per GPU, estimated", "GiB", 2.0**-30),
    "peak_memory_bytes": ("peak memory (all devices)", "GiB", 2.0**-30),
    "peak_memory_per_device_bytes": ("peak memory per device", "GiB", 2.0**-30),
    "memory_per_gpu_bytes": ("memory per GPU", "GiB", 2.0**-30),
    "energy_j": ("energy", "J", 1.0),
    "flops": ("work", "GFLOP", 1e-9),
    "achieved_flops_per_s": ("achieved", "TFLOP/s", 1e-12),
    "tflops_per_gpu": ("per-GPU throughput", "TFLOP/s", 1.0),
    "mfu": ("MFU", "%", 100.0),
    "bound_compute": ("compute-bound", "%", 100.0),
    "bound_memory": ("memory-bound", "%", 100.0),
    "bound_launch": ("launch-bound", "%", 100.0),
    "bound_comm": ("link-bound", "%", 100.0),
    "host_bound_s": ("host-bound", "ms", 1e3),
    "devices": ("devices", "", 1.0),
    "wall_s": ("wall", "s", 1.0),
}
STORE_COLUMNS = ("key", "study", "seq", "finished", "workload", "hw", "dtype", "parallel", "axes", "config",
                 *METRICS, "error", "error_kind", "wall_s")
DEFAULT_SHOWN = ("makespan_s", "throughput_per_s", "peak_memory_per_device_bytes", "energy_j", "mfu",
                 "bound_compute", "bound_memory")


def label(metric: str) -> str:
    """``"makespan_s"`` -> ``"makespan (ms)"``; unknown names unchanged."""
    if metric in METRIC_UNITS:
        name, unit, _ = METRIC_UNITS[metric]
        return f"{name} ({unit})" if unit else name
    return metric


def display(df: Any, metrics: Sequence[str]) -> Any:
    """A copy of ``df`` with ``metrics`` scaled to display units and renamed with them."""
    out = df.copy()
    for m in metrics:
        if m in out.columns and m in METRIC_UNITS:
            out[m] = out[m] * METRIC_UNITS[m][2]
    return out.rename(columns={m: label(m) for m in metrics if m in out.columns})


def format_table(df: Any, axes: Sequence[str], metrics: Sequence[str] | None = None) -> str:
    """The text table: axes, then metrics in display units, then errors (if any point failed)."""
    import pandas as pd

    metrics = [m for m in (metrics or DEFAULT_SHOWN) if m in df.columns]
    cols = [*axes, *metrics]
    failed = "error" in df.columns and df["error"].notna().any()
    if failed:
        cols.append("error")
    view = display(df[cols], metrics)
    if failed:
        errors = view["error"].fillna("").map(lambda s: s if len(s) <= 70 else s[:67] + "...")
        width = max(len("error"), *(len(s) for s in errors))
        view["error"] = errors.map(lambda s: s.ljust(width))
    with pd.option_context("display.max_rows", 10_000, "display.width", 250,
                           "display.max_columns", 100, "display.float_format", _fmt):
        return view.to_string(index=False, na_rep="-")


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e6 or a < 1e-3:
        return f"{x:.3e}"
    if a >= 100:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def axis_columns(df: Any) -> list[str]:
    """The axes of the studies in ``df`` (a store's rows), in their order."""
    import json

    out: list[str] = []
    for text in df["axes"].dropna().unique():
        out.extend(a for a in json.loads(text) if a not in out and a in df.columns)
    return out
