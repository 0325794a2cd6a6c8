"""Training pass: forward graph -> one training step (loss, backward, optimizer update).

``training_graph`` appends a loss on the forward graph's first output (with ``labels`` as a
new graph input), differentiates it with ``sim.passes.autodiff.gradients`` (gradient nodes are
named after the forward nodes: ``fc1.grad``, ``fc1.grad_1`` ...), then adds one update node
per trainable parameter (``<param>.update``). Optimizer states are non-trainable parameters
with ``param_info.options["role"] == "optimizer_state"`` (``<param>.m``, ``<param>.v``,
``<param>.velocity``) and the step counter is ``optimizer.step`` (int64, number of completed
steps). The graph outputs are the loss followed by every updated parameter and state;
``graph.meta["updates"]`` maps each of those outputs to the parameter it replaces, which is
how ``sim.training.Trainer`` carries values from one step to the next. Update nodes
carry ``meta["inplace"] = {out_index: in_index}`` so the engine allocates nothing for them.

By default the updates run after the whole backward pass (``optimizer.step()`` after
``loss.backward()``), so every gradient is alive at once; ``fused_update=True`` lets each
parameter update as soon as its gradient exists (optimizer fused into the backward pass),
which frees gradients early and lowers peak memory. With ``train=True`` (the default, as
``model.train()``) the forward pass runs in training mode first (``train_mode``): batch
normalisation uses batch statistics and outputs its updated running statistics (graph outputs
after the loss, in ``meta["updates"]``), and dropout drops; ``train=False`` keeps the forward
graph's inference-mode nodes.

Activation checkpointing (``checkpoint=True``) splits the forward nodes into segments of
``segment`` nodes (default: about sqrt(number of forward nodes)). Only tensors that cross a
segment boundary stay alive until the backward pass; every other activation the backward
pass reads is recomputed from them just before its first backward use, by copies of the
forward nodes named ``<node>.recompute`` (outputs ``<tensor>.recompute``). Each recompute chain
starts from a ``Depend`` node (``<node>.recompute_after``) tying it to the backward node emitted
just before, so a dataflow scheduler cannot run the recomputation early. The last segment is
not recomputed (its activations are used at once). Memory peak drops, FLOPs rise by at most
one forward pass.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.graph import Graph, Node, ParamInfo, TensorSpec, param_behind
from sim.graph.rewrite import GraphBuilder, Rewriter
from sim.ops.optim import DEFAULTS
from sim.passes.autodiff import gradients
from sim.passes.layout import strided_transposes

LOSSES = {"cross_entropy": "SoftmaxCrossEntropyLoss", "mse": "MSELoss"}
OPTIMIZERS = {"sgd": "SGDUpdate", "momentum": "MomentumUpdate", "adam": "AdamUpdate",
              "adamw": "AdamWUpdate"}
STATE_NAMES = {"SGDUpdate": (), "MomentumUpdate": ("velocity",), "AdamUpdate": ("m", "v"),
               "AdamWUpdate": ("m", "v")}
STEP = "optimizer.step"
ALIASES = {"eps": "epsilon", "beta": "momentum", "wd": "weight_decay"}


def trainable_params(graph: Graph) -> list[str]:
    """Floating parameters with ``trainable=True``, in declaration order."""
    return [n for n, s in graph.params.items() if graph.param_info[n].trainable and is_float(s.dtype)]


def resolve_optimizer(optimizer: str, hyper: dict[str, Any]) -> str:
    """The update op for ``optimizer`` spelled as torch.optim spells it (case-insensitive):
    ``"sgd"`` with a nonzero ``momentum`` is ``MomentumUpdate`` (as ``torch.optim.SGD(momentum=
    0.9)``), without it plain ``SGDUpdate``; ``"momentum"`` is SGD with momentum (default 0.9).
    torch's rules for nesterov and dampening are kept: nesterov needs momentum > 0 and
    dampening 0.

    >>> resolve_optimizer("SGD", {"momentum": 0.9}), resolve_optimizer("sgd", {})
    ('MomentumUpdate', 'SGDUpdate')
    """
    name = str(optimizer).lower()
    if name not in OPTIMIZERS:
        raise GraphError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})",
                         where="training_graph")
    mu = float(hyper.get("momentum", hyper.get("beta", 0.0)) or 0.0) if name == "sgd" else None
    if name == "sgd" and mu:
        name = "momentum"
    elif name == "sgd" and (hyper.get("nesterov") or hyper.get("dampening")):
        raise GraphError("sgd: nesterov and dampening need a nonzero momentum (as torch.optim.SGD)",
                         where="training_graph")
    if name == "sgd":  # torch.optim.SGD's defaults (momentum=0, dampening=0, nesterov=False)
        for key in ("momentum", "beta", "dampening", "nesterov"):
            hyper.pop(key, None)
    op = OPTIMIZERS[name]
    if op == "MomentumUpdate" and hyper.get("nesterov") and float(hyper.get("dampening", 0.0) or 0.0):
        raise GraphError("nesterov momentum requires zero dampening (as torch.optim.SGD)",
                         where="training_graph")
    return op


def _impl(hyper: dict[str, Any]) -> str:
    """torch.optim's ``foreach`` / ``fused`` keywords -> the update's ``impl``: ``fused=True``
    is ``fused``; ``foreach=False`` the for-loop; otherwise (``foreach=None`` or ``True``, on a
    GPU) ``foreach``. ``impl`` may also be given directly (``sim.ops.optim.IMPLS``)."""
    fused, foreach = hyper.pop("fused", None), hyper.pop("foreach", None)
    if fused and foreach:
        raise GraphError("fused=True and foreach=True cannot both be set (as torch.optim)",
                         where="training_graph")
    if "impl" in hyper:
        return str(hyper.pop("impl"))
    return "fused" if fused else ("forloop" if foreach is False else "foreach")


def _optimizer_attrs(op: str, hyper: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"impl": _impl(hyper)}
    for key, value in hyper.items():
        if key == "betas":
            attrs["beta1"], attrs["beta2"] = (float(b) for b in value)
            continue
        key = ALIASES.get(key, key)
        if key not in DEFAULTS[op]:
            known = ", ".join(sorted(DEFAULTS[op]))
            raise GraphError(f"unknown hyperparameter {key!r} for {op} (known: {known})",
                             where="training_graph")
        attrs[key] = value
    return {k: attrs.get(k, v) for k, v in DEFAULTS[op].items()}


def train_mode(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """``graph`` as ``model.train()`` runs it, and the running statistics it updates.

    A ``BatchNormalization`` in inference mode whose running mean and variance are
    non-trainable parameters (directly or through AMP's casts) normalises with the batch
    statistics (``training_mode=1``) and outputs updated running statistics
    (``running = running * momentum + batch * (1 - momentum)``, ONNX semantics) as
    ``<param>.new``, cast back to the parameter's dtype when it computes in another; and, as
    ``nn.BatchNorm`` does, counts its batches (``<node>.num_batches_tracked``, int64). A
    ``Dropout`` in inference mode drops (``training_mode=1``) with a mask seeded by its
    node name unless it has a ``seed``. Returns the new graph and ``{"<param>.new": param}``.

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("bn"); _ = g.add_input("x", TensorSpec((4, 3, 2, 2)))
    >>> for p, t in (("s", True), ("b", True), ("m", False), ("v", False)):
    ...     _ = g.add_param(p, TensorSpec((3,)), "ones", trainable=t)
    >>> _ = g.add_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")
    >>> g.set_outputs(["y"])
    >>> t, stats = train_mode(g)
    >>> t.nodes["bn"].attrs["training_mode"], t.nodes["bn"].outputs, sorted(stats.values())
    (1, ('y', 'm.new', 'v.new'), ['bn.num_batches_tracked', 'm', 'v'])
    """
    mode = _TrainMode(graph)
    return mode.run(), mode.stats


class _TrainMode(Rewriter):
    """Dropout drops; BatchNormalization with non-trainable running statistics uses batch
    statistics and outputs the updated running statistics (cast back under AMP)."""

    def __init__(self, src: Graph) -> None:
        super().__init__(src)
        self.stats: dict[str, str] = {}

    def visit(self, node: Node) -> None:
        if int(node.attrs.get("training_mode", 0)):
            self.emit(node)
        elif node.op == "Dropout" and len([t for t in node.inputs if t]) == 1:
            attrs = {**node.attrs, "training_mode": 1}
            attrs.setdefault("seed", zlib.crc32(node.name.encode()) & 0x7FFFFFFF)
            self.emit(node, attrs=attrs)
        elif node.op == "BatchNormalization" and len(node.outputs) == 1:
            self._batchnorm(node)
        else:
            self.emit(node)

    def _batchnorm(self, node: Node) -> None:
        g = self.src
        running = [param_behind(g, t) for t in node.inputs[3:5]]
        if len(running) != 2 or not all(p is not None and not g.param_info[p].trainable for p in running):
            self.emit(node)
            return
        outs, casts = list(node.outputs), []
        for t, p in zip(node.inputs[3:5], running):
            assert p is not None
            want = g.params[p].dtype
            if g.tensors[t].dtype == want:
                outs.append(f"{p}.new")
            else:  # computed in AMP's dtype: cast back to the parameter's
                outs.append(f"{p}.batch")
                casts.append((f"{p}.batch", p, want))
            self.stats[f"{p}.new"] = p
        self.emit(node, outputs=outs, attrs={**node.attrs, "training_mode": 1})
        for t, p, want in casts:
            self.b.node("Cast", [t], [f"{p}.new"], {"to": want}, name=f"{p}.cast_back",
                        meta={"role": "running_stats"})
        self._count(node)

    def _count(self, node: Node) -> None:
        """``nn.BatchNorm`` in training mode also counts its batches (``num_batches_tracked
        += 1``, an int64 buffer of the module): one more, tiny, kernel per layer."""
        count = self.b.param(f"{node.name}.num_batches_tracked", TensorSpec((), "int64"),
                             ParamInfo("zeros", False, {"role": "running_stats"}), np.array(0, np.int64))
        if "train_mode.one" not in self.out.params:
            self.b.param("train_mode.one", TensorSpec((), "int64"), ParamInfo("constant", False),
                         np.array(1, np.int64))
        self.b.node("Add", [count, "train_mode.one"], [f"{count}.new"], name=f"{node.name}.count",
                    meta={"role": "running_stats"})
        self.stats[f"{count}.new"] = count


def _add_loss(g: Graph, loss: str, labels: str, class_axis: int | None) -> str:
    if loss not in LOSSES:
        raise GraphError(f"unknown loss {loss!r} (choose from {', '.join(LOSSES)})", where="training_graph")
    if not g.outputs:
        raise GraphError("graph has no outputs to put a loss on", where=g.source)
    b = GraphBuilder(g)
    y = g.outputs[0]
    spec = g.tensors[y]
    if not is_float(spec.dtype):
        raise GraphError(f"output {y!r} is {spec.dtype}, not floating", where=g.source)
    if loss == "mse":
        b.input(labels, spec)
        (out,) = b.node("MSELoss", [y, labels], ["loss"], {"reduction": "mean"}, name="loss",
                            meta={"role": "loss"})
        return out
    if spec.rank < 2:
        raise GraphError(f"cross_entropy needs scores [N, C, ...], output {y!r} is {spec.shape}",
                         where=g.source)
    axis = (-1 if spec.rank == 3 else 1) if class_axis is None else class_axis
    axis = axis % spec.rank
    scores = y
    if axis == 1:
        b.input(labels, TensorSpec((spec.shape[0], *spec.shape[2:]), "int64"))
        target = labels
    elif axis == spec.rank - 1:
        # [N, ..., C] (a sequence model's [batch, seq, vocab]): flatten to rows of classes
        lead = spec.shape[:-1]
        b.input(labels, TensorSpec(lead, "int64"))
        rows = int(np.prod(lead))
        (scores,) = b.node("Reshape", [y], [b.unique(f"{y}.rows")],
                               {"shape": [rows, spec.shape[-1]]}, name=b.unique("loss.scores"),
                               meta={"role": "loss"})
        (target,) = b.node("Reshape", [labels], [b.unique(f"{labels}.rows")], {"shape": [rows]},
                               name=b.unique("loss.labels"), meta={"role": "loss"})
    else:
        raise GraphError(f"class_axis must be 1 or the last axis, got {class_axis}", where="training_graph")
    # impl "torch": costed as F.cross_entropy's kernels (log_softmax + nll_loss; sim.ops.loss)
    (out,) = b.node("SoftmaxCrossEntropyLoss", [scores, target], ["loss"],
                    {"reduction": "mean", "impl": "torch"}, name="loss", meta={"role": "loss"})
    return out


def training_graph(
    graph: Graph,
    loss: str = "cross_entropy",
    optimizer: str = "sgd",
    checkpoint: bool = False,
    *,
    segment: int | None = None,
    labels: str = "labels",
    class_axis: int | None = None,
    fused_update: bool = False,
    train: bool = True,
    **hyper: Any,
) -> Graph:
    """One training step of ``graph``: loss, gradients, optimizer update.

    Cross-entropy scores the first output along ``class_axis``: by default axis 1 (``[N, C]``,
    ``[N, C, H, W]``) except for rank-3 outputs, taken as a sequence model's
    ``[batch, seq, vocab]`` (classes last; ``labels`` is ``[batch, seq]``).
    ``optimizer`` is spelled as torch.optim spells it (``"sgd"`` with ``momentum=0.9`` is SGD
    with momentum; ``"momentum"`` is accepted too; see ``resolve_optimizer``); ``hyper`` are
    its attributes (``lr``, ``weight_decay``, ``momentum``, ``dampening``, ``nesterov``,
    ``beta1``/``beta2`` or ``betas``, ``epsilon``/``eps``). A forward graph made
    by ``sim.passes.precision.amp`` carries ``meta["loss_scale"]``: the backward pass is
    seeded with that scale and the updates unscale the gradients (``grad_scale``).
    ``fused_update`` and ``train``: see the module docstring.

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("lin"); _ = g.add_input("x", TensorSpec((8, 4)))
    >>> _ = g.add_param("w", TensorSpec((4, 3))); _ = g.add_node("MatMul", ["x", "w"], ["y"])
    >>> g.set_outputs(["y"])
    >>> t = training_graph(g, optimizer="adam", lr=1e-3)
    >>> t.outputs
    ['loss', 'w.new', 'w.m.new', 'w.v.new', 'optimizer.step.new']
    >>> sorted(t.meta["updates"].items())[:2]
    [('optimizer.step.new', 'optimizer.step'), ('w.m.new', 'w.m')]
    """
    if any("device" in n.meta for n in graph.nodes.values()):
        raise GraphError("training_graph takes a graph not yet placed on devices (its backward nodes "
                         "would have no device): build the step first, then parallelize it",
                         where=graph.source or graph.name)
    hyper = dict(hyper)
    op = resolve_optimizer(optimizer, hyper)
    attrs = _optimizer_attrs(op, hyper)
    running: dict[str, str] = {}
    if train:
        graph, running = train_mode(graph)
    forward_nodes = [n.name for n in graph.topo_order()]
    g = graph.copy(f"{graph.name}.train")
    loss_t = _add_loss(g, loss, labels, class_axis)
    params = trainable_params(graph)
    if not params:
        raise GraphError("graph has no trainable parameters", where=graph.source)
    g, grads = _backward(g, graph, loss_t, params, attrs)
    step_new = _step_counter(g, grads, fused_update)
    updates, outputs = _add_updates(g, op, params, grads, attrs, step_new, running, fused_update)
    g.set_outputs([loss_t, *running, *outputs])
    g.meta.update({
        "updates": updates, "loss": loss_t, "labels": labels, "logits": graph.outputs[0],
        "optimizer": optimizer, "optimizer_attrs": attrs, "loss_kind": loss, "grads": dict(grads),
    })
    plan = _checkpoint_plan(graph, forward_nodes, segment) if checkpoint else None
    loss_nodes = {n.name for n in g.nodes.values() if n.meta.get("role") == "loss"}
    out = _rebuild(g, set(forward_nodes) | loss_nodes, plan, keep_params=set(graph.params))
    out.meta["checkpoint"] = bool(checkpoint)
    _backward_compute_dtype(out, graph.meta.get("dtype"))
    return strided_transposes(out)  # GEMMs read transposed operands through layout flags


def _backward(g: Graph, graph: Graph, loss_t: str, params: list[str],
              attrs: dict[str, Any]) -> tuple[Graph, dict[str, str]]:
    """Differentiate ``loss_t``; an AMP graph's loss scale seeds the backward pass and the
    updates unscale (``grad_scale``)."""
    scale = float(graph.meta.get("loss_scale", 1.0))
    seed = None
    if scale != 1.0:
        seed = GraphBuilder(g).param("loss.scale", TensorSpec((), g.tensors[loss_t].dtype),
                                     ParamInfo("constant", False), np.array(scale))
        attrs["grad_scale"] = 1.0 / scale
    return gradients(g, loss_t, params, [seed] if seed else None)


def _step_counter(g: Graph, grads: dict[str, str], fused_update: bool) -> str:
    """The step counter's increment; unless ``fused_update``, after every gradient exists."""
    b = GraphBuilder(g)
    b.param(STEP, TensorSpec((), "int64"), ParamInfo("zeros", False, {"role": "optimizer_state"}),
            np.array(0, np.int64))
    one = b.param("optimizer.one", TensorSpec((), "int64"), ParamInfo("constant", False),
                  np.array(1, np.int64))
    step_in = STEP
    if not fused_update:
        # optimizer.step() after loss.backward(): every update reads the step counter, and the
        # counter moves only once all gradients exist, so all gradients are alive together
        # (as in a framework) instead of each update running as soon as its gradient is ready.
        (step_in,) = b.node("Depend", [STEP, *dict.fromkeys(grads.values())],
                                [f"{STEP}.after_backward"], name="optimizer.after_backward",
                                meta={"role": "optimizer", "inplace": {0: 0}})
    (step_new,) = b.node("Add", [step_in, one], [f"{STEP}.new"], name="optimizer.step_inc",
                             meta={"role": "optimizer"})
    return step_new


def _add_updates(g: Graph, op: str, params: list[str], grads: dict[str, str], attrs: dict[str, Any],
                 step_new: str, running: dict[str, str], fused_update: bool = False
                 ) -> tuple[dict[str, str], list[str]]:
    """One update node per parameter (with its optimizer states). Returns the updates map
    (output -> parameter or state it replaces) and the outputs after the loss. Each node's
    ``launches`` is its share of the group's kernel launches (``sim.ops.optim``); with
    ``fused_update`` every parameter is a group of its own."""
    from sim.ops.optim import group_launches, impl_of

    impl_of(attrs)  # a bad impl fails here, naming the choices
    b = GraphBuilder(g)
    updates: dict[str, str] = dict(running)
    outputs: list[str] = []
    numels = [g.params[p].numel for p in params]
    share = group_launches(op, attrs, numels) / len(params)
    for p in params:
        launches = group_launches(op, attrs, [g.params[p].numel]) if fused_update else share
        attrs = {**attrs, "launches": launches}
        spec = g.params[p]
        states = [b.param(f"{p}.{s}", spec, ParamInfo("zeros", False, {"role": "optimizer_state", "of": p}))
                  for s in STATE_NAMES[op]]
        outs = [f"{p}.new"] + [f"{s}.new" for s in states]
        inplace = {0: 0, **{i + 1: i + 2 for i in range(len(states))}}
        b.node(op, [p, grads[p], *states, step_new], outs, dict(attrs), name=f"{p}.update",
                   meta={"role": "optimizer", "inplace": inplace, "param": p})
        for o, target in zip(outs, [p, *states]):
            updates[o] = target
            outputs.append(o)
    outputs.append(step_new)
    updates[step_new] = STEP
    return updates, outputs


def _backward_compute_dtype(out: Graph, dtype: Any) -> None:
    """A graph cast to tf32/int8 computes its matmuls so; the backward ones do too."""
    if dtype in ("tf32", "int8"):
        for node in out.nodes.values():
            if "compute_dtype" not in node.meta and out.work(node).matmul_flops > 0:
                node.meta["compute_dtype"] = dtype


# ----------------------------------------------------------------- checkpointing
def _checkpoint_plan(graph: Graph, order: list[str], segment: int | None) -> set[str]:
    """Forward tensors to recompute in the backward pass (not stored)."""
    n = len(order)
    if n == 0:
        return set()
    k = segment or max(1, math.isqrt(n))
    if k < 1:
        raise GraphError(f"checkpoint segment must be >= 1, got {k}", where="training_graph")
    seg = {name: i // k for i, name in enumerate(order)}
    last = (n - 1) // k
    keep = set(graph.outputs)
    dropped = set()
    for name in order:
        node = graph.nodes[name]
        if seg[name] == last:
            continue
        for t in node.outputs:
            if not t or t in keep:
                continue
            later = any(seg[c.name] > seg[name] for c in graph.consumers(t))
            if not later:
                dropped.add(t)
    return dropped


# ----------------------------------------------------------------- rebuilding
def _live_nodes(g: Graph) -> set[str]:
    """Nodes some graph output depends on (dead-code elimination)."""
    live: set[str] = set()
    stack = [g.producer(t) for t in g.outputs]
    while stack:
        node = stack.pop()
        if node is None or node.name in live:
            continue
        live.add(node.name)
        stack.extend(g.producer(t) for t in node.inputs if t)
    return live


class _Rebuild(Rewriter):
    """Copy ``g`` without dead nodes (and unused constants); with ``recompute``, backward
    nodes read recomputed copies of those forward tensors, emitted just before first use."""

    def __init__(self, g: Graph, forward: set[str], recompute: set[str] | None,
                 keep_params: Iterable[str]) -> None:
        super().__init__(g)
        self.live = _live_nodes(g)
        self.used = {t for n in g.topo_order() if n.name in self.live for t in n.inputs if t} | set(g.outputs)
        self.keep, self.forward, self.recompute = set(keep_params), forward, recompute or set()
        self.recomputed: dict[str, str] = {}
        self.last_backward: list[str] = []  # output of the backward node emitted last

    def keep_param(self, name: str) -> bool:
        return name in self.used or name in self.keep

    def materialise(self, t: str) -> str:
        """Name of the recomputed copy of forward tensor ``t`` (emitting it if needed)."""
        if t in self.recomputed:
            return self.recomputed[t]
        src = self.src.producer(t)
        assert src is not None
        ins = [self.materialise(i) if i in self.recompute else i for i in src.inputs]
        if self.last_backward and not any(i in self.recompute for i in src.inputs):
            # a chain start: hold it back until the backward pass gets here (the engine
            # starts any op whose inputs are ready)
            first = next(k for k, i in enumerate(ins) if i)
            (ins[first],) = self.b.node(
                "Depend", [ins[first], self.last_backward[-1]], [self.b.unique(f"{ins[first]}.after")],
                name=self.b.unique(f"{src.name}.recompute_after"),
                meta={"inplace": {0: 0}, "recompute": src.name})
        outs = [f"{o}.recompute" if o else "" for o in src.outputs]
        meta = dict(src.meta)
        meta.update({"recompute": src.name, "forward": src.name})
        self.b.node(src.op, ins, outs, dict(src.attrs), name=self.b.unique(f"{src.name}.recompute"),
                    meta=meta)
        for o, r in zip(src.outputs, outs):
            if o:
                self.recomputed[o] = r
        return self.recomputed[t]

    def visit(self, node: Node) -> None:
        if node.name not in self.live:
            return
        ins = list(node.inputs)
        backward = node.name not in self.forward
        if self.recompute and backward:
            ins = [self.materialise(t) if t in self.recompute else t for t in ins]
        self.emit(node, inputs=ins)
        if backward and node.outputs and node.outputs[0]:
            self.last_backward.append(node.outputs[0])


def _rebuild(g: Graph, forward: set[str], recompute: set[str] | None, keep_params: Iterable[str]) -> Graph:
    """Copy ``g`` without dead nodes (and unused constants); with ``recompute``, backward
    nodes read recomputed copies of those forward tensors, emitted just before first use."""
    return _Rebuild(g, forward, recompute, keep_params).run()


def forward_node_names(graph: Graph) -> list[str]:
    """Names of a training graph's forward nodes (not gradient, loss, update or recompute)."""
    return [n.name for n in graph.topo_order()
            if "forward" not in n.meta and n.meta.get("role") not in ("loss", "optimizer")
            and not n.name.startswith("grad")]
