"""Fit a CPU spec to measured microbenchmarks, with k-fold cross-validation.

The model is the simulator's own CPU cost model (``sim.cost.op_cost`` on a ``kind: cpu``
spec): ``time = launch + max(matmul FLOPs / R_matrix + vector FLOPs / R_vector,
bytes / B_level)``, where the level is the innermost cache that holds the op's working set
(``sim.cost.cpu.streaming_level``). The free parameters are the per-op overhead ``launch``,
the two rates and one bandwidth per memory level; cache capacities are read from the machine
(``machine_info``), not fitted. ``scipy.optimize.least_squares`` minimises the log of
predicted over measured time over all samples (relative error, so microsecond and second
kernels weigh alike), every prediction made by building the spec and calling ``op_cost``, so
the written spec predicts exactly what the fit saw.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.calib.bench import Sample
from sim.errors import SimError

PARAMS = ("launch", "matrix", "vector", "dram", "l3", "l2")
UNITS = {"launch": "s", "matrix": "FLOP/s", "vector": "FLOP/s", "dram": "B/s", "l3": "B/s", "l2": "B/s"}


@dataclass(frozen=True)
class Machine:
    """What the calibration reads from the machine instead of fitting it."""

    name: str
    cores: int
    threads: int  # BLAS threads the measurements ran with
    l2_bytes: float  # per core
    l3_bytes: float  # shared
    memory_bytes: float
    clock_hz: float


def _cache_size(level: int, default: float) -> float:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            with open(f"{base}/{idx}/level") as f:
                if int(f.read().strip()) != level:
                    continue
            with open(f"{base}/{idx}/size") as f:
                text = f.read().strip()
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
            return float(text.rstrip("KMG")) * mult
    except (OSError, ValueError):
        pass
    return default


def _meminfo() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 16 * 1024**3


def _clock() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) * 1e6
    except (OSError, ValueError, IndexError):
        pass
    return 1e9


def _model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> Machine:
    """Cores, caches, memory and clock of this machine (Linux sysfs/procfs, else defaults)."""
    return Machine(_model_name(), os.cpu_count() or 1, threads, _cache_size(2, 512 * 1024),
                   _cache_size(3, 8 * 1024**2), _meminfo(), _clock())


def spec_dict(p: dict[str, float], m: Machine, name: str = "this-cpu") -> dict[str, Any]:
    """The spec (as the YAML loader reads it) for parameters ``p`` on machine ``m``."""
    rates = {"fp32": p["vector"], "fp64": p["vector"], "fp16": p["vector"], "bf16": p["vector"],
             "int64": p["vector"], "int32": p["vector"]}
    matrix = {"fp32": p["matrix"], "fp64": p["matrix"], "fp16": p["matrix"], "bf16": p["matrix"]}
    return {
        "version": 1, "name": name, "kind": "cpu",
        "description": f"{m.name}: the NumPy executor with {m.threads} BLAS thread(s), fitted by sim calibrate",
        "launch": f"{p['launch'] * 1e6:.4g} us",
        "memory": [
            {"name": "dram", "capacity": f"{m.memory_bytes / 1024**3:.4g} GiB",
             "bandwidth": f"{p['dram'] / 1e9:.4g} GB/s"},
            {"name": "l3", "capacity": f"{m.l3_bytes / 1024**2:.4g} MiB", "bandwidth": f"{p['l3'] / 1e9:.4g} GB/s"},
            {"name": "l2", "capacity": f"{m.l2_bytes * m.cores / 1024**2:.4g} MiB",
             "bandwidth": f"{p['l2'] / 1e9:.4g} GB/s"},
        ],
        "units": [
            {"name": "blas", "matrix": True, "peak": {k: f"{v / 1e9:.4g} GFLOP/s" for k, v in matrix.items()}},
            {"name": "numpy", "matrix": False, "peak": {k: f"{v / 1e9:.4g} GFLOP/s" for k, v in rates.items()}},
        ],
        "arch": {"cores": m.cores, "clock": f"{m.clock_hz / 1e9:.4g} GHz"},
    }


def predict(samples: Sequence[Sample], p: dict[str, float], m: Machine) -> np.ndarray:
    """Seconds the spec of ``p`` gives each sample's work (``sim.cost.op_cost``)."""
    from sim.cost import op_cost
    from sim.hw.loader import build

    spec = build(spec_dict(p, m), "calibration")
    return np.array([op_cost(s.work, spec, "fp32").time_s for s in samples])


