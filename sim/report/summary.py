"""Text summary of a ``Result``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.report.result import Result


def fmt_time(t: float) -> str:
    """Seconds in a readable unit: ``fmt_time(0.0012) == '1.200 ms'``."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if abs(t) >= scale:
            return f"{t / scale:.3f} {unit}"
    return f"{t / 1e-9:.1f} ns"


def fmt_bytes(b: float) -> str:
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(b) >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def fmt_si(x: float, unit: str) -> str:
    """A number with an SI prefix: ``fmt_si(2.5e12, "FLOP/s") == '2.50 TFLOP/s'``."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.2f} {unit}"


def oom_text(oom: dict[str, Any]) -> str:
    """One line on an out-of-memory point (``Result.meta["oom"]``): where, and what the step needs."""
    cap = float(oom["capacity_bytes"])
    need = float(oom["needed_bytes"])
    free = max(cap - float(oom["in_use_bytes"]), 0.0)
    head = (f"OUT OF MEMORY on {oom['device']} at {fmt_time(float(oom['time_s']))} ({oom['op']} needs "
            f"{fmt_bytes(float(oom['alloc_bytes']))} more, {fmt_bytes(free)} free): the step needs "
            f"{fmt_bytes(need)} on {oom['device']}, which has {fmt_bytes(cap)} "
            f"({fmt_bytes(need - cap)} short)")
    if oom.get("mode") == "stop":
        return head + "; stopped there (--ignore-oom simulates the rest)"
    return head + "; simulated past capacity, peaks are what the step would need"


def summary_text(result: Result, top: int = 10) -> str:
    """Makespan, throughput, energy, memory, utilisation, the top ops by time, time by op type."""
    r = result
    lines = [f"{r.graph} on {r.hardware}" + (f" ({r.dtype})" if r.dtype else "")]
    if r.meta.get("oom"):
        lines.append(f"  {oom_text(r.meta['oom'])}")
    lines.append(f"  makespan     {fmt_time(r.makespan_s)}")
    if r.throughput is not None:
        lines.append(f"  throughput   {r.throughput:,.1f} samples/s (batch {r.batch})")
    if r.makespan_s > 0 and r.flops:
        lines.append(f"  compute      {fmt_si(r.flops, 'FLOP')}, "
                     f"{fmt_si(r.flops / r.makespan_s, 'FLOP/s')} achieved")
    lines.append(f"  energy       {r.energy_j:.4g} J (dynamic {r.dynamic_energy_j:.4g} J, idle "
                 f"{r.idle_energy_j:.4g} J)")
    kt = r.kernel_time_by_device
    if len(kt) == 1:
        (d, busy), = kt.items()
        lines.append(f"  kernel time  {fmt_time(busy)} on {d} (its ops' times summed, as a profiler totals "
                     f"kernel time: no host waits, no copies)")
    elif kt:
        d = max(kt, key=lambda k: kt[k])
        lines.append(f"  kernel time  {fmt_time(r.kernel_time_s)} summed over {len(kt)} devices "
                     f"(busiest {d}: {fmt_time(kt[d])})")
    for d, wait in r.host_bound_by_device.items():
        share = 100 * wait / r.makespan_s if r.makespan_s > 0 else 0.0
        lines.append(f"  host-bound   {d}: {share:.1f}% of the makespan ({fmt_time(wait)} idle "
                     f"waiting for the host to issue ops)")
    for d, peak in r.peak_memory_by_device.items():
        if not peak:
            continue  # an unused device of a larger system
        cap = r.devices.get(d, {}).get("capacity_bytes")
        of = f" of {fmt_bytes(cap)} ({100 * peak / cap:.1f}%)" if cap else ""
        lines.append(f"  memory peak  {d}: {fmt_bytes(peak)}{of}")
    lines.append("  utilisation")
    for d, units in r.utilisation.items():
        for u, s in units.items():
            if s["busy_s"] <= 0 and s["flops"] <= 0:
                continue  # a unit only zero-time ops (views, reshapes) ran on
            fl = s["flops_utilisation"]
            extra = f", {100 * fl:.1f}% of {s['dtype']} peak FLOP/s" if fl is not None else ""
            lines.append(f"    {d}/{u}: busy {100 * s['busy']:.1f}%{extra}")
        t = r.memory_traffic.get(d)
        if t and t["bandwidth_utilisation"] is not None:
            cached = f"; {fmt_bytes(t['cached_bytes'])} more read from cache" if t["cached_bytes"] > 0 else ""
            lines.append(f"    {d}/{t['level']}: {fmt_si(t['achieved_Bps'], 'B/s')}, "
                         f"{100 * t['bandwidth_utilisation']:.1f}% of peak bandwidth "
                         f"({fmt_bytes(t['main_bytes'])} moved{cached})")
    ops = sorted(r.ops, key=lambda o: (-(o.end_s - o.start_s), o.start_s, o.name))
    total = sum(o.end_s - o.start_s for o in r.ops) or 1.0
    if top > 0 and ops:
        lines.append(f"  top {min(top, len(ops))} ops by time")
        w = max(len(o.name) for o in ops[:top])
        for o in ops[:top]:
            dur = o.end_s - o.start_s
            lines.append(f"    {o['name']:<{w}}  {o['op']:<18} {o['device']:<6} {fmt_time(dur):>12} "
                         f"{100 * dur / total:5.1f}%  {o['bound']}")
    agg = r.by_op_type()
    if agg:
        lines.append("  time by op type")
        for op, a in list(agg.items())[: max(top, 1)]:
            lines.append(f"    {op:<22} x{a['count']:<5} {fmt_time(a['time_s']):>12} "
                         f"{100 * a['time_s'] / total:5.1f}%  {a['bound']}")
    return "\n".join(lines)
