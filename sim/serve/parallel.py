"""Tensor parallelism for serving: one rank's step graph, with its communication.

Megatron-style tensor parallelism over ``tp`` GPUs of a node splits attention by heads
(each rank holds ``heads/tp`` query heads and ``kv_heads/tp`` key/value heads, or one
replicated KV head when there are fewer KV heads than ranks, as vLLM does), the MLP (or each
expert's FFN) by its hidden width, and the vocabulary of the embedding and LM head. Every
rank runs the same shard, so serving time is one rank's time: ``tp_params`` gives the
workload params of a rank's shard, and ``add_tp_collectives`` inserts its communication:
a sum ``AllReduce`` of the activations after each row-parallel projection (attention output,
MLP down projection, MoE), two per layer, and an ``AllGather`` of the vocabulary-sharded
logits. The collectives are in the one-member form (``sim/ops/collective.py``): the engine
times each as a ring over the system's links between the ``group`` devices
(``sim/engine/collectives.py``), e.g. NVSwitch on a DGX H100.

Expert parallelism (MoE workloads, ``ep`` ranks) pairs data-parallel attention (every rank
holds the whole attention and serves its own requests) with experts split over the ranks
(``expert_shards``: each holds ``experts/ep``). ``add_ep_collectives`` dispatches tokens with
an all-to-all (Megatron-Core's *alltoall* token dispatcher): around each MoE, the rank's
tokens are copied once per chosen expert (``Concat`` of the ``top_k`` copies: the permute),
an ``AllToAll`` sends each rank the chunk routed to its experts (``tokens x k x d x bytes /
ep`` per pair under uniform routing), the MoE serves the pairs that all ``ep`` ranks route to
its experts (``source_ranks``), the outputs go back by a second ``AllToAll`` and the
unpermute (``ReduceMean`` over the copies) restores the rank's rows. The MoE reads its own
rows through a ``Depend`` on the received buffer, so it waits for the dispatch; in the
executor's one-member view the all-to-alls are the identity and the rank computes its own
tokens' share of its experts. ``dispatcher="allgather"`` builds the all-gather dispatcher
instead: an ``AllGather`` of the MoE input before the router and a sum ``ReduceScatter`` of
the partial outputs after it, moving ``ep - 1`` times a rank's activations each way where the
all-to-all moves ``k (ep - 1) / ep`` times: an upper bound.
"""

from __future__ import annotations

from typing import Any

from sim.errors import SimError
from sim.graph import Graph
from sim.graph.rewrite import GraphBuilder, copy_leaves

ROW_PARALLEL = (".attn.o", ".mlp.down", ".mlp.fc2", ".moe")


