"""One study point: its configuration (plain JSON data, so any executor can ship it), the key
that names it in the store, and the function a worker runs to simulate it.

The key is a SHA-256 of everything that decides the result: the spec's contents after the
overrides (the parsed spec, so a changed YAML or a changed override is a new key), the workload
file's bytes, the workload parameters, dtype, parallel layout, runtime options, and the code
version (a hash of the simulator's own source).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.errors import SimError
from sim.study.axes import Field, classify, coerce_option

# metric columns, in the order the table shows them
METRICS = ("makespan_s", "throughput_per_s", "time_per_sample_s", "peak_memory_bytes",
           "peak_memory_per_device_bytes", "energy_j", "energy_per_sample_j", "flops",
           "achieved_flops_per_s", "mfu", "bound_compute", "bound_memory",
           "bound_launch", "bound_comm", "host_bound_s", "devices")
BOUNDS = ("compute", "memory", "launch", "comm")
# packages whose source does not change a simulation's numbers (front ends of the study itself)
_NOT_CODE = ("cli", "study", "training")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of the simulator's Python source (``sim/``, less the CLI and study layers):
    any change to the models gives every point a new key."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in _NOT_CODE:
            continue
        h.update(str(rel).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def workload_source(workload: str) -> tuple[str, str | None, str]:
    """``(path, yaml text or None, sha256 of the file's bytes)`` for a workload path or a bundled
    name."""
    from sim.frontends.yaml_loader import resolve_workload

    p = workload if os.path.exists(workload) else resolve_workload(workload)
    data = Path(p).read_bytes()
    text = data.decode("utf-8") if p.endswith((".yaml", ".yml")) else None
    return os.path.abspath(p), text, hashlib.sha256(data).hexdigest()


def declared_params(text: str | None) -> list[str]:
    """The parameter names a YAML workload declares (none for ONNX)."""
    import yaml

    if text is None:
        return []
    from sim.io import safe_load

    try:
        doc = safe_load(text)
    except yaml.YAMLError:
        return []
    params = doc.get("params") if isinstance(doc, dict) else None
    return list(params) if isinstance(params, dict) else []


def make_config(workload: str, hw: str, values: Mapping[str, Any],
                axes: Mapping[str, Any]) -> dict[str, Any]:
    """A point's configuration from the base run and axis ``values`` (field name -> value)."""
    workload = str(values.get("workload", workload))
    path, text, digest = workload_source(workload)
    params_known = declared_params(text)
    cfg: dict[str, Any] = {
        "workload": workload, "workload_path": path, "workload_text": text,
        "workload_sha256": digest, "hw": str(values.get("hw", hw)), "spec_overrides": {},
        "params": {}, "dtype": None, "parallel": None, "options": {}, "axes": dict(axes),
    }
    for name, value in values.items():
        f: Field = classify(name, params_known)
        if f.kind == "special":
            if f.key in ("dtype", "parallel"):
                cfg[f.key] = None if value in (None, "", "none") else str(value)
        elif f.kind == "option":
            cfg["options"][f.key] = coerce_option(f.key, value)
        elif f.kind == "param":
            cfg["params"][f.key] = value
        else:
            cfg["spec_overrides"][f.key] = value
    return cfg


def spec_for(cfg: Mapping[str, Any]) -> Any:
    """The hardware spec a point runs on (overrides applied)."""
    from sim.hw import load_hardware

    return load_hardware(cfg["hw"], **cfg["spec_overrides"])


def point_key(cfg: Mapping[str, Any], spec: Any | None = None) -> str:
    """The store key: SHA-256 of the full configuration (see the module docstring)."""
    spec = spec if spec is not None else spec_for(cfg)
    ident = {
        "spec": repr(spec), "workload": cfg["workload_sha256"], "params": cfg["params"],
        "dtype": cfg["dtype"], "parallel": cfg["parallel"], "options": cfg["options"],
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the worker side
def build_graph(cfg: Mapping[str, Any], spec: Any) -> Any:
    """The graph a point simulates: loaded, made a training step, fused, laid out in parallel
    as its options ask (the same steps as ``sim run``)."""
    from sim.frontends import load as load_workload
    from sim.passes.training import training_graph

    opts = cfg["options"]
    params = dict(cfg["params"])

    def load(batch: int | None = None) -> Any:
        p = params if batch is None else {**params, "batch": batch}
        if cfg["workload_text"] is not None:
            from sim.frontends.yaml_loader import load_yaml_text

            return load_yaml_text(cfg["workload_text"], cfg["workload_path"], **p)
        return load_workload(cfg["workload_path"], **p)

    def prepare(graph: Any) -> Any:
        if opts.get("train"):
            graph = training_graph(graph, loss=opts.get("loss", "cross_entropy"),
                                       optimizer=opts.get("optimizer", "adam"),
                                       checkpoint=bool(opts.get("checkpoint")))
        if opts.get("fuse"):
            from sim.passes.fusion import fuse
            from sim.passes.precision import cast_graph

            graph = fuse(cast_graph(graph, cfg["dtype"]) if cfg["dtype"] else graph)
        return graph

    if cfg["parallel"]:
        from sim.engine.topology import as_system
        from sim.passes.parallel import parallel_graph

        return parallel_graph(cfg["parallel"], load, prepare, as_system(spec).accelerators)
    return prepare(load())


def metrics_of(result: Any) -> dict[str, Any]:
    """The table's metrics from a ``Result``.

    ``time_per_sample_s``, ``energy_per_sample_j``: per sample of the batch (None without one).
    ``mfu``: the graph's FLOPs over the makespan, as a share of the peak FLOP/s of the devices
    that ran ops (each at its busiest unit's peak for the dtype that unit mostly ran).
    ``bound_*``: the share of summed op time bound by compute, memory, launch and links.
    """
    by = dict.fromkeys(BOUNDS, 0.0)
    for r in result.ops:
        by[r.bound] = by.get(r.bound, 0.0) + r.duration_s
    total = sum(by.values()) or 1.0
    used = sorted({r.device for r in result.ops if r.op != "Transfer" and r.bound != "comm"})
    peak = 0.0
    for d in used:
        peaks = [u["peak_flops_per_s"] for u in result.utilisation.get(d, {}).values()
                 if u.get("peak_flops_per_s") and u["flops"] > 0]
        peak += max(peaks, default=0.0)
    span = result.makespan_s
    achieved = result.flops / span if span > 0 else 0.0
    batch = result.batch if result.batch else None
    return {
        "makespan_s": span,
        "throughput_per_s": result.throughput,
        "time_per_sample_s": span / batch if batch else None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_per_device_bytes": max(result.peak_memory_by_device.values(), default=0.0),
        "energy_j": result.energy_j,
        "energy_per_sample_j": result.energy_j / batch if batch else None,
        "flops": result.flops,
        "achieved_flops_per_s": achieved,
        "mfu": achieved / peak if peak > 0 else None,
        **{f"bound_{b}": by.get(b, 0.0) / total for b in BOUNDS},
        "host_bound_s": result.host_bound_s,
        "devices": len(used),
    }


CLUSTER_FIELDS = {"tp", "mbs", "schedule", "zero", "sp", "order"}


def cluster_route(cfg: Mapping[str, Any], spec: Any) -> bool:
    """Whether a point is a cluster training step (``sim.cluster``), as ``sim run`` decides: a
    layout with a tp/mbs/schedule/zero/sp/order field or both pp and dp, or a cluster spec."""
    from sim.hw.spec import ClusterSpec

    if isinstance(spec, ClusterSpec):
        return True
    keys = {item.split("=")[0].strip().lower() for item in (cfg["parallel"] or "").split(",") if item.strip()}
    return bool(keys & CLUSTER_FIELDS) or {"pp", "dp"} <= keys


def simulate_cluster_point(cfg: Mapping[str, Any], spec: Any) -> dict[str, Any]:
    """One training step on a cluster under a 3-D layout (``sim.cluster.simulate_training``):
    ``batch`` is the global batch, ``checkpoint`` full recomputation, a bf16/fp16 dtype mixed
    precision. Energy and bound shares are not modelled there and stay empty."""
    from sim.cluster import simulate_training

    opts = cfg["options"]
    if not opts.get("train"):
        raise SimError("a tp/pp/dp layout simulates a training step: set train", where="parallel")
    params = dict(cfg["params"])
    batch = params.pop("batch", None)
    if not isinstance(batch, int) or batch < 1:
        raise SimError("a cluster training step needs the global batch (batch=N)", where="batch")
    dtype = (cfg["dtype"] or "bf16").lower()
    r = simulate_training(cfg["workload_path"], spec, cfg["parallel"] or "tp=1", batch=batch, sets=params,
                          optimizer=opts.get("optimizer", "adam"), dtype=dtype, amp=dtype != "fp32",
                          recompute=bool(opts.get("checkpoint")), progress=False)
    span = r.makespan_s
    return {
        "makespan_s": span, "throughput_per_s": batch / span, "time_per_sample_s": span / batch,
        "peak_memory_bytes": None, "peak_memory_per_device_bytes": max(m.total for m in r.memory),
        "energy_j": None, "energy_per_sample_j": None, "flops": r.hardware_flops,
        "achieved_flops_per_s": r.hardware_flops / span, "mfu": r.mfu,
        **{f"bound_{b}": None for b in BOUNDS}, "host_bound_s": None, "devices": r.gpus,
    }


def simulate_point(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one point; raises what the simulator raises."""
    from sim.engine import simulate
    from sim.passes.precision import cast_graph

    spec = spec_for(cfg)
    if cluster_route(cfg, spec):
        return simulate_cluster_point(cfg, spec)
    graph = build_graph(cfg, spec)
    if cfg["dtype"]:
        graph = cast_graph(graph, cfg["dtype"])
    opts = cfg["options"]
    result = simulate(graph, spec, streams=int(opts.get("streams", 1)),
                      host_inputs=not opts.get("resident_inputs", False),
                      cache_reuse=bool(opts.get("cache_reuse", True)),
                      dispatch_s=opts.get("dispatch"), cuda_graphs=bool(opts.get("cuda_graphs")))
    return metrics_of(result)


def run_point(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a worker runs: the metrics, or ``error`` (one line) when the point fails.

    ``error_kind`` is ``"input"`` for the simulator's own errors (out of memory, a layout that
    does not split, a bad value: the same next time, so the store keeps them as done) and
    ``"crash"`` for anything else (retried on the next run).
    """
    t0 = time.perf_counter()
    try:
        out: dict[str, Any] = {**simulate_point(cfg), "error": None, "error_kind": None}
    except SimError as err:
        out = {"error": f"{type(err).__name__}: {err}", "error_kind": "input"}
    except Exception as err:  # noqa: BLE001 - one broken point must not stop a study
        out = {"error": f"{type(err).__name__}: {err}".splitlines()[0], "error_kind": "crash"}
    out["wall_s"] = time.perf_counter() - t0
    out["pid"] = os.getpid()
    return out
