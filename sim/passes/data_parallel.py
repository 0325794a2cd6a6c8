"""Data parallelism of an unplaced training step: replicas, DDP gradient buckets, all-reduce.

The rewriter behind ``sim.passes.parallel.data_parallel`` (see its docstring for the
semantics): every node is re-emitted once per device (``<device>/<name>``), parameters keep
their names, and each gradient joins a bucket that one ``AllReduce`` averages over the
replicas before any node reads it.
"""

from __future__ import annotations

from typing import Any

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter, copy_leaves


class Replicas(Rewriter):
    """Replicates a training step over ``devs``; all-reduces gradients in DDP buckets."""

    def __init__(self, src: Graph, devs: list[str], reduction: str, bucket_bytes: int | None) -> None:
        super().__init__(src, f"{src.name}.dp{len(devs)}")
        self.devs, self.reduction, self.bucket_bytes = devs, reduction, bucket_bytes
        self.by_grad: dict[str, list[str]] = {}
        for p, t in (src.meta.get("grads") or {}).items():
            self.by_grad.setdefault(t, []).append(p)
        self.reduced: dict[str, list[str]] = {}  # gradient -> its all-reduced copies, by replica
        self.allreduce: dict[str, str] = {}
        self.buckets: list[list[str]] = []
        self.pending: dict[str, list[str]] = {}  # dtype -> gradients waiting in the open bucket
        self.pending_bytes: dict[str, int] = {}

    def rank_name(self, dev: str, t: str) -> str:
        return t if t in self.src.params else f"{dev}/{t}"

    def leaves(self) -> None:
        copy_leaves(self.src, self.b, inputs=False)
        for dev in self.devs:
            for name, spec in self.src.inputs.items():
                self.b.input(f"{dev}/{name}", spec)

    # ------------------------------------------------------------------ all-reduces
    def _emit_allreduce(self, t: str) -> None:
        p = self.by_grad[t][0]
        meta: dict[str, Any] = {"device": self.devs[0], "role": "collective", "param": p}
        prod = self.src.producer(t)
        if prod is not None and prod.meta.get("layer"):
            meta["layer"] = prod.meta["layer"]
        outs = [f"{d}/{t}.reduced" for d in self.devs]
        name = self.b.unique(f"{p}.allreduce")
        self.b.node("AllReduce", [self.rank_name(d, t) for d in self.devs], outs, self._attrs(),
                    name=name, meta=meta)
        self.reduced[t] = outs
        self.allreduce.update({q: name for q in self.by_grad[t]})

    def _attrs(self) -> dict[str, Any]:
        return {"group": list(self.devs), "algorithm": "ring", "reduction": self.reduction}

    def _flat_bucket(self, ts: list[str], sizes: list[int], b: int) -> list[str]:
        """Each replica's bucket: its gradients flattened and concatenated."""
        flat: list[str] = []
        for k, dev in enumerate(self.devs):
            meta = {"device": dev, "replica": k, "role": "grad_bucket", "bucket": b}
            parts = [self.b.node("Reshape", [self.rank_name(dev, t)], [self.b.unique(f"{dev}/{t}.flat")],
                                 {"shape": [sz]}, name=self.b.unique(f"{dev}/bucket{b}.flat"),
                                 meta=dict(meta))[0] for t, sz in zip(ts, sizes)]
            flat.extend(self.b.node("Concat", parts, [self.b.unique(f"{dev}/bucket{b}")], {"axis": 0},
                                    name=self.b.unique(f"{dev}/bucket{b}.concat"), meta=dict(meta)))
        return flat

    def _unflatten(self, ts: list[str], sizes: list[int], b: int, outs: list[str]) -> None:
        """Each replica's reduced bucket split back into its gradients."""
        for k, dev in enumerate(self.devs):
            meta = {"device": dev, "replica": k, "role": "grad_bucket", "bucket": b}
            pieces = self.b.node("Split", [outs[k]], [self.b.unique(f"{dev}/{t}.piece") for t in ts],
                                 {"axis": 0, "split": sizes}, name=self.b.unique(f"{dev}/bucket{b}.split"),
                                 meta=dict(meta))
            for t, piece in zip(ts, pieces):
                self.reduced[t].extend(self.b.node(
                    "Reshape", [piece], [f"{dev}/{t}.reduced"], {"shape": list(self.src.tensors[t].shape)},
                    name=self.b.unique(f"{dev}/{t}.unflat"), meta=dict(meta)))

    def _flush(self, dtype: str) -> None:
        ts = self.pending.pop(dtype, [])
        self.pending_bytes.pop(dtype, None)
        if not ts:
            return
        self.buckets.append([self.by_grad[t][0] for t in ts])
        if len(ts) == 1:
            self._emit_allreduce(ts[0])
            return
        b, p0 = len(self.buckets) - 1, self.by_grad[ts[0]][0]
        sizes = [max(self.src.tensors[t].numel, 1) for t in ts]
        flat = self._flat_bucket(ts, sizes, b)
        name = self.b.unique(f"{p0}.bucket")
        outs = [f"{d}/bucket{b}.reduced" for d in self.devs]
        self.b.node("AllReduce", flat, outs, self._attrs(), name=name,
                    meta={"device": self.devs[0], "role": "collective", "param": p0, "bucket": b})
        for t in ts:
            self.reduced[t] = []
            self.allreduce.update({q: name for q in self.by_grad[t]})
        self._unflatten(ts, sizes, b, outs)

    def _ready(self, t: str) -> None:
        if not self.bucket_bytes:
            self.buckets.append([self.by_grad[t][0]])
            self._emit_allreduce(t)
            return
        dt = self.src.tensors[t].dtype
        self.pending.setdefault(dt, []).append(t)
        self.pending_bytes[dt] = self.pending_bytes.get(dt, 0) + self.src.tensors[t].nbytes
        if self.pending_bytes[dt] >= self.bucket_bytes:
            self._flush(dt)

    def _waiting(self, t: str) -> bool:
        return any(t in v for v in self.pending.values())

    # ------------------------------------------------------------------ nodes
    def run(self) -> Graph:
        self.leaves()
        for t in self.by_grad:  # gradients that are constants (parameters nothing depends on)
            if self.src.producer(t) is None:
                self._ready(t)
        for node in self.src.topo_order():
            self.visit(node)
        for dt in list(self.pending):
            self._flush(dt)
        self.finish()
        return self.out

    def visit(self, node: Node) -> None:
        for t in node.inputs:  # a node needs a gradient whose bucket is still open
            if t in self.by_grad and t not in self.reduced and self._waiting(t):
                self._flush(self.src.tensors[t].dtype)
        for k, dev in enumerate(self.devs):
            ins = [(self.reduced[t][k] if t in self.reduced else self.rank_name(dev, t)) if t else ""
                   for t in node.inputs]
            self.b.node(node.op, ins, [self.rank_name(dev, t) if t else "" for t in node.outputs],
                        dict(node.attrs), name=f"{dev}/{node.name}",
                        meta={**node.meta, "device": dev, "replica": k, "dp_rank": k})
        for t in node.outputs:
            if t in self.by_grad and t not in self.reduced and not self._waiting(t):
                self._ready(t)

    def finish(self) -> None:
        g, devs = self.src, self.devs
        self.out.set_outputs([self.rank_name(d, t) for d in devs for t in g.outputs])
        first = devs[0]
        grads = g.meta.get("grads") or {}
        self.out.meta.update({
            "replicas": devs, "allreduce": self.allreduce, "buckets": self.buckets,
            "updates": {self.rank_name(first, o): p for o, p in (g.meta.get("updates") or {}).items()},
            "grads": {p: self.reduced[t][0] for p, t in grads.items() if t in self.reduced},
        })
        if "loss" in g.meta:
            self.out.meta["loss"] = self.rank_name(first, str(g.meta["loss"]))
