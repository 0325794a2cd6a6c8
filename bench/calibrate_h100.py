"""Fit and check the H100 spec against measured microbenchmarks.

Reads ``../shared/calibration/h100_microbench.jsonl`` (or the path given), builds the ``Work``
of each measured kernel (GEMM M,N,K in its dtype; copies as read + write bytes; elementwise ops
with their input/output bytes and FLOPs; reduce_sum), predicts it with ``sim.cost.op_cost`` on
``hwspecs/h100.yaml`` and prints a table and per-kind median / max absolute % error.

``--fit`` first fits the few physical parameters (launch floor, HBM efficiency, tensor/vector
efficiency per dtype, host-link latency and efficiency) and reports the errors with them; the
fitted values are what ``hwspecs/h100.yaml`` holds.

    python bench/calibrate_h100.py [path.jsonl] [--fit | --holdout] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cost import op_cost, transfer_time  # noqa: E402
from sim.dtypes import ITEMSIZE  # noqa: E402
from sim.hw import DeviceSpec, load_hardware, override  # noqa: E402
from sim.ops.work import GemmShape, Work  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "calibration" / "h100_microbench.jsonl"

# (FLOPs, transcendentals) per element, counted as the ops library does: exp/tanh/erf one
# transcendental each (also counted as a FLOP); sigmoid = 1/(1+exp(-x)): neg, exp, add, recip;
# gelu = 0.5 x (1 + erf(x / sqrt 2)): mul, erf, add, mul, mul.
ELEMENTWISE: dict[str, tuple[int, float, float]] = {
    # op: (inputs, flops, transcendentals)
    "add": (2, 1, 0),
    "mul": (2, 1, 0),
    "relu": (1, 1, 0),
    "gelu": (1, 5, 1),
    "sigmoid": (1, 4, 2),
    "tanh": (1, 1, 1),
    "exp": (1, 1, 1),
}


def load_points(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def work_of(p: dict[str, Any]) -> tuple[Work, str] | None:
    """The Work and compute dtype of one measured kernel (None for non-kernel rows)."""
    kind = p["kind"]
    if kind == "gemm":
        m, n, k = p["M"], p["N"], p["K"]
        dt = p["dtype"]
        b = ITEMSIZE["fp32" if dt == "tf32" else dt]
        fl = 2.0 * m * n * k
        return Work(flops=fl, matmul_flops=fl, bytes_read=(m * k + k * n) * b, bytes_written=m * n * b,
                    gemms=(GemmShape(m, n, k),)), dt
    if kind == "copy_d2d":
        half = p["bytes"] / 2
        return Work(bytes_read=half, bytes_written=half), "fp32"
    if kind == "elementwise":
        n = p["numel"]
        b = ITEMSIZE[p["dtype"]]
        ins, fl, tr = ELEMENTWISE[p["op"]]
        w = Work(flops=fl * n, transcendentals=tr * n, bytes_read=ins * n * b, bytes_written=n * b)
        return w, p["dtype"]
    if kind == "reduce_sum":
        n = p["numel"]
        b = ITEMSIZE[p["dtype"]]
        return Work(flops=n - 1, bytes_read=n * b, bytes_written=b), p["dtype"]
    return None


def predict(p: dict[str, Any], dev: DeviceSpec) -> float | None:
    """Predicted seconds for one point (None for rows that are not timings)."""
    if p["kind"] in ("copy_h2d", "copy_d2h"):
        assert dev.host_link is not None
        return transfer_time(dev.host_link, p["bytes"])
    wd = work_of(p)
    if wd is None:
        return None
    return op_cost(wd[0], dev, wd[1]).time_s


def group(p: dict[str, Any]) -> str:
    k = p["kind"]
    return "copy_h2d/d2h" if k in ("copy_h2d", "copy_d2h") else k


def errors(points: Iterable[dict[str, Any]], dev: DeviceSpec) -> list[tuple[dict[str, Any], float, float]]:
    """(point, predicted s, signed % error) for every timed point."""
    out = []
    for p in points:
        t = predict(p, dev)
        if t is None:
            continue
        meas = p["ms"] * 1e-3
        out.append((p, t, 100.0 * (t - meas) / meas))
    return out


def summary(errs: list[tuple[dict[str, Any], float, float]]) -> dict[str, tuple[int, float, float]]:
    """kind -> (count, median |err| %, max |err| %)."""
    by: dict[str, list[float]] = {}
    for p, _, e in errs:
        by.setdefault(group(p), []).append(abs(e))
    return {k: (len(v), statistics.median(v), max(v)) for k, v in by.items()}


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int = 40) -> float:
    g = 0.6180339887
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def _loss(errs: list[tuple[dict[str, Any], float, float]]) -> float:
    """Median |% error|, with the mean as a tie-breaker (fit the typical point, not outliers)."""
    if not errs:
        return 0.0
    v = [abs(e) for _, _, e in errs]
    return statistics.median(v) + 0.1 * statistics.fmean(v)


def fit(points: list[dict[str, Any]], dev: DeviceSpec) -> dict[str, Any]:
    """Fit launch floor + HBM efficiency, then per-dtype matrix/vector efficiencies, then PCIe."""
    stream = [p for p in points if p["kind"] in ("copy_d2d", "elementwise")]
    best: tuple[float, float, float] = (1e9, 0.0, 0.0)
    for launch_us in [x / 10 for x in range(30, 61)]:
        def loss_eff(eff: float, launch_us: float = launch_us) -> float:
            d = override(dev, {"launch": f"{launch_us} us", "memory.hbm.efficiency": eff})
            assert isinstance(d, DeviceSpec)
            return _loss(errors(stream, d))
        eff = _golden(loss_eff, 0.6, 1.0, 18)
        val = loss_eff(eff)
        if val < best[0]:
            best = (val, launch_us, eff)
    _, launch_us, hbm_eff = best
    changes: dict[str, Any] = {"launch": f"{launch_us:.1f} us", "memory.hbm.efficiency": round(hbm_eff, 3)}
    dev = override(dev, changes)  # type: ignore[assignment]
    for dt, unit in (("tf32", "tensor"), ("bf16", "tensor"), ("fp16", "tensor"), ("fp32", "vector")):
        pts = [p for p in points if p["kind"] == "gemm" and p["dtype"] == dt]

        def loss_dt(eff: float, dt: str = dt, unit: str = unit, pts: list = pts,
                    base: DeviceSpec = dev) -> float:
            d = override(base, {f"units.{unit}.efficiency.{dt}": eff})
            assert isinstance(d, DeviceSpec)
            return _loss(errors(pts, d))
        eff = round(_golden(loss_dt, 0.3, 1.0), 3)
        changes[f"units.{unit}.efficiency.{dt}"] = eff
        dev = override(dev, {f"units.{unit}.efficiency.{dt}": eff})  # type: ignore[assignment]
    # Host link: least squares of time = latency + bytes / (bw x eff) over the two larger sizes.
    pc = [p for p in points if p["kind"] in ("copy_h2d", "copy_d2h")]
    xs = [p["bytes"] for p in pc]
    ys = [p["ms"] * 1e-3 for p in pc]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    lat = max(my - slope * mx, 0.0)
    assert dev.host_link is not None
    changes["host_link.efficiency"] = round(1.0 / slope / dev.host_link.bandwidth_Bps, 3)
    changes["host_link.latency"] = f"{lat * 1e6:.1f} us"
    return changes


def _size(p: dict[str, Any]) -> float:
    return float(p.get("M") or p.get("numel") or p.get("bytes") or 0)


def split_alternate(points: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test): within each kind/dtype/op series, sizes alternate between the two."""
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for p in points:
        if p["kind"] == "device":
            continue
        series.setdefault((p["kind"], str(p.get("dtype")), str(p.get("op"))), []).append(p)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for pts in series.values():
        for i, p in enumerate(sorted(pts, key=_size)):
            (train if i % 2 == 0 else test).append(p)
    return train, test


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT), help="measurements (.jsonl)")
    ap.add_argument("--fit", action="store_true", help="fit the parameters first and report with them")
    ap.add_argument("--quiet", action="store_true", help="summary only")
    ap.add_argument("--holdout", action="store_true",
                    help="fit on every other size of each kind, report errors on the sizes left out")
    args = ap.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        print(f"no measurements at {path}", file=sys.stderr)
        return 2
    points = load_points(path)
    dev = load_hardware("h100")
    assert isinstance(dev, DeviceSpec)
    if args.holdout:
        train, test = split_alternate(points)
        changes = fit(train, dev)
        dev = override(dev, changes)  # type: ignore[assignment]
        print(f"fitted on {len(train)} points; errors on the {len(test)} held-out points:")
        points = test
    elif args.fit:
        changes = fit(points, dev)
        print("fitted values (put these in hwspecs/h100.yaml):")
        for k, v in changes.items():
            print(f"  {k}: {v}")
        dev = override(dev, changes)  # type: ignore[assignment]
    errs = errors(points, dev)
    if not args.quiet:
        print(f"{'kind':12s} {'what':34s} {'measured':>11s} {'predicted':>11s} {'err%':>7s}")
        for p, t, e in errs:
            what = {
                "gemm": lambda p: f"{p['dtype']} {p['M']}x{p['N']}x{p['K']}",
                "elementwise": lambda p: f"{p['op']} {p['dtype']} n={p['numel']}",
                "reduce_sum": lambda p: f"{p['dtype']} n={p['numel']}",
            }.get(p["kind"], lambda p: f"{p['bytes']} B")(p)
            print(f"{p['kind']:12s} {what:34s} {p['ms'] * 1e3:9.2f}us {t * 1e6:9.2f}us {e:+7.1f}")
    print(f"\n{'kind':14s} {'n':>3s} {'median|err|%':>13s} {'max|err|%':>10s}")
    for k, (n, med, mx) in summary(errs).items():
        print(f"{k:14s} {n:3d} {med:13.1f} {mx:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
