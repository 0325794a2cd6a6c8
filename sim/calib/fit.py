"""Fit a CPU spec to measured microbenchmarks, with k-fold cross-validation.

The model is the simulator's own CPU cost model (``sim.cost.op_cost`` on a ``kind: cpu``
spec): ``time = launch + max(matmul FLOPs / R_matrix + vector FLOPs / R_vector,
bytes / B_level)``, where the level is the innermost cache that holds the op's working set
(``sim.cost.cpu.streaming_level``) and convolution GEMMs run at ``kernel_efficiency.conv`` of
the matrix rate (the executor's convolution is im2col: it copies the column buffer, twice
the input's size per kernel tap, before its GEMM). The free parameters are the per-op
overhead ``launch``, the two rates, the convolution efficiency and one bandwidth per memory
level; cache capacities are read from the machine (``machine_info``), not fitted.

The fitting is ``sim.cost.fit`` (scipy's least squares on log(predicted / measured), soft-L1
loss), in stages that keep each block well conditioned: the overhead, vector rate and
bandwidths on the non-matrix kernels, then the matrix rate on GEMMs, then the convolution
efficiency on convolutions. Every prediction builds the spec and calls ``op_cost``, so the
written spec predicts exactly what the fit saw. ``cross_validate`` refits with each kernel
held out in turn by folds and reports the errors on kernels the fit never saw.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.calib.bench import Sample
from sim.cost.fit import Errors, Param, Point, Stage, cross_validate, fit, summarize
from sim.errors import SimError
from sim.hw.spec import DeviceSpec

PARAMS = ("launch", "matrix", "conv", "vector", "dram", "l3", "l2")
MATRIX_OPS = frozenset({"Gemm", "MatMul", "Attention"})


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


def _gflops(rates: Mapping[str, float]) -> dict[str, str]:
    return {k: f"{v / 1e9:.4g} GFLOP/s" for k, v in rates.items()}


def spec_dict(p: Mapping[str, float], m: Machine, name: str = "this-cpu") -> dict[str, Any]:
    """The spec (as the YAML loader reads it) for parameters ``p`` on machine ``m``."""
    rates = {"fp32": p["vector"], "fp64": p["vector"], "fp16": p["vector"], "bf16": p["vector"],
             "int64": p["vector"], "int32": p["vector"]}
    matrix = {"fp32": p["matrix"], "fp64": p["matrix"], "fp16": p["matrix"], "bf16": p["matrix"]}
    return {
        "version": 1, "name": name, "kind": "cpu",
        "description": f"{m.name}: the NumPy executor, {m.threads} BLAS thread(s), calibrated",
        "launch": f"{p['launch'] * 1e6:.4g} us",
        "memory": [
            {"name": "dram", "capacity": f"{m.memory_bytes / 1024**3:.4g} GiB",
             "bandwidth": f"{p['dram'] / 1e9:.4g} GB/s"},
            {"name": "l3", "capacity": f"{m.l3_bytes / 1024**2:.4g} MiB",
             "bandwidth": f"{p['l3'] / 1e9:.4g} GB/s"},
            {"name": "l2", "capacity": f"{m.l2_bytes * m.cores / 1024**2:.4g} MiB",
             "bandwidth": f"{p['l2'] / 1e9:.4g} GB/s"},
        ],
        "units": [
            {"name": "blas", "matrix": True, "peak": _gflops(matrix)},
            {"name": "numpy", "matrix": False, "peak": _gflops(rates)},
        ],
        "arch": {"cores": m.cores, "clock": f"{m.clock_hz / 1e9:.4g} GHz",
                 "kernel_efficiency": {"conv": round(float(p["conv"]), 4)}},
    }


def predict(samples: Sequence[Sample], p: Mapping[str, float], m: Machine) -> np.ndarray:
    """Seconds the spec of ``p`` gives each sample's work (``sim.cost.op_cost``)."""
    from sim.cost import op_cost
    from sim.hw.loader import build

    spec = build(spec_dict(p, m), "calibration")
    assert isinstance(spec, DeviceSpec)
    return np.array([op_cost(s.work, spec, "fp32").time_s for s in samples])


