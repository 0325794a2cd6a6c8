"""The SimPy model: ops on device streams, transfers on links, memory by tensor lifetimes.

Model (see docs/engine.md):

* each device has ``streams`` compute streams (a ``simpy.Resource``; one by default, as a GPU
  stream runs kernels one after another). An op starts when its inputs are ready on its device
  and a stream is free; it holds the stream for the time ``sim.cost.op_cost`` gives.
* with more than one stream, ops that run at once share the device's memory bandwidth and
  each compute unit's peak (``SharedBandwidth``, processor sharing): two GEMMs on two streams
  of one tensor unit take as long together as one after the other, never more than the peak.
* transfers run on links, each direction of each link its own resource (a copy/DMA engine),
  separate from the compute streams, so copies overlap compute; transfers on one link queue.
* graph inputs start on the host and are copied over the host link (``host_inputs=True``);
  parameters are resident on every device that uses them from time 0.
* memory: outputs are allocated when an op starts, a tensor is freed when its last consumer on
  that device (or the last copy out of it) finishes; graph outputs stay; in-place updates and
  views allocate nothing.
* cache reuse (``cache_reuse=True``): each device with a reuse level (``sim.cost.reuse_level``,
  H100's L2) keeps an LRU of the buffers ops touched last (``ReuseCache``); an op's inputs
  resident there at its start are cached reads (``op_cost(..., cached_read_bytes=...)``); its
  inputs and then its outputs are touched when it ends; freed buffers leave.
* host dispatch (``dispatch_s``): the host issues kernels in topological order, each costing
  ``dispatch_s`` of host time (``dispatch.py``); an op starts no earlier than its issue time.
  The device time an op lost waiting for the host is its record's ``host_wait_s``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.core import StopSimulation

from sim.errors import OutOfMemoryError, SimError
from sim.graph import Graph, Node
from sim.hw.spec import DeviceSpec, LinkSpec, SystemSpec
from sim.limits import check
from sim.ops.work import Work
from sim.report.record import OpRecord
from sim.report.result import Result, build_result

from .bandwidth import SharedBandwidth
from .cache import ReuseCache
from .collectives import is_collective, member_devices, run_collective
from .dispatch import as_seconds, issue_times, launches_kernel, spec_dispatch
from .memory import DeviceMemory
from .topology import HOST, Hop, Router, as_system, place


@dataclass(frozen=True)
class FixedCost:
    """An op cost given directly (what a ``cost_fn`` may return instead of ``sim.cost.OpCost``)."""

    time_s: float
    unit: str = "compute"
    bound: str = "compute"
    compute_s: float = 0.0
    memory_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    energy_j: float = 0.0


CostFn = Callable[[Node, Work, DeviceSpec, str], Any]


def compute_dtype(graph: Graph, node: Node) -> str:
    """``meta["compute_dtype"]``, else the first float output (then input) dtype, else fp32."""
    return graph.compute_dtype(node)


def _hashable(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_hashable(v) for v in x)
    return x


class _Engine:
    def __init__(
        self,
        graph: Graph,
        system: SystemSpec,
        devs: list[str],
        costs: list[Any],
        *,
        host_inputs: bool,
        streams: int,
        transfer_fn: Callable[[LinkSpec, float], float],
        cache_capacity: Mapping[str, float] | None = None,
        recost: Callable[[_NodeCost, str, float], Any] | None = None,
        issue: list[float] | None = None,
        oom_strict: bool = True,
    ) -> None:
        self.graph = graph
        self.system = system
        self.nodes = graph.topo_order()
        self.devs = devs
        self.costs = costs
        self.streams = streams
        self.transfer_fn = transfer_fn
        self.env = simpy.Environment()
        env = self.env
        self.router = Router(system)
        self.stream = {d: simpy.Resource(env, capacity=streams) for d in system.devices}
        self.bus = {d: SharedBandwidth(env) for d in system.devices} if streams > 1 else {}
        self.unit_share: dict[tuple[str, str], SharedBandwidth] = {}  # (device, unit) -> its peak
        self.slots = {d: list(range(streams)) for d in system.devices}  # free stream numbers
        self.running = dict.fromkeys(system.devices, 0)  # kernels running on each device
        self.idle_since = dict.fromkeys(system.devices, 0.0)  # when it last ran none
        self.issue = issue  # host issue time of each op (None: no host dispatch)
        self.links: dict[tuple[str, ...], simpy.Resource] = {}
        self.mem = {
            d: DeviceMemory(d, spec.main_memory.capacity_bytes if spec.memory else None, oom_strict)
            for d, spec in system.devices.items()
        }
        self.cache = {d: ReuseCache(cap) for d, cap in (cache_capacity or {}).items() if cap > 0}
        self.recost = recost
        self.records: list[OpRecord] = []
        self.error: SimError | None = None
        self.keep = set(graph.outputs)
        self.host_src = system.host if system.host in system.devices else HOST
        self._plan(host_inputs)

    # ------------------------------------------------------------------ planning
    def _plan(self, host_inputs: bool) -> None:
        """Where each tensor lives, who waits for what, and which copies are needed."""
        g = self.graph
        env = self.env
        home: dict[str, str] = {}  # tensor -> device (or HOST) it is first on
        for t in g.inputs:
            home[t] = self.host_src if host_inputs else ""
        for node, dev in zip(self.nodes, self.devs):
            slots = member_devices(node, dev, self.system.devices)
            for t, d in zip(node.outputs, slots):
                if t:
                    home[t] = d
        # (tensor, device) -> remaining users there (ops, and copies out of it)
        self.left: dict[tuple[str, str], int] = {}
        self.ready: dict[tuple[str, str], simpy.Event] = {}
        self.waits: list[list[simpy.Event]] = []
        self.uses: list[tuple[tuple[str, str], ...]] = []  # distinct (input, device) of each node
        copies: dict[tuple[str, str], str] = {}  # (tensor, dst) -> src
        resident: dict[str, set[str]] = {}  # device -> tensors resident from time 0
        for node, node_dev in zip(self.nodes, self.devs):
            waits = []
            # a collective's input j is on its group member j; other nodes' on their device
            uses = tuple(dict.fromkeys(
                (t, d) for t, d in zip(node.inputs, member_devices(node, node_dev)) if t))
            self.uses.append(uses)
            for t, dev in uses:
                src = home.get(t)
                if t in g.params or src == "" or (src == HOST and self._no_host_link(dev)):
                    resident.setdefault(dev, set()).add(t)
                    self.left[(t, dev)] = self.left.get((t, dev), 0) + 1
                    continue
                assert src is not None
                if src != dev and (t, dev) not in copies:
                    copies[(t, dev)] = src
                    self.left[(t, src)] = self.left.get((t, src), 0) + 1
                    if t not in g.inputs and (t, src) not in self.ready:
                        self.ready[(t, src)] = env.event()
                ev = self.ready.get((t, dev))
                if ev is None:
                    ev = self.ready[(t, dev)] = env.event()
                waits.append(ev)
                self.left[(t, dev)] = self.left.get((t, dev), 0) + 1
            self.waits.append(waits)
        # graph inputs already on a modelled host are ready at time 0 and held there
        for t in g.inputs:
            if home[t] not in ("", HOST):
                resident.setdefault(home[t], set()).add(t)
                ev = self.ready.get((t, home[t]))
                if ev is not None:
                    ev.succeed()
        self.copies = copies
        self.resident = resident
        self.home = home

    def _no_host_link(self, dev: str) -> bool:
        return self.system.devices[dev].host_link is None

    # ------------------------------------------------------------------ running
    def _fail(self, err: SimError) -> None:
        if self.error is None:
            self.error = err
            stop = self.env.event()
            stop.callbacks.append(StopSimulation.callback)
            stop.succeed()

    def _done_with(self, t: str, dev: str, now: float) -> None:
        key = (t, dev)
        n = self.left[key] - 1
        self.left[key] = n
        if n == 0 and t not in self.keep and dev in self.mem:
            self._release(t, dev, now)

    def _release(self, t: str, dev: str, now: float) -> None:
        buf = self.mem[dev].release(t, now)
        cache = self.cache.get(dev)
        if buf is not None and cache is not None:
            cache.release(buf)

    def _cached_reads(self, i: int, dev: str) -> float:
        """Bytes of op ``i``'s inputs resident in ``dev``'s reuse cache (each buffer once)."""
        cache = self.cache.get(dev)
        if cache is None:
            return 0.0
        mem = self.mem[dev]
        seen = set()
        total = 0.0
        for t, d in self.uses[i]:
            buf = mem.buffer_of(t) if d == dev else None
            if buf is not None and buf not in seen and cache.has(buf):
                seen.add(buf)
                total += mem.size_of(buf)
        return total

    def _touch(self, i: int, dev: str) -> None:
        """Op ``i`` ended: its inputs, then its outputs, become the most recent buffers."""
        cache = self.cache.get(dev)
        if cache is None:
            return
        mem = self.mem[dev]
        node = self.nodes[i]
        names = [t for t, d in self.uses[i] if d == dev] + [t for t in node.outputs if t]
        for t in names:
            buf = mem.buffer_of(t)
            if buf is not None:
                cache.touch(buf, mem.size_of(buf))

    def run(self) -> None:
        g = self.graph
        # parameters (and inputs not copied from the host) are resident from time 0
        for dev in self.system.devices:
            for t in sorted(self.resident.get(dev, ()), key=lambda t: (t not in g.params, t)):
                what = f"parameter {t}" if t in g.params else f"input {t}"
                self.mem[dev].alloc(t, g.tensors[t].nbytes, 0.0, what, pinned=t in g.params)
        env = self.env
        for (t, dst), src in self.copies.items():
            env.process(self._copy(t, src, dst))
        for i in range(len(self.nodes)):
            env.process(self._op(i))
        env.run()
        if self.error is not None:
            raise self.error
        unfinished = [k for k, ev in self.ready.items() if not ev.triggered]
        if unfinished:
            raise SimError(f"tensors never became ready: {unfinished[:5]}", where=g.name)

    def _op(self, i: int) -> Any:
        node = self.nodes[i]
        dev = self.devs[i]
        cost = self.costs[i]
        env = self.env
        for ev in self.waits[i]:
            if not ev.processed:
                yield ev
        inputs_at = float(env.now)
        issued = self.issue[i] if self.issue is not None else 0.0
        if issued > inputs_at:
            yield env.timeout(issued - inputs_at)
        if is_collective(node):  # flows over the links, no compute stream (collectives.py)
            yield from run_collective(self, i)
            return
        stream = self.stream[dev]
        req = stream.request()
        yield req
        start = float(env.now)
        slot = heapq.heappop(self.slots[dev])
        # device idle time lost to the host: from when the op could have run (its inputs
        # ready, the device running no kernel) to its issue time
        host_wait = 0.0
        kernel = launches_kernel(node, cost.view)
        if kernel:
            if self.running[dev] == 0:
                could = max(inputs_at, self.idle_since[dev])
                host_wait = max(0.0, min(start, issued) - could)
            self.running[dev] += 1
        mem = self.mem[dev]
        inplace = node.meta.get("inplace") or {}
        try:
            for j, t in enumerate(node.outputs):
                if not t:
                    continue
                src_idx = inplace.get(j, inplace.get(str(j)))
                if src_idx is None and j == 0 and cost.view:
                    src_idx = 0
                if src_idx is not None and mem.has(node.inputs[int(src_idx)]):
                    mem.alias(t, node.inputs[int(src_idx)])
                else:
                    mem.alloc(t, self.graph.tensors[t].nbytes, start, node.name)
        except OutOfMemoryError as err:
            self._fail(err)
            return
        c = cost.cost
        cached = self._cached_reads(i, dev)
        if cached > 0:
            cached = min(cached, cost.work.bytes_read) if cost.work is not None else cached
            if self.recost is not None:
                c = self.recost(cost, dev, cached)
        if self.bus:
            share = self.unit_share.get((dev, c.unit))
            if share is None:
                share = self.unit_share[(dev, c.unit)] = SharedBandwidth(env)
            served = self.bus[dev].serve(c.memory_s)
            computed = share.serve(c.compute_s)
            if c.time_s > 0:
                yield env.timeout(c.time_s)
            for ev in (served, computed):
                if not ev.processed:
                    yield ev
        elif c.time_s > 0:
            yield env.timeout(c.time_s)
        end = float(env.now)
        self.records.append(OpRecord(
            name=node.name, op=node.op, layer=node.meta.get("layer") or "",
            device=dev, unit=c.unit, start_s=start, end_s=end,
            flops=float(c.flops), bytes=float(c.bytes), bound=c.bound,
            energy_j=float(c.energy_j), dtype=cost.dtype,
            compute_s=float(c.compute_s), memory_s=float(c.memory_s), stream=slot,
            cached_bytes=float(cached), host_wait_s=host_wait,
        ))
        self._touch(i, dev)
        for t, d in self.uses[i]:
            self._done_with(t, d, end)
        for t in node.outputs:
            if t:
                if (t, dev) not in self.left and t not in self.keep:
                    self._release(t, dev, end)  # produced and never used
                done = self.ready.get((t, dev))
                if done is not None:
                    done.succeed()
        if kernel:
            self.running[dev] -= 1
            if self.running[dev] == 0:
                self.idle_since[dev] = end
        heapq.heappush(self.slots[dev], slot)
        stream.release(req)

    def _hop_ends(self, key: tuple[str, ...], link: LinkSpec, src: str,
                  dst: str) -> tuple[str, str, str, str]:
        """(from, to, device whose copy engine runs it, unit name) of one hop."""
        kind = key[0]
        if kind == "h2d":
            return self.host_src, key[1], key[1], f"copy:{link.name} in"
        if kind == "d2h":
            return key[1], self.host_src, key[1], f"copy:{link.name} out"
        if kind == "switch":
            return src, dst, src, f"copy:{link.name} out"
        return key[1], key[2], key[1], f"copy:{link.name}->{key[2]}"

    def _copy(self, t: str, src: str, dst: str) -> Any:
        env = self.env
        nbytes = self.graph.tensors[t].nbytes
        ready = self.ready.get((t, src))
        if ready is not None and not ready.processed:
            yield ready
        hops: list[Hop] = self.router.route(src, dst)
        first = True
        producer = self.graph.producer(t)
        layer = (producer.meta.get("layer") or "") if producer is not None else ""
        for key, link in hops:
            res = self.links.get(key)
            if res is None:
                res = self.links[key] = simpy.Resource(env, capacity=1)
            req = res.request()
            yield req
            start = float(env.now)
            if first:
                first = False
                try:
                    self.mem[dst].alloc(t, nbytes, start, f"copy of {t}")
                except OutOfMemoryError as err:
                    self._fail(err)
                    return
            dur = self.transfer_fn(link, nbytes)
            if dur > 0:
                yield env.timeout(dur)
            end = float(env.now)
            a, b, owner, unit = self._hop_ends(key, link, src, dst)
            self.records.append(OpRecord(
                name=f"{t}->{dst}", op="Transfer", layer=layer, device=owner, unit=unit,
                start_s=start, end_s=end, flops=0.0, bytes=float(nbytes),
                bound="comm", energy_j=float(nbytes * link.energy_per_byte_j),
                dtype=self.graph.tensors[t].dtype, src=a, dst=b, tensor=t,
            ))
            res.release(req)
        if src in self.mem:
            self._done_with(t, src, env.now)
        self.ready[(t, dst)].succeed()


@dataclass(frozen=True)
class _NodeCost:
    cost: Any
    dtype: str
    view: bool
    work: Work | None = None
    key: Any = None  # (device, work, dtype, sparsity) of a default-cost op; None otherwise


def _is_view(graph: Graph, node: Node, work: Work) -> bool:
    """A zero-work op with one input of the output's size (Reshape, Squeeze...) is a view."""
    if work.flops or work.bytes or len([t for t in node.inputs if t]) != 1:
        return False
    outs = [t for t in node.outputs if t]
    return len(outs) == 1 and node.inputs[0] != "" and (
        graph.tensors[outs[0]].nbytes == graph.tensors[node.inputs[0]].nbytes)


