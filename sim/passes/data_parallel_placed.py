"""Data parallelism of a placed training step (tensor/pipeline parallel), with ZeRO sharding.

Each replica ``r`` is a copy of the placed graph on its own devices (``devices[r]`` maps every
device of the graph to the replica's); node and tensor names get the prefix ``dp<r>/``,
parameters keep their names (every replica holds them). Every rank-local gradient
(``meta["rank_grads"]``) is averaged over the replicas of its rank before anything reads it,
so every replica applies the update of the global batch:

* ``zero=0``: one ``AllReduce`` (``reduction="mean"``) per gradient.
* ``zero=1`` and ``2`` (ZeRO-1/2, DeepSpeed): each parameter's optimizer states are split
  into ``dp`` flat slices, ``<state>.zero<r>`` held by replica ``r`` only. The flattened
  gradient is reduce-scattered (``ReduceScatter``, mean), replica ``r`` updates slice ``r`` of
  the parameter with its state slices, and an ``AllGather`` rebuilds the whole updated
  parameter on every replica. (1 and 2 differ in when gradient memory is freed, not in the
  graph.)
* ``zero=3`` (ZeRO-3 / FSDP): the parameters are split too (``<param>.zero<r>``); before its
  first use in the step each parameter is all-gathered from its slices, and the updated
  slice stays sharded.

A parameter whose element count does not divide by ``dp`` is not sharded (all-reduced as
with ``zero=0``); ``meta["zero_shards"]`` maps every slice name to ``(name, r, dp)``: the
``r``-th of ``dp`` equal slices of the flattened tensor ``name`` (a parameter, optimizer
state or, for a gradient slice, the parameter it belongs to).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph import Graph, Node, TensorSpec
from sim.graph.rewrite import Rewriter
from sim.ops.optim import N_STATES


class PlacedDataParallel(Rewriter):
    """Replicates each node per replica; averages rank gradients as they appear."""

    def __init__(self, src: Graph, maps: list[dict[str, str]], reduction: str, zero: int) -> None:
        super().__init__(src, f"{src.name}.dp{len(maps)}")
        self.maps, self.reduction, self.zero, self.dp = maps, reduction, zero, len(maps)
        self.envs: list[dict[str, str]] = [{} for _ in maps]
        self.grad_of = {t: (p, d) for p, t, d in src.meta["rank_grads"]}
        self.updates = self._zero_updates() if zero else {}
        self.zero_shards: dict[str, tuple[str, int, int]] = {}
        self.rank_grads: list[tuple[str, str, str]] = []
        self.sharded: set[str] = set()

    def _zero_updates(self) -> dict[str, Node]:
        """Gradient tensor -> the update node of its parameter, for shardable parameters."""
        out: dict[str, Node] = {}
        for node in self.src.nodes.values():
            if node.op in N_STATES and self.src.params[node.inputs[0]].numel % self.dp == 0:
                out[node.inputs[1]] = node
        return out

    def _sharded_leaves(self) -> set[str]:
        leaves: set[str] = set()
        for node in self.updates.values():
            leaves.update(node.inputs[2:2 + N_STATES[node.op]])
            if self.zero >= 3:
                leaves.add(node.inputs[0])
        return leaves

    # ------------------------------------------------------------------ leaves
    def leaves(self) -> None:
        self.sharded = self._sharded_leaves()
        for p in self.src.params:
            if p in self.sharded:
                self._shard_leaf(p)
                continue
            self.b.param(p, self.src.params[p], self.src.param_info[p], self.src.initializers.get(p))
            for env in self.envs:
                env[p] = p
        for name, spec in self.src.inputs.items():
            for r, env in enumerate(self.envs):
                env[name] = self.b.input(f"dp{r}/{name}", spec)

    def _shard_leaf(self, p: str) -> None:
        spec, val = self.src.params[p], self.src.initializers.get(p)
        size = spec.numel // self.dp
        for r, env in enumerate(self.envs):
            part = None if val is None else np.asarray(val).reshape(-1)[r * size:(r + 1) * size]
            env[p] = self.b.param(f"{p}.zero{r}", TensorSpec((size,), spec.dtype), self.src.param_info[p],
                                  part)
            self.zero_shards[env[p]] = (p, r, self.dp)

    # ------------------------------------------------------------------ nodes
    def visit(self, node: Node) -> None:
        if self.zero and node.op in N_STATES and node.inputs[1] in self.updates:
            self._zero_update(node)
            return
        if self.zero >= 3:
            for t in node.inputs:
                if t in self.src.params and self.envs[0][t] in self.zero_shards:
                    self._gather_param(t, node)
        for r, env in enumerate(self.envs):
            self._replicate(node, r, env)
        for t in node.outputs:
            if t in self.grad_of:
                self._average(t, node)

    def _meta(self, node: Node, r: int, device: str | None = None, **extra: Any) -> dict[str, Any]:
        dev = device or self.maps[r][node.meta["device"]]
        return {**node.meta, "device": dev, "dp_rank": r, "replica": r, **extra}

    def _replicate(self, node: Node, r: int, env: dict[str, str]) -> None:
        attrs = dict(node.attrs)
        if "group" in attrs:
            attrs["group"] = [self.maps[r][d] for d in attrs["group"]]
        new = self.b.node(node.op, [env[t] if t else "" for t in node.inputs],
                          [f"dp{r}/{t}" if t else "" for t in node.outputs], attrs,
                          name=f"dp{r}/{node.name}", meta=self._meta(node, r))
        env.update({t: x for t, x in zip(node.outputs, new) if t})

    def _collective(self, op: str, ins: list[str], base: str, dev: str, node: Node,
                    **attrs: Any) -> list[str]:
        group = [m[dev] for m in self.maps]
        outs = [self.b.unique(f"dp{r}/{base}") for r in range(self.dp)]
        meta = {"device": group[0], "role": "collective", "dp": op, "stage": node.meta.get("stage", 0),
                "tp_rank": node.meta.get("tp_rank", 0)}
        self.b.node(op, ins, outs, {"group": group, "algorithm": "ring", **attrs},
                    name=self.b.unique(f"{base}.{op.lower()}"), meta=meta)
        return outs

    def _average(self, t: str, node: Node) -> None:
        p, dev = self.grad_of[t]
        if t not in self.updates:
            outs = self._collective("AllReduce", [env[t] for env in self.envs], f"{t}.reduced", dev, node,
                                    reduction=self.reduction)
            for r, (env, o) in enumerate(zip(self.envs, outs)):
                env[t] = o
                self.rank_grads.append((p, o, self.maps[r][dev]))
            return
        flat = [self._reshape(env[t], [-1], f"dp{r}/{t}.flat", node, r) for r, env in enumerate(self.envs)]
        outs = self._collective("ReduceScatter", flat, f"{t}.shard", dev, node, reduction=self.reduction,
                                axis=0)
        for r, (env, o) in enumerate(zip(self.envs, outs)):
            env[t] = o
            self.rank_grads.append((f"{p}.zero{r}", o, self.maps[r][dev]))
            self.zero_shards[f"{p}.zero{r}"] = (p, r, self.dp)

    def _reshape(self, t: str, shape: list[int], base: str, node: Node, r: int) -> str:
        name = self.b.unique(base)
        return self.b.node("Reshape", [t], [name], {"shape": shape}, name=name,
                           meta=self._meta(node, r, role="zero"))[0]

    def _slice(self, t: str, start: int, size: int, base: str, node: Node, r: int) -> str:
        name = self.b.unique(base)
        return self.b.node("Slice", [t], [name], {"starts": [start], "ends": [start + size], "axes": [0]},
                           name=name, meta=self._meta(node, r, role="zero"))[0]

    def _gather_param(self, p: str, node: Node) -> None:
        dev = node.meta["device"]
        shards = [env[p] for env in self.envs]
        outs = self._collective("AllGather", shards, f"{p}.gathered", dev, node, axis=0)
        for r, (env, o) in enumerate(zip(self.envs, outs)):
            env[p] = self._reshape(o, list(self.src.params[p].shape), f"dp{r}/{p}.full", node, r)

    def _zero_update(self, node: Node) -> None:
        p, size = node.inputs[0], self.src.params[node.inputs[0]].numel // self.dp
        outs: list[str] = []
        for r, env in enumerate(self.envs):
            ins = [env[t] if t else "" for t in node.inputs]
            if self.zero >= 3:
                ins[0] = f"{p}.zero{r}"  # the slice this replica holds (env has the gathered one)
            else:
                ins[0] = self._slice(self._reshape(env[p], [-1], f"dp{r}/{p}.flat", node, r), r * size,
                                     size, f"dp{r}/{p}.slice", node, r)
            new = self.b.node(node.op, ins, [f"dp{r}/{t}" for t in node.outputs], dict(node.attrs),
                              name=f"dp{r}/{node.name}", meta=self._meta(node, r))
            env.update(zip(node.outputs, new))
            outs.append(new[0])
        if self.zero < 3:
            full = self._collective("AllGather", outs, f"{node.outputs[0]}.gathered", node.meta["device"],
                                    node, axis=0)
            for r, (env, o) in enumerate(zip(self.envs, full)):
                env[node.outputs[0]] = self._reshape(o, list(self.src.params[p].shape), f"dp{r}/{p}.new_full",
                                                     node, r)

    # ------------------------------------------------------------------ outputs
    def _updated(self, env: dict[str, str], r: int) -> dict[str, str]:
        return {env[o]: f"{p}.zero{r}" if p in self.sharded else p
                for o, p in (self.src.meta.get("updates") or {}).items()}

    def finish(self) -> None:
        src, meta = self.src, self.out.meta
        self.out.set_outputs([env[t] for env in self.envs for t in src.outputs])
        meta["replicas"] = [dict(m) for m in self.maps]
        meta["updates"] = {k: v for r, env in enumerate(self.envs) for k, v in self._updated(env, r).items()}
        meta["rank_grads"] = self.rank_grads
        meta["zero"], meta["zero_shards"] = self.zero, self.zero_shards
        meta["grads"] = {p: self.envs[0][t] for p, t in (src.meta.get("grads") or {}).items()}
        if "loss" in src.meta:
            meta["loss"] = self.envs[0][str(src.meta["loss"])]
        losses = src.meta.get("losses") or [src.meta.get("loss")]
        meta["losses"] = [env[t] for env in self.envs for t in losses if t]


def data_parallel_placed(graph: Graph, devices: Sequence[Mapping[str, str]], *,
                         reduction: str = "mean", zero: int = 0) -> Graph:
    """Replicate a placed training step (tensor/pipeline parallel) over ``len(devices)``
    replicas; ``devices[r]`` maps each device of ``graph`` to replica ``r``'s. ``zero``:
    0 (all-reduce), 1/2 (sharded optimizer states) or 3 (sharded parameters too)."""
    where = graph.source or graph.name
    if not graph.meta.get("rank_grads"):
        raise GraphError("data parallelism of a placed graph needs a training step (meta rank_grads)",
                         where=where)
    if zero not in (0, 1, 2, 3):
        raise GraphError(f"zero must be 0, 1, 2 or 3, got {zero!r}", where=where)
    used = {nd.meta["device"] for nd in graph.nodes.values()}
    maps = [dict(m) for m in devices]
    for r, m in enumerate(maps):
        missing = sorted(used - set(m))
        if missing:
            raise GraphError(f"replica {r} gives no device for {missing}", where=where)
    flat = [d for m in maps for d in m.values()]
    if len(set(flat)) != len(flat):
        raise GraphError("data-parallel replicas share devices", where=where)
    return PlacedDataParallel(graph, maps, reduction, zero).run().verify()
