"""``sim calibrate`` / ``sim validate``: the fitter recovers known parameters from synthetic
measurements, a reduced calibration writes a spec that loads and means what its numbers say,
and validate lines measured up against simulated time."""

import numpy as np
import pytest

import sim
from sim.calib.bench import Sample, cases, one_op_graph
from sim.calib.fit import Machine, calibrate_fit, predict
from sim.cli import main

MACHINE = Machine("test cpu", cores=2, threads=1, l2_bytes=512 * 1024, l3_bytes=8 * 1024**2,
                  memory_bytes=16 * 1024**3, clock_hz=2e9)


def test_fit_recovers_known_parameters_from_synthetic_times():
    """Times made by a known parameter set (with +-3% deterministic noise) are fitted back."""
    truth = {"launch": 4e-6, "matrix": 40e9, "conv": 0.5, "vector": 3e9, "dram": 6e9, "l3": 50e9, "l2": 70e9}
    suite = cases(quick=False)
    works = [one_op_graph(c).work(one_op_graph(c).nodes["op"]) for c in suite]
    base = [Sample(c.name, c.op, w, 1.0, 1) for c, w in zip(suite, works)]
    times = predict(base, truth, MACHINE)
    noise = 1 + 0.03 * np.sin(np.arange(len(times)))
    samples = [Sample(s.name, s.op, s.work, float(t * e), 1) for s, t, e in zip(base, times, noise)]
    fit = calibrate_fit(samples, MACHINE, folds=3)
    for key in ("launch", "matrix", "conv", "vector"):
        assert fit.params[key] == pytest.approx(truth[key], rel=0.08), key
    assert fit.cv_errors["all"].median < 5.0  # percent, on kernels each fold did not see


def test_quick_calibration_writes_a_spec_whose_numbers_predict(tmp_path, capsys):
    out = tmp_path / "cpu.yaml"
    assert main(["calibrate", "--quick", "--min-time", "0.002", "--folds", "2", "-o", str(out)]) == 0
    text = out.read_text()
    assert "kind: cpu" in text and "kernel_efficiency" in text
    spec = sim.hardware(str(out))
    # a GEMM big enough to be compute bound takes launch + flops / (matrix rate), by hand
    import yaml

    raw = yaml.safe_load(text)
    from sim.hw.units import parse_quantity

    rate = parse_quantity(raw["units"][0]["peak"]["fp32"], "compute")
    launch = parse_quantity(raw["launch"], "time")
    from sim.cost import op_cost
    from sim.ops.work import GemmShape, Work

    g = GemmShape(64, 64, 64)
    t = op_cost(Work(g.flops, g.flops, gemms=(g,)), spec, "fp32").time_s
    assert t == pytest.approx(launch + g.flops / rate, rel=1e-6)
    printed = capsys.readouterr().out
    assert "cross-validated" in printed and "wrote spec" in printed


def test_validate_prints_measured_and_simulated_per_op_and_total(tmp_path, capsys):
    spec = tmp_path / "cpu.yaml"
    assert main(["calibrate", "--quick", "--min-time", "0.002", "--folds", "2", "-o", str(spec)]) == 0
    capsys.readouterr()
    assert main(["validate", "mlp-mnist", "--hw", str(spec), "--set", "batch=4", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if ln and not ln.startswith("-")}
    assert "MatMul" in rows or "Gemm" in rows
    total = rows.pop("total")
    measured = sum(float(r[2]) for r in rows.values())
    assert float(total[2]) == pytest.approx(measured, abs=0.01 * len(rows) + 1e-6)
    assert float(total[3]) > 0


@pytest.mark.parametrize("argv, field", [
    (["validate", "mlp-mnist", "--hw", "no-such-spec.yaml"], "no-such-spec"),
    (["validate", "mlp-mnist", "--hw", "xeon-8480", "--repeat", "0"], "--repeat"),
    (["calibrate", "--threads", "0", "-o", "x.yaml"], "--threads"),
])
def test_bad_options_are_one_line_exit_2(argv, field, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
