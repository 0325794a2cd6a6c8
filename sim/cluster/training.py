"""``simulate_training``: one training step of a transformer on a cluster under a 3-D layout.

Speed by exactness: data-parallel replicas and the ranks of a TP group run the same ops on
symmetric links, so one representative per pipeline stage is simulated; a stage's
per-microbatch forward/backward times come from the engine on a one-layer model for one TP
rank (``sim.cluster.stage``), layers being identical; the step is a SimPy schedule at
microbatch granularity (``sim.cluster.schedule``) with point-to-point, data-parallel and ZeRO
collectives in closed form on the fabric (``sim.cluster.collectives``).
"""

from __future__ import annotations

import time
from typing import Any

from sim.cluster.collectives import Fabric, Group, collective_time
from sim.cluster.layout import Layout, check_layout, parse_layout, stage_layers
from sim.cluster.memory import RankMemory, check_fits, formula_activation, in_flight, rank_memory
from sim.cluster.report import ClusterResult
from sim.cluster.schedule import Comm, StageTimes, simulate_schedule
from sim.cluster.stage import StageModel, stage_model, workload_params
from sim.errors import SimError
from sim.hw.spec import ClusterSpec, DeviceSpec, SystemSpec, accelerator


def as_cluster(hw: Any) -> ClusterSpec | SystemSpec:
    """A cluster or single-node system from a spec or a bundled name/path."""
    if isinstance(hw, str):
        from sim.hw import load_hardware

        hw = load_hardware(hw)
    if isinstance(hw, DeviceSpec):
        return SystemSpec(hw.name, {f"{hw.kind}0": hw}, source=hw.source)
    if not isinstance(hw, (ClusterSpec, SystemSpec)):
        raise SimError(f"expected a cluster, system or device spec, got {type(hw).__name__}")
    return hw


def gpu_counts(hw: ClusterSpec | SystemSpec) -> tuple[int, int]:
    """(accelerators in all, per node)."""
    if isinstance(hw, ClusterSpec):
        return hw.accelerator_count, hw.per_node
    n = len(hw.accelerators)
    return n, n


def _int_param(params: dict[str, Any], key: str) -> int:
    v = params.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def check_training(
    workload: Any, hw: Any, layout: Layout | str, batch: int, sets: dict[str, Any] | None = None
) -> tuple[Layout, dict[str, Any]]:
    """Validate a layout against the model and hardware without simulating (cheap)."""
    lay = parse_layout(layout) if isinstance(layout, str) else layout
    cl = as_cluster(hw)
    params = {**workload_params(workload), **(sets or {})}
    check_layout(
        lay,
        gpus=gpu_counts(cl)[0],
        layers=_int_param(params, "n_layer") or 1,
        heads=_int_param(params, "heads") or 1,
        batch=batch,
        ffn=_int_param(params, "ffn") or None,
        vocab=_int_param(params, "vocab") or None,
        kv_heads=_int_param(params, "kv_heads") or None,
    )
    return lay, params