def _stages(samples: Sequence[Sample]) -> list[Stage]:
    """Starting values from the samples themselves (median achieved rates), physical bounds."""
    mm = [s.work.matmul_flops / s.seconds for s in samples if s.op in MATRIX_OPS]
    vec = [s.work.flops / s.seconds for s in samples if s.work.matmul_flops == 0 and s.work.flops > 0]
    bw = [s.work.bytes / s.seconds for s in samples if s.work.bytes > 0]
    launch = min(s.seconds for s in samples)
    b = float(np.median(bw)) if bw else 1e10
    r_mm = float(np.median(mm)) if mm else 1e10
    r_vec = float(np.median(vec)) if vec else 1e9

    def kind(*ops: str, exclude: bool = False) -> Any:
        return lambda p: (p.kind in ops) != exclude

    return [
        Stage((Param("launch", 0.8 * launch, 1e-8, 1e-2), Param("vector", r_vec, 1e6, 1e13),
               Param("dram", b, 1e9, 1e13), Param("l3", 1.5 * b, 1e8, 1e13), Param("l2", 2 * b, 1e8, 1e14)),
              kind(*MATRIX_OPS, "Conv", exclude=True), "streaming"),
        Stage((Param("matrix", r_mm, 1e7, 1e14),), kind(*MATRIX_OPS), "gemm"),
        Stage((Param("conv", 0.7, 0.01, 1.0),), kind("Conv"), "conv"),
    ]


def _points(samples: Sequence[Sample]) -> list[Point]:
    return [Point(s.seconds, s.op, s.name, s) for s in samples]


@dataclass(frozen=True)
class Fit:
    """Fitted parameters and the signed errors of the fit, in percent
    (``100 * (predicted / measured - 1)``), per op and overall."""

    params: dict[str, float]
    errors: dict[str, Errors]  # fitted on all samples
    cv_errors: dict[str, Errors]  # each sample predicted by a fit that did not see it
    predicted: dict[str, float]  # seconds per sample name (fit on all)


def calibrate_fit(samples: Sequence[Sample], m: Machine, folds: int = 4) -> Fit:
    """Fit on all samples, and ``folds``-fold cross-validated errors."""
    if len(samples) < len(PARAMS):
        raise SimError(f"need at least {len(PARAMS)} samples to fit, got {len(samples)}", where="calibrate")
    pts = _points(samples)
    stages = _stages(samples)

    def pred(values: Mapping[str, float], ps: Sequence[Point]) -> np.ndarray:
        return predict([p.data for p in ps], values, m)

    start = {q.path: q.init for st in stages for q in st.params}  # later stages' values meanwhile
    params = fit(pred, stages, pts, fixed=start)
    fitted = pred(params, pts)
    cv = cross_validate(pred, stages, pts, k=folds, fixed=start)
    return Fit(params, summarize(fitted, pts), summarize(cv, pts),
               {s.name: float(t) for s, t in zip(samples, fitted)})


def spec_yaml(fit_: Fit, m: Machine, n_samples: int, name: str = "this-cpu", when: str = "") -> str:
    """The fitted spec as YAML text, every number with where it came from."""
    raw = spec_dict(fit_.params, m, name)
    src = f"fitted to {n_samples} microbenchmarks{' on ' + when if when else ''}"
    cv = fit_.cv_errors.get("all")
    cv_note = f"; cross-validated median |error| {cv.median:.0f}%, p90 {cv.p90:.0f}%" if cv else ""
    mem = raw["memory"]
    units = raw["units"]
    lines = [
        f"# {raw['description']}.",
        f"# Written by `sim calibrate`: {src} (least squares, sim.cost.fit){cv_note}.",
        "# Rates and bandwidths are what the executor's NumPy kernels achieve on this machine,",
        "# not the hardware's peaks; `sim validate WORKLOAD --hw THIS_FILE` checks them.",
        "version: 1",
        f"name: {name}",
        "kind: cpu",
        f"description: \"{raw['description']}\"",
        f"launch: {raw['launch']}    # {src}: per-op overhead (Python dispatch, NumPy call)",
        "memory:",
    ]
    cap_src = {"dram": "/proc/meminfo MemTotal", "l3": "sysfs cache index level 3",
               "l2": "sysfs cache index level 2 x cores"}
    for lv in mem:
        lines += [f"  - name: {lv['name']}",
                  f"    capacity: {lv['capacity']}    # {cap_src[lv['name']]}",
                  f"    bandwidth: {lv['bandwidth']}    # {src}"]
    lines.append("units:")
    for u in units:
        lines += [f"  - name: {u['name']}", f"    matrix: {'true' if u['matrix'] else 'false'}",
                  f"    peak:    # {src} (fp32; other dtypes run in fp32 or fp64 in the executor)"]
        lines += [f"      {k}: {v}" for k, v in u["peak"].items()]
    arch = raw["arch"]
    lines += ["arch:",
              f"  cores: {arch['cores']}    # os.cpu_count()",
              f"  clock: {arch['clock']}    # /proc/cpuinfo cpu MHz (descriptive)",
              "  kernel_efficiency:",
              f"    conv: {arch['kernel_efficiency']['conv']}    # {src}: im2col convolution / GEMM rate"]
    return "\n".join(lines) + "\n"
