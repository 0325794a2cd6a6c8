"""Fitting a cost model's physical parameters to measured kernel times, and checking the fit.

The API is small on purpose, so any calibration (the bundled H100 fit in
``bench/calibrate_h100.py``, a user's own machine) uses the same code:

* a ``Param`` names one spec field by its dotted path (as ``sim.hw.override`` takes it) with
  its starting value and physical bounds;
* a ``Point`` is one measured kernel: its time, the ``kind`` it is reported under, the
  ``family`` it is held out with in cross-validation (e.g. every M of one weight shape), and
  whatever the predictor needs (``data``);
* a predictor ``predict(values, points) -> seconds`` (a NumPy array) evaluates the model with
  the parameter values given (a mapping path -> float);
* ``fit`` runs ``scipy.optimize.least_squares`` on the log ratio ``log(predicted / measured)``
  (a relative error, symmetric in over- and under-prediction) with a soft-L1 loss, so one
  throttled or noisy point cannot drag a parameter; ``Stage`` lets a fit go block by block
  (launch floor and bandwidth on streaming kernels first, then each GEMM pipeline on its own
  GEMMs), which keeps every block small and well conditioned;
* ``cross_validate`` refits on k - 1 folds of families and predicts the held-out fold, so the
  errors it reports are for shapes the fit never saw; ``summarize`` gives per-kind
  median / 90th-percentile |error|.

>>> import numpy as np
>>> pts = [Point(2.0 + 0.5 * x, "line", str(x), x) for x in range(6)]
>>> def predict(v, ps):
...     return np.array([v["a"] + v["b"] * p.data for p in ps])
>>> vals = fit(predict, [Stage((Param("a", 1.0, 0.0, 10.0), Param("b", 1.0, 0.0, 10.0)))], pts)
>>> round(vals["a"], 3), round(vals["b"], 3)
(2.0, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares


@dataclass(frozen=True)
class Param:
    """One fitted spec field: dotted ``path``, starting value ``init``, bounds ``[lo, hi]``."""

    path: str
    init: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Point:
    """One measured kernel: ``measured_s`` seconds, reported under ``kind``, held out with its
    ``family`` in cross-validation; ``data`` is for the predictor."""

    measured_s: float
    kind: str
    family: str
    data: Any = None


@dataclass(frozen=True)
class Stage:
    """A block of parameters fitted together on the points ``select`` accepts (all if None)."""

    params: tuple[Param, ...]
    select: Callable[[Point], bool] | None = None
    name: str = ""


Predict = Callable[[Mapping[str, float], Sequence[Point]], np.ndarray]


def log_residuals(predicted: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """``log(predicted / measured)`` per point (about the relative error for small errors)."""
    meas = np.array([p.measured_s for p in points], dtype=float)
    return np.log(np.maximum(np.asarray(predicted, dtype=float), 1e-15) / meas)


def fit(predict: Predict, stages: Sequence[Stage], points: Sequence[Point],
        fixed: Mapping[str, float] | None = None, *, f_scale: float = 0.1) -> dict[str, float]:
    """Fitted values of every stage's parameters, stage after stage (earlier ones held).

    ``fixed`` values are passed to the predictor unchanged. A stage with no selected points
    keeps its starting values."""
    values: dict[str, float] = dict(fixed or {})
    for st in stages:
        pts = [p for p in points if st.select is None or st.select(p)]
        x0 = np.array([min(max(p.init, p.lo), p.hi) for p in st.params])
        if not pts:
            values.update({p.path: float(v) for p, v in zip(st.params, x0)})
            continue

        def resid(x: np.ndarray, st: Stage = st, pts: list[Point] = pts) -> np.ndarray:
            v = dict(values)
            v.update({p.path: float(xi) for p, xi in zip(st.params, x)})
            return log_residuals(predict(v, pts), pts)

        res = least_squares(resid, x0, bounds=([p.lo for p in st.params], [p.hi for p in st.params]),
                            loss="soft_l1", f_scale=f_scale, diff_step=1e-2, x_scale="jac",
                            max_nfev=60 * (len(x0) + 1))
        values.update({p.path: float(xi) for p, xi in zip(st.params, res.x)})
    return values


def folds_by_family(points: Sequence[Point], k: int) -> list[int]:
    """Fold index (0..k-1) of each point: whole families go to one fold, families dealt in a
    deterministic round robin in order of first appearance within each kind, so every fold
    holds some families of every kind that has at least k of them."""
    fold_of: dict[tuple[str, str], int] = {}
    count: dict[str, int] = {}
    out = []
    for p in points:
        key = (p.kind, p.family)
        if key not in fold_of:
            n = count.get(p.kind, 0)
            fold_of[key] = n % k
            count[p.kind] = n + 1
        out.append(fold_of[key])
    return out


def cross_validate(predict: Predict, stages: Sequence[Stage], points: Sequence[Point], k: int = 5,
                   fixed: Mapping[str, float] | None = None) -> np.ndarray:
    """Out-of-fold predicted seconds: each fold predicted by a fit to the other k - 1."""
    fold = folds_by_family(points, k)
    pred = np.zeros(len(points))
    for f in range(k):
        train = [p for p, g in zip(points, fold) if g != f]
        test_idx = [i for i, g in enumerate(fold) if g == f]
        if not test_idx:
            continue
        values = fit(predict, stages, train, fixed)
        pred[test_idx] = predict(values, [points[i] for i in test_idx])
    return pred


@dataclass(frozen=True)
class Errors:
    """|relative error| statistics of one kind, in percent; ``bias`` is the median signed error."""

    n: int
    median: float
    p90: float
    worst: float
    bias: float
    signed: tuple[float, ...] = field(default=(), repr=False)


def percent_errors(predicted: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """Signed ``100 * (predicted / measured - 1)`` per point."""
    meas = np.array([p.measured_s for p in points], dtype=float)
    return 100.0 * (np.asarray(predicted, dtype=float) / meas - 1.0)


def _p90(a: np.ndarray) -> float:
    return float(np.percentile(a, 90, method="linear")) if len(a) else math.nan


def summarize(predicted: np.ndarray, points: Sequence[Point]) -> dict[str, Errors]:
    """kind -> Errors, plus ``"all"`` over every point."""
    err = percent_errors(predicted, points)
    groups: dict[str, list[float]] = {}
    for p, e in zip(points, err):
        groups.setdefault(p.kind, []).append(float(e))
    groups["all"] = [float(e) for e in err]
    out = {}
    for kind, es in groups.items():
        a = np.abs(np.array(es))
        out[kind] = Errors(len(es), float(np.median(a)), _p90(a), float(a.max()),
                           float(np.median(es)), tuple(es))
    return out


def format_errors(table: Mapping[str, Errors], title: str = "") -> str:
    """A per-kind table: n, median |err| %, 90th percentile |err| %, worst, median signed."""
    lines = [title] if title else []
    lines.append(f"{'kind':<16} {'n':>4} {'median':>8} {'p90':>8} {'worst':>8} {'bias':>8}")
    for kind, e in table.items():
        lines.append(f"{kind:<16} {e.n:4d} {e.median:7.1f}% {e.p90:7.1f}% {e.worst:7.0f}% {e.bias:+7.1f}%")
    return "\n".join(lines)
