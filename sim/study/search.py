"""Layout search: the fastest way to train a transformer on a cluster.

The space is every tensor- (TP), pipeline- (PP) and data-parallel (DP) split of the cluster's
accelerators, with microbatch size, pipeline schedule, ZeRO stage, sequence parallelism and
activation recomputation. A layout is dropped before any simulation when it cannot run (TP
not dividing the heads, PP not dividing the layers, the batch not splitting) or when the
analytical memory model (``sim.cluster.estimate_memory``: weights, gradients, optimizer
states and the activations the schedule keeps in flight, per pipeline stage) puts a stage
over the accelerator's memory. The rest are simulated with ``sim.cluster.simulate_training``
on an executor, each stored as it finishes (same store as ``sweep``), and ranked by step time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.errors import SimError

SEARCH_METRICS = ("step_time_s", "tflops_per_gpu", "mfu", "memory_per_gpu_bytes", "estimated_memory_bytes",
                  "tokens_per_s", "bubble_fraction")
SEARCH_AXES = ("tp", "pp", "dp", "mbs", "schedule", "zero", "sp", "recompute")


@dataclass
class Space:
    """The choices per dimension (None: every value that can work)."""

    tp: Sequence[int] | None = None
    pp: Sequence[int] | None = None
    mbs: Sequence[int] = (1, 2, 4)
    schedules: Sequence[str] = ("1f1b", "interleaved:2")
    zero: Sequence[int] = (0, 1)
    sp: Sequence[bool] = (False, True)
    recompute: Sequence[bool] = (False, True)


@dataclass
class Candidate:
    """One layout and what the pruning said about it."""

    tp: int
    pp: int
    dp: int
    mbs: int
    schedule: str
    zero: int
    sp: bool
    recompute: bool
    estimated_memory_bytes: float = 0.0
    pruned: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        s = f"tp={self.tp},pp={self.pp},dp={self.dp},mbs={self.mbs},schedule={self.schedule},zero={self.zero}"
        return s + (",sp" if self.sp else "")

    def axes(self) -> dict[str, Any]:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "mbs": self.mbs, "schedule": self.schedule,
                "zero": self.zero, "sp": int(self.sp), "recompute": int(self.recompute)}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def model_dims(workload: str, sets: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The transformer's sizes (``n_layer``, ``d``, ``heads``, ``seq``, ``vocab``, ``ffn``)."""
    from sim.cluster.stage import workload_params

    p = {**workload_params(workload), **(sets or {})}
    out = {}
    for k in ("n_layer", "d", "heads", "seq", "vocab"):
        v = p.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise SimError(f"the layout search needs a transformer workload with a numeric {k!r} param",
                           where=str(workload))
        out[k] = int(v)
    ffn = p.get("ffn")
    out["ffn"] = int(ffn) if isinstance(ffn, (int, float)) and not isinstance(ffn, bool) else 4 * out["d"]
    kv = p.get("kv_heads")
    out["kv_heads"] = int(kv) if isinstance(kv, (int, float)) and not isinstance(kv, bool) else out["heads"]
    return out


def enumerate_layouts(gpus: int, per_node: int, dims: Mapping[str, int], batch: int,
                      space: Space) -> list[Candidate]:
    """Every combination of the space that multiplies out to ``gpus`` accelerators (validity is
    checked later, so a rejected layout keeps its reason)."""
    tps = space.tp or [t for t in _divisors(per_node)]
    pps = space.pp or [p for p in _divisors(dims["n_layer"]) if gpus % p == 0]
    out = []
    for tp in tps:
        for pp in pps:
            if gpus % (tp * pp):
                continue
            dp = gpus // (tp * pp)
            for mbs in space.mbs:
                for sched in space.schedules:
                    if pp == 1 and sched != "1f1b":
                        continue  # no pipeline: every schedule is the same step
                    for zero in space.zero:
                        if dp == 1 and zero:
                            continue  # nothing to shard across
                        for sp in space.sp:
                            if sp and tp == 1:
                                continue
                            for rc in space.recompute:
                                out.append(Candidate(tp, pp, dp, mbs, sched, zero, sp, rc))
    return out


