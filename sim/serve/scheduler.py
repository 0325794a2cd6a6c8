"""The serving loop: requests arrive, a scheduler forms each iteration's batch, the engine's
iteration time (``IterationTimer``) advances the clock.

* ``continuous``: iteration-level scheduling with chunked prefill, as vLLM (V1) and
  Sarathi-Serve do. Each iteration has a token budget (``max_batched_tokens``): running
  requests go first (one token for each decoding request, the next prompt chunk for one still
  prefilling), then waiting requests are admitted first-come first-served, their prompts cut
  into chunks that fit the remaining budget, up to ``max_num_seqs`` running. The KV cache is
  paged: ``block_size`` tokens a block, blocks allocated as a sequence grows. When a running
  request needs a block and none is free, the most recently admitted running request is
  preempted (its blocks freed; it goes back to the front of the queue and recomputes its
  prompt and the tokens it had generated, vLLM's recompute preemption).
* ``static``: request-level batching (a plain ``generate`` loop): when the engine is idle it
  takes up to ``max_num_seqs`` waiting requests whose whole KV reservation (prompt + output)
  fits, prefills them in one iteration padded to the longest prompt, then decodes all of them
  in lockstep for the longest output; the batch's requests are returned together at its end.

The last prefill chunk of a request samples its first token (time to first token ends
there); each decode iteration gives each decoding request one more token.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from sim.errors import SimError
from sim.serve.requests import RequestSpec
from sim.serve.timing import IterationTimer

SCHEDULERS = ("continuous", "static")


@dataclass(frozen=True)
class SchedulerConfig:
    """Batching limits (vLLM's names): ``max_num_seqs`` running requests, a per-iteration
    budget of ``max_batched_tokens`` new tokens, ``block_size`` tokens per KV block."""

    scheduler: str = "continuous"
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    block_size: int = 16

    def check(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise SimError(f"unknown scheduler {self.scheduler!r} (continuous or static)",
                           where="--scheduler")
        for name in ("max_num_seqs", "max_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise SimError(f"must be >= 1, got {getattr(self, name)}", where=name)


@dataclass
class RequestState:
    """One request's progress and timestamps (seconds)."""

    spec: RequestSpec
    computed: int = 0  # tokens whose keys/values are in the cache
    target: int = 0  # tokens to prefill before decoding (prompt + generated after a preemption)
    generated: int = 0
    blocks: int = 0
    scheduled_s: float | None = None  # first time any of its work ran
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0

    def __post_init__(self) -> None:
        self.target = self.spec.prompt_len


@dataclass
class Iteration:
    """One engine iteration: when, how long, and what it ran."""

    start_s: float
    duration_s: float
    decode_seqs: int
    prefill_seqs: int
    prefill_tokens: int
    running: int
    kv_blocks_used: int


@dataclass
class ServeRun:
    """What the serving loop produced."""

    requests: list[RequestState]
    iterations: list[Iteration] = field(default_factory=list)
    preemptions: int = 0
    kv_blocks: int = 0


def _blocks(tokens: int, size: int) -> int:
    return -(-tokens // size)


def run_continuous(specs: list[RequestSpec], timer: IterationTimer, cfg: SchedulerConfig,
                   kv_blocks: int) -> ServeRun:
    """Continuous batching with chunked prefill and recompute preemption (module doc)."""
    reqs = [RequestState(s) for s in specs]
    run = ServeRun(reqs, kv_blocks=kv_blocks)
    _check_fits(specs, cfg, kv_blocks)
    bs = cfg.block_size
    free = kv_blocks
    waiting: deque[RequestState] = deque()
    running: list[RequestState] = []
    nxt, now = 0, 0.0
    while nxt < len(reqs) or waiting or running:
        while nxt < len(reqs) and reqs[nxt].spec.arrival_s <= now:
            waiting.append(reqs[nxt])
            nxt += 1
        if not waiting and not running:
            now = reqs[nxt].spec.arrival_s
            continue
        budget = cfg.max_batched_tokens
        batch: list[tuple[RequestState, int]] = []  # (request, new tokens); 1 and decoding = decode
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            chunk = 1 if r.computed >= r.target else min(r.target - r.computed, budget)
            need = (r.computed + chunk + bs - 1) // bs - r.blocks
            while need > free:
                victim = running.pop()
                free += victim.blocks
                victim.blocks, victim.computed = 0, 0
                victim.target = victim.spec.prompt_len + victim.generated
                victim.preemptions += 1
                run.preemptions += 1
                waiting.appendleft(victim)
                preempted = True
                if victim is r:
                    break
            if preempted and (i >= len(running) or running[i] is not r):
                break
            free -= need
            r.blocks += need
            budget -= chunk
            batch.append((r, chunk))
            i += 1
        while waiting and budget > 0 and len(running) < cfg.max_num_seqs and not preempted:
            r = waiting[0]
            chunk = min(r.target - r.computed, budget)
            need = (r.computed + chunk + bs - 1) // bs - r.blocks
            if need > free:
                break
            waiting.popleft()
            running.append(r)
            free -= need
            r.blocks += need
            budget -= chunk
            batch.append((r, chunk))
        if not batch:
            raise SimError("no request fits the KV cache even alone", where="serve")
        n_dec = ctx_sum = pre_tokens = 0
        prefills: list[tuple[int, int]] = []
        for r, c in batch:
            if r.computed >= r.target:
                n_dec += 1
                ctx_sum += r.computed + 1
            else:
                prefills.append((c, r.computed))
                pre_tokens += c
            if r.scheduled_s is None:
                r.scheduled_s = now
        t = timer.iteration_s(ctx_sum, n_dec, prefills)
        run.iterations.append(Iteration(now, t, n_dec, len(prefills), pre_tokens, len(running),
                                        kv_blocks - free))
        now += t
        finished = False
        for r, c in batch:
            was_decoding = r.computed >= r.target
            r.computed += c
            if was_decoding:
                r.generated += 1
            elif r.computed == r.target:
                r.generated += 1
                if r.first_token_s is None:
                    r.first_token_s = now
            if r.generated >= r.spec.output_len:
                r.finish_s = now
                free += r.blocks
                r.blocks = 0
                finished = True
        if finished:
            running = [r for r in running if r.finish_s is None]
    return run


def _check_fits(specs: list[RequestSpec], cfg: SchedulerConfig, kv_blocks: int) -> None:
    worst = max(s.prompt_len + s.output_len for s in specs)
    if _blocks(worst, cfg.block_size) > kv_blocks:
        raise SimError(f"a request of {worst} tokens needs {_blocks(worst, cfg.block_size)} KV "
                       f"blocks; the cache holds {kv_blocks}", where="serve")


def run_static(specs: list[RequestSpec], timer: IterationTimer, cfg: SchedulerConfig,
               kv_blocks: int) -> ServeRun:
    """Static (request-level) batching, padded to the batch's longest prompt and output."""
    reqs = [RequestState(s) for s in specs]
    run = ServeRun(reqs, kv_blocks=kv_blocks)
    _check_fits(specs, cfg, kv_blocks)
    bs = cfg.block_size
    nxt, now = 0, 0.0
    waiting: deque[RequestState] = deque()
    while nxt < len(reqs) or waiting:
        while nxt < len(reqs) and reqs[nxt].spec.arrival_s <= now:
            waiting.append(reqs[nxt])
            nxt += 1
        if not waiting:
            now = reqs[nxt].spec.arrival_s
            continue
        batch: list[RequestState] = []
        P = O = 0
        while waiting and len(batch) < cfg.max_num_seqs:
            r = waiting[0]
            p, o = max(P, r.spec.prompt_len), max(O, r.spec.output_len)
            if (len(batch) + 1) * _blocks(p + o, bs) > kv_blocks:
                break
            batch.append(waiting.popleft())
            P, O = p, o
        used = len(batch) * _blocks(P + O, bs)
        t = timer.iteration_s(0, 0, [(P, 0)] * len(batch))
        run.iterations.append(Iteration(now, t, 0, len(batch), P * len(batch), len(batch), used))
        for r in batch:
            r.scheduled_s = now
        now += t
        for r in batch:
            r.first_token_s = now
        for step in range(1, O):
            t = timer.iteration_s(len(batch) * (P + step), len(batch), [])
            run.iterations.append(Iteration(now, t, len(batch), 0, 0, len(batch), used))
            now += t
        for r in batch:
            r.computed = r.spec.prompt_len + r.spec.output_len - 1
            r.generated = r.spec.output_len
            r.finish_s = now
    return run


def kv_capacity_blocks(capacity_bytes: float, weight_bytes: float, kv_bytes_per_token: float,
                       block_size: int, memory_utilization: float) -> int:
    """KV blocks that fit in ``memory_utilization`` of a device's memory after the weights
    (vLLM's ``gpu_memory_utilization``; the rest is left to activations and the runtime)."""
    free = capacity_bytes * memory_utilization - weight_bytes
    n = math.floor(free / (kv_bytes_per_token * block_size)) if free > 0 else 0
    if n < 1:
        raise SimError(f"the weights ({weight_bytes / 2**30:.1f} GiB) leave no room for a KV "
                       f"cache in {memory_utilization:.0%} of {capacity_bytes / 2**30:.1f} GiB",
                       where="serve")
    return n