def _costs(graph: Graph, nodes: list[Node], devs: list[str], system: SystemSpec,
           cost_fn: CostFn | None) -> list[_NodeCost]:
    cache: dict[Any, Any] = {}
    op_cost: Callable[..., Any] | None = None
    if cost_fn is None:
        from sim.cost import op_cost as default_cost

        op_cost = default_cost
    out = []
    for node, dev in zip(nodes, devs):
        spec = system.devices[dev]
        work = graph.work(node)
        dtype = compute_dtype(graph, node)
        if is_collective(node):  # timed as link flows by the engine, not by a cost model
            out.append(_NodeCost(FixedCost(0.0, unit="collective", bound="comm", flops=work.flops,
                                           bytes=work.bytes), dtype, False))
            continue
        key = None
        if cost_fn is not None:
            c = cost_fn(node, work, spec, dtype)
        else:
            sparsity = node.meta.get("sparsity")
            key = (dev, work, dtype, _hashable(sparsity))
            c = cache.get(key)
            if c is None:
                assert op_cost is not None
                c = cache[key] = op_cost(work, spec, dtype, sparsity=sparsity)
        if isinstance(c, (int, float)):
            c = FixedCost(float(c), flops=work.flops, bytes=work.bytes)
        if not math.isfinite(float(c.time_s)) or c.time_s < 0:
            why = ("cost_fn gave it" if cost_fn is not None else
                   "a rate, bandwidth or clock of the spec is too small for the work")
            raise SimError(f"op {node.name!r} ({node.op}) would take {c.time_s} s on {dev}: {why}",
                           where="cost_fn" if cost_fn is not None else (spec.source or spec.name))
        out.append(_NodeCost(c, dtype, _is_view(graph, node, work), work, key))
    return out


