"""Per-microbatch costs of one pipeline stage for one tensor-parallel rank, from the engine.

A transformer's layers are identical, so the engine simulates the training step of a
**one-layer** model for **one TP rank** (``rank_graph``) at the microbatch size, on the
cluster's node, and every stage's time and memory are built from its parts:

* ``pre``: the embedding (vocab-parallel: the rank's ``V/t`` rows, then an all-reduce);
* ``block``: one transformer layer (Megatron TP: attention split by heads, MLP column- then
  row-parallel, the all-reduces after each row-parallel linear, in the engine);
* ``post``: the final norm, the vocab-parallel LM head (``V/t`` columns), the vocab-parallel
  cross-entropy (its three all-reduces of one value per token) and, in the backward pass,
  the all-reduce of the LM head's input gradient.

``V`` is the vocabulary padded as Megatron-LM pads it (``layout.padded_vocab``); all of these
collectives are nodes of the rank's graph (``sim.passes.tensor_parallel``), timed by the engine.

Each part's time per microbatch is the sum of the engine's records of its nodes (forward:
the forward nodes; backward: the gradient nodes; a one-member TP collective counts on the
critical path: the next op waits for it). A stage of ``L`` layers is ``L x block`` (plus
``pre`` on the first, ``post`` on the last): exact for identical layers on one stream.
Full activation recomputation (``checkpoint``) re-runs a layer's forward before its backward,
as Megatron-LM's ``--recompute-granularity full`` does: backward += forward.

Saved activations per layer are the bytes of the forward buffers that the layer's backward
nodes read (from the graph, not a formula; views of one buffer count once). Sequence
parallelism (``sp``) is the rank graph of ``tensor_parallel(..., sp=True)``: reduce-scatters
and all-gathers, norms and residual adds on ``s/t`` rows, timed by the engine; as in
Megatron-LM, the norms' partial weight gradients are all-reduced once per step, not per
microbatch (``rank_graph``), and a gathered norm output is saved as its shard and gathered
again in the backward pass (``measure``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.errors import GraphError, SimError
from sim.graph import Graph

PARTS = ("pre", "block", "post")


@dataclass
class PartCost:
    """One part's per-microbatch costs on one TP rank (seconds, bytes)."""

    fwd_s: float = 0.0
    bwd_s: float = 0.0  # without recomputation
    opt_s: float = 0.0  # optimizer update of the part's parameters (once per step)
    fwd_comm_s: float = 0.0  # TP collectives inside fwd_s
    bwd_comm_s: float = 0.0
    saved_bytes: float = 0.0  # activations kept for the backward pass
    input_bytes: float = 0.0  # the part's input activation (what recomputation keeps)
    params: float = 0.0  # parameter elements on this rank
    flops_fwd: float = 0.0
    flops_bwd: float = 0.0
    step_grad_elems: float = 0.0  # gradients all-reduced over the TP group once per step (SP norms)


@dataclass
class StageModel:
    """The parts of a one-layer model on one TP rank, and the graph facts the schedule needs."""

    parts: dict[str, PartCost] = field(default_factory=dict)
    layers: int = 0
    hidden: int = 0
    seq: int = 0
    heads: int = 0
    vocab: int = 0
    ffn: int = 0
    act_bytes: int = 2  # bytes per activation element (bf16: 2)
    attention: str = "fused"  # the attention core built: "fused" (one kernel) or "materialized"
    records: int = 0  # engine records simulated
    graph_nodes: int = 0


def _part_of(layer: str, role: str) -> str:
    if role in ("loss",):
        return "post"
    head = layer.split(".")[0] if layer else ""
    if layer and (layer.startswith("h.") or ".h." in layer or head in ("blocks", "layers", "block")):
        return "block"
    if head in ("wte", "wpe", "embed", "embedding", "tok_emb", "pos_emb", "embeddings"):
        return "pre"
    return "post"


def block_prefix(graph: Graph) -> str:
    """The layer-name prefix of the repeated transformer blocks (``"h."``)."""
    for nd in graph.nodes.values():
        if nd.meta.get("layer_type") == "transformer_block":
            name = str(nd.meta.get("layer", ""))
            return name.rsplit(".", 1)[0] + "."
    raise GraphError(
        "no transformer_block layer: the cluster simulator times transformer models",
        where=graph.source or graph.name,
    )