def simulate_training(
    workload: Any,
    hw: Any,
    layout: Layout | str,
    *,
    batch: int,
    sets: dict[str, Any] | None = None,
    optimizer: str = "adam",
    dtype: str = "bf16",
    amp: bool = True,
    recompute: bool = False,
    check_memory: bool = True,
    progress: bool | None = None,
) -> ClusterResult:
    """One training step of ``workload`` (a bundled transformer name or YAML path with
    ``n_layer``, ``d``, ``heads``, ``seq``, ``vocab`` params) on ``hw`` (a cluster, a node
    system or a device) under ``layout`` with global ``batch`` sequences.

    ``dtype`` is the compute precision; ``amp=True`` keeps fp32 master weights and optimizer
    states (mixed precision as frameworks run it), ``False`` stores everything in ``dtype``.
    ``recompute``: full activation recomputation per layer. Raises ``SimError`` naming the
    field for a layout that cannot run and ``OutOfMemoryError`` naming the rank and component
    that does not fit (unless ``check_memory=False``).
    """
    t_wall = time.perf_counter()
    lay, params = check_training(workload, hw, layout, batch, sets)
    cl = as_cluster(hw)
    gpus, per_node = gpu_counts(cl)
    fab = Fabric.of(cl)
    m = lay.microbatches(batch)
    model = stage_model(
        workload, cl, tp=lay.tp, mbs=lay.mbs, sets=sets, optimizer=optimizer, dtype=dtype, sp=lay.sp
    )
    t_engine = time.perf_counter() - t_wall
    p, v = lay.pp, lay.chunks
    nvs = p * v
    per_vs = stage_layers(model.layers, nvs)
    itemsize = model.act_bytes
    grad_item = 4.0 if amp else float(itemsize)
    weight_item = 2.0 if amp else float(itemsize)
    blk, pre, post = model.parts["block"], model.parts["pre"], model.parts["post"]
    # the vocabulary-parallel embedding's, cross-entropy's and LM head's all-reduces are in
    # pre and post (the engine's records of the rank graph)
    stages: list[StageTimes] = []
    for vs in range(nvs):
        lc = per_vs[vs]
        f = lc * blk.fwd_s
        b = lc * (blk.bwd_s + (blk.fwd_s if recompute else 0.0))
        params_v = lc * blk.params
        if vs == 0:
            f += pre.fwd_s
            b += pre.bwd_s
            params_v += pre.params
        if vs == nvs - 1:
            f += post.fwd_s
            b += post.bwd_s
            params_v += post.params + (pre_vocab_params(model, lay) if nvs > 1 else 0.0)
        stages.append(StageTimes(f, b, params_v * grad_item, params_v * weight_item))
    dev_params = [sum(stages[c * p + s].grad_bytes for c in range(v)) / grad_item for s in range(p)]
    step_grads = [step_grad_elems(model, per_vs, p, s) * grad_item for s in range(p)]
    comm = _comm(lay, fab, per_node, model, itemsize, weight_item, dev_params, step_grads)
    opt_s = []
    for s in range(p):
        t = 0.0
        for c in range(v):
            vs = c * p + s
            t += (
                per_vs[vs] * blk.opt_s
                + (pre.opt_s if vs == 0 else 0.0)
                + (post.opt_s if vs == nvs - 1 else 0.0)
            )
        opt_s.append(t / (lay.dp if lay.zero >= 1 else 1))
    bar = _progress(progress, p, m, v)
    try:
        sched = simulate_schedule(
            stages,
            p,
            m,
            lay.schedule,
            v,
            comm,
            opt_s,
            overlap=lay.overlap_grad_reduce,
            bucket_bytes=lay.bucket_bytes,
            zero=lay.zero,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    mems = _memory(lay, model, m, optimizer, amp, recompute, stages, dev_params, grad_item, accelerator(cl))
    if check_memory:
        check_fits(mems)
    result = ClusterResult(
        workload=str(getattr(workload, "name", workload)),
        hardware=getattr(cl, "name", ""),
        layout=lay,
        gpus=gpus,
        per_node=per_node,
        batch=batch,
        microbatches=m,
        seq=model.seq,
        hidden=model.hidden,
        layers=model.layers,
        vocab=model.vocab,
        ffn=model.ffn,
        heads=model.heads,
        recompute=recompute,
        amp=amp,
        dtype=dtype,
        optimizer=optimizer,
        schedule=sched,
        memory=mems,
        stages=stages,
        peak_flops=_peak(accelerator(cl), dtype),
        model=model,
        tp_comm_s=_tp_comm(model, max(per_vs), recompute, m),
    )
    result.wall_s = time.perf_counter() - t_wall
    result.engine_s = t_engine
    return result


def pre_vocab_params(model: StageModel, lay: Layout) -> float:
    """The last stage's copy of the tied word embeddings (Megatron keeps one for the LM head)."""
    return float(model.vocab // lay.tp * model.hidden) if model.vocab else 0.0


def step_grad_elems(model: StageModel, per_vs: list[int], p: int, s: int) -> float:
    """Gradient elements pipeline stage ``s`` all-reduces over its TP group once per step: with
    sequence parallelism the norms' weights and biases (partial sums over the sequence shards,
    accumulated locally over the microbatches; Megatron-LM's ``finalize_model_grads``)."""
    parts = model.parts
    nvs = len(per_vs)
    total = 0.0
    for vs in range(s, nvs, p):
        total += per_vs[vs] * parts["block"].step_grad_elems
        total += parts["pre"].step_grad_elems if vs == 0 else 0.0
        total += parts["post"].step_grad_elems if vs == nvs - 1 else 0.0
    return total


def _tp_comm(model: StageModel, lc: int, recompute: bool, m: int) -> float:
    blk = model.parts["block"]
    per_layer = blk.fwd_comm_s * (2 if recompute else 1) + blk.bwd_comm_s
    return per_layer * lc * m


def _peak(dev: DeviceSpec, dtype: str) -> float:
    best = 0.0
    for u in dev.units:
        best = max(best, u.peak_flops.get(dtype, 0.0))
    return best


def _comm(
    lay: Layout,
    fab: Fabric,
    per_node: int,
    model: StageModel,
    itemsize: int,
    weight_item: float,
    dev_params: list[float],
    step_grads: list[float],
) -> Comm:
    """Point-to-point and data-parallel costs of ``lay`` on ``fab``, and the once-per-step
    reductions before the update: the tied embedding's (first and last stage) and the TP
    group's all-reduce of ``step_grads[s]`` bytes (sequence-parallel norm gradients)."""
    p2p_bytes = lay.mbs * model.seq * model.hidden * itemsize / lay.tp  # Megatron's scatter/gather
    pp_same_node = lay.stride("pp") < per_node and lay.per_node("pp", per_node) > 1
    ranks_per_node_sending = min(per_node, lay.tp)
    p2p_grp = Group(2, 2 if pp_same_node else 1, ranks_per_node_sending if not pp_same_node else 1)
    p2p = collective_time("p2p", p2p_bytes, fab, p2p_grp).seconds if lay.pp > 1 else 0.0
    k = lay.per_node("dp", per_node)
    dp_grp = Group(lay.dp, k, max(1, min(per_node, lay.gpus) // k))
    kind = "reduce_scatter" if lay.zero >= 1 else "all_reduce"

    def reduce(nbytes: float) -> float:
        return collective_time(kind, nbytes, fab, dp_grp).seconds if lay.dp > 1 else 0.0

    def gather(nbytes: float) -> float:
        return collective_time("all_gather", nbytes, fab, dp_grp).seconds if lay.dp > 1 else 0.0

    def post(s: int) -> float:  # ZeRO-1/2: gather the updated (low-precision) weights
        if lay.zero in (1, 2) and lay.dp > 1:
            return gather(dev_params[s] * weight_item)
        return 0.0

    emb_bytes = (model.vocab // lay.tp) * model.hidden * 4.0 if model.vocab else 0.0
    emb_grp = Group(2, 1, min(per_node, lay.tp))

    tp_grp = Group(lay.tp, min(lay.tp, per_node), max(1, per_node // lay.tp))

    def extra(s: int) -> float:  # tied embeddings: first and last stage all-reduce their gradients
        t = 0.0
        if lay.pp > 1 and s in (0, lay.pp - 1) and emb_bytes:
            t += collective_time("all_reduce", emb_bytes, fab, emb_grp).seconds
        if lay.tp > 1 and step_grads[s] > 0:  # then the norms' (Megatron: layer-norm grads first)
            t += collective_time("all_reduce", step_grads[s], fab, tp_grp).seconds
        return t

    return Comm(p2p, p2p, reduce, gather, post, extra)


def _memory(
    lay: Layout,
    model: StageModel,
    m: int,
    optimizer: str,
    amp: bool,
    recompute: bool,
    stages: list[StageTimes],
    dev_params: list[float],
    grad_item: float,
    dev: DeviceSpec,
) -> list[RankMemory]:
    """One memory block per distinct stage (first, middle, last ...)."""
    p, v = lay.pp, lay.chunks
    per_vs = stage_layers(model.layers, p * v)
    blk, pre, post = model.parts["block"], model.parts["pre"], model.parts["post"]
    act = blk.saved_bytes * lay.mbs / lay.mbs  # measured at the microbatch size already
    cap = dev.main_memory.capacity_bytes
    out: list[RankMemory] = []
    seen: dict[tuple[Any, ...], int] = {}
    for s in range(p):
        fl = in_flight(lay, s, m)
        extra = 0.0
        if s == 0:
            extra += pre.saved_bytes * min(fl, m)
        if s == p - 1:
            extra += post.saved_bytes * (1 if lay.schedule != "gpipe" else m)
        chunk_params = blk.params  # ZeRO-3 gathers one layer at a time (FSDP units)
        key = (fl, round(dev_params[s]), round(extra))
        if key in seen:
            continue
        seen[key] = s
        rank = f"stage {s} (tp rank 0, dp rank 0)"
        mem = rank_memory(
            rank,
            dev_params[s],
            lay,
            optimizer=optimizer,
            amp=amp,
            itemsize=model.act_bytes,
            act_per_layer=act,
            layer_input=blk.input_bytes / (lay.tp if lay.sp else 1),
            layers_per_chunk=max(per_vs[c * p + s] for c in range(v)),
            in_flight=fl,
            extra_act=extra,
            recompute=recompute,
            chunk_params=chunk_params,
            capacity=cap,
        )
        out.append(mem)
    return out


def estimate_memory(
    layout: Layout | str,
    *,
    layers: int,
    hidden: int,
    heads: int,
    seq: int,
    vocab: int,
    batch: int,
    ffn: int | None = None,
    optimizer: str = "adam",
    amp: bool = True,
    act_bytes: int = 2,
    recompute: bool = False,
    capacity: float = 0.0,
) -> list[RankMemory]:
    """Per-stage memory from the model's dimensions alone (no engine run): the cheap check a
    layout search prunes with. Parameters per layer ``4h^2 + 2 h ffn`` (+ biases and norms),
    activations by ``formula_activation``."""
    lay = parse_layout(layout) if isinstance(layout, str) else layout
    ffn = ffn or 4 * hidden
    per_layer = (4 * hidden * hidden + 2 * hidden * ffn + 4 * hidden + ffn + 5 * hidden) / lay.tp
    emb = vocab * hidden / lay.tp
    m = lay.microbatches(batch)
    nvs = lay.pp * lay.chunks
    lc = max(stage_layers(layers, nvs))
    act = formula_activation(seq, lay.mbs, hidden, lay.tp, lay.sp, act_bytes)
    layer_in = seq * lay.mbs * hidden * act_bytes / (lay.tp if lay.sp else 1)
    logits = seq * lay.mbs * vocab / lay.tp * 4
    out = []
    for s in range(lay.pp):
        params = (
            lc * lay.chunks * per_layer + (emb if s == 0 else 0) + (emb if s == lay.pp - 1 and nvs > 1 else 0)
        )
        if lay.pp == 1:
            params = layers * per_layer + emb
        out.append(
            rank_memory(
                f"stage {s}",
                params,
                lay,
                optimizer=optimizer,
                amp=amp,
                itemsize=act_bytes,
                act_per_layer=act,
                layer_input=layer_in,
                layers_per_chunk=lc,
                in_flight=in_flight(lay, s, m),
                extra_act=logits if s == lay.pp - 1 else 0.0,
                recompute=recompute,
                chunk_params=per_layer,
                capacity=capacity,
            )
        )
    return out


def _progress(show: bool | None, p: int, m: int, v: int) -> Any:
    """A tqdm bar over the schedule's tasks for long runs (``None``: only when many tasks)."""
    total = 2 * p * m * v
    if show is False or (show is None and total < 5000):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="pipeline tasks", unit="task", leave=False, mininterval=0.5, delay=2.0)


__all__ = [
    "ClusterResult",
    "Layout",
    "check_training",
    "estimate_memory",
    "parse_layout",
    "simulate_training",
]
