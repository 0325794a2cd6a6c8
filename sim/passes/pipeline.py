"""GPipe pipeline parallelism as a rewriter (the semantics: ``sim.passes.parallel.pipeline_parallel``).

The source graph (a forward graph or a training step at the microbatch size, possibly
tensor-parallel) is cut into stages; every non-optimizer node is re-emitted once per
microbatch (``mb<j>/<name>``) on its stage's device for its tensor-parallel rank; a tensor
entering a stage for microbatch ``j > 0`` first waits (``Depend``) for the stage's last output
of microbatch ``j - 1`` in the same phase; a training step's gradients are averaged over the
microbatches and its optimizer nodes run once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter, copy_leaves

Placer = Callable[[Node, int], tuple[str, dict[str, Any]]]


def lane(node: Node) -> int:
    """The node's tensor-parallel rank (0 when the graph is not tensor parallel)."""
    return int(node.meta.get("tp_rank", 0))


class Pipeline(Rewriter):
    """Replicates the stage-assigned nodes per microbatch; accumulates gradients."""

    def __init__(self, src: Graph, stage: dict[str, int], phase: dict[str, str], replicated: list[Node],
                 place: Placer, microbatches: int, n_stages: int) -> None:
        super().__init__(src, f"{src.name}.pp{n_stages}x{microbatches}")
        self.stage, self.phase, self.place, self.m = stage, phase, place, microbatches
        self.replicated = replicated
        self.rep_names = {nd.name for nd in replicated}
        self.last: dict[tuple[int, str, int], str] = {}  # (stage, phase, lane) -> its last output
        for nd in replicated:
            if nd.outputs and nd.outputs[0]:
                self.last[(stage[nd.name], phase[nd.name], lane(nd))] = nd.outputs[0]
        self.held: dict[tuple[str, int, str, int], str] = {}
        self.acc: dict[str, str] = {}

    def leaves(self) -> None:
        copy_leaves(self.src, self.b, inputs=False)
        for j in range(self.m):
            for name, spec in self.src.inputs.items():
                self.b.input(f"mb{j}/{name}", spec)

    def produced_here(self, t: str) -> bool:
        prod = self.src.producer(t)
        return prod is not None and prod.name in self.rep_names

    def plain(self, t: str, j: int) -> str:
        return f"mb{j}/{t}" if t in self.src.inputs or self.produced_here(t) else t

    def entering(self, t: str, j: int, node: Node, meta: dict[str, Any]) -> str:
        """Microbatch ``j``'s name of ``t`` as ``node`` reads it: held until its stage is done
        with microbatch ``j - 1`` (same phase), so each device takes the microbatches in order."""
        s, ph, ln = self.stage[node.name], self.phase[node.name], lane(node)
        if j == 0 or t in self.src.params or (s, ph, ln) not in self.last:
            return self.plain(t, j)
        prod = self.src.producer(t)
        if prod is not None and (prod.name not in self.rep_names or self.stage[prod.name] == s):
            return self.plain(t, j)
        key = (t, s, ph, ln)
        if key not in self.held:
            prev = f"mb{j - 1}/{self.last[(s, ph, ln)]}"
            (self.held[key],) = self.b.node(
                "Depend", [self.plain(t, j), prev], [self.b.unique(f"{self.plain(t, j)}.stage{s}")],
                name=self.b.unique(f"mb{j}/stage{s}.after"), meta={**meta, "inplace": {0: 0}})
        return self.held[key]

    def emit_microbatch(self, j: int) -> None:
        self.held = {}
        for node in self.replicated:
            s = self.stage[node.name]
            dev, attrs = self.place(node, s)
            meta = {"device": dev, "stage": s, "microbatch": j}
            ins = [self.entering(t, j, node, meta) if t else "" for t in node.inputs]
            self.b.node(node.op, ins, [self.plain(t, j) if t else "" for t in node.outputs], attrs,
                        name=f"mb{j}/{node.name}", meta={**node.meta, **meta})

    def accumulate(self, pairs: list[tuple[str, str]]) -> None:
        """Per gradient: the mean of its microbatch gradients, on the stage that makes it."""
        for p, t in pairs:
            if t in self.acc:
                continue
            prod = self.src.producer(t)
            s = self.stage[prod.name] if prod is not None else 0
            dev = self.place(prod if prod is not None else Node("", "", (), ()), s)[0]
            meta = {"device": dev, "stage": s, "role": "grad_accumulation", "param": p}
            total = self._sum([self.plain(t, j) for j in range(self.m)], p, meta)
            self.acc[t] = self._mean(total, p, meta)

    def _sum(self, parts: list[str], p: str, meta: dict[str, Any]) -> str:
        total = parts[0]
        for j, part in enumerate(parts[1:], 1):
            (total,) = self.b.node("Add", [total, part], [self.b.unique(f"{p}.grad_acc{j}")],
                                   name=self.b.unique(f"{p}.grad_acc{j}"), meta=dict(meta))
        return total

    def _mean(self, total: str, p: str, meta: dict[str, Any]) -> str:
        if self.m == 1:
            return total
        dtype = self.out.tensors[total].dtype
        inv = self.b.constant(f"pipeline.inv_microbatches.{dtype}", np.array(1.0 / self.m), dtype)
        return self.b.node("Mul", [total, inv], [self.b.unique(f"{p}.grad_acc")],
                           name=self.b.unique(f"{p}.grad_acc"), meta=dict(meta))[0]

    def emit_optimizer(self) -> None:
        """The optimizer nodes, once, reading the accumulated gradients."""
        for node in self.src.topo_order():
            if node.name in self.rep_names:
                continue
            s = self.stage[node.name]
            ins = [self.acc.get(t, t) if t else "" for t in node.inputs]
            if node.meta.get("role") == "optimizer" and "param" not in node.meta:
                s = 0  # the step counter, on the first stage
                if node.op == "Depend":
                    # each stage updates its parameters once its own accumulated gradients
                    # exist: no wait for (and no copy of) the other stages' gradients
                    ins = ins[:1]
            meta = {**node.meta, "device": self.place(node, s)[0], "stage": s}
            self.b.node(node.op, ins, list(node.outputs), dict(node.attrs), name=node.name, meta=meta)

    def training_meta(self, grads: dict[str, str], pairs: list[tuple[str, str]]) -> None:
        meta, loss = self.out.meta, str(self.src.meta.get("loss", ""))
        meta["losses"] = [f"mb{j}/{loss}" for j in range(self.m)] if loss else []
        if loss:
            meta["loss"] = f"mb0/{loss}"
        meta["grads"] = {p: self.acc[t] for p, t in grads.items()}
        meta["rank_grads"] = [(p, self.acc[t], str(self.out.producer(self.acc[t]).meta["device"])  # type: ignore[union-attr]
                               if self.out.producer(self.acc[t]) else "") for p, t in pairs]

    def run(self) -> Graph:
        self.leaves()
        for j in range(self.m):
            self.emit_microbatch(j)
        grads: dict[str, str] = dict(self.src.meta.get("grads") or {})
        if grads:
            pairs = [(p, t) for p, t, _ in self.src.meta.get("rank_grads") or []] or list(grads.items())
            self.accumulate(pairs)
            self.emit_optimizer()
            self.training_meta(grads, pairs)
        outputs: list[str] = []
        for t in self.src.outputs:
            outputs.extend([f"mb{j}/{t}" for j in range(self.m)] if self.produced_here(t) else [t])
        self.out.set_outputs(outputs)
        return self.out
