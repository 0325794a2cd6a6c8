"""Host-side dispatch: when the host has issued each op (see docs/engine.md).

An eager framework issues kernels one after another from one host thread; each costs
``dispatch_s`` of CPU time (Python, framework, driver). The device runs asynchronously, so a
kernel can start no earlier than the moment the host finished issuing it. The host never waits
for the device (no synchronisation inside a step), so the issue times depend on the op order
alone and are computed before the simulation.

* ops are issued in the graph's topological order, one host thread for all devices; the k-th
  kernel is issued at the sum of the dispatch times of kernels 1..k (each op pays the dispatch
  time of its device);
* ops that launch no kernel (views and ``Depend``) cost nothing and never wait for the host;
* with CUDA graphs the whole graph is one launch: every kernel is issued when that single
  launch (one dispatch time) is done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sim.errors import SpecError
from sim.graph import Node
from sim.hw.spec import DeviceSpec
from sim.ops.registry import has_trait


def spec_dispatch(spec: DeviceSpec) -> float:
    """The device's per-op host issue time, seconds: ``arch.host_dispatch`` (0 when not given)."""
    return spec.arch.host_dispatch


def as_seconds(v: Any, where: str = "dispatch") -> float:
    """A number of seconds or a time string (``sim.hw.units``) -> seconds, checked >= 0."""
    if isinstance(v, str):
        from sim.hw.units import parse_quantity

        v = parse_quantity(v, "time")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"dispatch time must be a time, got {v!r}", where=where)
    if not v >= 0 or v == float("inf"):
        raise SpecError(f"dispatch time must be finite and >= 0, got {v!r}", where=where)
    return float(v)


def launches_kernel(node: Node, view: bool) -> bool:
    """False for ops that are metadata only (views, ``Depend``)."""
    return not view and not has_trait(node.op, "no_kernel")


def issue_times(
    nodes: Sequence[Node],
    devs: Sequence[str],
    views: Sequence[bool],
    dispatch: Mapping[str, float],
    *,
    cuda_graphs: bool = False,
) -> list[float] | None:
    """The time the host has issued each op (aligned with ``nodes``), or None when no op waits.

    ``dispatch``: device -> per-op host issue time, times the op's ``launches`` attribute when
    it has one (an optimizer update's share of its group's kernel launches). With
    ``cuda_graphs`` every kernel is issued after one launch of the whole graph (the dispatch
    time of the first kernel's device).
    """
    kernels = [launches_kernel(n, v) for n, v in zip(nodes, views)]
    if not any(dispatch.get(d, 0.0) > 0 for d, k in zip(devs, kernels) if k):
        return None
    out: list[float] = []
    if cuda_graphs:
        first = next((d for d, k in zip(devs, kernels) if k), None)
        launch = dispatch.get(first, 0.0) if first is not None else 0.0
        return [launch if k else 0.0 for k in kernels]
    t = 0.0
    for n, d, k in zip(nodes, devs, kernels):
        if k:
            t += dispatch.get(d, 0.0) * float(n.attrs.get("launches", 1.0))
            out.append(t)
        else:
            out.append(0.0)
    return out
