"""Reliability: outputs are atomic, OOM is a result, streams share a unit's peak, the CLI has one
error boundary, and (with hypothesis) the engine's timing invariants and the loaders' promise
hold on random graphs, specs and YAML."""

from __future__ import annotations

import io
import json
import math
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.cli import main
from sim.errors import OutOfMemoryError, SimError
from sim.graph import Graph, TensorSpec
from sim.io import atomic_write, safe_load

H100_BF16_PEAK = 989.4e12  # hwspecs/h100.yaml, datasheet dense BF16
H100_BF16_EFF = 0.834  # hwspecs/h100.yaml, fitted tensor-core efficiency


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- streams
def _two_gemms(n: int = 8192) -> Graph:
    g = Graph("two-gemms")
    for i in range(2):
        g.add_input(f"a{i}", TensorSpec((n, n), "bf16"))
        g.add_input(f"b{i}", TensorSpec((n, n), "bf16"))
        g.add_node("MatMul", [f"a{i}", f"b{i}"], [f"c{i}"], name=f"mm{i}")
    g.set_outputs(["c0", "c1"])
    return g


def test_two_streams_share_the_tensor_units_peak():
    """Two bf16 GEMMs on two streams of one H100 run at once but share the tensor cores: the
    pair can take no less than 2 x 2n^3 FLOP at the fitted rate (989.4 TFLOP/s x 0.834), and
    the unit never runs above its 989.4 TFLOP/s peak."""
    n = 8192
    flops = 2 * 2 * n**3
    r = sim.simulate(_two_gemms(n), "h100", streams=2, host_inputs=False, cache_reuse=False)
    mm = [o for o in r.ops if o["op"] == "MatMul"]
    assert len({o["stream"] for o in mm}) == 2 and mm[0]["start_s"] == mm[1]["start_s"] == 0.0
    hand = flops / (H100_BF16_PEAK * H100_BF16_EFF)  # 2.665 ms
    assert r.makespan_s >= hand * 0.999
    assert flops / r.makespan_s <= H100_BF16_PEAK
    # and two streams are no slower than one (each shares what one stream would use alone)
    one = sim.simulate(_two_gemms(n), "h100", streams=1, host_inputs=False, cache_reuse=False)
    assert r.makespan_s <= one.makespan_s


# ----------------------------------------------------------------------------- OOM
def _gemm_needing_6_mib(tmp: Path) -> Path:
    w = tmp / "g.yaml"
    w.write_text("name: g\ninputs: {a: {shape: [1024, 1024], dtype: bf16}, b: {shape: [1024, 1024], "
                 "dtype: bf16}}\ngraph: [{op: MatMul, in: [a, b], out: c}]\noutputs: [c]\n")
    return w


