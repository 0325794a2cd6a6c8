"""The pipeline schedule at microbatch granularity, as a SimPy simulation over stages.

Every device of a pipeline (one representative per stage: data-parallel replicas and TP
ranks are identical) runs its tasks in program order on one compute stream: forward ``F`` and
backward ``B`` of each microbatch for each of its model chunks. The orders are Megatron-LM's:

* ``gpipe``: all forwards, then all backwards;
* ``1f1b``: ``p - s - 1`` warm-up forwards on stage ``s``, then one forward / one backward,
  then the remaining backwards (Narayanan et al. 2021, section 2.2.1);
* ``interleaved:V``: ``V`` chunks per device (virtual stage ``c p + s``), warm-up
  ``2(p - s - 1) + (V - 1) p`` chunk-forwards, microbatches in groups of ``p`` per chunk.

``F(v, j)`` waits for ``F(v-1, j)`` and its activation's point-to-point transfer; ``B(v, j)``
for ``B(v+1, j)`` and its gradient's transfer. A transfer holds the link from the sending
stage to the next, so transfers in one direction queue. Data-parallel gradient reduction runs
on each device's own network resource: in buckets released as the last microbatch's backward
proceeds through the chunk (overlapped), or after it; then the optimizer step. ZeRO-3 gathers
each chunk's parameters before its forward and backward (one task ahead) and reduce-scatters
its gradients after each backward. The step ends when every device has updated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from sim.errors import SimError


@dataclass(frozen=True)
class StageTimes:
    """Per-microbatch times of one virtual stage (a chunk of layers on one device)."""

    fwd_s: float
    bwd_s: float  # including recomputation
    grad_bytes: float = 0.0  # gradient bytes the chunk reduces over data parallelism
    param_gather_bytes: float = 0.0  # ZeRO-3: the chunk's parameters to all-gather


@dataclass(frozen=True)
class Comm:
    """Communication costs the schedule needs (seconds; functions of bytes)."""

    p2p_fwd_s: float = 0.0  # activation send between consecutive stages
    p2p_bwd_s: float = 0.0  # gradient send back
    dp_reduce: Callable[[float], float] | None = None  # bucket bytes -> seconds (all-reduce / reduce-scatter)
    dp_gather: Callable[[float], float] | None = None  # bytes -> seconds (ZeRO all-gather)
    post_step_s: Callable[[int], float] | None = (
        None  # device -> seconds after the optimizer (ZeRO-1/2 gather)
    )
    extra_reduce_s: Callable[[int], float] | None = (
        None  # device -> extra reduce before the update (tied embedding, SP norms)
    )


@dataclass
class Event:
    """One interval on one device: ``kind`` is F, B, opt, p2p, dp, zero, emb."""

    device: int
    kind: str
    start_s: float
    end_s: float
    microbatch: int = -1
    chunk: int = 0
    track: str = "compute"


@dataclass
class ScheduleResult:
    makespan_s: float
    events: list[Event] = field(default_factory=list)
    busy_s: list[float] = field(default_factory=list)  # compute busy per device (F + B)
    pipeline_end_s: list[float] = field(default_factory=list)  # last B end per device
    exposed: dict[str, float] = field(default_factory=dict)  # exposed comm by kind (device max)

    def bubble_fraction(self) -> float:
        """Idle share of the pipeline phase (step start to the last backward), averaged over
        devices: ``1 - busy / span``; ``(p-1)/(m+p-1)`` for balanced 1F1B with free transfers."""
        span = max(self.pipeline_end_s, default=0.0)
        fr = [1 - b / span for b in self.busy_s] if span > 0 else []
        return sum(fr) / len(fr) if fr else 0.0


def task_order(schedule: str, p: int, s: int, m: int, chunks: int = 1) -> list[tuple[str, int, int]]:
    """The (F|B, microbatch, chunk) tasks of stage ``s`` of ``p`` in program order.

    >>> [t[:2] for t in task_order("1f1b", 2, 0, 3)]
    [('F', 0), ('F', 1), ('B', 0), ('F', 2), ('B', 1), ('B', 2)]
    """
    if schedule == "gpipe":
        return [("F", j, 0) for j in range(m)] + [("B", j, 0) for j in range(m)]
    if schedule == "1f1b" or chunks == 1:
        warm = min(p - s - 1, m)
        out = [("F", j, 0) for j in range(warm)]
        f, b = warm, 0
        while f < m:
            out.append(("F", f, 0))
            f += 1
            out.append(("B", b, 0))
            b += 1
        out += [("B", j, 0) for j in range(b, m)]
        return out
    # interleaved (Megatron-LM schedules.py, forward_backward_pipelining_with_interleaving)
    v = chunks
    total = m * v
    warm = min((p - s - 1) * 2 + (v - 1) * p, total)

    def fwd_id(k: int) -> tuple[int, int]:
        chunk = (k // p) % v
        mb = (k // (p * v)) * p + k % p
        return mb, chunk

    def bwd_id(k: int) -> tuple[int, int]:
        chunk = v - 1 - (k // p) % v
        mb = (k // (p * v)) * p + k % p
        return mb, chunk

    out = [("F", *fwd_id(k)) for k in range(warm)]
    kf, kb = warm, 0
    while kf < total:
        out.append(("F", *fwd_id(kf)))
        kf += 1
        out.append(("B", *bwd_id(kb)))
        kb += 1
    out += [("B", *bwd_id(k)) for k in range(kb, total)]
    return out


def max_in_flight(order: list[tuple[str, int, int]]) -> int:
    """Most chunk-forwards whose backward has not run yet, over the order (activations held)."""
    live = peak = 0
    for kind, _, _ in order:
        live += 1 if kind == "F" else -1
        peak = max(peak, live)
    return peak


def simulate_schedule(
    stages: list[StageTimes],
    p: int,
    m: int,
    schedule: str,
    chunks: int,
    comm: Comm,
    opt_s: list[float],
    *,
    overlap: bool = True,
    bucket_bytes: float = 80e6,
    zero: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ScheduleResult:
    """Run the step: ``stages[c * p + s]`` are the times of chunk ``c`` on device ``s``."""
    if len(stages) != p * chunks:
        raise SimError(f"expected {p * chunks} virtual stages, got {len(stages)}", where="schedule")
    env = simpy.Environment()
    nvs = p * chunks
    fdone = {(v, j): env.event() for v in range(nvs) for j in range(m)}
    bdone = {(v, j): env.event() for v in range(nvs) for j in range(m)}
    f_arrive = {(v, j): env.event() for v in range(nvs) for j in range(m)}
    b_arrive = {(v, j): env.event() for v in range(nvs) for j in range(m)}
    link_fwd = [simpy.Resource(env, 1) for _ in range(p)]
    link_bwd = [simpy.Resource(env, 1) for _ in range(p)]
    net = [simpy.Resource(env, 1) for _ in range(p)]  # each device's DP/ZeRO network stream
    events: list[Event] = []
    busy = [0.0] * p
    pipe_end = [0.0] * p
    exposed = {"pp": [0.0] * p, "dp": [0.0] * p, "zero": [0.0] * p, "emb": [0.0] * p}
    finished = [0.0] * p
    done_tasks = [0]
    ftime: dict[tuple[int, int], float] = {}
    btime: dict[tuple[int, int], float] = {}

    def send(
        src_dev: int, ev: simpy.Event, dur: float, res: simpy.Resource, j: int, c: int, kind: str
    ) -> Any:
        with res.request() as req:
            yield req
            t0 = env.now
            if dur > 0:
                yield env.timeout(dur)
            events.append(Event(src_dev, kind, t0, env.now, j, c, "p2p"))
        ev.succeed()

    def reduce_bucket(dev: int, nbytes: float, after: float, out: list[float]) -> Any:
        if env.now < after:
            yield env.timeout(after - env.now)
        with net[dev].request() as req:
            yield req
            t0 = env.now
            dur = comm.dp_reduce(nbytes) if comm.dp_reduce else 0.0
            yield env.timeout(dur)
            events.append(Event(dev, "dp", t0, env.now, -1, 0, "dp"))
        out.append(env.now)

    def gather(dev: int, nbytes: float, c: int, j: int, kind: str) -> Any:
        with net[dev].request() as req:
            yield req
            t0 = env.now
            yield env.timeout(comm.dp_gather(nbytes) if comm.dp_gather else 0.0)
            events.append(Event(dev, kind, t0, env.now, j, c, "dp"))

    def device(s: int) -> Any:
        order = task_order(schedule, p, s, m, chunks)
        reduce_procs: list[Any] = []
        reduce_ends: list[float] = []
        last_b = {c: max(j for k, j, cc in order if k == "B" and cc == c) for c in range(chunks)}
        pending: Any = None
        if zero >= 3 and order:
            _, j0, c0 = order[0]
            pending = env.process(gather(s, stages[c0 * p + s].param_gather_bytes, c0, j0, "zero"))
        for idx, (kind, j, c) in enumerate(order):
            v = c * p + s
            st = stages[v]
            ready = env.now
            if kind == "F":
                if v > 0:
                    yield f_arrive[(v, j)]
                    # time spent on the transfer itself after the producer finished (not the bubble)
                    exposed["pp"][s] += max(0.0, env.now - max(ready, ftime[(v - 1, j)]))
                dur = st.fwd_s
            else:
                if v < nvs - 1:
                    yield b_arrive[(v, j)]
                    exposed["pp"][s] += max(0.0, env.now - max(ready, btime[(v + 1, j)]))
                if not fdone[(v, j)].processed:
                    yield fdone[(v, j)]
                dur = st.bwd_s
            if pending is not None:  # ZeRO-3: this task's parameters, gathered one task ahead
                t_before = env.now
                yield pending
                exposed["zero"][s] += env.now - t_before
                pending = None
                if idx + 1 < len(order):
                    k2, j2, c2 = order[idx + 1]
                    pending = env.process(gather(s, stages[c2 * p + s].param_gather_bytes, c2, j2, "zero"))
            t0 = env.now
            yield env.timeout(dur)
            busy[s] += dur
            events.append(Event(s, kind, t0, env.now, j, c))
            done_tasks[0] += 1
            if progress is not None:
                progress(1)
            if kind == "F":
                ftime[(v, j)] = env.now
                fdone[(v, j)].succeed()
                if v < nvs - 1:
                    dst = (v + 1) % p
                    env.process(
                        send(
                            s,
                            f_arrive[(v + 1, j)],
                            comm.p2p_fwd_s if dst != s or chunks > 1 else 0.0,
                            link_fwd[s],
                            j,
                            c,
                            "send-act",
                        )
                    )
            else:
                btime[(v, j)] = env.now
                bdone[(v, j)].succeed()
                if v > 0:
                    env.process(send(s, b_arrive[(v - 1, j)], comm.p2p_bwd_s, link_bwd[s], j, c, "send-grad"))
                if zero >= 3:  # gradients reduce-scattered after every backward
                    reduce_procs.append(env.process(reduce_bucket(s, st.grad_bytes, env.now, reduce_ends)))
                elif j == last_b[c] and st.grad_bytes > 0:
                    nb = max(1, math.ceil(st.grad_bytes / bucket_bytes))
                    for i in range(nb):
                        size = min(bucket_bytes, st.grad_bytes - i * bucket_bytes)
                        at = t0 + dur * (i + 1) / nb if overlap else env.now
                        reduce_procs.append(env.process(reduce_bucket(s, size, at, reduce_ends)))
        pipe_end[s] = env.now
        t_wait = env.now
        for proc in reduce_procs:
            if not proc.processed:
                yield proc
        exposed["dp"][s] += env.now - t_wait
        if comm.extra_reduce_s is not None:
            extra = comm.extra_reduce_s(s)
            if extra > 0:
                t0 = env.now
                yield env.timeout(extra)
                events.append(Event(s, "emb", t0, env.now, -1, 0, "dp"))
                exposed["emb"][s] += extra
        t0 = env.now
        yield env.timeout(opt_s[s])
        events.append(Event(s, "opt", t0, env.now))
        if comm.post_step_s is not None:
            post = comm.post_step_s(s)
            if post > 0:
                t0 = env.now
                yield env.timeout(post)
                events.append(Event(s, "zero", t0, env.now, -1, 0, "dp"))
                exposed["zero"][s] += post
        finished[s] = env.now

    for s in range(p):
        env.process(device(s))
    env.run()
    unfinished = [s for s in range(p) if finished[s] == 0.0 and (m > 0)]
    if unfinished and any(not bdone[(0, j)].processed for j in range(m)):
        raise SimError("pipeline schedule deadlocked", where="schedule")
    res = ScheduleResult(makespan_s=max(finished), events=events, busy_s=busy, pipeline_end_s=pipe_end)
    res.exposed = {k: max(v) for k, v in exposed.items()}
    return res
