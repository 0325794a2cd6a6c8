"""Vocabulary parallelism of the tensor-parallel pass (Megatron-LM's ``VocabParallelEmbedding``,
parallel LM head and ``vocab_parallel_cross_entropy``), node by node.

Rank ``k`` of ``n`` holds rows ``[k*V'/n, (k+1)*V'/n)`` of the vocabulary (``V'`` is ``V``
padded up to a multiple of ``n``; padding rows are never looked up and their logits are masked
out of the softmax, so the step computes what the single device computes):

* **embedding** (``Gather`` of the table by token ids): each rank shifts the ids by its first
  row, clamps the ones it does not own to row 0, looks them up and zeroes their rows; the
  output is a partial sum (all-reduced where the next node needs it whole). Its gradient
  (``GatherGrad``) zeroes the same rows of the incoming gradient and scatter-adds into the
  rank's rows only.
* **LM head**: a column-parallel linear over the vocabulary (the sharding rules), its logits
  sharded on the class axis.
* **cross-entropy** (``SoftmaxCrossEntropyLoss`` of class-sharded scores): the local row
  maximum, all-reduced with ``max``; the local sum of ``exp(x - max)``, all-reduced with
  ``sum``; the target's shifted logit, picked by the rank that owns it (0 elsewhere) and
  all-reduced with ``sum``; the loss is ``log(sum) - picked`` per row. Its gradient
  (``SoftmaxCrossEntropyLossGrad``) is ``(exp(x - max) / sum - onehot) * scale`` on each rank's
  columns, from the forward's saved exponentials and sums: no communication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sim.graph import Graph, Node
from sim.graph.rewrite import GraphBuilder
from sim.passes.sharding import P, R, State


class VocabParallel:
    """Mixin of ``TensorParallel``: the nodes that vocabulary parallelism expands per rank."""

    src: Graph
    out: Graph
    b: GraphBuilder
    devs: list[str]
    n: int
    state: dict[str, State]
    envs: list[dict[str, str]]
    vocab: int  # the table's rows (0: no vocabulary parallelism)
    vp_done: dict[str, list[dict[str, str]]]  # forward node -> per-rank tensors its gradient reads
    vp_ids: dict[str, dict[str, str]]  # "<ids>@<rank>" -> that rank's local ids and masks

    if TYPE_CHECKING:  # provided by TensorParallel
        def convert(self, t: str, want: State) -> list[str]: ...

        def _collective(self, op: str, t: str, names: list[str], attrs: dict[str, Any],
                        node: Node | None = None) -> list[str]: ...

    # ------------------------------------------------------------------ sizes
    def slab(self) -> int:
        """Vocabulary rows per rank: ``V`` padded up to a multiple of ``n``, over ``n``."""
        return -(-self.vocab // self.n)

    def padded(self, size: int) -> int | None:
        """The padded size of a vocabulary axis of ``size`` that does not split, else None."""
        return self.slab() * self.n if self.vocab and size == self.vocab and size % self.n else None

    def vocab_visit(self, node: Node, states: list[State]) -> bool:
        """Emit ``node`` vocabulary-parallel if it is one of the expanded kinds; True if done."""
        if not self.vocab:
            return False
        table = self.src.tensors[node.inputs[0]] if node.inputs else None
        if node.op == "Gather" and states[0] == 0 and table is not None and table.shape[0] == self.vocab:
            self._embedding(node)
        elif node.op == "GatherGrad" and self._fwd(node) in self.vp_done:
            self._embedding_grad(node)
        elif node.op == "SoftmaxCrossEntropyLoss" and states[0] == 1 and self._plain_ce(node):
            self._cross_entropy(node)
        elif node.op == "SoftmaxCrossEntropyLossGrad" and self._fwd(node) in self.vp_done \
                and node.inputs[0] and not node.inputs[1]:
            self._cross_entropy_grad(node)
        else:
            return False
        return True

    def _fwd(self, node: Node) -> str:
        return str(node.meta.get("forward", ""))

    def _plain_ce(self, node: Node) -> bool:
        """Class-index labels on [N, C] scores, no weights or ignored index, loss output only."""
        used = any(self.src.consumers(t) or t in self.src.outputs for t in node.outputs[1:] if t)
        return (self.src.tensors[node.inputs[0]].rank == 2 and not (node.inputs[2:] and node.inputs[2])
                and node.attrs.get("ignore_index") is None and not used)

    # ------------------------------------------------------------------ emission
    def _op(self, node: Node, k: int, op: str, ins: list[str], tag: str, **attrs: Any) -> str:
        """One node of rank ``k``'s expansion of source ``node``."""
        dev = self.devs[k]
        meta = {**node.meta, "device": dev, "tp": "vocab", "tp_rank": k, "origin": node.name}
        for key in ("forward", "recompute"):
            if key in meta:
                meta[key] = f"{dev}/{meta[key]}"
        name = self.b.unique(f"{dev}/{node.name}.{tag}")
        return self.b.node(op, ins, [name], attrs, name=name, meta=meta)[0]

    def _const(self, k: int, tag: str, value: Any, dtype: str) -> str:
        return self.b.constant(f"{self.devs[k]}/vocab.{tag}", value, dtype)

    def _set(self, t: str, names: list[str], state: State) -> None:
        for env, name in zip(self.envs, names):
            env[t] = name
        self.state[t] = state

    def _local_ids(self, node: Node, t: str, k: int) -> dict[str, str]:
        """Rank ``k``'s view of token ids ``t``: ``local`` (ids minus the first row), ``owned``
        (the rank holds the row), ``clamped`` (local, 0 where not owned); made once."""
        key = f"{t}@{k}"
        if key not in self.vp_ids:
            ids, dtype = self.convert(t, R)[k], self.src.tensors[t].dtype
            lo = self._const(k, f"first.{dtype}", k * self.slab(), dtype)
            hi = self._const(k, f"end.{dtype}", (k + 1) * self.slab(), dtype)
            zero = self._const(k, f"zero.{dtype}", 0, dtype)
            owned = self._op(node, k, "And", [self._op(node, k, "GreaterOrEqual", [ids, lo], "ge"),
                                              self._op(node, k, "Less", [ids, hi], "lt")], "owned")
            local = self._op(node, k, "Sub", [ids, lo], "local")
            clamped = self._op(node, k, "Where", [owned, local, zero], "clamped")
            self.vp_ids[key] = {"local": local, "owned": owned, "clamped": clamped,
                                "owned_col": self._op(node, k, "Unsqueeze", [owned], "owned_col", axes=[-1])}
        return self.vp_ids[key]

    def _zero_unowned(self, node: Node, k: int, x: str, ids: dict[str, str]) -> str:
        dtype = self.out.tensors[x].dtype
        zero = self._const(k, f"zero.{dtype}", 0.0, dtype)
        return self._op(node, k, "Where", [ids["owned_col"], x, zero], "masked")

    # ------------------------------------------------------------------ embedding
    def _embedding(self, node: Node) -> None:
        table = [env[node.inputs[0]] for env in self.envs]
        outs, saved = [], []
        for k in range(self.n):
            ids = self._local_ids(node, node.inputs[1], k)
            rows = self._op(node, k, "Gather", [table[k], ids["clamped"]], "rows", axis=0)
            outs.append(self._zero_unowned(node, k, rows, ids))
            saved.append(ids)
        self._set(node.outputs[0], outs, P)
        self.vp_done[node.name] = saved

    def _embedding_grad(self, node: Node) -> None:
        dy = self.convert(node.inputs[0], R)
        shape = [self.slab(), *self.src.tensors[node.outputs[0]].shape[1:]]
        outs = []
        for k, ids in enumerate(self.vp_done[self._fwd(node)]):
            masked = self._zero_unowned(node, k, dy[k], ids)
            outs.append(self._op(node, k, "GatherGrad", [masked, ids["clamped"]], "rows", axis=0,
                                 shape=shape))
        self._set(node.outputs[0], outs, 0)

    # ------------------------------------------------------------------ cross-entropy
    def _masked_scores(self, node: Node, k: int, x: str) -> str:
        """The rank's scores with its padding columns (past ``V``) set to -inf (out of the softmax)."""
        valid = min(self.slab(), max(0, self.vocab - k * self.slab()))
        if valid == self.slab():
            return x
        dtype = self.out.tensors[x].dtype
        keep = self._const(k, "valid", np.arange(self.slab()) < valid, "bool")
        low = self._const(k, f"minus_inf.{dtype}", -np.inf, dtype)
        return self._op(node, k, "Where", [keep, x, low], "unpadded")

    def _cross_entropy(self, node: Node) -> None:
        scores, labels = node.inputs[0], node.inputs[1]
        xs = [self._masked_scores(node, k, env[scores]) for k, env in enumerate(self.envs)]
        mx = self._collective("AllReduce", f"{node.name}.max", [
            self._op(node, k, "ReduceMax", [x], "max", axes=[1], keepdims=1) for k, x in enumerate(xs)],
            {"reduction": "max"}, node)
        shifted = [self._op(node, k, "Sub", [x, mx[k]], "shifted") for k, x in enumerate(xs)]
        exps = [self._op(node, k, "Exp", [z], "exp") for k, z in enumerate(shifted)]
        picks = []
        for k, z in enumerate(shifted):
            ids = self._local_ids(node, labels, k)
            target = self._op(node, k, "Unsqueeze", [ids["clamped"]], "target", axes=[1])
            pick = self._op(node, k, "GatherElements", [z, target], "picked", axis=1)
            picks.append(self._zero_unowned(node, k, pick, ids))
        picked = self._collective("AllReduce", f"{node.name}.picked", picks, {}, node)
        sums = self._collective("AllReduce", f"{node.name}.sumexp", [
            self._op(node, k, "ReduceSum", [e], "sumexp", axes=[1], keepdims=1) for k, e in enumerate(exps)],
            {}, node)
        red = str(node.attrs.get("reduction", "mean"))
        outs = []
        for k in range(self.n):
            rows = self._op(node, k, "Sub", [self._op(node, k, "Log", [sums[k]], "log"), picked[k]], "rows")
            if red == "none":
                outs.append(self._op(node, k, "Squeeze", [rows], "loss", axes=[1]))
            else:
                op = "ReduceMean" if red == "mean" else "ReduceSum"
                outs.append(self._op(node, k, op, [rows], "loss", keepdims=0))
        self._set(node.outputs[0], outs, R)
        self.vp_done[node.name] = [{"exp": e, "sum": s, "ids": self._local_ids(node, labels, k)["local"]}
                                   for k, (e, s) in enumerate(zip(exps, sums))]

    def _cross_entropy_grad(self, node: Node) -> None:
        dloss = self.convert(node.inputs[0], R)
        labels = self.src.tensors[node.inputs[3]]
        red = str(node.attrs.get("reduction", "mean"))
        outs = []
        for k, s in enumerate(self.vp_done[self._fwd(node)]):
            dtype = self.out.tensors[s["exp"]].dtype
            probs = self._op(node, k, "Div", [s["exp"], s["sum"]], "softmax")
            columns = self._const(k, f"columns.{labels.dtype}", np.arange(self.slab()), labels.dtype)
            target = self._op(node, k, "Unsqueeze", [s["ids"]], "target", axes=[1])
            onehot = self._op(node, k, "Cast", [self._op(node, k, "Equal", [target, columns], "hit")],
                              "onehot", to=dtype)
            diff = self._op(node, k, "Sub", [probs, onehot], "diff")
            if red == "none":
                scale = self._op(node, k, "Unsqueeze", [dloss[k]], "scale", axes=[1])
            elif red == "mean":
                inv = self._const(k, f"inv_rows.{dtype}", 1.0 / labels.shape[0], dtype)
                scale = self._op(node, k, "Mul", [dloss[k], inv], "scale")
            else:
                scale = dloss[k]
            outs.append(self._op(node, k, "Mul", [diff, scale], "grad"))
        self._set(node.outputs[0], outs, 1)
