"""The H100 spec against measured H100 kernels (../shared/calibration, or its copy in bench/data).

The reference is the measurement file: every assertion compares a simulated time with a time
measured on an H100 (``bench/calibrate_h100.py`` fits the spec's parameters to them).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.cost.fit import summarize
from sim.hw import DeviceSpec, load_hardware

ROOT = Path(__file__).resolve().parents[1]


def _calibrate():
    spec = importlib.util.spec_from_file_location("calibrate_h100", ROOT / "bench" / "calibrate_h100.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CAL = _calibrate()


@pytest.fixture(scope="module")
def points():
    return CAL.points()


@pytest.fixture(scope="module")
def h100() -> DeviceSpec:
    h = load_hardware("h100")
    assert isinstance(h, DeviceSpec)
    return h


def test_specs_hold_what_the_fit_produces(points, h100):
    """hwspecs/h100.yaml (and h200.yaml, the same die) hold exactly what the fit produces."""
    fitted = CAL.fit_h100(points, h100)
    for spec in (CAL.SPEC, *CAL.SAME_DIE):
        dev = load_hardware(spec)
        held = CAL.spec_values(dev, list(fitted))
        for path, want in fitted.items():
            assert held[path] == pytest.approx(want, rel=0.01, abs=1e-9), (spec.name, path)
    for spec in CAL.ARCH_ESTIMATES:  # A100: the cycle-level values as estimates
        estimates = CAL.estimated_paths(fitted)
        held = CAL.spec_values(load_hardware(spec), list(estimates))
        for path, want in estimates.items():
            assert held[path] == pytest.approx(want, rel=0.01, abs=1e-9), (spec.name, path)


def test_simulating_a_one_op_graph_gives_the_fitted_time(points, h100):
    """The fit times kernels with op_cost; sim.simulate of the same one-op graph must agree."""
    seen: set[str] = set()
    for p in points:
        r, work, dt = p.data
        if work is None or p.kind in seen or r["kind"] == "copy_d2d":
            continue
        seen.add(p.kind)
        g, dtype = CAL.graph_of(r)
        t = sim.simulate(g, h100, dtype=dtype, host_inputs=False, cache_reuse=False).makespan_s
        assert t == pytest.approx(CAL.predict_on(h100, [p])[0], rel=1e-9), p.kind
    assert {"gemm tf32", "conv2d fp16", "softmax", "layernorm", "sdpa_causal", "bmm"} <= seen


# in-sample median |error| bounds per kind (a few points above the fit's, so a refit that
# loses accuracy fails); the cross-validated errors are printed by the script (--cv)
MEDIAN_BOUND = {"gemm fp32": 12, "gemm tf32": 12, "gemm bf16": 7, "gemm fp16": 7, "bmm": 12,
                "conv2d fp32": 10, "conv2d fp16": 7, "softmax": 8, "layernorm": 9, "sdpa_causal": 15,
                "elementwise": 5, "copy_d2d": 5, "copy_h2d/d2h": 3, "all": 7}


def test_per_kind_median_error(points, h100):
    table = summarize(CAL.predict_on(h100, points), points)
    for kind, bound in MEDIAN_BOUND.items():
        assert table[kind].median < bound, f"{kind}: median |error| {table[kind].median:.1f}% >= {bound}%"
    assert table["all"].p90 < 20


def test_large_square_gemms_within_10_percent(points, h100):
    """Compute-bound square GEMMs (2048-8192) hold the tensor and CUDA-core rates honest."""
    big = [p for p in points if p.data[0]["kind"] == "gemm" and p.data[0]["M"] == p.data[0]["N"]
           == p.data[0]["K"] and 2048 <= p.data[0]["M"] <= 8192]
    err = np.abs(CAL.predict_on(h100, big) / np.array([p.measured_s for p in big]) - 1)
    assert len(big) >= 10 and err.max() < 0.17


def test_spec_writer_round_trips(tmp_path, h100):
    """write_spec changes only the fitted numbers, keeping comments; the result loads."""
    copy = tmp_path / "h100.yaml"
    copy.write_text(CAL.SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    CAL.write_spec({"launch": 6.5e-6, "arch.rowwise.cycles_per_row": 123.0,
                    "units.tensor.efficiency.bf16": 0.5}, copy)
    h = load_hardware(copy)
    assert isinstance(h, DeviceSpec)
    assert h.launch_s == pytest.approx(6.5e-6)
    assert h.unit("tensor").efficiency["bf16"] == 0.5
    assert CAL.spec_values(h, ["arch.rowwise.cycles_per_row"])["arch.rowwise.cycles_per_row"] == 123.0
    before = CAL.SPEC.read_text(encoding="utf-8").splitlines()
    after = copy.read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 3 and all("#" in b for a, b in changed if "#" in a)
