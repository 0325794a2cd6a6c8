"""Collectives (AllReduce, AllGather, ReduceScatter, AllToAll) as flows over the system's links.

A collective node spans the devices of its ``group`` attribute (``sim/ops/collective.py``).
In the all-members form input and output ``j`` live on ``group[j]``; in the one-member form
its one input and outputs live on the node's own device and the other members' data is
taken to be there at the same time. The op starts when its inputs are ready on every member
(a collective is a barrier) and runs the ring algorithm in group order:

* AllReduce of ``S`` bytes per member: ``2(n-1)`` steps (reduce-scatter, then all-gather),
  each member sending ``S/n`` bytes to its ring successor in every step;
* AllGather (``S`` = the gathered output) and ReduceScatter (``S`` = one member's input):
  ``n-1`` steps of ``S/n`` bytes.

* AllToAll (``S`` = one member's tensor): the pairwise exchange, ``n-1`` steps of ``S/n``
  bytes, member ``k`` sending its chunk for member ``(k+s) mod n`` in step ``s``; a step needs
  nothing received, so each member streams its ``n-1`` chunks back to back and, with equal
  links, the op takes ``(n-1) (latency + S/(n B))`` (the alpha-beta form of
  ``sim/cluster/collectives.py`` inside a node, with one latency per step).

Each send is an ordinary transfer over the engine's routes and link resources (a direct
link, the switch's egress port of the sender, the device link, or through the host), so it
queues behind (and delays) other copies on those links. Member ``i`` sends its step-``s``
chunk once it has sent its step-``s-1`` chunk and received the step-``s-1`` chunk from its
predecessor, so with equal links the op takes ``steps x transfer_time(link, S/n)``, e.g.
``2(n-1) (latency + S/(n B))`` for AllReduce. The reduction arithmetic is not timed (it
runs in the copy kernels at far above link speed) and the op holds no compute stream, so it
overlaps compute as NCCL does on its own stream.

The result has one record per member: ``op`` the collective, ``unit == "collective"``,
``bound == "comm"``, ``start_s`` when all inputs were ready, ``end_s`` when that member's
last send and receive were done, ``bytes`` what it sent, ``flops`` its share of the
reduction, ``energy_j`` the links' energy for what it sent; plus ``group``, ``steps``,
``chunk_bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import simpy

from sim.errors import OutOfMemoryError, SpecError
from sim.graph import Node
from sim.ops.collective import group_of
from sim.ops.registry import has_trait
from sim.report.record import OpRecord

if TYPE_CHECKING:
    from sim.engine.scheduler import _Engine

UNIT = "collective"


def is_collective(node: Node) -> bool:
    return has_trait(node.op, "collective")


def member_devices(node: Node, dev: str, devices: Any = None) -> list[str]:
    """The device of each input/output slot of ``node`` (placed on ``dev``).

    Ordinary nodes: ``dev`` for every slot. A collective in the all-members form: ``group``
    (slot ``j`` on ``group[j]``); in the one-member form: ``dev``. With ``devices`` given,
    an unknown group member is a ``SpecError``.
    """
    if not is_collective(node):
        return [dev] * max(len(node.inputs), len(node.outputs))
    group = group_of(node.attrs)
    if devices is not None:
        for d in group:
            if d not in devices:
                raise SpecError(f"unknown device {d!r} in collective group (devices: {', '.join(devices)})",
                                where=f"node {node.name!r} ({node.op}) attribute group")
    if len(node.inputs) == len(group) and len(group) > 1:
        return list(group)
    return [dev] * max(len(node.inputs), len(node.outputs))


def ring_plan(node: Node, nbytes_in: float, nbytes_out: float) -> tuple[int, float]:
    """(steps, bytes each member sends per step) of the ring algorithm for ``node``."""
    n = len(group_of(node.attrs))
    if n <= 1:
        return 0, 0.0
    if node.op == "AllReduce":
        return 2 * (n - 1), nbytes_in / n
    if node.op == "AllGather":
        return n - 1, nbytes_out / n
    return n - 1, nbytes_in / n  # ReduceScatter, AllToAll


def run_collective(eng: _Engine, i: int) -> Any:
    """SimPy process body of collective node ``i`` (its inputs are ready on every member)."""
    node = eng.nodes[i]
    dev = eng.devs[i]
    env = eng.env
    g = eng.graph
    group = group_of(node.attrs)
    slots = member_devices(node, dev)
    start = float(env.now)
    # outputs are allocated on their members when the op starts
    try:
        for t, d in zip(node.outputs, slots):
            if t:
                eng.mem[d].alloc(t, g.tensors[t].nbytes, start, node.name)
    except OutOfMemoryError as err:
        eng._fail(err)
        return
    steps, chunk = ring_plan(node, g.tensors[node.inputs[0]].nbytes, g.tensors[node.outputs[0]].nbytes)
    n = len(group)
    sent = [[env.event() for _ in range(n)] for _ in range(steps)]
    ends = [start] * n
    energy = [0.0] * n

    pairwise = node.op == "AllToAll"

    def member(k: int) -> Any:
        src = group[k]
        for s in range(steps):
            hops = eng.router.route(src, group[(k + (s + 1 if pairwise else 1)) % n])
            if s > 0 and not pairwise:
                prev = sent[s - 1][(k - 1) % n]
                if not prev.processed:
                    yield prev
            for key, link in hops:
                res = eng.links.get(key)
                if res is None:
                    res = eng.links[key] = simpy.Resource(env, capacity=1)
                req = res.request()
                yield req
                dur = eng.transfer_fn(link, chunk)
                if dur > 0:
                    yield env.timeout(dur)
                energy[k] += chunk * link.energy_per_byte_j
                res.release(req)
            sent[s][k].succeed()
            ends[k] = max(ends[k], float(env.now))

    procs = [env.process(member(k)) for k in range(n)] if steps else []
    for p in procs:
        if not p.processed:
            yield p
    if pairwise and steps:  # a member is done once every other member's chunk for it has arrived
        ends = [max(ends)] * n
    for k in range(n):  # a member is done once it has also received its last chunk
        if steps:
            ends[k] = max(ends[k], ends[(k - 1) % n])
    end = float(env.now)
    cost = eng.costs[i]
    all_members = len(set(slots)) > 1
    for k, d in enumerate(group):
        # the node's FLOPs: shared by the members (all-members form) or its own device's
        flops = float(cost.cost.flops) / n if all_members else (float(cost.cost.flops) if d == dev else 0.0)
        eng.records.append(OpRecord(
            name=node.name, op=node.op, layer=node.meta.get("layer") or "",
            device=d, unit=UNIT, start_s=start, end_s=ends[k],
            flops=flops, bytes=float(steps * chunk), bound="comm", energy_j=energy[k],
            dtype=cost.dtype, group=list(group), steps=steps, chunk_bytes=float(chunk),
        ))
    for t, d in eng.uses[i]:
        eng._done_with(t, d, end)
    for t, d in zip(node.outputs, slots):
        if not t:
            continue
        if (t, d) not in eng.left and t not in eng.keep:
            eng.mem[d].release(t, end)
        done = eng.ready.get((t, d))
        if done is not None:
            done.succeed()