def rank_graph(train: Graph, tp: int, devices: list[str] | None = None, *, sp: bool = False) -> Graph:
    """The training step one tensor-parallel rank runs: rank 0 of Megatron's split.

    Built with ``sim.passes.tensor_parallel.tensor_parallel`` on the training step over ``tp``
    ranks (column/row-parallel projections, two forward and two backward all-reduces per
    block), keeping rank 0's nodes and its side of each collective (the one-member form, which
    the engine times over the whole group's links). The embedding, LM head and cross-entropy
    are vocabulary-parallel there: rank 0 holds the table's first ``V/tp`` rows.

    ``sp=True``: Megatron's sequence parallelism (``tensor_parallel(..., sp=True)``: each
    all-reduce a reduce-scatter and an all-gather, norms and residual adds on ``1/tp`` of the
    sequence). The norms' weight and bias gradients are then partial sums over the sequence
    shards; Megatron-LM accumulates them locally over the microbatches and all-reduces them
    over the TP group once per step (``finalize_model_grads``), so the graph's per-microbatch
    all-reduce of each such gradient is dropped (the update reads the local sum) and the
    elements are listed in ``meta["step_grads"]`` (parameter -> elements) for the step's
    reduction.
    """
    if tp == 1:
        return train
    from sim.passes.tensor_parallel import tensor_parallel

    devs = list(devices or [f"gpu{i}" for i in range(tp)])[:tp]
    full = tensor_parallel(train, devs, sp=sp)
    out = Graph(f"{train.name}.tp{tp}{'.sp' if sp else ''}.rank0", train.source)
    keep = [nd for nd in full.topo_order() if nd.meta.get("device") == devs[0]]
    grads = {g: p for p, g, d in full.meta.get("rank_grads", ()) if d == devs[0]}
    rename: dict[str, str] = {}  # a dropped gradient all-reduce's output -> its local input
    step_grads: dict[str, int] = {}
    for nd in keep:
        if nd.op == "AllReduce" and nd.outputs[0] in grads:
            rename[nd.outputs[0]] = nd.inputs[0]
            step_grads[grads[nd.outputs[0]]] = full.tensors[nd.inputs[0]].numel
    keep = [nd for nd in keep if not (nd.op == "AllReduce" and nd.outputs[0] in rename)]
    used = {rename.get(t, t) for nd in keep for t in nd.inputs if t}
    for name, spec in full.params.items():
        if name in used:
            info = full.param_info[name]
            out.add_param(name, spec, info.init, trainable=info.trainable, **dict(info.options))
    for name, spec in full.inputs.items():
        if name in used:
            out.add_input(name, spec)
    for nd in keep:
        if nd.op in ("AllReduce", "AllGather", "ReduceScatter"):
            ins, outs = [nd.inputs[0]], [nd.outputs[0]]
        else:
            ins, outs = [rename.get(t, t) if t else t for t in nd.inputs], list(nd.outputs)
        meta = dict(nd.meta)
        origin = train.nodes.get(str(meta.get("origin", "")))
        if origin is not None and "forward" in origin.meta:
            meta.setdefault("forward", origin.meta["forward"])
        out.add_node(nd.op, ins, outs, dict(nd.attrs), name=nd.name, meta=meta)
    produced = {t for nd in out.nodes.values() for t in nd.outputs if t}
    consumed = {t for nd in out.nodes.values() for t in nd.inputs if t}
    out.set_outputs(sorted(t for t in produced if t not in consumed))
    out.meta["step_grads"] = step_grads
    return out.verify()


def _role(graph: Graph, name: str) -> tuple[str, str, str]:
    """(phase, part, tp role) of node ``name`` of a training graph."""
    nd = graph.nodes[name]
    m = nd.meta
    if nd.op in ("AllReduce", "AllGather", "ReduceScatter") and nd.inputs:
        # a collective belongs to its input's phase and part; in the backward pass to the part
        # of the op that waits for it (SP: a layer's backward starts with the all-gather of its
        # output gradient, which the next layer's, or the final norm's, backward produced)
        src_node = graph.producer(nd.inputs[0])
        if src_node is not None:
            phase, part, _ = _role(graph, src_node.name)
            users = graph.consumers(nd.outputs[0]) if phase == "bwd" else []
            if users:
                part = _role(graph, users[0].name)[1]
            return phase, part, "collective"
    if m.get("role") == "optimizer":
        p = str(m.get("param", ""))
        return "opt", _param_part(p), "replicated"
    fwd_name = m.get("forward")
    phase = "bwd" if fwd_name or m.get("recompute") else "fwd"
    src = graph.nodes.get(str(fwd_name)) if fwd_name else nd
    src = src or nd
    layer = str(src.meta.get("layer", "") or m.get("layer", ""))
    return phase, _part_of(layer, str(src.meta.get("role", ""))), str(src.meta.get("tp", "replicated"))


def _param_part(p: str) -> str:
    base = p.split("/")[-1]
    return _part_of(base.rsplit(".", 1)[0] if "." in base else base, "")