def _initial(samples: Sequence[Sample]) -> dict[str, float]:
    """A starting point from the samples themselves (median achieved rates)."""
    mm = [s.work.matmul_flops / s.seconds for s in samples if s.work.matmul_flops > 0]
    vec = [(s.work.flops - s.work.matmul_flops) / s.seconds for s in samples
           if s.work.matmul_flops == 0 and s.work.flops > 0]
    bw = [s.work.bytes / s.seconds for s in samples if s.work.bytes > 0]
    launch = min(s.seconds for s in samples)
    b = float(np.median(bw)) if bw else 1e10
    return {"launch": launch * 0.8, "matrix": float(np.median(mm)) if mm else 1e10,
            "vector": float(np.median(vec)) if vec else 1e9, "dram": b, "l3": b * 1.5, "l2": b * 2}


@dataclass(frozen=True)
class Fit:
    """Fitted parameters and the errors of the fit (``(predicted - measured) / measured``)."""

    params: dict[str, float]
    errors: dict[str, float]  # per sample, fitted on all samples
    cv_errors: dict[str, float]  # per sample, predicted by a fit that did not see it


def fit_params(samples: Sequence[Sample], m: Machine, start: dict[str, float] | None = None) -> dict[str, float]:
    """Least-squares parameters (log-space, log-time residuals) for ``samples``."""
    from scipy.optimize import least_squares

    if len(samples) < len(PARAMS):
        raise SimError(f"need at least {len(PARAMS)} samples to fit, got {len(samples)}", where="calibrate")
    x0 = _initial(samples) if start is None else start
    measured = np.log([s.seconds for s in samples])

    def residuals(x: np.ndarray) -> np.ndarray:
        p = dict(zip(PARAMS, np.exp(x)))
        pred = predict(samples, p, m)
        return np.log(np.maximum(pred, 1e-12)) - measured

    best = None
    # the max() of the roofline makes the cost surface piecewise: start from a few points
    for scale in (1.0, 0.5, 2.0):
        x = np.log([x0[k] * (scale if k != "launch" else 1.0) for k in PARAMS])
        r = least_squares(residuals, x, method="trf", loss="soft_l1", f_scale=0.1, diff_step=1e-3,
                          max_nfev=200)
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    return dict(zip(PARAMS, (float(v) for v in np.exp(best.x))))


def calibrate_fit(samples: Sequence[Sample], m: Machine, folds: int = 4) -> Fit:
    """Fit on all samples, and ``folds``-fold cross-validated errors (samples dealt round-robin
    by their order, so every fold holds every kind of op)."""
    params = fit_params(samples, m)
    pred = predict(samples, params, m)
    errors = {s.name: float(p / s.seconds - 1) for s, p in zip(samples, pred)}
    cv: dict[str, float] = {}
    folds = max(2, min(folds, len(samples) // len(PARAMS)))
    for k in range(folds):
        train = [s for i, s in enumerate(samples) if i % folds != k]
        test = [s for i, s in enumerate(samples) if i % folds == k]
        if len(train) < len(PARAMS) or not test:
            continue
        pk = fit_params(train, m, start=params)
        for s, p in zip(test, predict(test, pk, m)):
            cv[s.name] = float(p / s.seconds - 1)
    return Fit(params, errors, cv)


def error_table(samples: Sequence[Sample], fit: Fit) -> str:
    """Median and 90th-percentile |error| per op, fitted and cross-validated."""
    by: dict[str, list[Sample]] = {}
    for s in samples:
        by.setdefault(s.op, []).append(s)
    lines = [f"{'op':20s} {'n':>3s} {'fit med':>8s} {'fit p90':>8s} {'cv med':>8s} {'cv p90':>8s}"]

    def stats(vals: list[float]) -> tuple[float, float]:
        a = np.abs(vals) if vals else np.array([math.nan])
        return float(np.median(a)), float(np.percentile(a, 90))

    for op in sorted(by) + ["all"]:
        group = samples if op == "all" else by[op]
        f = stats([fit.errors[s.name] for s in group])
        c = stats([fit.cv_errors[s.name] for s in group if s.name in fit.cv_errors])
        lines.append(f"{op:20s} {len(group):3d} {f[0]:8.1%} {f[1]:8.1%} {c[0]:8.1%} {c[1]:8.1%}")
    return "\n".join(lines)
