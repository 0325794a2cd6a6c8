"""Reverse-mode autodiff over the op graph.

``gradients`` walks the forward graph backwards and asks each op's gradient rule (in
``sim/ops``) to emit backward nodes through a ``GradBuilder``. Backward nodes are ordinary
nodes of ordinary ops, so the engine times them and the executor runs them like any other.
Each backward node's ``meta["forward"]`` names the forward node it differentiates, and its
name starts with that node's name (``fc1.grad``, ``fc1.grad_1`` ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.graph import Graph, Node, TensorSpec
from sim.graph.rewrite import GraphBuilder
from sim.ops.registry import get_op


class GradBuilder:
    """What a gradient rule may do: emit nodes, read specs, reduce broadcasts, make constants."""

    def __init__(self, graph: Graph, forward: Node | None) -> None:
        self.graph = graph
        self.b = GraphBuilder(graph)
        self.forward = forward
        self.base = f"{forward.name}.grad" if forward is not None else "grad"

    def spec(self, tensor: str) -> TensorSpec:
        return self.graph.tensors[tensor]

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        """Emit one node; returns its output name (a tuple of names when ``n_out > 1``)."""
        name = self.graph.unique_name(self.base)
        meta = {"forward": self.forward.name} if self.forward is not None else {}
        if self.forward is not None and "layer" in self.forward.meta:
            meta["layer"] = self.forward.meta["layer"]
        outs = [name if i == 0 else f"{name}:{i}" for i in range(n_out)]
        res = self.b.node(op, list(inputs), outs, attrs, name=name, meta=meta)
        return res[0] if n_out == 1 else res

    def const(self, value: float | np.ndarray, dtype: str, shape: Sequence[int] = ()) -> str:
        """A constant tensor (a non-trainable parameter with a fixed value)."""
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), tuple(shape))
        return self.b.constant(self.b.unique(f"{self.base}.const"), np.array(arr), dtype)

    def transpose_last2(self, tensor: str) -> str:
        rank = self.spec(tensor).rank
        perm = list(range(rank))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        return self.op("Transpose", [tensor], perm=perm)

    def unbroadcast(self, tensor: str, shape: Sequence[int]) -> str:
        """Sum ``tensor`` over the axes along which ``shape`` was broadcast to its shape."""
        shape = tuple(shape)
        have = self.spec(tensor).shape
        if have == shape:
            return tensor
        lead = len(have) - len(shape)
        axes = list(range(lead))
        for i, d in enumerate(shape):
            if d == 1 and have[lead + i] != 1:
                axes.append(lead + i)
        out = self.op("ReduceSum", [tensor], axes=axes, keepdims=0) if axes else tensor
        if self.spec(out).shape != shape:
            out = self.op("Reshape", [out], shape=list(shape))
        return out

    def add_n(self, tensors: Sequence[str]) -> str:
        acc = tensors[0]
        for t in tensors[1:]:
            acc = self.op("Add", [acc, t])
        return acc


def _needs_grad(graph: Graph, wrt: set[str]) -> set[str]:
    """Tensors that depend on any of ``wrt`` through float-valued ops."""
    need = set(wrt)
    for node in graph.topo_order():
        if any(t in need for t in node.inputs if t):
            for t in node.outputs:
                if t and is_float(graph.tensors[t].dtype):
                    need.add(t)
    return need


def _backward_node(g: Graph, node: Node, grads: dict[str, list[str]], need: set[str]) -> None:
    """Emit ``node``'s gradient rule; add each input gradient to ``grads`` (summed later)."""
    opdef = get_op(node.op)
    where = f"node {node.name!r} ({node.op})"
    if opdef.grad is None:
        raise GraphError(f"op has no gradient ({opdef.no_grad})", where=where)
    gb = GradBuilder(g, node)
    douts: list[str | None] = []
    for o in node.outputs:
        parts = grads.get(o) if o else None
        douts.append(gb.add_n(parts) if parts else None)
        if parts and len(parts) > 1:
            grads[o] = [douts[-1]]  # type: ignore[list-item]
    dxs = list(opdef.grad(gb, node, douts))
    dxs += [None] * (len(node.inputs) - len(dxs))
    for inp, dx in zip(node.inputs, dxs):
        if inp and dx is not None and inp in need:
            if g.tensors[dx].shape != g.tensors[inp].shape:
                raise GraphError(f"gradient rule gave shape {g.tensors[dx].shape} for input {inp!r} "
                                 f"of shape {g.tensors[inp].shape}", where=where)
            grads.setdefault(inp, []).append(dx)


def gradients(
    graph: Graph,
    ys: str | Sequence[str],
    wrt: Iterable[str],
    dys: Sequence[str] | None = None,
) -> tuple[Graph, dict[str, str]]:
    """Append backward nodes computing d(ys)/d(wrt) to a copy of ``graph``.

    ``ys`` is the tensor (or tensors) to differentiate. For a single scalar ``ys`` the seed
    gradient is 1; otherwise pass ``dys``, names of existing tensors (usually graph inputs)
    holding the output gradients. Returns the new graph and a map from each ``wrt`` tensor
    to its gradient tensor (tensors the outputs do not depend on get a zero constant).
    """
    g = graph.copy()
    ys = [ys] if isinstance(ys, str) else list(ys)
    wrt = list(wrt)
    for t in [*ys, *wrt]:
        if t not in g.tensors:
            raise GraphError(f"tensor {t!r} is not in the graph", where=g.source)
    root = GradBuilder(g, None)
    if dys is None:
        if len(ys) != 1 or g.tensors[ys[0]].numel != 1:
            raise GraphError("give dys unless differentiating one scalar", where=g.source)
        spec = g.tensors[ys[0]]
        dys = [root.const(1.0, spec.dtype, spec.shape)]
    grads: dict[str, list[str]] = {y: [d] for y, d in zip(ys, dys)}
    need = _needs_grad(g, set(wrt))
    for node in reversed(graph.topo_order()):
        if any(o in grads for o in node.outputs if o) and any(t in need for t in node.inputs if t):
            _backward_node(g, node, grads, need)
    result: dict[str, str] = {}
    for t in wrt:
        parts = grads.get(t)
        if not parts:
            spec = g.tensors[t]
            result[t] = root.const(0.0, spec.dtype, spec.shape)
        else:
            result[t] = GradBuilder(g, None).add_n(parts) if len(parts) > 1 else parts[0]
    return g, result