def measure(train: Graph, opt_train: Graph | None, hw: Any, *, dtype: str | None = None) -> StageModel:
    """Run the engine on a one-layer training step and sum its records per part and phase.

    ``train`` is timed for the forward and backward passes (cast to ``dtype`` if given);
    ``opt_train`` (the same step in fp32: AMP's master weights and optimizer states) for the
    optimizer updates. A forward all-gather whose output the backward pass reads (sequence
    parallelism: the gathered norm output a column-parallel weight gradient needs) is run
    again in the backward pass, as Megatron-LM does, which keeps only the shard: its time is
    charged to the backward pass too and its shard, not the gathered tensor, is saved.
    """
    from sim.engine import simulate
    from sim.passes.precision import cast_graph

    model = StageModel(parts={p: PartCost() for p in PARTS})
    rank0 = hw.accelerators[0]
    res = simulate(cast_graph(train, dtype) if dtype else train, hw, host_inputs=False)
    model.records = len(res.ops)
    model.graph_nodes = len(train.nodes)
    regather = set(_saved_buffers(train).values())
    for r in res.ops:
        name = r["name"]
        if name not in train.nodes or r["device"] != rank0:
            continue
        phase, part, _ = _role(train, name)
        if phase == "opt" and opt_train is not None:
            continue
        dur = float(r["end_s"]) - float(r["start_s"])
        pc = model.parts[part]
        comm = r.get("unit") == "collective"
        if phase == "fwd":
            pc.fwd_s += dur
            pc.fwd_comm_s += dur if comm else 0.0
            pc.flops_fwd += float(r.get("flops", 0.0))
            if name in regather:  # the backward pass gathers the shard again
                pc.bwd_s += dur
                pc.bwd_comm_s += dur
        elif phase == "bwd":
            pc.bwd_s += dur
            pc.bwd_comm_s += dur if comm else 0.0
            pc.flops_bwd += float(r.get("flops", 0.0))
        else:
            pc.opt_s += dur
    if opt_train is not None:  # AMP: the updates run on fp32 master weights and states
        ores = simulate(opt_train, hw, host_inputs=False)
        model.records += len(ores.ops)
        for r in ores.ops:
            nd = opt_train.nodes.get(r["name"])
            if nd is None or nd.meta.get("role") != "optimizer" or r["device"] != rank0:
                continue
            part = _param_part(str(nd.meta.get("param", "")))
            model.parts[part].opt_s += float(r["end_s"]) - float(r["start_s"])
    _saved(train, model)
    for p in train.params:
        info = train.param_info[p]
        if info.trainable and info.options.get("role") != "optimizer_state":
            model.parts[_param_part(p)].params += float(train.params[p].numel)
    for p, n in dict(train.meta.get("step_grads") or {}).items():
        model.parts[_param_part(p)].step_grad_elems += float(n)
    return model


_VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _buffer(train: Graph, t: str) -> str:
    """The tensor whose buffer ``t`` is: ``t`` itself, or what a chain of views of it starts from."""
    while True:
        prod = train.producer(t)
        if prod is None or prod.op not in _VIEWS or not prod.inputs or not prod.inputs[0]:
            return t
        src = prod.inputs[0]
        if train.tensors[src].nbytes != train.tensors[t].nbytes:
            return t
        t = src


def _saved_buffers(train: Graph) -> dict[str, str]:
    """The forward all-gathers whose output the backward pass reads: their output -> node."""
    out: dict[str, str] = {}
    for nd in train.nodes.values():
        if nd.op == "AllGather" and _role(train, nd.name)[0] == "fwd":
            out[nd.outputs[0]] = nd.name
    read = {_buffer(train, t) for nd in train.nodes.values() if _role(train, nd.name)[0] == "bwd"
            for t in nd.inputs if t}
    return {t: n for t, n in out.items() if t in read}


def _saved(train: Graph, model: StageModel) -> None:
    """Saved-activation bytes per part: the buffers of forward tensors that backward nodes read
    (views of one buffer count once; a re-gathered tensor counts as its shard)."""
    fwd_out: set[str] = set()
    for nd in train.nodes.values():
        if _role(train, nd.name)[0] == "fwd":
            fwd_out.update(t for t in nd.outputs if t)
    regather = _saved_buffers(train)
    counted: set[tuple[str, str]] = set()
    for nd in train.nodes.values():
        ph, part, _ = _role(train, nd.name)
        if ph != "bwd":
            continue
        for t in nd.inputs:
            if t not in fwd_out:
                continue
            buf = _buffer(train, t)
            if buf in regather:
                buf = train.nodes[regather[buf]].inputs[0]
            if (part, buf) not in counted:
                counted.add((part, buf))
                model.parts[part].saved_bytes += float(train.tensors[buf].nbytes)