def test_oom_is_a_result_with_every_output_written(tmp_path):
    """a, b copied in and c allocated: 3 x 2 MiB = 6 MiB needed on a 5 MiB device. The run
    stops at the MatMul and still writes JSON, trace and plot, each saying what the step needs."""
    w = _gemm_needing_6_mib(tmp_path)
    outs = {k: tmp_path / f"r.{k}" for k in ("json", "trace.json", "png")}
    rc, out, err = _cli(["run", str(w), "--hw", "h100", "--hw-set", "memory.hbm.capacity=5 MiB",
                         "--json", str(outs["json"]), "--trace", str(outs["trace.json"]),
                         "--plot", str(outs["png"])])
    assert rc == 0, err
    assert "OUT OF MEMORY on gpu0" in out and "the step needs 6.00 MiB" in out
    assert len(err.strip().splitlines()) == 1 and "OUT OF MEMORY" in err
    doc = json.loads(outs["json"].read_text())
    oom = doc["meta"]["oom"]
    assert oom["needed_bytes"] == 6 * 2**20 and oom["capacity_bytes"] == 5 * 2**20
    assert oom["op"] == "c" or "MatMul" in oom["op"] or oom["tensor"] == "c"
    assert [o["op"] for o in doc["ops"]] == ["Transfer", "Transfer"]  # stopped before the MatMul
    assert doc["throughput_per_s"] is None  # a stopped step has no throughput
    events = json.loads(outs["trace.json"].read_text())["traceEvents"]
    assert [e for e in events if e.get("cat") == "oom"][0]["args"]["needed_bytes"] == 6 * 2**20
    assert outs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ignore_oom_runs_the_whole_step_and_reports_the_would_be_peak(tmp_path):
    w = _gemm_needing_6_mib(tmp_path)
    rc, out, _ = _cli(["run", str(w), "--hw", "h100", "--hw-set", "memory.hbm.capacity=5 MiB",
                       "--ignore-oom", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "MatMul" in [o["op"] for o in doc["ops"]]
    assert doc["peak_memory_bytes"] == 6 * 2**20 == doc["meta"]["oom"]["needed_bytes"]
    assert "simulated past capacity" in out


def test_the_python_api_still_raises_oom_by_default(tmp_path):
    g = sim.load(_gemm_needing_6_mib(tmp_path))
    with pytest.raises(OutOfMemoryError):
        sim.simulate(g, sim.hardware("h100", **{"memory.hbm.capacity": "5 MiB"}))


# ----------------------------------------------------------------------------- atomic writes
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("previous\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SimError, match="No space left"):
        atomic_write(target, "new content")
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left behind


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640


# ----------------------------------------------------------------------------- the boundary
def test_an_internal_bug_shows_its_traceback_and_says_it_is_a_bug(monkeypatch, tmp_path):
    import sim.cli.run as run

    def bug(args):
        raise KeyError("oops")

    monkeypatch.setattr(run, "run_command", bug)
    rc, _, err = _cli(["run", "gemm"])
    assert rc == 1 and "Traceback" in err and "bug in dlsim" in err


@pytest.mark.parametrize("exc", [RecursionError("deep"), OverflowError("big"), ZeroDivisionError("zero"),
                                 UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
                                 IsADirectoryError(21, "dir")])
def test_user_caused_exceptions_are_one_line(monkeypatch, exc):
    import sim.cli.run as run

    def fail(args):
        raise exc

    monkeypatch.setattr(run, "run_command", fail)
    rc, _, err = _cli(["run", "gemm"])
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("hw, change", [
    ("h100", "memory.hbm.bandwidth=0"), ("h100", "arch.clock=0 GHz"), ("h100", "memory.hbm.efficiency=nan"),
    ("dgx-h100", "devices.gpu.memory.hbm.bandwidth=0"), ("dgx-h100", "host.arch.sockets=0")])
def test_a_bad_hw_set_value_blames_the_option_not_the_bundled_spec(hw, change):
    rc, _, err = _cli(["run", "gemm", "--hw", hw, "--hw-set", change])
    assert rc == 2 and err.startswith(f"sim: error: --hw-set {change.split('=')[0]}: ") and ".yaml" not in err


def test_every_subcommand_is_inside_the_boundary():
    """Whatever subcommands exist, a bad option of each exits 2 with one line."""
    from sim.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        rc, _, err = _cli([name, "--no-such-option"])
        assert rc == 2 and len(err.strip().splitlines()) == 1, (name, err)


# ----------------------------------------------------------------------------- properties: engine
_SHAPES = st.sampled_from([(64, 64), (128, 256), (256, 128), (512, 512), (32, 1024)])


@st.composite
def random_graphs(draw) -> Graph:
    """Random DAGs of MatMul / Add / Relu / Softmax over a few inputs (shapes kept compatible)."""
    g = Graph("random")
    n_in = draw(st.integers(1, 3))
    live: list[tuple[str, tuple[int, int]]] = []
    for i in range(n_in):
        shape = draw(_SHAPES)
        g.add_input(f"x{i}", TensorSpec(shape, draw(st.sampled_from(["fp32", "bf16"]))))
        live.append((f"x{i}", shape))
    for k in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["MatMul", "Add", "Relu", "Softmax"]))
        a, sa = live[draw(st.integers(0, len(live) - 1))]
        dt = g.tensors[a].dtype
        if op == "MatMul":
            n = draw(st.sampled_from([64, 128, 256]))
            w = g.add_param(f"w{k}", TensorSpec((sa[1], n), dt))
            out = g.add_node("MatMul", [a, w], [f"t{k}"], name=f"n{k}")[0]
            live.append((out, (sa[0], n)))
        elif op == "Add":
            same = [t for t, s in live if s == sa and g.tensors[t].dtype == dt]
            b = same[draw(st.integers(0, len(same) - 1))]
            live.append((g.add_node("Add", [a, b], [f"t{k}"], name=f"n{k}")[0], sa))
        else:
            live.append((g.add_node(op, [a], [f"t{k}"], name=f"n{k}")[0], sa))
    used = {t for n in g.nodes.values() for t in n.inputs}
    g.set_outputs([t for t, _ in live if t not in used and t in g._producer] or [live[-1][0]])
    return g


def _standalone(g: Graph, spec) -> dict[str, float]:
    from sim.cost import op_cost
    from sim.engine.scheduler import compute_dtype

    return {n.name: float(op_cost(g.work(n), spec, compute_dtype(g, n)).time_s) for n in g.nodes.values()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.integers(1, 3))
def test_engine_timing_invariants(g, streams):
    spec = sim.hardware("h100")
    kw = dict(streams=streams, host_inputs=False, cache_reuse=False)
    r = sim.simulate(g, spec, **kw)
    # determinism: the same inputs give the same bytes
    assert sim.simulate(g, spec, **kw).to_json() == r.to_json()
    # makespan >= the critical path of stand-alone op times
    t = _standalone(g, spec)
    longest: dict[str, float] = {}
    for node in g.topo_order():
        preds = [g.producer(x) for x in node.inputs if x]
        before = max((longest[p.name] for p in preds if p is not None), default=0.0)
        longest[node.name] = t[node.name] + before
    assert r.makespan_s >= max(longest.values()) * (1 - 1e-9)
    # makespan >= the work of each unit over that unit's peak
    for unit in spec.units:
        for dtype, peak in unit.peak_flops.items():
            work = sum(o["flops"] for o in r.ops if o["unit"] == unit.name and o["dtype"] == dtype)
            assert r.makespan_s >= work / peak * (1 - 1e-9)
    # no two ops overlap on one stream of one unit
    by_track: dict[tuple, list] = {}
    for o in r.ops:
        track = (o["device"], o["unit"], o.get("stream", 0))
        by_track.setdefault(track, []).append((o["start_s"], o["end_s"]))
    for spans in by_track.values():
        spans.sort()
        assert all(b[0] >= a[1] - 1e-15 for a, b in zip(spans, spans[1:]))
    # and the JSON never holds NaN or Infinity
    json.loads(r.to_json(), parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))


