"""Chrome trace JSON (opens in Perfetto and chrome://tracing).

One process (``pid``) per device, one thread (``tid``) per unit of that device (compute units,
then copy engines; ``unit #k`` for stream k > 0 when a device runs several streams), complete
events (``"ph": "X"``) with times in microseconds, and a ``memory`` counter (``"ph": "C"``)
per device with the bytes in use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.report.record import OpRecord
    from sim.report.result import Result


ARG_FIELDS = ("layer", "flops", "bytes", "bound", "energy_j", "dtype")


def _track(r: OpRecord) -> str:
    """The track of a record: its unit, and the stream number when there are several."""
    return f"{r.unit} #{r.stream}" if r.stream else r.unit


def _us(t: float) -> float:
    return round(t * 1e6, 6)


def trace_events(result: Result) -> list[dict[str, Any]]:
    """The trace's events: metadata, then op and transfer events, then memory counters."""
    devices = list(result.devices)
    for r in result.ops:
        if r.device not in devices:
            devices.append(r.device)
    pid = {d: i + 1 for i, d in enumerate(devices)}
    units: dict[str, list[str]] = {d: [] for d in devices}
    for r in result.ops:
        if _track(r) not in units[r.device]:
            units[r.device].append(_track(r))
    tid: dict[tuple[str, str], int] = {}
    events: list[dict[str, Any]] = []
    for d in devices:
        spec = result.devices.get(d, {}).get("spec", "")
        events.append({"ph": "M", "name": "process_name", "pid": pid[d], "tid": 0, "ts": 0,
                       "args": {"name": f"{d} ({spec})" if spec else d}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid[d], "tid": 0, "ts": 0,
                       "args": {"sort_index": pid[d]}})
        ordered = sorted(units[d], key=lambda u: (u.startswith("copy:"), u))
        for i, u in enumerate(ordered):
            tid[(d, u)] = i + 1
            events.append({"ph": "M", "name": "thread_name", "pid": pid[d], "tid": i + 1, "ts": 0,
                           "args": {"name": u}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": pid[d], "tid": i + 1,
                           "ts": 0, "args": {"sort_index": i + 1}})
    for r in result.ops:
        args: dict[str, Any] = {k: getattr(r, k) for k in ARG_FIELDS}
        if r.op == "Transfer":
            args.update(src=r.src, dst=r.dst, tensor=r.tensor)
        if r.host_wait_s > 0:
            args["host_wait_s"] = r.host_wait_s
        events.append({
            "ph": "X", "name": r.name, "cat": r.op, "pid": pid[r.device],
            "tid": tid[(r.device, _track(r))], "ts": _us(r.start_s),
            "dur": _us(r.duration_s), "args": args,
        })
    oom = result.meta.get("oom")
    if oom and oom.get("device") in pid:
        events.append({"ph": "i", "s": "p", "name": f"out of memory: {oom['op']}", "cat": "oom",
                       "pid": pid[oom["device"]], "tid": 0, "ts": _us(float(oom["time_s"])),
                       "args": {k: oom[k] for k in sorted(oom)}})
    for d, tl in result.memory_timeline.items():
        if d not in pid:
            continue
        for t, b in tl:
            events.append({"ph": "C", "name": "memory", "pid": pid[d], "tid": 0, "ts": _us(t),
                           "args": {"bytes": b}})
    return events


def trace_json(result: Result) -> str:
    """The trace as a JSON string (deterministic)."""
    doc = {"traceEvents": trace_events(result), "displayTimeUnit": "ns",
           "otherData": {"graph": result.graph, "hardware": result.hardware,
                         "makespan_s": result.makespan_s}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