def stage_model(
    workload: Any,
    hw: Any,
    *,
    tp: int,
    mbs: int,
    sets: dict[str, Any] | None = None,
    optimizer: str = "adam",
    dtype: str | None = "bf16",
    sp: bool = False,
) -> StageModel:
    """The parts of ``workload`` (a bundled name or YAML path of a transformer with an ``n_layer``
    parameter) for one TP rank at microbatch ``mbs``, timed by the engine on ``hw``'s node."""
    from sim.frontends import load
    from sim.passes.precision import cast_graph
    from sim.passes.training import training_graph

    params = dict(sets or {})
    full_params = {**workload_params(workload), **params}
    layers = int(full_params.get("n_layer", 0) or 0)
    vocab = int(full_params.get("vocab", 0) or 0)
    if vocab:
        from sim.cluster.layout import padded_vocab

        vocab = padded_vocab(vocab, tp)
    if not layers:
        raise SimError(
            "the workload has no n_layer parameter (the cluster simulator needs one)", where=str(workload)
        )
    one = {**params, "batch": mbs, "n_layer": 1}
    if vocab:
        one["vocab"] = vocab  # padded: rank_graph splits it into V/t rows per rank
    from sim.hw.spec import attention_kernel
    from sim.passes.fusion import fuse, megatron_epilogues

    fwd = load(workload, target_attention=attention_kernel(hw), **one)
    full_params.update(
        {k: v for k, v in fwd.meta.get("params", {}).items() if k not in ("n_layer", "vocab", "batch")}
    )
    node_hw = tp_system(hw, tp)
    train = rank_graph(
        # Megatron-LM's fused Adam moves each parameter's bytes once (one pass); its launches,
        # a few for the whole group, are charged one per parameter so a layer's share scales
        training_graph(fwd, loss="cross_entropy", optimizer=optimizer, impl="per_param"), tp,
        node_hw.accelerators, sp=sp,
    )
    timed = cast_graph(train, dtype) if dtype and dtype != "fp32" else train
    # Megatron-LM's kernels: the attention scale and mask inside the GEMM / softmax kernels
    timed = fuse(timed, join=megatron_epilogues)
    model = measure(timed, train, node_hw)
    model.layers = layers
    model.vocab = vocab
    model.attention = "fused" if any(nd.op == "Attention" for nd in fwd.nodes.values()) else "materialized"
    model.hidden = int(full_params.get("d", 0) or 0)
    model.seq = int(full_params.get("seq", 0) or 0)
    model.heads = int(full_params.get("heads", 0) or 0)
    ffn = full_params.get("ffn", 0)
    model.ffn = int(ffn) if isinstance(ffn, (int, float)) else 4 * model.hidden
    # fp8 runs its GEMMs in fp8 in a bf16 model: the activations kept are bf16
    model.act_bytes = 2 if dtype in ("bf16", "fp16", "fp8") else (1 if dtype == "int8" else 4)
    # the block's input activation: [mbs, seq, d] (what full recomputation keeps per layer)
    model.parts["block"].input_bytes = float(mbs * model.seq * model.hidden * model.act_bytes)
    return model


def workload_params(workload: Any) -> dict[str, Any]:
    """The declared ``params`` of a YAML workload (defaults, unevaluated)."""
    import os

    from sim.frontends.yaml_loader import resolve_workload

    path = os.fspath(workload)
    if not os.path.exists(path):
        path = resolve_workload(path)
    from sim.io import read_text, safe_load

    doc = safe_load(read_text(path)) or {}
    return dict(doc.get("params") or {}) if isinstance(doc, dict) else {}


def tp_system(hw: Any, tp: int) -> Any:
    """The system the engine times one TP rank on: the cluster's node, or, when a TP group is
    larger than a node (TPU hosts of 4 chips), ``tp`` of its accelerators joined by the fabric
    link (a torus ring's neighbour link) as a switch."""
    from sim.hw.spec import ClusterSpec, SystemSpec

    node = hw.node if isinstance(hw, ClusterSpec) else hw
    if len(node.accelerators) >= tp:
        return node
    if not isinstance(hw, ClusterSpec):
        raise SimError(
            f"tp={tp} is more than the {len(node.accelerators)} accelerators of {node.name}",
            where="--parallel tp",
        )
    dev = hw.device
    return SystemSpec(
        f"{node.name}.tp{tp}",
        {f"{dev.kind}{i}": dev for i in range(tp)},
        switch=hw.fabric.link,
        source=hw.source,
    )
