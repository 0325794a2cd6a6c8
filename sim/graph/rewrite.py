"""One way to build and rewrite graphs: ``GraphBuilder`` and ``Rewriter``.

``GraphBuilder`` is the single typed way to add a graph input, a parameter, a constant or a
node; frontends, autodiff and every pass emit through one.

``Rewriter`` is torch.fx's ``Transformer`` for dlsim graphs: it copies the source graph's
leaves (inputs, parameters and their values) once, then walks the source nodes in topological
order keeping an old -> new tensor map (``env``), and re-emits each node with its name, attrs
and meta unless a visitor method says otherwise. A pass is a subclass that overrides
``visit(node)`` (or ``visit_<Op>`` for one op type), ``keep_param``, ``leaves`` or
``finish``:

>>> from sim.graph import Graph, TensorSpec
>>> g = Graph("g"); _ = g.add_input("x", TensorSpec((2,)))
>>> _ = g.add_node("Relu", ["x"], ["y"], name="r"); g.set_outputs(["y"])
>>> class ReluToSigmoid(Rewriter):
...     def visit_Relu(self, node):
...         return self.emit(node, op="Sigmoid")
>>> h = ReluToSigmoid(g).run()
>>> h.nodes["r"].op, h.outputs
('Sigmoid', ['y'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.graph.graph import Graph, ParamInfo
from sim.graph.node import Node
from sim.tensor import TensorSpec


class GraphBuilder:
    """Typed emission into one graph: inputs, parameters, constants and nodes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def input(self, name: str, spec: TensorSpec) -> str:
        """A graph input (data fed at run time)."""
        return self.graph.add_input(name, spec)

    def param(self, name: str, spec: TensorSpec, info: ParamInfo | None = None,
              value: np.ndarray | None = None) -> str:
        """A parameter with its init/trainable info (copied) and an optional pinned value."""
        info = info or ParamInfo()
        self.graph.add_param(name, spec, info.init, trainable=info.trainable, value=value)
        self.graph.param_info[name] = ParamInfo(info.init, info.trainable, dict(info.options))
        return name

    def constant(self, name: str, value: Any, dtype: str) -> str:
        """A non-trainable constant of ``dtype`` holding ``value`` (scalar or array), made once
        per name: asking again for the same name returns the existing one."""
        if name in self.graph.tensors:
            return name
        arr = np.asarray(value)
        return self.param(name, TensorSpec(arr.shape, dtype), ParamInfo("constant", False), arr)

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str] | None = None,
             attrs: dict[str, Any] | None = None, *, name: str | None = None,
             meta: dict[str, Any] | None = None) -> tuple[str, ...]:
        """Append a node (shape-checked by the op's rule); returns its output names."""
        return self.graph.add_node(op, inputs, outputs, attrs, name=name, meta=meta)

    def op(self, op: str, inputs: Sequence[str], *, name: str | None = None,
           meta: dict[str, Any] | None = None, **attrs: Any) -> str:
        """A one-output node with a fresh name derived from ``name`` (or the op)."""
        base = self.graph.unique_name(name or op.lower())
        return self.node(op, inputs, [base], attrs, name=base, meta=meta)[0]

    def unique(self, base: str) -> str:
        return self.graph.unique_name(base)


def copy_leaves(src: Graph, b: GraphBuilder, params: Sequence[str] | None = None,
                inputs: bool = True) -> None:
    """Copy ``src``'s graph inputs (if ``inputs``) and parameters (all, or the named ones) with
    their info and values into ``b``'s graph."""
    if inputs:
        for name, spec in src.inputs.items():
            b.input(name, spec)
    keep = src.params if params is None else params
    for name in keep:
        b.param(name, src.params[name], src.param_info[name], src.initializers.get(name))


class Rewriter:
    """Copy ``src`` node by node; subclasses change what a visited node becomes.

    ``env`` maps each source tensor to its name in the new graph (leaves map to themselves).
    ``emit(node, **changes)`` re-emits a source node with its inputs mapped through ``env`` and
    records its outputs there; by default a node keeps its name, outputs, attrs and meta.
    """

    def __init__(self, src: Graph, name: str | None = None) -> None:
        self.src = src
        self.out = Graph(name or src.name, src.source)
        self.out.meta = dict(src.meta)
        self.b = GraphBuilder(self.out)
        self.env: dict[str, str] = {}

    # -------------------------------------------------------------- hooks
    def keep_param(self, name: str) -> bool:
        """Whether a source parameter is copied as it is (default: all)."""
        return True

    def leaves(self) -> None:
        """Copy graph inputs and the kept parameters, once."""
        copy_leaves(self.src, self.b, [p for p in self.src.params if self.keep_param(p)])
        for t in list(self.src.inputs) + list(self.src.params):
            self.env[t] = t

    def visit(self, node: Node) -> Any:
        """Dispatch to ``visit_<Op>`` if the subclass has one, else re-emit the node."""
        fn = getattr(self, f"visit_{node.op}", None)
        return fn(node) if fn is not None else self.emit(node)

    def finish(self) -> None:
        """Set the new graph's outputs (the mapped source outputs)."""
        self.out.set_outputs([self.env[t] for t in self.src.outputs])

    # -------------------------------------------------------------- machinery
    def map(self, t: str) -> str:
        """The new name of source tensor ``t`` ('' stays '')."""
        return self.env[t] if t else ""

    def emit(self, node: Node, *, op: str | None = None, inputs: Sequence[str] | None = None,
             outputs: Sequence[str] | None = None, attrs: dict[str, Any] | None = None,
             name: str | None = None, meta: dict[str, Any] | None = None) -> tuple[str, ...]:
        """Re-emit ``node`` with the given changes (inputs are new-graph names) and map its
        source outputs to the new ones."""
        ins = [self.map(t) for t in node.inputs] if inputs is None else list(inputs)
        outs = list(node.outputs) if outputs is None else list(outputs)
        new = self.b.node(op or node.op, ins, outs, dict(node.attrs) if attrs is None else attrs,
                          name=name or node.name, meta=dict(node.meta) if meta is None else meta)
        for t, n in zip(node.outputs, new):
            if t:
                self.env[t] = n
        return new

    def run(self) -> Graph:
        """Leaves, every node in topological order, outputs. Returns the new graph."""
        self.leaves()
        for node in self.src.topo_order():
            self.visit(node)
        self.finish()
        return self.out
