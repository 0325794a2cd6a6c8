"""Megatron-LM tensor parallelism found by graph pattern, for forward and training graphs.

``tensor_parallel(graph, devices, *, sp=False)`` is the public entry (see its docstring). The
blocks to split come from ``sim.passes.tp_blocks`` (attention, MLP and vocabulary patterns), the
vocabulary-parallel embedding and cross-entropy from ``sim.passes.tp_vocab``; the split of
every other tensor follows from the sharding rules of ``sim.passes.sharding``, node by node,
so the backward and optimizer nodes of a training step are split consistently with their
forward nodes (column-parallel input gradients become partial sums and are all-reduced, the
weight gradients and optimizer states of a shard stay on its rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph import Graph, Node, TensorSpec
from sim.graph.rewrite import Rewriter
from sim.ops.registry import has_trait
from sim.passes import sharding as sh
from sim.passes.sharding import P, R, State
from sim.passes.tp_blocks import Plan, find_blocks
from sim.passes.tp_vocab import VocabParallel


def is_elementwise(op: str) -> bool:
    """Elementwise (broadcasting) ops, their gradients and the optimizer updates (op traits)."""
    return has_trait(op, "elementwise") or has_trait(op, "optimizer")


def _check_devices(devices: Sequence[str]) -> list[str]:
    devs = [str(d) for d in devices]
    if not devs or len(set(devs)) != len(devs):
        raise GraphError(f"tensor_parallel needs distinct devices, got {devs}", where="tensor_parallel")
    return devs


def _forward_names(g: Graph) -> set[str]:
    if not g.meta.get("grads"):
        return set(g.nodes)
    from sim.passes.training import forward_node_names

    return set(forward_node_names(g))


def plan_for(g: Graph) -> Plan:
    """The blocks of ``g`` and the split of every parameter (optimizer states follow theirs)."""
    plan = find_blocks(g, frozenset(o for o in {n.op for n in g.nodes.values()} if is_elementwise(o)),
                       _forward_names(g))
    for node in g.nodes.values():
        p = node.meta.get("param")
        if node.meta.get("role") == "optimizer" and p in plan.params:
            for t in node.inputs:
                if t in g.params and t != p and g.params[t].shape == g.params[p].shape:
                    plan.params[t] = plan.params[p]
    return plan


class TensorParallel(VocabParallel, Rewriter):
    """The rewriter: per-rank tensor maps, sharding states, conversions by collectives."""

    def __init__(self, src: Graph, devices: list[str], sp: bool) -> None:
        Rewriter.__init__(self, src, f"{src.name}.tp{len(devices)}")
        self.devs, self.n, self.sp = devices, len(devices), sp
        self.plan = plan_for(src)
        self.vocab = self.plan.vocab if self.n > 1 else 0
        self.vp_done: dict[str, list[dict[str, str]]] = {}
        self.vp_ids: dict[str, dict[str, str]] = {}
        self.state: dict[str, State] = {}
        self.envs: list[dict[str, str]] = [{} for _ in devices]
        self.conv: dict[tuple[str, State], list[str]] = {}
        self.shards: dict[str, tuple[str, int, int]] = {}
        self.allreduce: dict[str, str] = {}

    # ------------------------------------------------------------------ leaves
    def keep_param(self, name: str) -> bool:
        return name not in self.plan.params

    def leaves(self) -> None:
        for name, spec in self.src.inputs.items():
            for k, dev in enumerate(self.devs):
                self.envs[k][name] = self.b.input(f"{dev}/{name}", spec)
        for p in self.src.params:
            if p in self.plan.params:
                self._shard_param(p, self.plan.params[p][1])
            else:
                self.b.param(p, self.src.params[p], self.src.param_info[p], self.src.initializers.get(p))
                for env in self.envs:
                    env[p] = p

    def _shard_param(self, p: str, axis: int) -> None:
        spec, info = self.src.params[p], self.src.param_info[p]
        padded = self.padded(spec.shape[axis])
        if spec.shape[axis] % self.n and padded is None:
            raise GraphError(f"parameter {p!r} axis {axis} ({spec.shape[axis]}) does not split into "
                             f"{self.n} parts (heads and widths must divide by the device count)",
                             where="tensor_parallel")
        shape = list(spec.shape)
        shape[axis] = (padded or shape[axis]) // self.n
        val = self.src.initializers.get(p)
        if val is not None and padded is not None:  # zero rows past the vocabulary
            pad = [(0, padded - spec.shape[axis]) if a == axis else (0, 0) for a in range(spec.rank)]
            val = np.pad(np.asarray(val), pad)
        for k in range(self.n):
            part = None if val is None else np.split(np.asarray(val), self.n, axis=axis)[k]
            name = self.b.param(f"{p}.tp{k}", TensorSpec(tuple(shape), spec.dtype), info, part)
            self.envs[k][p] = name
            self.shards[name] = (p, axis, k)
        self.state[p] = axis

    # ------------------------------------------------------------------ rules
    def rule(self, node: Node, states: list[State]) -> sh.Rule | None:
        g = self.src
        if node.op == "Depend":
            return sh.depend_rule(node, states)
        if all(s is R for s in states):
            return None
        if P in states:
            return sh.partial_rule(node, states) or (self._sequence_rule(node, states) if self.sp else None)
        if "shape" in node.attrs and node.op != "Reshape":
            return None
        if node.op in ("MatMul", "Gemm"):
            return sh.matmul_rule(g, node, states)
        if node.op == "Transpose":
            return sh.transpose_rule(g, node, states)
        if node.op == "Reshape":
            return self._reshape_rule(node, states)
        return sh.reduce_rule(g, node, states) or sh.batched_rule(g, node, states) or (
            sh.elementwise_rule(g, node, states) if is_elementwise(node.op) else None)

    def _sequence_rule(self, node: Node, states: list[State]) -> sh.Rule | None:
        """Sequence parallelism: a partial sum the node cannot take is reduce-scattered along
        the sequence (axis 1 of a [batch, seq, ...] tensor) when the node can run on that shard."""
        seq: list[State] = []
        for t, s in zip(node.inputs, states):
            if s != P:
                seq.append(s)
            elif self.src.tensors[t].rank >= 3 and self.src.tensors[t].shape[1] % self.n == 0:
                seq.append(1)
            else:
                return None
        rule = self.rule(node, seq)
        if rule is None or any(w != 1 for w, s in zip(rule[0], states) if s == P):
            return None
        return rule

    def _reshape_rule(self, node: Node, states: list[State]) -> sh.Rule | None:
        s = states[0]
        if not isinstance(s, int):
            return None
        src, dst = self.src.tensors[node.inputs[0]].shape, self.src.tensors[node.outputs[0]].shape
        if self.sp and s == 1 and len(src) > len(dst) and dst[0] == src[0] * src[1]:
            return None  # [b, s/N, ...] flattened to rows: gathered whole first, once for all its readers
        padded = self.padded(src[s])
        if padded is not None:  # the vocabulary axis: map it as its padded size
            v = src[s]
            src = tuple(padded if d == v else d for d in src)
            dst = tuple(padded if d == v else d for d in dst)
        axis = sh.reshape_axis(src, dst, s, self.n)
        return None if axis is None else ([s], [axis])

    # ------------------------------------------------------------------ visiting
    def visit(self, node: Node) -> None:
        states = [self.state.get(t, R) if t else R for t in node.inputs]
        if self.vocab_visit(node, states):
            return
        rule = self.rule(node, states) if self.n > 1 else None
        none: list[State] = [R] * (len(node.inputs) + len(node.outputs))
        want, outs = rule if rule is not None else (none[:len(node.inputs)], none[len(node.inputs):])
        ins = [self.convert(t, want[i]) if t else [""] * self.n for i, t in enumerate(node.inputs)]
        role = self._role(node, want, outs)
        for k, dev in enumerate(self.devs):
            self._emit_rank(node, k, dev, [x[k] for x in ins], outs, role)
        for t, s in zip(node.outputs, outs):
            if t:
                self.state[t] = s

    def _role(self, node: Node, want: list[State], outs: list[State]) -> str:
        if node.op in ("Gemm", "MatMul") and len(node.inputs) > 1:
            split = self.plan.params.get(node.inputs[1])
            if split is not None and node.meta.get("forward") is None:
                return split[0]
        sharded = any(s is not R for s in [*want, *outs])
        return "sharded" if sharded else "replicated"

    def _emit_rank(self, node: Node, k: int, dev: str, ins: list[str], outs: list[State],
                   role: str) -> None:
        attrs = dict(node.attrs)
        if node.op == "Gemm" and outs[0] == P and k > 0 and len(ins) > 2:
            ins = ins[:2]  # the bias of a partial product is added once, by rank 0
        local = [self._local_spec(t, s) if t else None for t, s in zip(node.outputs, outs)]
        if node.op == "Reshape" and local[0] is not None:
            attrs["shape"] = list(local[0].shape)
        meta = {**node.meta, "device": dev, "tp": role, "tp_rank": k, "origin": node.name}
        for key in ("forward", "recompute"):
            if key in meta:  # the rank's own forward node
                meta[key] = f"{dev}/{meta[key]}"
        new = self.b.node(node.op, ins, [f"{dev}/{t}" if t else "" for t in node.outputs], attrs,
                          name=f"{dev}/{node.name}", meta=meta)
        for t, name, spec in zip(node.outputs, new, local):
            if not t:
                continue
            if self.out.tensors[name] != spec:
                raise GraphError(f"rank {k} output {name!r} is {self.out.tensors[name]}, expected "
                                 f"{spec}", where=f"tensor_parallel: node {node.name!r}")
            self.envs[k][t] = name

    def _local_spec(self, t: str, s: State) -> TensorSpec:
        spec = self.src.tensors[t]
        if not isinstance(s, int):
            return spec
        shape = list(spec.shape)
        shape[s] = self.padded(shape[s]) or shape[s]
        if shape[s] % self.n:
            raise GraphError(f"dimension {shape[s]} of {t!r} does not split into {self.n} parts",
                             where="tensor_parallel")
        shape[s] //= self.n
        return spec.with_shape(shape)

    # ------------------------------------------------------------------ conversions
    def convert(self, t: str, want: State) -> list[str]:
        """Rank names of source tensor ``t`` in state ``want`` (made once, then reused)."""
        have = self.state.get(t, R)
        names = [env[t] for env in self.envs]
        if have == want or self.n == 1:
            return names
        key = (t, want)
        if key not in self.conv:
            self.conv[key] = self._make(t, have, want, names)
        return self.conv[key]

    def _make(self, t: str, have: State, want: State, names: list[str]) -> list[str]:
        if want is R:
            op = "AllReduce" if have == P else "AllGather"
            out = self._collective(op, t, names, {} if have == P else {"axis": have})
            if isinstance(have, int) and self.padded(self.src.tensors[t].shape[have]):
                out = [self._unpad(t, k, name, have) for k, name in enumerate(out)]
            return out
        assert isinstance(want, int), (t, have, want)
        if self.padded(self.src.tensors[t].shape[want]):
            raise GraphError(f"{t!r} would be split on its padded vocabulary axis from state {have}",
                             where="tensor_parallel")
        if have == P:
            return self._collective("ReduceScatter", t, names, {"axis": want})
        if isinstance(have, int):
            names = self._make(t, have, R, names)
        return [self._slice(t, k, names[k], want) for k in range(self.n)]

    def _collective(self, op: str, t: str, names: list[str], attrs: dict[str, Any],
                    node: Node | None = None) -> list[str]:
        """``op`` over the ranks' ``names`` of ``t`` (a source tensor, or a tensor made for source
        ``node``, whose layer and phase the collective then takes)."""
        prod = node or self.src.producer(t)
        layer = str(prod.meta.get("layer", t)) if prod is not None else t
        suffix = {"AllReduce": "allreduce", "AllGather": "allgather", "ReduceScatter": "reducescatter"}[op]
        name = self.b.unique(f"{layer}.{suffix}")
        outs = [self.b.unique(f"{d}/{t}.{'reduced' if op == 'AllReduce' else suffix}") for d in self.devs]
        meta = {"device": self.devs[0], "role": "collective", "layer": layer, "tp": suffix, "tp_rank": 0}
        if prod is not None and "forward" in prod.meta:  # a backward collective
            meta["forward"] = f"{self.devs[0]}/{prod.meta['forward']}"
        self.b.node(op, names, outs, {"group": list(self.devs), "algorithm": "ring", "reduction": "sum",
                                      **attrs}, name=name, meta=meta)
        if op == "AllReduce":
            self.allreduce.setdefault(layer, name)
        return outs

    def _slice(self, t: str, k: int, name: str, axis: int, start: int = -1, end: int = -1) -> str:
        """Rank ``k``'s slice of replicated ``t`` on ``axis`` (default: its ``k``-th of ``n``)."""
        size = self.src.tensors[t].shape[axis] // self.n
        if start < 0:
            start, end = k * size, (k + 1) * size
        dev = self.devs[k]
        meta = {"device": dev, "tp": "sharded", "tp_rank": k, "role": "tp_slice"}
        prod = self.src.producer(t)
        if prod is not None and "forward" in prod.meta:
            meta["forward"] = f"{dev}/{prod.meta['forward']}"
        return self.b.node("Slice", [name], [self.b.unique(f"{dev}/{t}.slice")],
                           {"starts": [start], "ends": [end], "axes": [axis]},
                           name=self.b.unique(f"{dev}/{t}.slice"), meta=meta)[0]

    def _unpad(self, t: str, k: int, name: str, axis: int) -> str:
        """The gathered ``t`` without the padding past the vocabulary."""
        return self._slice(t, k, name, axis, 0, self.src.tensors[t].shape[axis])

    # ------------------------------------------------------------------ outputs and meta
    def finish(self) -> None:
        src = self.src
        updates: dict[str, str] = dict(src.meta.get("updates") or {})
        outputs: list[str] = []
        for t in src.outputs:
            keep = t in updates and isinstance(self.state.get(t), int)
            outputs.append(t if keep else "")
        per_rank = {t: [env[t] for env in self.envs] if keep else self.convert(t, R)
                    for t, keep in zip(src.outputs, outputs)}
        self.out.set_outputs([per_rank[t][k] for k in range(self.n) for t in src.outputs])
        self.out.meta.update({"tp_devices": self.devs, "shards": self.shards, "allreduce": self.allreduce,
                              "tp_plan": {"attention": self.plan.attention, "mlp": self.plan.mlp},
                              "tp_vocab": {"vocab": self.vocab, "rows": self.slab() if self.vocab else 0,
                                           "embedding": self.plan.embedding, "lm_head": self.plan.lm_head}})
        if src.meta.get("grads"):
            self._training_meta(updates, per_rank)

    def _new_param(self, p: str, k: int) -> str:
        return f"{p}.tp{k}" if p in self.plan.params else p

    def _training_meta(self, updates: dict[str, str], per_rank: dict[str, list[str]]) -> None:
        src, meta = self.src, self.out.meta
        grads: dict[str, str] = {}
        rank_grads: list[tuple[str, str, str]] = []
        for p, t in (src.meta.get("grads") or {}).items():
            want = self.plan.params[p][1] if p in self.plan.params else R
            names = self.convert(t, want)
            for k, dev in enumerate(self.devs):
                rank_grads.append((self._new_param(p, k), names[k], dev))
                if p in self.plan.params or k == 0:
                    grads[self._new_param(p, k)] = names[k]
        meta["grads"] = grads
        meta["rank_grads"] = rank_grads
        meta["updates"] = {per_rank[o][k]: self._new_param(p, k)
                           for o, p in updates.items() if o in per_rank for k in range(self.n)}
        if "loss" in src.meta:
            meta["loss"] = per_rank.get(str(src.meta["loss"]), self.convert(str(src.meta["loss"]), R))[0]