# ----------------------------------------------------------------------------- properties: loaders
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["MatMul", "Relu", "x", "4*d", "batch", "2**99",
                                                            "3 TB/s", "0 GHz", "-1 GB", "nan"]))
_keys = st.sampled_from(["name", "params", "inputs", "graph", "outputs", "blocks", "op", "layer", "in",
                         "out", "shape", "dtype", "repeat", "block", "version", "kind", "memory", "units",
                         "peak", "bandwidth", "capacity", "arch", "sms", "clock", "efficiency", "d"])
_docs = st.recursive(_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(_keys, kids, max_size=5)), max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(_docs)
def test_random_workload_yaml_raises_only_simerror(doc):
    from sim.frontends.yaml_loader import load_yaml_text

    text = yaml.safe_dump(doc)
    try:
        load_yaml_text(text, "random.yaml")
    except SimError as err:
        assert "\n" not in str(err)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _docs, max_size=8))
def test_random_hardware_yaml_raises_only_specerror(doc):
    from sim.errors import SpecError
    from sim.hw.loader import build

    try:
        build(doc, "random.yaml")
    except SpecError as err:
        assert "\n" not in str(err)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_text_is_yaml_or_a_yaml_error(text):
    try:
        safe_load(text)
    except yaml.YAMLError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["memory.hbm.bandwidth", "memory.hbm.efficiency", "memory.hbm.capacity",
                        "units.tensor.peak.bf16", "arch.clock", "arch.sms", "launch"]), _scalars)
def test_random_override_of_a_good_spec_raises_only_specerror(field, value):
    """A value put into one field of H100 either loads to a spec whose numbers are finite
    and positive where they must be, or is a SpecError naming the override."""
    from sim.errors import SpecError

    try:
        spec = sim.hardware("h100", **{field: value})
    except SpecError as err:
        assert err.where is not None and err.where.startswith("--hw-set")
        return
    assert all(math.isfinite(lv.bandwidth_Bps) and lv.bandwidth_Bps > 0 and 0 < lv.efficiency <= 1
               for lv in spec.memory)
    assert all(p > 0 and math.isfinite(p) for u in spec.units for p in u.peak_flops.values())
