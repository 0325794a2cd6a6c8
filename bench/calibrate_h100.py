"""Fit the H100 spec's kernel-model parameters to measured kernels, cross-validate, write them.

Measurements (``../shared/calibration``, see its README): ``h100_microbench.jsonl`` (square
GEMMs, copies, elementwise ops, sums, host copies) and ``h100_kernels.jsonl`` (rectangular and
skinny GEMMs in fp32/tf32/bf16/fp16, batched matmuls, ResNet-50 convolutions, softmax, layer
norm, causal SDPA). Each measured kernel becomes the one-op graph dlsim would simulate for it
(``MatMul``, ``Conv``, ``Softmax``, ``LayerNormalization``, ``Attention``, elementwise ops,
``ReduceSum``); its ``Work`` comes from the op registry exactly as the engine takes it, and it
is timed with ``sim.cost.op_cost``, the function ``sim.simulate`` calls for it (a test checks
the two agree).

The fit (``sim.cost.fit``: ``scipy.optimize.least_squares`` on log time ratios, soft-L1 loss)
runs in stages, each a few physical parameters on the kernels they govern:

1. launch floor and HBM efficiency: copies and elementwise ops;
2. row-wise kernels: cycles per element, per block row, dependent HBM round trips: softmax, norm;
3. tensor-core GEMMs: TF32/bf16/fp16 efficiency, per-tile overhead cycles, operand elements in
   flight per SM: GEMM, bmm and convolution in tf32/bf16/fp16;
4. CUDA-core GEMMs: fp32 efficiency, per-tile overhead, skinny-tile and GEMV operands in flight,
   GEMV round trips: fp32 GEMM, bmm, convolution;
5. the attention kernel's efficiency and per-step cycles: causal SDPA;
6. reductions: HBM latencies per dependent load step of a thread: sums;
7. host link: least squares of ``latency + bytes / bandwidth`` on the pinned copies.

``--cv K`` refits on K - 1 folds and predicts the fold left out, whole shape families at a time
(one GEMM weight shape at every M; one convolution layer at both batches; one row length), and
prints per-kind median / 90th-percentile |error| in and out of sample.

    python bench/calibrate_h100.py             # fit, print the fitted values and in-sample errors
    python bench/calibrate_h100.py --cv 5      # ... and 5-fold cross-validated errors
    python bench/calibrate_h100.py --write     # ... and write the fitted values into hwspecs/h100.yaml
    python bench/calibrate_h100.py --check     # errors of the spec as it is (no fit)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cost import op_cost, transfer_time  # noqa: E402
from sim.cost.fit import (  # noqa: E402
    Param,
    Point,
    Stage,
    cross_validate,
    fit,
    format_errors,
    summarize,
)
from sim.engine.scheduler import compute_dtype  # noqa: E402
from sim.graph import Graph, TensorSpec  # noqa: E402
from sim.hw import DeviceSpec, load_hardware, override  # noqa: E402
from sim.ops.work import Work  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the measurements live beside the clone (``../shared``; a git worktree sits one level deeper);
# a copy in bench/data/calibration serves any other clone
_CANDIDATES = (ROOT / ".." / "shared" / "calibration", ROOT / ".." / ".." / "shared" / "calibration",
               ROOT / "bench" / "data" / "calibration")
DATA = next(d for d in _CANDIDATES if d.exists())
SPEC = ROOT / "hwspecs" / "h100.yaml"
# Specs that take every fitted H100 value: the H200 is the same GH100 die at the same clocks
# with the same libraries (only its HBM3e differs, and the HBM efficiency carries over).
SAME_DIE = (ROOT / "hwspecs" / "h200.yaml",)
# Specs that take the cycle- and dtype-level kernel-model values (``arch.*``) as estimates: the
# same CUDA libraries a generation earlier, not measured (the attention kernel differs).
ARCH_ESTIMATES = (ROOT / "hwspecs" / "a100.yaml",)


def estimated_paths(values: Mapping[str, float]) -> dict[str, float]:
    """The fitted values an ARCH_ESTIMATES spec takes."""
    return {k: v for k, v in values.items() if k.startswith("arch.") and not k.endswith(".cudnn")}
FILES = ("h100_microbench.jsonl", "h100_kernels.jsonl")

ELEMENTWISE_OPS = {"add": ("Add", 2), "mul": ("Mul", 2), "relu": ("Relu", 1), "gelu": ("Gelu", 1),
                   "sigmoid": ("Sigmoid", 1), "tanh": ("Tanh", 1), "exp": ("Exp", 1)}

# ----------------------------------------------------------------------------- points


def load_points(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every timed record of the given .jsonl files (device rows dropped)."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            out += [dict(r, file=path.name) for r in (json.loads(line) for line in f if line.strip())
                    if r["kind"] != "device"]
    return out


def one_op(op: str, inputs: list[tuple[tuple[int, ...], str]], attrs: dict[str, Any],
           outputs: list[str] | None = None) -> Graph:
    """A graph of one ``op`` node named "node" on fresh inputs (all its named outputs kept)."""
    g = Graph(f"one-{op}")
    names = [g.add_input(f"x{i}", TensorSpec(shape, dt)) for i, (shape, dt) in enumerate(inputs)]
    outs = g.add_node(op, names, outputs, attrs, name="node")
    g.set_outputs([o for o in outs if o])
    return g.verify()


def graph_of(r: dict[str, Any]) -> tuple[Graph, str] | None:
    """The one-op graph dlsim simulates for a measured kernel, and its compute dtype (None for
    copies, which are no graph op)."""
    kind = r["kind"]
    dt = r.get("dtype", "fp32")
    st = "fp32" if dt == "tf32" else dt
    if kind == "gemm":
        g = one_op("MatMul", [((r["M"], r["K"]), st), ((r["K"], r["N"]), st)], {})
    elif kind == "bmm":
        g = one_op("MatMul", [((r["B"], r["M"], r["K"]), st), ((r["B"], r["K"], r["N"]), st)], {})
    elif kind == "conv2d":
        g = one_op("Conv", [((r["N"], r["C"], r["H"], r["W"]), st), ((r["K"], r["C"], r["R"], r["S"]), st)],
                   {"strides": [r["stride"]] * 2, "pads": [r["pad"]] * 4})
    elif kind == "softmax":
        g = one_op("Softmax", [((r["rows"], r["cols"]), st)], {"axis": -1})
    elif kind == "layernorm":
        n = r["cols"]
        g = one_op("LayerNormalization", [((r["rows"], n), st), ((n,), st), ((n,), st)],
                   {"axis": -1, "epsilon": 1e-5}, ["y", "", ""])
    elif kind == "sdpa_causal":
        q = ((r["B"], r["H"], r["S"], r["D"]), st)
        g = one_op("Attention", [q, q, q], {"is_causal": 1}, ["y", "", "", ""])
    elif kind == "elementwise":
        op, n_in = ELEMENTWISE_OPS[r["op"]]
        g = one_op(op, [((r["numel"],), st)] * n_in, {})
    elif kind == "reduce_sum":
        g = one_op("ReduceSum", [((r["numel"],), st)], {"keepdims": 0})
    else:
        return None
    return g, dt if dt == "tf32" else compute_dtype(g, g.nodes["node"])


def kind_of(r: dict[str, Any]) -> str:
    """The reporting group of a record."""
    k = r["kind"]
    if k in ("gemm", "conv2d"):
        return f"{k} {r['dtype']}"
    if k in ("copy_h2d", "copy_d2h"):
        return "copy_h2d/d2h"
    return k


def family_of(r: dict[str, Any]) -> str:
    """The shape family a record is held out with: one GEMM weight shape at every M, one conv
    layer at both batch sizes, one row length, one attention head size."""
    k = r["kind"]
    if k == "gemm":
        return f"{r['dtype']} {r['N']}x{r['K']}" if "N" in r else ""
    if k == "bmm":
        return f"{r['dtype']} {r['M']}x{r['N']}x{r['K']}"
    if k == "conv2d":
        return f"{r['dtype']} {r['C']}-{r['K']} {r['H']} {r['R']}"
    if k in ("softmax", "layernorm"):
        return f"{r['dtype']} {r['cols']}"
    if k == "sdpa_causal":
        return f"d{r['D']}"
    if k == "elementwise":
        return f"{r['op']} {r['dtype']}"
    return f"{r.get('dtype', '')} {r.get('numel', r.get('bytes', ''))}"


def to_point(r: dict[str, Any]) -> Point:
    """A fit Point whose data is (record, Work or None, compute dtype)."""
    gd = graph_of(r)
    if r["kind"] == "copy_d2d":
        half = r["bytes"] / 2
        data: tuple[Any, Work | None, str] = (r, Work(bytes_read=half, bytes_written=half), "fp32")
    elif gd is None:
        data = (r, None, "")
    else:
        g, dt = gd
        data = (r, g.work("node"), dt)
    return Point(r["ms"] * 1e-3, kind_of(r), family_of(r), data)


def points(paths: Sequence[Path] | None = None) -> list[Point]:
    """Every measured kernel as a fit Point (host copies included)."""
    return [to_point(r) for r in load_points(paths or [DATA / f for f in FILES])]


# ----------------------------------------------------------------------------- model


def spec_changes(values: Mapping[str, float]) -> dict[str, Any]:
    """``override`` changes for fitted values (times in seconds carry their unit)."""
    return {k: (f"{v!r} s" if k in ("launch", "host_link.latency") else v) for k, v in values.items()}


def predict_on(dev: DeviceSpec, pts: Sequence[Point]) -> np.ndarray:
    """Predicted seconds of each point on ``dev``."""
    out = []
    for p in pts:
        r, work, dt = p.data
        if work is None:
            assert dev.host_link is not None
            out.append(transfer_time(dev.host_link, r["bytes"]))
        else:
            out.append(op_cost(work, dev, dt).time_s)
    return np.array(out)


def make_predict(base: DeviceSpec):
    """``predict(values, points)`` on ``base`` with the values as spec overrides."""
    def predict(values: Mapping[str, float], pts: Sequence[Point]) -> np.ndarray:
        dev = override(base, spec_changes(values)) if values else base
        assert isinstance(dev, DeviceSpec)
        return predict_on(dev, pts)
    return predict


STREAM = ("copy_d2d", "elementwise")
ROWWISE = ("softmax", "layernorm")
GEMMS = ("gemm", "bmm", "conv2d")


def _kind(p: Point) -> str:
    return str(p.data[0]["kind"])


def _dtype(p: Point) -> str:
    return str(p.data[0].get("dtype", ""))


STAGES = (
    Stage((Param("launch", 5e-6, 1e-6, 1e-5), Param("memory.hbm.efficiency", 0.9, 0.5, 1.0)),
          lambda p: _kind(p) in STREAM, "stream"),
    Stage((Param("arch.rowwise.cycles_per_element", 0.5, 0.0, 10.0),
           Param("arch.rowwise.cycles_per_row", 300.0, 0.0, 5000.0),
           Param("arch.rowwise.round_trips", 3.0, 0.0, 10.0)),
          lambda p: _kind(p) in ROWWISE, "row-wise"),
    Stage((Param("units.tensor.efficiency.tf32", 0.8, 0.3, 1.0),
           Param("units.tensor.efficiency.bf16", 0.8, 0.3, 1.0),
           Param("units.tensor.efficiency.fp16", 0.8, 0.3, 1.0),
           Param("arch.tile_overhead.tf32", 2000.0, 0.0, 20000.0),
           Param("arch.tile_overhead.bf16", 1000.0, 0.0, 20000.0),
           Param("arch.tile_overhead.fp16", 1000.0, 0.0, 20000.0),
           Param("arch.stream_inflight.tf32", 16000.0, 1000.0, 200000.0),
           Param("arch.stream_inflight.bf16", 16000.0, 1000.0, 200000.0),
           Param("arch.stream_inflight.fp16", 16000.0, 1000.0, 200000.0)),
          lambda p: _kind(p) in GEMMS and _dtype(p) != "fp32", "tensor cores"),
    Stage((Param("units.vector.efficiency.fp32", 0.8, 0.3, 1.0),
           Param("arch.tile_overhead.fp32", 4000.0, 0.0, 20000.0),
           Param("arch.stream_inflight.fp32", 16000.0, 1000.0, 200000.0),
           Param("arch.gemv_inflight.fp32", 16000.0, 1000.0, 200000.0),
           Param("arch.gemv_round_trips.fp32", 1.0, 0.0, 10.0),
           Param("arch.kernel_efficiency.conv_simt", 0.8, 0.3, 1.0)),
          lambda p: _kind(p) in GEMMS and _dtype(p) == "fp32", "CUDA cores"),
    Stage((Param("arch.kernel_efficiency.cudnn", 0.9, 0.3, 1.0),
           Param("arch.attention_block_cycles.cudnn", 500.0, 0.0, 5000.0)),
          lambda p: _kind(p) == "sdpa_causal", "attention"),
    Stage((Param("arch.reduction.step_round_trips", 1.0, 0.05, 5.0),),
          lambda p: _kind(p) == "reduce_sum", "reductions"),
)

EIGHT_BIT = ("fp8", "int8")  # tensor-core dtypes the spec estimates from the 16-bit fit

# Printed with these many significant digits and written to the spec so.
DIGITS = 3


def host_link_fit(pts: Sequence[Point], dev: DeviceSpec) -> dict[str, float]:
    """Least squares of ``time = latency + bytes / (bandwidth x efficiency)`` on host copies."""
    pc = [p for p in pts if p.kind == "copy_h2d/d2h"]
    xs = [p.data[0]["bytes"] for p in pc]
    ys = [p.measured_s for p in pc]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    assert dev.host_link is not None
    return {"host_link.efficiency": 1.0 / slope / dev.host_link.bandwidth_Bps,
            "host_link.latency": max(my - slope * mx, 0.0)}


def rounded(values: Mapping[str, float]) -> dict[str, float]:
    """Values at DIGITS significant digits (what the spec holds)."""
    return {k: float(f"{v:.{DIGITS}g}") for k, v in values.items()}


def fit_h100(pts: Sequence[Point], base: DeviceSpec | None = None) -> dict[str, float]:
    """Every fitted spec value (rounded as the spec holds them) from the measured points."""
    dev = base or load_hardware(SPEC)
    assert isinstance(dev, DeviceSpec)
    values = fit(make_predict(dev), STAGES, pts)
    values.update(host_link_fit(pts, dev))
    # dtypes without measurements of their own: the fitted dtypes' mean (tensor), fp32 (vector)
    values["units.tensor.efficiency.default"] = statistics.fmean(
        values[f"units.tensor.efficiency.{d}"] for d in ("tf32", "bf16", "fp16"))
    values["units.vector.efficiency.default"] = values["units.vector.efficiency.fp32"]
    # the 8-bit tensor-core dtypes (nothing measured) run the 16-bit kernels' pipeline: the same
    # cycles per output tile, the same bytes in flight in a skinny kernel (twice the elements)
    for d in EIGHT_BIT:
        values[f"arch.tile_overhead.{d}"] = statistics.fmean(
            values[f"arch.tile_overhead.{h}"] for h in ("bf16", "fp16"))
        values[f"arch.stream_inflight.{d}"] = 2.0 * statistics.fmean(
            values[f"arch.stream_inflight.{h}"] for h in ("bf16", "fp16"))
    return rounded(values)


# ----------------------------------------------------------------------------- spec file


def _locate(lines: list[str], path: str) -> int:
    """Index of the YAML line that holds dotted ``path`` (list items by their ``name:``)."""
    want = path.split(".")
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        body = line.split("#", 1)[0].rstrip()
        m = re.match(r"^(\s*)(- )?(?:name:\s*(\S+)|([\w.-]+):)", body)
        if not m or not body.strip():
            continue
        indent = len(m.group(1))
        if m.group(2):  # a list item: "- name: hbm" names the item
            while stack and stack[-1][0] >= indent:
                stack.pop()
            if m.group(3):
                stack.append((indent, m.group(3)))
            continue
        key = m.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if [k for _, k in stack] + [key] == want:
            return i
        stack.append((indent, key))
    raise KeyError(path)


def _format(path: str, v: float) -> str:
    if path in ("launch", "host_link.latency"):
        return f"{float(f'{v * 1e6:.{DIGITS}g}'):g} us"
    return f"{float(f'{v:.{DIGITS}g}'):g}"


def write_spec(values: Mapping[str, float], spec: Path = SPEC) -> None:
    """Replace each fitted value in the spec YAML in place, keeping every comment."""
    lines = spec.read_text(encoding="utf-8").split("\n")
    for path, v in values.items():
        i = _locate(lines, path)
        key = re.escape(path.split(".")[-1])
        m = re.match(rf"^(\s*{key}:\s*)([^#]*?)(\s*)(#.*)?$", lines[i])
        assert m is not None, lines[i]
        val = _format(path, v)
        comment = m.group(4) or ""
        head = m.group(1) + val
        col = len(lines[i]) - len(comment)  # keep the comment where it was
        lines[i] = head + " " * max(1, col - len(head)) + comment if comment else head
    spec.write_text("\n".join(lines), encoding="utf-8")


def spec_values(dev: DeviceSpec, paths: Sequence[str]) -> dict[str, float]:
    """The spec's current value of each fitted path (SI)."""
    out = {}
    for path in paths:
        if path == "launch":
            out[path] = dev.launch_s
        elif path == "memory.hbm.efficiency":
            out[path] = dev.main_memory.efficiency
        elif path.startswith("units."):
            _, unit, _, dt = path.split(".")
            out[path] = dev.unit(unit).efficiency[dt]
        elif path.startswith("host_link."):
            assert dev.host_link is not None
            out[path] = dev.host_link.efficiency if path.endswith("efficiency") else dev.host_link.latency_s
        else:
            node: Any = dev.arch
            for part in path.split(".")[1:]:
                node = node[part] if isinstance(node, dict) else getattr(node, part)
            out[path] = float(node)
    return out