def tensor_parallel(graph: Graph, devices: Sequence[str], *, sp: bool = False) -> Graph:
    """Megatron-LM tensor parallelism (Shoeybi et al. 2019) of ``graph`` over ``devices``.

    Signature (stable): ``tensor_parallel(graph, devices, *, sp=False) -> Graph``.
    ``graph``: a forward graph or a training step (``training_graph``), from YAML, ONNX or torch,
    not yet placed on devices. ``devices``: the ``N`` device names of the tensor-parallel group.

    Attention blocks and MLPs are found by pattern (``sim.passes.tp_blocks``): q/k/v
    projections and the MLP's up/gate projections split column-wise (weight columns and bias,
    so by heads), the attention output and MLP down projections row-wise; everything between
    is sharded (attention by heads), everything else replicated. Each row-parallel output is a
    partial sum, all-reduced (``AllReduce``, ``reduction="sum"``, all-members form: exact) where
    a replicated tensor is needed, so a block costs two forward all-reduces, and in a
    training step two backward ones (the column-parallel input gradients); the bias of a
    partial product is added by rank 0 only. The token embedding and the LM head are
    vocabulary-parallel (``sim.passes.tp_vocab``: Megatron's ``VocabParallelEmbedding``,
    column-parallel LM head, ``vocab_parallel_cross_entropy``): rank ``i`` holds rows
    ``[i*V'/N, (i+1)*V'/N)`` of the table (``V'``: ``V`` padded up to a multiple of ``N``, the
    padding masked out), the embedding output is all-reduced, the loss takes three all-reduces
    of one value per row (max, target logit, sum of exponentials); ``meta["tp_vocab"]`` gives
    ``vocab``, ``rows`` (per rank), ``embedding`` and ``lm_head`` (node names).
    ``sp=True`` adds Megatron's sequence parallelism (Korthikanti et al. 2022): a partial sum
    is reduce-scattered along the sequence axis instead of all-reduced, the norms, dropout
    and residual adds between blocks run on 1/N of the sequence, and an all-gather rebuilds
    the whole sequence before each column-parallel projection and the LM head (the same bytes
    moved, 1/N of the activations stored).

    The result: nodes ``<device>/<name>`` with ``meta["device"]``, ``meta["tp_rank"]``,
    ``meta["origin"]`` (the source node) and ``meta["tp"]`` (``column``, ``row``, ``vocab``,
    ``sharded`` or ``replicated``); collectives named ``<layer>.allreduce`` on the first device; graph
    inputs ``<device>/<input>``; shards are parameters ``<param>.tp<i>`` listed in
    ``meta["shards"]`` (shard -> ``(param, axis, i)``); replicated parameters keep their
    names. A training step's meta: ``grads`` (parameter or shard -> gradient on its rank,
    replicated parameters: rank 0's), ``rank_grads`` (every rank's ``(param, gradient,
    device)``), ``updates`` (every rank's updated outputs -> parameter or shard), ``loss``
    (rank 0's). ``GraphError`` when a dimension does not split, when no block is found, or
    when the graph is already placed (apply tensor parallelism first: ``pp(dp(tp(g)))``).
    """
    devs = _check_devices(devices)
    where = graph.source or graph.name
    if any("device" in n.meta for n in graph.nodes.values()):
        raise GraphError("tensor_parallel takes a graph not yet placed on devices: apply it before "
                         "data/pipeline parallelism (pp(dp(tp(g))))", where=where)
    tp = TensorParallel(graph, devs, sp)
    if len(devs) > 1 and not (tp.plan.attention or tp.plan.mlp):
        raise GraphError("tensor_parallel found no attention or mlp block to split", where=where)
    return tp.run().verify()
