"""``Result``: what a simulation produced, as typed records and totals.

Every op (and every transfer hop, ``op == "Transfer"``, and collective member) is an
``OpRecord`` (``sim.report.record``), a dataclass with one schema, so
``pandas.DataFrame(result.ops)`` (or ``result.records()``, plain dicts) works without help.
Totals are derived once, when the result is built; nothing here re-simulates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.graph.batch import infer_batch
from sim.report.record import OpRecord

if TYPE_CHECKING:
    from sim.graph import Graph
    from sim.hw.spec import SystemSpec


@dataclass
class Result:
    """The outcome of ``sim.simulate``.

    ``ops``: ``OpRecord`` s (name, op, layer, device, unit, start_s, end_s, flops, bytes,
    bound, energy_j, dtype, compute_s, memory_s, ...; transfers fill src, dst, tensor), by
    start time; ``records()`` gives them as plain dicts.
    ``memory_timeline``: device -> [(time_s, bytes in use)] steps.
    ``utilisation``: device -> unit -> busy_s, busy (fraction of the makespan), flops,
    achieved_flops_per_s, peak_flops_per_s, flops_utilisation.
    ``devices``: device instance -> spec name, kind, capacity_bytes, bandwidth_Bps, idle_w,
    peak_flops (unit -> dtype -> FLOP/s), for reports and plots.
    ``host_bound_by_device``: device -> time its compute streams sat idle waiting for the host
    to issue the next op (sum of the records' ``host_wait_s``); ``host_bound_s`` their sum.
    ``kernel_time_by_device``: device -> the sum of its ops' durations, copies (``Transfer``
    hops) left out: what a profiler's kernel-time total (``torch.profiler``'s "Self CUDA time
    total", nsys's kernel summary) adds up, without the time the device sat waiting for the
    host or for a copy; ``kernel_time_s`` their sum.
    ``memory_traffic``: device -> ``level`` (main memory's name), bytes its ops moved
    (``bytes``, transfers and collectives left out), ``cached_bytes`` (of those, reads served
    by the reuse cache), ``main_bytes`` (the rest, through main memory), ``achieved_Bps``
    (``main_bytes`` over the makespan),
    ``peak_Bps`` (main memory's peak) and ``bandwidth_utilisation`` (their ratio): how much
    of the memory roof a run used, beside ``utilisation``'s share of the compute roof.
    """

    graph: str
    hardware: str
    dtype: str | None
    makespan_s: float
    ops: list[OpRecord]
    memory_timeline: dict[str, list[tuple[float, float]]]
    peak_memory_by_device: dict[str, float]
    energy_j: float
    dynamic_energy_j: float
    idle_energy_j: float
    utilisation: dict[str, dict[str, dict[str, Any]]]
    devices: dict[str, dict[str, Any]]
    batch: int | None = None
    flops: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    host_bound_by_device: dict[str, float] = field(default_factory=dict)
    memory_traffic: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------ totals
    @property
    def peak_memory_bytes(self) -> float:
        """The sum over devices of each device's peak."""
        return float(sum(self.peak_memory_by_device.values()))

    @property
    def host_bound_s(self) -> float:
        """Device idle time spent waiting for the host to issue ops, summed over devices."""
        return float(sum(self.host_bound_by_device.values()))

    @property
    def kernel_time_by_device(self) -> dict[str, float]:
        """Device -> the sum of its ops' durations, transfers excluded (class doc)."""
        out: dict[str, float] = {}
        for r in self.ops:
            if r.op != "Transfer" and r.end_s > r.start_s:
                out[r.device] = out.get(r.device, 0.0) + (r.end_s - r.start_s)
        return dict(sorted(out.items()))

    @property
    def kernel_time_s(self) -> float:
        """``kernel_time_by_device`` summed over devices."""
        return float(sum(self.kernel_time_by_device.values()))

    @property
    def throughput(self) -> float | None:
        """Samples per second (batch / makespan) when the batch is known and the step ran to
        its end (not a run stopped out of memory)."""
        if self.batch is None or self.makespan_s <= 0 or (self.meta.get("oom") or {}).get("mode") == "stop":
            return None
        return self.batch / self.makespan_s

    def by_op_type(self) -> dict[str, dict[str, Any]]:
        """Op type -> count, time_s, flops, bytes, energy_j, bound (the most common), by time."""
        agg: dict[str, dict[str, Any]] = {}
        bounds: dict[str, dict[str, float]] = {}
        for r in self.ops:
            a = agg.setdefault(r.op, {"count": 0, "time_s": 0.0, "flops": 0.0, "bytes": 0.0,
                                      "energy_j": 0.0})
            dur = r.duration_s
            a["count"] += 1
            a["time_s"] += dur
            a["flops"] += r.flops
            a["bytes"] += r.bytes
            a["energy_j"] += r.energy_j
            b = bounds.setdefault(r.op, {})
            b[r.bound] = b.get(r.bound, 0.0) + dur
        for op, a in agg.items():
            a["bound"] = max(sorted(bounds[op]), key=lambda k: bounds[op][k])
        return dict(sorted(agg.items(), key=lambda kv: (-kv[1]["time_s"], kv[0])))

    # ------------------------------------------------------------------ output
    def records(self) -> list[dict[str, Any]]:
        """The op records as plain dicts (one schema: ``pandas.DataFrame(result.records())``)."""
        return [r.as_dict() for r in self.ops]

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "hardware": self.hardware,
            "dtype": self.dtype,
            "makespan_s": self.makespan_s,
            "batch": self.batch,
            "throughput_per_s": self.throughput,
            "flops": self.flops,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_by_device": self.peak_memory_by_device,
            "energy_j": self.energy_j,
            "dynamic_energy_j": self.dynamic_energy_j,
            "idle_energy_j": self.idle_energy_j,
            "utilisation": self.utilisation,
            "host_bound_s": self.host_bound_s,
            "host_bound_by_device": self.host_bound_by_device,
            "kernel_time_s": self.kernel_time_s,
            "kernel_time_by_device": self.kernel_time_by_device,
            "memory_traffic": self.memory_traffic,
            "devices": self.devices,
            "by_op_type": self.by_op_type(),
            "memory_timeline": {d: [list(p) for p in tl] for d, tl in self.memory_timeline.items()},
            "ops": self.records(),
            "meta": self.meta,
        }

    def to_json(self, indent: int | None = None) -> str:
        """The result as JSON (deterministic: same simulation -> same bytes)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        _write(path, self.to_json(indent=1))

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """A Chrome trace (opens in Perfetto / chrome://tracing)."""
        from sim.report.trace import trace_json

        _write(path, trace_json(self))

    def summary(self, top: int = 10) -> str:
        """A text summary: makespan, throughput, top ops and their bound, memory, energy."""
        from sim.report.summary import summary_text

        return summary_text(self, top=top)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write a figure with a timeline, a roofline, memory over time and utilisation."""
        from sim.report.plots import plot_result

        plot_result(self, path)

    def __repr__(self) -> str:
        return (f"<Result {self.graph} on {self.hardware}: {self.makespan_s * 1e3:.3f} ms, "
                f"peak {self.peak_memory_bytes / 2**30:.2f} GiB, {self.energy_j:.3g} J>")


def _write(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically (a temporary file in the same folder, then a rename)."""
    from sim.io import atomic_write

    atomic_write(path, text)


def _busy(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of intervals (sorted by start)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def build_result(
    graph: Graph,
    system: SystemSpec,
    records: list[OpRecord],
    timelines: dict[str, list[tuple[float, float]]],
    peaks: dict[str, float],
    *,
    dtype: str | None = None,
) -> Result:
    """Totals, energy and utilisation from the engine's records."""
    ops = sorted(records, key=lambda r: (r.start_s, r.end_s))
    makespan = max((r.end_s for r in ops), default=0.0)
    devices: dict[str, dict[str, Any]] = {}
    idle = 0.0
    for d, spec in system.devices.items():
        main = spec.main_memory if spec.memory else None
        devices[d] = {
            "spec": spec.name,
            "kind": spec.kind,
            "capacity_bytes": main.capacity_bytes if main else None,
            "bandwidth_Bps": main.bandwidth_Bps if main else None,
            "memory_level": main.name if main else None,
            "idle_w": spec.power.idle_w,
            "peak_flops": {u.name: dict(sorted(u.peak_flops.items())) for u in spec.units},
        }
        idle += spec.power.idle_w * makespan
    dynamic = float(sum(r.energy_j for r in ops))
    per_unit: dict[tuple[str, str], list[OpRecord]] = {}
    for r in ops:
        per_unit.setdefault((r.device, r.unit), []).append(r)
    util: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in system.devices}
    for (d, unit), rs in sorted(per_unit.items()):
        busy = _busy([(r.start_s, r.end_s) for r in rs])
        flops = float(sum(r.flops for r in rs))
        by_dtype: dict[str, float] = {}
        for r in rs:
            by_dtype[r.dtype] = by_dtype.get(r.dtype, 0.0) + r.flops
        main_dtype = max(sorted(by_dtype), key=lambda k: by_dtype[k]) if by_dtype else ""
        peak = devices.get(d, {}).get("peak_flops", {}).get(unit, {}).get(main_dtype)
        achieved = flops / makespan if makespan > 0 else 0.0
        util.setdefault(d, {})[unit] = {
            "busy_s": busy,
            "busy": busy / makespan if makespan > 0 else 0.0,
            "flops": flops,
            "dtype": main_dtype,
            "achieved_flops_per_s": achieved,
            "peak_flops_per_s": peak,
            "flops_utilisation": achieved / peak if peak else None,
        }
    return Result(
        graph=graph.name,
        hardware=system.name,
        dtype=dtype,
        makespan_s=makespan,
        ops=ops,
        memory_timeline={d: list(tl) for d, tl in timelines.items()},
        peak_memory_by_device=dict(peaks),
        energy_j=dynamic + idle,
        dynamic_energy_j=dynamic,
        idle_energy_j=idle,
        utilisation=util,
        devices=devices,
        batch=infer_batch(graph),
        flops=float(sum(r.flops for r in ops if r.op != "Transfer")),
        host_bound_by_device=_host_bound(ops),
        memory_traffic=_memory_traffic(ops, devices, makespan),
    )


def _memory_traffic(ops: list[OpRecord], devices: dict[str, dict[str, Any]],
                    makespan: float) -> dict[str, dict[str, Any]]:
    """Device -> bytes its ops moved through memory and the share of peak bandwidth used."""
    moved: dict[str, list[float]] = {}
    for r in ops:
        if r.op == "Transfer" or r.bound == "comm":
            continue  # link traffic, not memory traffic
        t = moved.setdefault(r.device, [0.0, 0.0])
        t[0] += r.bytes
        t[1] += min(r.cached_bytes, r.bytes)
    out: dict[str, dict[str, Any]] = {}
    for d, (total, cached) in sorted(moved.items()):
        if total <= 0:
            continue
        main = total - cached
        peak = devices.get(d, {}).get("bandwidth_Bps")
        achieved = main / makespan if makespan > 0 else 0.0
        out[d] = {"level": devices.get(d, {}).get("memory_level") or "memory",
                  "bytes": total, "cached_bytes": cached, "main_bytes": main,
                  "achieved_Bps": achieved, "peak_Bps": peak,
                  "bandwidth_utilisation": achieved / peak if peak else None}
    return out


def _host_bound(ops: list[OpRecord]) -> dict[str, float]:
    """Device -> sum of its records' ``host_wait_s`` (devices that waited only)."""
    out: dict[str, float] = {}
    for r in ops:
        if r.host_wait_s > 0:
            out[r.device] = out.get(r.device, 0.0) + r.host_wait_s
    return dict(sorted(out.items()))