def prune(cands: list[Candidate], workload: str, hw: Any, batch: int, dims: Mapping[str, int],
          capacity: float, *, sets: Mapping[str, Any] | None = None, optimizer: str = "adam",
          amp: bool = True, act_bytes: int = 2) -> list[Candidate]:
    """Mark each candidate that cannot run (``check_training``) or whose analytical memory
    exceeds ``capacity`` on some stage; fill in its memory estimate."""
    from sim.cluster import check_training, estimate_memory

    for c in cands:
        try:
            check_training(workload, hw, c.layout, batch, dict(sets or {}))
        except SimError as err:
            c.pruned = f"invalid: {err}"
            continue
        mems = estimate_memory(c.layout, layers=dims["n_layer"], hidden=dims["d"], heads=dims["heads"],
                               seq=dims["seq"], vocab=dims["vocab"], batch=batch, ffn=dims["ffn"],
                               optimizer=optimizer, amp=amp, act_bytes=act_bytes, recompute=c.recompute,
                               capacity=capacity)
        c.estimated_memory_bytes = max(m.total for m in mems)
        if c.estimated_memory_bytes > capacity:
            c.pruned = (f"memory: needs {c.estimated_memory_bytes / 2**30:.1f} GiB per GPU, "
                        f"{capacity / 2**30:.1f} GiB available")
    return cands


