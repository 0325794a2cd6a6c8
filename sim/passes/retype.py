"""Retype a graph's floating tensors (for example to ``fp64`` for exact reference runs)."""

from __future__ import annotations

import numpy as np

from sim.dtypes import is_float
from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter


class _Retype(Rewriter):
    def __init__(self, src: Graph, dtype: str) -> None:
        super().__init__(src)
        self.dtype = dtype

    def leaves(self) -> None:
        for name, spec in self.src.inputs.items():
            self.env[name] = self.b.input(name, spec.with_dtype(self.dtype) if is_float(spec.dtype) else spec)
        for name, spec in self.src.params.items():
            val = self.src.initializers.get(name)
            if is_float(spec.dtype):
                spec = spec.with_dtype(self.dtype)
                val = None if val is None else np.asarray(val, dtype=np.float64)
            self.env[name] = self.b.param(name, spec, self.src.param_info[name], val)

    def visit(self, node: Node) -> None:
        attrs = dict(node.attrs)
        if node.op == "Cast" and is_float(str(attrs.get("to", ""))):
            attrs["to"] = self.dtype
        self.emit(node, attrs=attrs)


def retype(graph: Graph, dtype: str = "fp64") -> Graph:
    """``graph`` with every floating input, parameter and cast in ``dtype`` (node names, meta
    and structure unchanged; the shape rules derive every other tensor's dtype)."""
    return _Retype(graph, dtype).run()