def _recoster(system: SystemSpec, nodes: list[Node]) -> Callable[[_NodeCost, str, float], Any]:
    """``op_cost`` again with cached reads, memoised by (device, work, dtype, sparsity, bytes)."""
    from sim.cost import op_cost

    memo: dict[Any, Any] = {}
    sparsity_of = {_hashable(n.meta.get("sparsity")): n.meta.get("sparsity") for n in nodes}

    def recost(nc: _NodeCost, dev: str, cached: float) -> Any:
        if nc.key is None or nc.work is None:
            return nc.cost  # a cost_fn's or a collective's cost: not the default model's
        k = (nc.key, cached)
        c = memo.get(k)
        if c is None:
            c = memo[k] = op_cost(nc.work, system.devices[dev], nc.dtype,
                                  sparsity=sparsity_of[nc.key[3]], cached_read_bytes=cached)
        return c

    return recost


def simulate(
    graph: Graph,
    hw: Any,
    *,
    placement: Mapping[str, str] | None = None,
    cost_fn: CostFn | None = None,
    host_inputs: bool = True,
    streams: int = 1,
    transfer_fn: Callable[[LinkSpec, float], float] | None = None,
    cache_reuse: bool = True,
    dispatch_s: float | str | None = None,
    cuda_graphs: bool = False,
    oom: str = "raise",
) -> Result:
    """Schedule ``graph`` on ``hw`` and return a ``Result``.

    ``hw``: a ``DeviceSpec``, a ``SystemSpec``, or a name/path for ``sim.hw.load_hardware``.
    The graph runs as given: casting to a dtype (``sim.simulate(..., dtype=)``) or any other
    pass happens before; the result's ``dtype`` is the one the graph was cast to, if any.
    ``placement``: op name / layer name / fnmatch pattern -> device instance (``"cpu0"``).
    ``cost_fn(node, work, device_spec, dtype)`` replaces ``sim.cost.op_cost`` (it may return a
    number of seconds or an object with OpCost's fields). ``host_inputs``: graph inputs start on
    the host and are copied over the host link. ``streams``: concurrent compute streams per
    device (more than one shares memory bandwidth). ``transfer_fn(link, nbytes)`` replaces
    ``sim.cost.transfer_time``. ``cache_reuse``: inputs an earlier op on the device touched
    and that are still in its reuse cache (an LRU as big as ``sim.cost.reuse_capacity``) are
    read at the cache's bandwidth; ``False`` streams every byte from main memory.
    ``dispatch_s``: host time to issue one kernel (seconds or a time string such as ``"8 us"``);
    None takes each device's ``arch.host_dispatch`` (0 when absent). The host issues
    kernels in topological order from one thread and an op starts no earlier than its issue.
    ``cuda_graphs``: the whole graph is one launch (one dispatch time), no per-op dispatch.
    ``oom``: what a step that does not fit a device's memory does. ``"raise"``: raise
    ``OutOfMemoryError`` at the first allocation that does not fit. ``"stop"``: return the
    result up to that allocation (ops that started before it), with ``meta["oom"]`` saying
    where it failed and ``needed_bytes``, the peak the whole step would need on that device.
    ``"ignore"``: simulate the whole step past capacity (peaks are the would-be peaks), with
    the same ``meta["oom"]``.
    """
    system = as_system(hw)
    if oom not in OOM_MODES:
        raise SimError(f"oom must be one of {', '.join(OOM_MODES)}, got {oom!r}", where="simulate")
    if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
        raise SimError(f"streams must be a whole number >= 1, got {streams!r}", where="simulate")
    check("streams", streams, "streams", "simulate")
    nodes = graph.topo_order()
    devs = place(nodes, system, placement)
    costs = _costs(graph, nodes, devs, system, cost_fn)
    if dispatch_s is None:
        per_dev = {d: spec_dispatch(spec) for d, spec in system.devices.items()}
    else:
        one = as_seconds(dispatch_s, where="dispatch_s")
        per_dev = dict.fromkeys(system.devices, one)
    issue = issue_times(nodes, devs, [c.view for c in costs], per_dev, cuda_graphs=cuda_graphs)
    from sim.cost import reuse_capacity, transfer_time

    capacity: dict[str, float] = {}
    if cache_reuse:
        capacity = {d: reuse_capacity(spec) for d, spec in system.devices.items()}
    eng = _Engine(graph, system, devs, costs, host_inputs=host_inputs, streams=streams,
                  transfer_fn=transfer_fn or transfer_time, cache_capacity=capacity,
                  recost=_recoster(system, nodes) if cache_reuse and cost_fn is None else None,
                  issue=issue, oom_strict=oom == "raise")
    eng.run()
    records = eng.records
    timelines = {d: m.timeline for d, m in eng.mem.items()}
    peaks = {d: m.peak for d, m in eng.mem.items()}
    first = min((m.oom for m in eng.mem.values() if m.oom is not None),
                key=lambda o: (o["time_s"], o["device"]), default=None)
    if first is not None:
        first = {**first, "needed_bytes": peaks[str(first["device"])], "mode": oom}
        if oom == "stop":
            records, timelines, peaks = _stop_at(first, records, timelines)
    result = build_result(graph, system, records, timelines, peaks, dtype=graph.meta.get("dtype"))
    if first is not None:
        result.meta["oom"] = first
    return result


OOM_MODES = ("raise", "stop", "ignore")


def _stop_at(oom: Mapping[str, Any], records: list[OpRecord],
             timelines: Mapping[str, list[tuple[float, float]]]
             ) -> tuple[list[OpRecord], dict[str, list[tuple[float, float]]], dict[str, float]]:
    """The run as it stands when the failing allocation is made: ops that started before it,
    memory up to it (the failing device at its last level before the allocation)."""
    t = float(oom["time_s"])
    kept = [r for r in records if r.start_s < t]
    cut: dict[str, list[tuple[float, float]]] = {}
    for d, tl in timelines.items():
        pts = [p for p in tl if p[0] < t]
        if d == oom["device"]:
            pts.append((t, float(oom["in_use_bytes"])))
        cut[d] = pts
    peaks = {d: max((b for _, b in pts), default=0.0) for d, pts in cut.items()}
    return kept, cut, peaks
