"""LLM serving: prefill/decode step graphs with a KV cache, a request scheduler, and serving
metrics (time to first token, time per output token, latency, throughput).

The module is callable: ``sim.serve(...)`` is ``sim.serve.serve(...)``.

>>> import sim
>>> r = sim.serve("gpt2", "h100", rate=50, requests=20, prompt_len=64, output_len=16)
>>> r.summary["completed"], r.summary["ttft_s"]["p50"] > 0
(20, True)
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

from sim.dtypes import itemsize
from sim.errors import SimError
from sim.hw import load_hardware
from sim.serve.model import ServeModel, generate_cached, generate_recompute
from sim.serve.report import ServeResult, summarise
from sim.serve.requests import RequestSpec, load_trace, poisson
from sim.serve.scheduler import SchedulerConfig, kv_capacity_blocks, run_continuous, run_static
from sim.serve.timing import IterationTimer

__all__ = ["IterationTimer", "RequestSpec", "SchedulerConfig", "ServeModel", "ServeResult",
           "generate_cached", "generate_recompute", "load_trace", "poisson", "serve"]


def _device(hw: Any) -> Any:
    """The device spec to serve on: ``hw`` itself, or a system's (a cluster node's) first
    accelerator."""
    from sim.hw import load_hardware
    from sim.hw.spec import accelerator

    spec = accelerator(load_hardware(hw) if isinstance(hw, str) else hw)
    if not getattr(spec, "memory", None):
        raise SimError("serving needs a device spec with a memory level", where=str(hw))
    return spec


def _pipeline(timer: IterationTimer, hw: Any, pp: int) -> None:
    """Split the model over ``pp`` nodes of cluster ``hw`` (pipeline parallelism): the timer
    adds ``pp - 1`` activation sends per iteration, timed by ``sim.cluster``'s p2p model on
    the cluster's fabric (one NIC across nodes)."""
    from sim.cluster.collectives import Fabric, Group, collective_time
    from sim.hw import load_hardware
    from sim.hw.spec import ClusterSpec

    spec = load_hardware(hw) if isinstance(hw, str) else hw
    if not isinstance(spec, ClusterSpec) or spec.nodes < pp:
        raise SimError(f"--pp {pp} needs a cluster spec of at least {pp} nodes (e.g. dgx-h100-cluster)",
                       where="--pp")
    if timer.model.info.n_layer % pp:
        raise SimError(f"{timer.model.info.n_layer} layers do not split into {pp} stages", where="--pp")
    fab = Fabric.of(spec)
    timer.pp = pp
    timer.p2p_s = lambda nbytes: collective_time("p2p", nbytes, fab, Group(2, 1)).seconds


def _timer(workload: str, hw: Any, device: Any, tp: int, dtype: str, kv_dtype: str, quant: str,
           engine: dict[str, Any], params: dict[str, Any], ep: int = 1) -> IterationTimer:
    """The iteration timer of one rank (``tp`` > 1: a tensor-parallel shard on a system;
    ``ep`` > 1: an expert-parallel rank of a MoE model)."""
    model = ServeModel(workload, **params)
    if tp == 1 and ep == 1:
        return IterationTimer(model, device, dtype, kv_dtype, quant, engine=engine)
    from sim.hw import load_hardware
    from sim.serve.parallel import tp_params

    if tp > 1 and ep > 1:
        raise SimError("give --tp or --ep, not both", where="--ep")
    n, opt = (tp, "--tp") if tp > 1 else (ep, "--ep")
    system = load_hardware(hw) if isinstance(hw, str) else hw
    accel = list(getattr(system, "accelerators", []) or [])
    if n < 1 or len(accel) < n:
        raise SimError(f"{opt} {n} needs a system with at least {n} accelerators (e.g. dgx-h100); "
                       f"{getattr(system, 'name', hw)} has {len(accel)}", where=opt)
    if ep > 1:
        experts = int(model.params.get("experts", 0) or 0)
        if not experts or experts % ep:
            raise SimError(f"--ep {ep} needs a MoE workload whose experts ({experts}) it divides",
                           where="--ep")
        rank = ServeModel(workload, **{**params, "expert_shards": ep})
        return IterationTimer(rank, system, dtype, kv_dtype, quant, engine=engine,
                              ep_group=tuple(accel[:ep]))
    shard = tp_params(model.params, tp)
    rank = ServeModel(workload, **{**params, **shard})
    return IterationTimer(rank, system, dtype, kv_dtype, quant, engine=engine,
                          tp_group=tuple(accel[:tp]), vocab_sharded="vocab" in shard)


