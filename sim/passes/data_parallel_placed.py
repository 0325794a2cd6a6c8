"""Data parallelism of a graph already placed by tensor and/or pipeline parallelism.

Each replica ``r`` is a copy of the placed graph on its own devices (``devices[r]`` maps every
device of the graph to the replica's); node and tensor names get the prefix ``dp<r>/``,
parameters keep their names (every replica holds them). Every rank-local gradient
(``meta["rank_grads"]``) is averaged over the replicas of its rank by one ``AllReduce``
(``reduction="mean"``) before anything reads it, so every replica applies the same update,
the one of the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sim.errors import GraphError
from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter


class PlacedDataParallel(Rewriter):
    """Replicates each node per replica and all-reduces rank gradients as they appear."""

    def __init__(self, src: Graph, maps: list[dict[str, str]], reduction: str) -> None:
        super().__init__(src, f"{src.name}.dp{len(maps)}")
        self.maps, self.reduction = maps, reduction
        self.envs: list[dict[str, str]] = [{} for _ in maps]
        self.grad_dev = {t: d for _, t, d in src.meta["rank_grads"]}

    def leaves(self) -> None:
        for p in self.src.params:
            self.b.param(p, self.src.params[p], self.src.param_info[p], self.src.initializers.get(p))
            for env in self.envs:
                env[p] = p
        for name, spec in self.src.inputs.items():
            for r, env in enumerate(self.envs):
                env[name] = self.b.input(f"dp{r}/{name}", spec)

    def visit(self, node: Node) -> None:
        for r, env in enumerate(self.envs):
            attrs = dict(node.attrs)
            if "group" in attrs:
                attrs["group"] = [self.maps[r][d] for d in attrs["group"]]
            meta = {**node.meta, "device": self.maps[r][node.meta["device"]], "dp_rank": r, "replica": r}
            new = self.b.node(node.op, [env[t] if t else "" for t in node.inputs],
                              [f"dp{r}/{t}" if t else "" for t in node.outputs], attrs,
                              name=f"dp{r}/{node.name}", meta=meta)
            env.update({t: x for t, x in zip(node.outputs, new) if t})
        for t in node.outputs:
            if t in self.grad_dev:
                self._allreduce(t, node)

    def _allreduce(self, t: str, node: Node) -> None:
        dev = self.grad_dev[t]
        group = [m[dev] for m in self.maps]
        outs = [f"dp{r}/{t}.reduced" for r in range(len(self.maps))]
        meta: dict[str, Any] = {"device": group[0], "role": "collective", "dp": "allreduce",
                                "stage": node.meta.get("stage", 0), "tp_rank": node.meta.get("tp_rank", 0)}
        self.b.node("AllReduce", [env[t] for env in self.envs], outs,
                    {"group": group, "algorithm": "ring", "reduction": self.reduction},
                    name=self.b.unique(f"{t}.dp_allreduce"), meta=meta)
        for env, o in zip(self.envs, outs):
            env[t] = o

    def finish(self) -> None:
        src, meta = self.src, self.out.meta
        self.out.set_outputs([env[t] for env in self.envs for t in src.outputs])
        meta["replicas"] = [dict(m) for m in self.maps]
        meta["updates"] = {env[o]: p for env in self.envs for o, p in (src.meta.get("updates") or {}).items()}
        meta["rank_grads"] = [(p, env[t], m[d]) for env, m in zip(self.envs, self.maps)
                              for p, t, d in src.meta["rank_grads"]]
        meta["grads"] = {p: self.envs[0][t] for p, t in (src.meta.get("grads") or {}).items()}
        for key in ("loss",):
            if key in src.meta:
                meta[key] = self.envs[0][str(src.meta[key])]
        losses = src.meta.get("losses") or [src.meta.get("loss")]
        meta["losses"] = [env[t] for env in self.envs for t in losses if t]


def data_parallel_placed(graph: Graph, devices: Sequence[Mapping[str, str]], *,
                         reduction: str = "mean") -> Graph:
    """Replicate a placed training step (tensor/pipeline parallel) over ``len(devices)``
    replicas; ``devices[r]`` maps each device of ``graph`` to replica ``r``'s."""
    where = graph.source or graph.name
    if not graph.meta.get("rank_grads"):
        raise GraphError("data parallelism of a placed graph needs a training step (meta rank_grads)",
                         where=where)
    used = {nd.meta["device"] for nd in graph.nodes.values()}
    maps = [dict(m) for m in devices]
    for r, m in enumerate(maps):
        missing = sorted(used - set(m))
        if missing:
            raise GraphError(f"replica {r} gives no device for {missing}", where=where)
    flat = [d for m in maps for d in m.values()]
    if len(set(flat)) != len(flat):
        raise GraphError("data-parallel replicas share devices", where=where)
    return PlacedDataParallel(graph, maps, reduction).run().verify()