def tp_params(params: dict[str, Any], tp: int, where: str = "--tp") -> dict[str, Any]:
    """Workload params of one rank of ``tp`` (from the workload's resolved params)."""
    if tp == 1:
        return {}
    heads, d = int(params["heads"]), int(params["d"])
    kvh = int(params.get("kv_heads", heads))
    ffn, vocab = int(params["ffn"]), int(params["vocab"])
    for name, v in (("heads", heads), ("ffn", ffn)):
        if v % tp:
            raise SimError(f"{name} = {v} does not split over {tp} ranks", where=where)
    if kvh % tp and tp % kvh:
        raise SimError(f"kv_heads = {kvh} neither splits over nor divides {tp} ranks", where=where)
    out: dict[str, Any] = {"heads": heads // tp, "ffn": ffn // tp,
                           "head_dim": int(params.get("head_dim") or d // heads)}
    if "kv_heads" in params:
        out["kv_heads"] = max(1, kvh // tp)
    if vocab % tp == 0:
        out["vocab"] = vocab // tp
    return out


def add_tp_collectives(graph: Graph, group: list[str], vocab_sharded: bool) -> Graph:
    """A copy of one rank's step graph with its tensor-parallel collectives (module doc)."""
    g = Graph(graph.name, graph.source)
    g.meta = dict(graph.meta)
    copy_leaves(graph, GraphBuilder(g))
    attrs = {"group": list(group), "algorithm": "ring"}
    rename: dict[str, str] = {}
    for node in graph.topo_order():
        ins = [rename.get(t, t) for t in node.inputs]
        g.add_node(node.op, ins, list(node.outputs), dict(node.attrs), name=node.name, meta=dict(node.meta))
        layer = str(node.meta.get("layer", ""))
        out = node.outputs[0]
        if layer.endswith(ROW_PARALLEL):
            if any(c.meta.get("layer") == layer for c in graph.consumers(out)):
                continue  # not the layer's last op
            red = g.add_node("AllReduce", [out], [f"{out}.tp_sum"], {**attrs, "reduction": "sum"},
                             name=f"{node.name}.allreduce", meta={"layer": layer, "tp": "allreduce"})[0]
            rename[out] = red
    outs = []
    for t in graph.outputs:
        t = rename.get(t, t)
        if vocab_sharded and t == graph.outputs[0]:
            t = g.add_node("AllGather", [t], [f"{t}.gathered"], {**attrs, "axis": -1},
                           name="lm_head.allgather", meta={"layer": "lm_head", "tp": "allgather"})[0]
        outs.append(t)
    g.set_outputs(outs)
    return g.verify()


def add_ep_collectives(graph: Graph, group: list[str], top_k: int, dispatcher: str = "alltoall") -> Graph:
    """A copy of one expert-parallel rank's step graph with its token dispatch and combine
    around every MoE (module doc): ``dispatcher`` "alltoall" (default) or "allgather"."""
    if dispatcher == "allgather":
        return _ep_allgather(graph, group)
    if dispatcher != "alltoall":
        raise SimError(f"unknown dispatcher {dispatcher!r} (alltoall, allgather)", where="dispatcher")
    moes = [n for n in graph.nodes.values() if n.op == "MoE"]
    if not moes:
        raise SimError("expert parallelism needs a mixture-of-experts workload", where="--ep")
    ep = len(group)
    g = Graph(graph.name, graph.source)
    g.meta = dict(graph.meta)
    copy_leaves(graph, GraphBuilder(g))
    a2a = {"group": list(group), "algorithm": "ring", "axis": 0}
    alias: dict[str, str] = {}  # MoE output -> the combined copy
    for node in graph.topo_order():
        ins = [alias.get(t, t) for t in node.inputs]
        attrs, meta = dict(node.attrs), dict(node.meta)
        layer = str(meta.get("layer", ""))
        if node.op != "MoE":
            g.add_node(node.op, ins, list(node.outputs), attrs, name=node.name, meta=meta)
            continue
        x = ins[0]
        sent = g.add_node("Concat", [x] * top_k, [f"{x}.ep_send"], {"axis": 0},
                          name=f"{node.name}.ep_permute", meta={"layer": layer, "ep": "permute"})[0]
        got = g.add_node("AllToAll", [sent], [f"{x}.ep_recv"], dict(a2a), name=f"{node.name}.ep_dispatch",
                         meta={"layer": layer, "ep": "dispatch"})[0]
        ins[0] = g.add_node("Depend", [x, got], [f"{x}.ep_rows"], {}, name=f"{node.name}.ep_rows",
                            meta={"layer": layer, "ep": "rows"})[0]
        out = node.outputs[0]
        g.add_node("MoE", ins, [out], {**attrs, "source_ranks": ep}, name=node.name, meta=meta)
        back = g.add_node("Concat", [out] * top_k, [f"{out}.ep_send"], {"axis": 0},
                          name=f"{node.name}.ep_pack", meta={"layer": layer, "ep": "pack"})[0]
        back = g.add_node("AllToAll", [back], [f"{out}.ep_recv"], dict(a2a), name=f"{node.name}.ep_combine",
                          meta={"layer": layer, "ep": "combine"})[0]
        shape = list(graph.tensors[out].shape)
        back = g.add_node("Reshape", [back], [f"{out}.ep_split"], {"shape": [top_k, *shape]},
                          name=f"{node.name}.ep_split", meta={"layer": layer, "ep": "unpermute"})[0]
        alias[out] = g.add_node("ReduceMean", [back], [f"{out}.ep_out"], {"axes": [0], "keepdims": 0},
                                name=f"{node.name}.ep_unpermute", meta={"layer": layer, "ep": "unpermute"})[0]
    g.set_outputs([alias.get(t, t) for t in graph.outputs])
    return g.verify()


def _ep_allgather(graph: Graph, group: list[str]) -> Graph:
    """A copy of one expert-parallel rank's step graph with its token dispatch (module doc):
    the MoE input gathered from every rank before the router and the MoE, the MoE's partial
    outputs reduce-scattered back to the rank's own rows."""
    moes = [n for n in graph.nodes.values() if n.op == "MoE"]
    if not moes:
        raise SimError("expert parallelism needs a mixture-of-experts workload", where="--ep")
    gathered = {n.inputs[0] for n in moes}
    g = Graph(graph.name, graph.source)
    g.meta = dict(graph.meta)
    copy_leaves(graph, GraphBuilder(g))
    attrs = {"group": list(group), "algorithm": "ring", "axis": 0}
    alias: dict[str, str] = {}  # MoE input -> its gathered copy; MoE output -> its scattered copy
    for node in graph.topo_order():
        moe_side = node.op == "MoE" or any(c.op == "MoE" for t in node.outputs if t
                                            for c in graph.consumers(t))
        ins = []
        for t in node.inputs:
            if t in gathered and moe_side:
                if t not in alias:
                    prod = graph.producer(t)
                    layer = str(prod.meta.get("layer", "")) if prod is not None else ""
                    alias[t] = g.add_node("AllGather", [t], [f"{t}.ep_gather"], dict(attrs),
                                          name=f"{t}.ep_gather", meta={"layer": layer, "ep": "dispatch"})[0]
                ins.append(alias[t])
            else:
                ins.append(alias.get(t, t) if t not in gathered else t)
        g.add_node(node.op, ins, list(node.outputs), dict(node.attrs), name=node.name, meta=dict(node.meta))
        if node.op == "MoE":
            out = node.outputs[0]
            alias[out] = g.add_node("ReduceScatter", [out], [f"{out}.ep_combine"],
                                    {**attrs, "reduction": "sum"}, name=f"{node.name}.ep_combine",
                                    meta={"layer": str(node.meta.get("layer", "")), "ep": "combine"})[0]
    g.set_outputs([alias.get(t, t) for t in graph.outputs])
    return g.verify()