def run_layout(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a worker runs: one ``simulate_training``; metrics or an ``error`` line."""
    from sim.cluster import simulate_training

    t0 = time.perf_counter()
    try:
        from sim.hw import load_hardware

        hw = load_hardware(cfg["hw"], **cfg["hw_sets"])
        r = simulate_training(cfg["workload"], hw, cfg["layout"], batch=cfg["batch"],
                              sets=dict(cfg["sets"]), optimizer=cfg["optimizer"], dtype=cfg["dtype"],
                              amp=cfg["amp"], recompute=cfg["recompute"], progress=False)
        out: dict[str, Any] = {
            "step_time_s": r.makespan_s, "tflops_per_gpu": r.tflops_per_gpu, "mfu": r.mfu,
            "memory_per_gpu_bytes": max(m.total for m in r.memory), "tokens_per_s": r.tokens_per_s,
            "bubble_fraction": r.bubble_fraction, "error": None, "error_kind": None,
        }
    except SimError as err:
        out = {"error": f"{type(err).__name__}: {err}", "error_kind": "input"}
    except Exception as err:  # noqa: BLE001 - one broken layout must not stop the search
        out = {"error": f"{type(err).__name__}: {err}".splitlines()[0], "error_kind": "crash"}
    out["wall_s"] = time.perf_counter() - t0
    return out


def _key(base: Mapping[str, Any], c: Candidate, spec_repr: str) -> str:
    from sim.study.point import code_version

    ident = {**{k: v for k, v in base.items() if k not in ("workload", "hw")}, "layout": c.layout,
             "recompute": c.recompute, "spec": spec_repr, "code": code_version(), "kind": "search"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def search(workload: str, hw: str, *, batch: int, space: Space | None = None, top: int = 10,
           store: str | os.PathLike[str] | None = None, executor: Any = "local", workers: int | None = None,
           sets: Mapping[str, Any] | None = None, hw_sets: Mapping[str, Any] | None = None,
           optimizer: str = "adam", dtype: str = "bf16", amp: bool = True, progress: bool | None = None,
           study: str = "search", with_info: bool = False) -> Any:
    """Find the fastest layouts of ``workload`` on the cluster ``hw`` for a global ``batch``.

    Returns a pandas DataFrame of every candidate: the layout's axes, ``step_time_s``,
    ``tflops_per_gpu``, ``mfu``, ``memory_per_gpu_bytes`` (simulated), ``estimated_memory_bytes``
    (the analytical model that pruned), and ``error`` (why it was pruned or failed), sorted by
    step time with the pruned last; ``df.head(top)`` are the winners. ``hw_sets`` override
    spec fields (``{"nodes": 128}``). ``with_info=True`` returns ``(df, info)``, ``info`` the
    counts (candidates, invalid, pruned_memory, simulated), gpus, capacity, hardware, device.
    """
    import pandas as pd

    from sim.cluster.training import as_cluster, gpu_counts
    from sim.hw import load_hardware
    from sim.hw.spec import accelerator
    from sim.study.executors import executor_runner
    from sim.study.point import workload_source
    from sim.study.store import Store
    from sim.study.sweep import _progress

    space = space or Space()
    cl = as_cluster(load_hardware(hw, **dict(hw_sets or {})))
    gpus, per_node = gpu_counts(cl)
    dev = accelerator(cl)
    capacity = dev.main_memory.capacity_bytes
    dims = model_dims(workload, sets)
    path, _text, digest = workload_source(workload)
    from sim.dtypes import itemsize as _itemsize

    cands = prune(enumerate_layouts(gpus, per_node, dims, batch, space), workload, cl, batch, dims,
                  capacity, sets=sets, optimizer=optimizer, amp=amp, act_bytes=int(_itemsize(dtype)))
    base = {"workload": workload, "workload_sha256": digest, "hw": hw, "hw_sets": dict(hw_sets or {}),
            "batch": batch,
            "sets": dict(sets or {}), "optimizer": optimizer, "dtype": dtype, "amp": amp}
    spec_repr = repr(cl)
    keys = [_key(base, c, spec_repr) for c in cands]
    st = Store(store) if store is not None else None
    outcomes: dict[str, dict[str, Any]] = {}
    try:
        done = st.done_keys(keys) if st else set()
        if st:
            outcomes.update({r["key"]: r for r in st.rows(done)})
        todo = [i for i, c in enumerate(cands) if c.pruned is None and keys[i] not in done]
        for i, c in enumerate(cands):
            if c.pruned is not None and keys[i] not in done:
                out = {"error": f"pruned ({c.pruned})", "error_kind": "input",
                       "estimated_memory_bytes": c.estimated_memory_bytes}
                outcomes[keys[i]] = out
                if st:
                    st.add(keys[i], study, i, _cfg(base, c), out)
        feasible = sum(c.pruned is None for c in cands)
        reused = feasible - len(todo)
        bar = _progress(feasible, reused, progress, desc="search")
        failed = 0
        try:
            cfgs = [{**base, "workload": path, "layout": cands[i].layout, "recompute": cands[i].recompute}
                    for i in todo]
            runner = executor_runner(executor, workers)
            for j, out in runner(run_layout, cfgs) if cfgs else ():
                i = todo[j]
                out["estimated_memory_bytes"] = cands[i].estimated_memory_bytes
                outcomes[keys[i]] = out
                if st:
                    st.add(keys[i], study, i, _cfg(base, cands[i]), out)
                failed += bool(out.get("error"))
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
        finally:
            bar.close()
    finally:
        if st:
            st.close()
    rows = []
    for c, k in zip(cands, keys):
        o = outcomes.get(k, {})
        rows.append({**c.axes(), **{m: o.get(m) for m in SEARCH_METRICS}, "layout": c.layout,
                     "error": o.get("error"), "key": k})
    df = pd.DataFrame(rows)
    for m in SEARCH_METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    df["pruned"] = df["error"].fillna("").str.startswith("pruned")
    df = df.sort_values(["pruned", "step_time_s", "layout", "recompute"], kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    if not with_info:
        return df
    info = {"candidates": len(cands), "invalid": sum(bool(c.pruned and c.pruned.startswith("invalid"))
                                                     for c in cands),
            "pruned_memory": sum(bool(c.pruned and c.pruned.startswith("memory")) for c in cands),
            "simulated": sum(c.pruned is None for c in cands), "reused": reused, "gpus": gpus,
            "capacity": capacity,
            "hardware": cl.name, "device": dev.name}
    return df, info


def _cfg(base: Mapping[str, Any], c: Candidate) -> dict[str, Any]:
    """The store row's configuration for a candidate (``axes`` are the layout's fields)."""
    return {**base, "parallel": c.layout, "dtype": base["dtype"], "axes": c.axes(),
            "recompute": c.recompute}