def serve(workload: str, hw: Any, *, rate: float = math.inf, requests: int = 100,
          prompt_len: int = 512, output_len: int = 128, trace: str | None = None,
          scheduler: str = "continuous", dtype: str = "bf16", kv_dtype: str = "", quant: str = "",
          tp: int = 1, ep: int = 1, pp: int = 1, seed: int = 0, ep_dispatcher: str = "alltoall",
          max_num_seqs: int = 256, max_batched_tokens: int = 2048, block_size: int = 16,
          memory_utilization: float = 0.9, kv_blocks: int | None = None,
          engine: dict[str, Any] | None = None, timer: IterationTimer | None = None,
          **params: Any) -> ServeResult:
    """Simulate serving ``workload`` on device ``hw`` (a name, path or spec).

    Requests come from ``trace`` (CSV/JSONL, ``sim.serve.requests``) or are ``requests``
    Poisson arrivals at ``rate`` per second (``seed``) of ``prompt_len`` prompt and
    ``output_len`` generated tokens. ``scheduler``: continuous (chunked prefill) or static.
    ``dtype``: weights and activations; ``kv_dtype``: the KV cache (default ``dtype``);
    ``quant``: int8 / int4 weight-only GEMMs (``sim.serve.quantize``). ``tp`` > 1: tensor
    parallelism over the first ``tp`` GPUs of ``hw`` (a system such as dgx-h100), one rank's
    shard timed with its all-reduces (``sim.serve.parallel``); ``ep`` > 1: expert parallelism of
    a MoE model over ``ep`` GPUs (data-parallel attention, each rank serving every ``ep``-th
    request; throughputs are the ranks' total), its tokens dispatched to the experts by an
    all-to-all (``ep_dispatcher="allgather"``: all-gather / reduce-scatter, an upper bound).
    ``pp`` > 1: pipeline parallelism over ``pp``
    nodes of a cluster spec (dgx-h100-cluster), with ``tp`` inside each node.
    The KV cache gets what ``memory_utilization`` of device memory leaves after the weights
    (or ``kv_blocks`` blocks of ``block_size`` tokens). ``engine`` holds ``sim.simulate``
    options; ``timer`` reuses an ``IterationTimer`` (and its memo) across runs; ``params``
    override workload params."""
    cfg = SchedulerConfig(scheduler, max_num_seqs, max_batched_tokens, block_size)
    cfg.check()
    specs = load_trace(trace) if trace else poisson(rate, requests, prompt_len, output_len, seed)
    device = _device(hw)
    if timer is None:
        spec = load_hardware(hw) if isinstance(hw, str) else hw
        node = getattr(spec, "node", spec)  # a cluster's node runs the TP / EP ranks
        timer = _timer(workload, node, device, tp, dtype, kv_dtype, quant, dict(engine or {}), params, ep)
        if ep_dispatcher not in ("alltoall", "allgather"):
            raise SimError(f"unknown EP dispatcher {ep_dispatcher!r} (alltoall, allgather)",
                           where="--ep-dispatcher")
        timer.ep_dispatcher = ep_dispatcher
        if pp > 1:
            _pipeline(timer, hw, pp)
    info = timer.model.info
    kv_tok = info.kv_bytes_per_token(itemsize(timer.kv_dtype))
    weights = timer.weight_bytes()
    stages = max(1, timer.pp)
    if kv_blocks is None:
        # a stage's GPU holds 1/pp of the layers (weights and the KV of every virtual engine);
        # each of the pp virtual engines gets 1/pp of its cache
        kv_blocks = kv_capacity_blocks(device.memory[0].capacity_bytes, weights / stages, kv_tok / stages,
                                       block_size, memory_utilization) // stages
    fn = run_continuous if scheduler == "continuous" else run_static
    ranks = max(1, len(timer.ep_group)) * stages
    # expert parallelism: attention is data-parallel, each rank serves every ranks-th request
    # in lockstep with the others (symmetric ranks: one is simulated). Pipeline parallelism:
    # pp virtual engines (vLLM) each schedule every pp-th request, their batches in flight on
    # different stages at once
    run = fn(specs[::ranks], timer, cfg, kv_blocks)
    summary = summarise(run, timer, cfg, kv_tok, weights, device.name, ranks)
    summary["arrivals"] = ({"trace": str(trace)} if trace else
                           {"poisson_rate_per_s": rate if math.isfinite(rate) else "inf",
                            "seed": seed, "prompt_len": prompt_len, "output_len": output_len})
    return ServeResult(summary, run)


class _CallableModule(types.ModuleType):
    """``sim.serve`` the package, callable as ``sim.serve.serve``."""

    def __call__(self, *args: Any, **kwargs: Any) -> ServeResult:
        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