# ----------------------------------------------------------------------------- report


SHOWN_ELSEWHERE = ("kind", "dtype", "ms", "op", "file")


def table(pts: Sequence[Point], pred: np.ndarray, title: str) -> str:
    """Per-kind errors, then the same over the kernels of h100_kernels.jsonl alone (the kinds and
    shapes the held-out half of that run has)."""
    text = format_errors(summarize(pred, pts), title)
    mine = [i for i, p in enumerate(pts) if p.data[0].get("file") == FILES[1]]
    if mine:
        sub = summarize(np.asarray(pred)[mine], [pts[i] for i in mine])["all"]
        text += (f"\n{FILES[1] + ' only':<16} {sub.n:4d} {sub.median:7.1f}% {sub.p90:7.1f}% "
                 f"{sub.worst:7.0f}% {sub.bias:+7.1f}%")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help=f"measurement files (default: {', '.join(FILES)} in {DATA})")
    ap.add_argument("--cv", type=int, default=0, metavar="K", help="also print K-fold cross-validated errors")
    ap.add_argument("--write", action="store_true", help="write the fitted values into hwspecs/h100.yaml")
    ap.add_argument("--check", action="store_true", help="no fit: errors of the spec as it is")
    ap.add_argument("--verbose", action="store_true", help="one line per kernel")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.paths] or [DATA / f for f in FILES]
    for p in paths:
        if not p.exists():
            print(f"calibrate_h100: no measurements at {p}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    pts = points(paths)
    dev = load_hardware(SPEC)
    assert isinstance(dev, DeviceSpec)
    if not args.check:
        values = fit_h100(pts, dev)
        print("fitted values (hwspecs/h100.yaml):")
        for k, v in values.items():
            print(f"  {k}: {_format(k, v)}")
        dev = override(dev, spec_changes(values))  # type: ignore[assignment]
        if args.write:
            for spec in (SPEC, *SAME_DIE):
                write_spec(values, spec)
                print(f"written to {spec}")
            for spec in ARCH_ESTIMATES:
                write_spec(estimated_paths(values), spec)
                print(f"arch estimates written to {spec}")
    pred = predict_on(dev, pts)
    if args.verbose:
        for p, t in zip(pts, pred):
            r = p.data[0]
            what = " ".join(f"{k}={v}" for k, v in r.items() if k not in SHOWN_ELSEWHERE)
            print(f"{p.kind:14s} {r.get('op', '') or ''} {what:58s} {p.measured_s * 1e6:10.1f}us "
                  f"{t * 1e6:10.1f}us {100 * (t / p.measured_s - 1):+7.1f}%")
    how = "spec as it is" if args.check else "fitted to every point"
    print(table(pts, pred, f"\nin sample ({how}):"))
    if args.cv:
        base = load_hardware(SPEC)
        assert isinstance(base, DeviceSpec)
        cv_pts = [p for p in pts if p.kind != "copy_h2d/d2h"]
        cv = cross_validate(make_predict(base), STAGES, cv_pts, k=args.cv)
        print(table(cv_pts, cv, f"\n{args.cv}-fold cross-validated (whole shape families held out):"))
    print(f"\n{len(pts)} kernels in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
