"""Serving metrics, JSON and a Perfetto (Chrome JSON) trace of iterations and requests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.serve.scheduler import SchedulerConfig, ServeRun
from sim.serve.timing import IterationTimer

TIMELINE_POINTS = 400  # samples of batch size / KV occupancy kept in the JSON


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p90 / p99 and the mean (numpy's linear interpolation); None when empty."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean())}


def _timeline(run: ServeRun) -> dict[str, list[float]]:
    its = run.iterations
    step = max(1, -(-len(its) // TIMELINE_POINTS))
    pick = its[::step]
    return {"time_s": [i.start_s for i in pick],
            "batch_seqs": [i.decode_seqs + i.prefill_seqs for i in pick],
            "batch_tokens": [i.decode_seqs + i.prefill_tokens for i in pick],
            "kv_occupancy": [i.kv_blocks_used / run.kv_blocks for i in pick]}


def summarise(run: ServeRun, timer: IterationTimer, cfg: SchedulerConfig, kv_bytes_per_token: float,
              weight_bytes: float, hardware: str, ranks: int = 1) -> dict[str, Any]:
    """The JSON summary of a serving run (see docs/inference.md for every field); ``ranks``
    data-parallel ranks ran alike (expert parallelism), so throughputs are ``ranks`` times the
    simulated rank's."""
    done = [(r.spec, r.first_token_s, r.finish_s) for r in run.requests
            if r.finish_s is not None and r.first_token_s is not None]
    ttft = [first - spec.arrival_s for spec, first, _ in done]
    tpot = [(end - first) / (spec.output_len - 1) for spec, first, end in done if spec.output_len > 1]
    lat = [end - spec.arrival_s for spec, _, end in done]
    start = min(r.spec.arrival_s for r in run.requests)
    span = max(max((end for _, _, end in done), default=start) - start, 1e-12)
    out_tokens = sum(spec.output_len for spec, _, _ in done)
    in_tokens = sum(spec.prompt_len for spec, _, _ in done)
    its = run.iterations
    busy = sum(i.duration_s for i in its)
    w = np.asarray([i.duration_s for i in its]) if its else np.zeros(1)
    batch = np.asarray([i.decode_seqs + i.prefill_seqs for i in its]) if its else np.zeros(1)
    occ = np.asarray([i.kv_blocks_used for i in its]) / run.kv_blocks if its else np.zeros(1)
    return {
        "workload": timer.model.info.name, "hardware": hardware, "dtype": timer.dtype,
        "kv_dtype": timer.kv_dtype, "quant": timer.quant, "tp": max(1, len(timer.tp_group)),
        "ep": max(1, len(timer.ep_group)), "pp": timer.pp,
        "ep_dispatcher": timer.ep_dispatcher if len(timer.ep_group) > 1 else "",
        "scheduler": cfg.scheduler,
        "config": {"max_num_seqs": cfg.max_num_seqs, "max_batched_tokens": cfg.max_batched_tokens,
                   "block_size": cfg.block_size},
        "requests": ranks * len(run.requests), "completed": ranks * len(done),
        "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot), "latency_s": percentiles(lat),
        "throughput_tokens_per_s": ranks * out_tokens / span,
        "throughput_requests_per_s": ranks * len(done) / span,
        "input_tokens_per_s": ranks * in_tokens / span,
        "duration_s": span, "engine_busy_fraction": busy / span,
        "iterations": len(its), "preemptions": run.preemptions,
        "batch_size": {"mean_time_weighted": float((batch * w).sum() / max(w.sum(), 1e-30)),
                       "max": int(batch.max())},
        "kv_cache": {"blocks": run.kv_blocks, "block_size": cfg.block_size,
                     "bytes_per_token": kv_bytes_per_token,
                     "capacity_tokens": run.kv_blocks * cfg.block_size,
                     "peak_occupancy": float(occ.max()),
                     "mean_occupancy_time_weighted": float((occ * w).sum() / max(w.sum(), 1e-30))},
        "weights_bytes": weight_bytes,
        "timeline": _timeline(run),
        "timing": {"simulations": timer.simulations,
                   "bucketing": "sizes up to 16 exact, then 8 grid points per octave, linear "
                                "interpolation between them (docs/inference.md)"},
    }


@dataclass
class ServeResult:
    """``summary`` (the JSON) and the ``run`` (requests and iterations) it came from."""

    summary: dict[str, Any]
    run: ServeRun

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.summary, f, indent=1, sort_keys=True)
            f.write("\n")

    def trace_events(self) -> list[dict[str, Any]]:
        """Chrome/Perfetto events: iterations on the engine track (with batch and KV-occupancy
        counters), each request as an async slice split into queued, prefill and decode."""
        us = 1e6
        ev: list[dict[str, Any]] = [
            {"ph": "M", "pid": 0, "name": "process_name", "args": {"name": "engine"}},
            {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "requests"}},
        ]
        for i, it in enumerate(self.run.iterations):
            ev.append({"ph": "X", "pid": 0, "tid": 0, "name": "iteration", "ts": it.start_s * us,
                       "dur": it.duration_s * us,
                       "args": {"i": i, "decode_seqs": it.decode_seqs, "prefill_seqs": it.prefill_seqs,
                                "prefill_tokens": it.prefill_tokens}})
            ev.append({"ph": "C", "pid": 0, "name": "batch", "ts": it.start_s * us,
                       "args": {"seqs": it.decode_seqs + it.prefill_seqs,
                                "tokens": it.decode_seqs + it.prefill_tokens}})
            ev.append({"ph": "C", "pid": 0, "name": "kv_occupancy", "ts": it.start_s * us,
                       "args": {"fraction": it.kv_blocks_used / self.run.kv_blocks}})
        for r in self.run.requests:
            if r.finish_s is None or r.first_token_s is None or r.scheduled_s is None:
                continue
            rid = r.spec.rid
            for name, a, b in (("queued", r.spec.arrival_s, r.scheduled_s),
                               ("prefill", r.scheduled_s, r.first_token_s),
                               ("decode", r.first_token_s, r.finish_s)):
                args = {"prompt_len": r.spec.prompt_len, "output_len": r.spec.output_len,
                        "preemptions": r.preemptions}
                ev.append({"ph": "b", "cat": "request", "pid": 1, "id": rid, "name": name,
                           "ts": a * us, "args": args})
                ev.append({"ph": "e", "cat": "request", "pid": 1, "id": rid, "name": name, "ts": b * us})
        return ev

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"traceEvents": self.trace_events(), "displayTimeUnit": "ms"}, f)
            f.write("\n")
