"""Graph: named tensors, parameters and nodes over a ``networkx.DiGraph``.

Shapes are always concrete: frontends resolve symbolic sizes before building the graph.
Every ``add_node`` infers output specs through the op library, so a graph is typed as it is
built; ``verify()`` re-derives every type from the rules and compares (like a type checker).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.graph.node import Node
from sim.tensor import TensorSpec

if TYPE_CHECKING:
    from sim.ops.work import Work


@dataclass
class ParamInfo:
    """How a parameter is initialised and whether it is trained.

    ``init`` is one of ``normal`` (std ``std``), ``uniform`` (+-``scale``), ``zeros``, ``ones``,
    ``he`` (normal, std sqrt(2/fan_in)), ``xavier`` (uniform, sqrt(6/(fan_in+fan_out))),
    ``lstm`` (uniform +-1/sqrt(hidden)), or ``constant`` (``value``).
    Buffers (BatchNorm running statistics) have ``trainable=False``.
    """

    init: str = "normal"
    trainable: bool = True
    options: dict[str, Any] = field(default_factory=dict)


class Graph:
    """An op graph.

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("tiny")
    >>> _ = g.add_input("x", TensorSpec((2, 4)))
    >>> _ = g.add_param("w", TensorSpec((4, 3)))
    >>> (y,) = g.add_node("MatMul", ["x", "w"], ["y"])
    >>> g.set_outputs([y])
    >>> g.tensors["y"].shape, g.flops, g.param_count
    ((2, 3), 48.0, 12)
    """

    def __init__(self, name: str = "graph", source: str | None = None) -> None:
        self.name = name
        self.source = source  # file the graph came from, for error messages
        self.inputs: dict[str, TensorSpec] = {}
        self.params: dict[str, TensorSpec] = {}
        self.param_info: dict[str, ParamInfo] = {}
        self.initializers: dict[str, np.ndarray] = {}  # concrete values (ONNX weights, consts)
        self.tensors: dict[str, TensorSpec] = {}
        self.nodes: dict[str, Node] = {}
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self._producer: dict[str, str] = {}
        self._consumers: dict[str, list[str]] = {}
        self._nx = nx.DiGraph()
        self._order: list[Node] | None = None
        self._work: dict[str, Work] = {}
        self._counter = 0

    # ----------------------------------------------------------------- building
    def _where(self, what: str) -> str:
        return f"{self.source}: {what}" if self.source else what

    def _new_tensor(self, name: str, spec: TensorSpec, what: str) -> None:
        if not name:
            raise GraphError("tensor name is empty", where=self._where(what))
        if name in self.tensors:
            raise GraphError(f"tensor {name!r} is defined twice", where=self._where(what))
        self.tensors[name] = spec

    def add_input(self, name: str, spec: TensorSpec) -> str:
        """Declare a graph input (data fed at run time)."""
        self._new_tensor(name, spec, f"input {name!r}")
        self.inputs[name] = spec
        self._invalidate()
        return name

    def add_param(
        self,
        name: str,
        spec: TensorSpec,
        init: str = "normal",
        *,
        trainable: bool = True,
        value: np.ndarray | None = None,
        **options: Any,
    ) -> str:
        """Declare a parameter (weights, biases, buffers). ``value`` pins a concrete array."""
        self._new_tensor(name, spec, f"param {name!r}")
        self.params[name] = spec
        self.param_info[name] = ParamInfo(init, trainable, dict(options))
        if value is not None:
            self.initializers[name] = np.asarray(value)
        self._invalidate()
        return name

    def unique_name(self, base: str) -> str:
        """A node or tensor name not used yet, derived from ``base``."""
        name = base
        while name in self.nodes or name in self.tensors:
            self._counter += 1
            name = f"{base}_{self._counter}"
        return name

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | None = None,
        attrs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[str, ...]:
        """Append a node; infer and record its output specs. Returns the output names.

        ``outputs=None`` names outputs after the node (``name``, or ``name:1`` ...);
        the number of outputs is what the op's shape rule returns.
        """
        from sim.ops.registry import get_op

        node_name = name or self.unique_name(op.lower())
        if node_name in self.nodes:
            raise GraphError(f"node {node_name!r} is defined twice", where=self._where(node_name))
        where = self._where(f"node {node_name!r} ({op})")
        for t in inputs:
            if t and t not in self.tensors:
                raise GraphError(f"input tensor {t!r} is not defined before use", where=where)
        opdef = get_op(op, where=where)
        attrs = dict(attrs or {})
        in_specs = [self.tensors[t] if t else None for t in inputs]
        try:
            out_specs = opdef.infer(in_specs, attrs)
        except GraphError as err:
            raise GraphError(err.message, where=where) from None
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError) as err:
            raise GraphError(f"bad inputs or attributes: {err}", where=where) from None
        if outputs is None:
            outputs = [node_name if i == 0 else f"{node_name}:{i}" for i in range(len(out_specs))]
        outputs = list(outputs)
        if len(outputs) > len(out_specs):
            raise GraphError(
                f"op gives {len(out_specs)} outputs, {len(outputs)} named", where=where
            )
        node = Node(node_name, op, tuple(inputs), tuple(outputs), attrs, dict(meta or {}))
        for t, spec in zip(outputs, out_specs):
            if t:
                self._new_tensor(t, spec, f"node {node_name!r} ({op})")
                self._producer[t] = node_name
        self.nodes[node_name] = node
        self._nx.add_node(node_name)
        for t in inputs:
            if not t:
                continue
            self._consumers.setdefault(t, []).append(node_name)
            src = self._producer.get(t)
            if src is not None:
                self._nx.add_edge(src, node_name)
        self._invalidate()
        return tuple(outputs)

    def set_outputs(self, names: Iterable[str]) -> None:
        names = list(names)
        for t in names:
            if t not in self.tensors:
                raise GraphError(f"output {t!r} is not a tensor of the graph", where=self.source)
        self.outputs = names

    def _invalidate(self) -> None:
        self._order = None
        self._work.clear()

    # ----------------------------------------------------------------- queries
    def producer(self, tensor: str) -> Node | None:
        name = self._producer.get(tensor)
        return self.nodes[name] if name is not None else None

    def consumers(self, tensor: str) -> list[Node]:
        return [self.nodes[n] for n in self._consumers.get(tensor, [])]

    @property
    def nx_graph(self) -> nx.DiGraph:
        """The node-level dependency graph (edges from producer to consumer)."""
        return self._nx

    def topo_order(self) -> list[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        if self._order is None:
            index = {n: i for i, n in enumerate(self.nodes)}
            try:
                names = list(nx.lexicographical_topological_sort(self._nx, key=index.__getitem__))
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self._nx)
                raise GraphError(
                    f"graph has a cycle through nodes {[a for a, _ in cycle]}", where=self.source
                ) from None
            self._order = [self.nodes[n] for n in names]
        return self._order

    def __iter__(self) -> Iterator[Node]:
        return iter(self.topo_order())

    def __len__(self) -> int:
        return len(self.nodes)

    def spec(self, tensor: str) -> TensorSpec:
        return self.tensors[tensor]

    def compute_dtype(self, node: Node) -> str:
        """The dtype ``node`` computes in: ``meta["compute_dtype"]``, else its first float
        output's (then input's) dtype, else fp32."""
        cd = node.meta.get("compute_dtype")
        if cd:
            return str(cd)
        for names in (node.outputs, node.inputs):
            for t in names:
                if t and is_float(self.tensors[t].dtype):
                    return self.tensors[t].dtype
        return "fp32"

    def work(self, node: Node | str) -> Work:
        """The op's work estimate for this node (FLOPs by kind, bytes, GEMM shapes)."""
        from sim.ops.registry import get_op

        node = self.nodes[node] if isinstance(node, str) else node
        w = self._work.get(node.name)
        if w is None:
            opdef = get_op(node.op)
            ins = [self.tensors[t] if t else None for t in node.inputs]
            outs = [self.tensors[t] for t in node.outputs if t]
            w = opdef.work(ins, outs, node.attrs)
            self._work[node.name] = w
        return w

    @property
    def flops(self) -> float:
        """Total FLOPs of all nodes (a multiply-add counts 2)."""
        return float(sum(self.work(n).flops for n in self.nodes.values()))

    @property
    def param_count(self) -> int:
        """Number of trainable parameter elements."""
        return sum(s.numel for n, s in self.params.items() if self.param_info[n].trainable)

    @property
    def param_bytes(self) -> int:
        return sum(s.nbytes for s in self.params.values())

    # ----------------------------------------------------------------- checking
    def verify(self) -> Graph:
        """Check invariants; raise ``GraphError`` naming the node. Returns ``self``.

        Acyclic; every tensor produced at most once and defined before use; every node's output
        specs equal what its op's shape rule derives from its input specs; outputs exist.
        """
        from sim.ops.registry import get_op

        order = self.topo_order()
        defined = set(self.inputs) | set(self.params)
        for node in order:
            where = self._where(f"node {node.name!r} ({node.op})")
            for t in node.inputs:
                if t and t not in defined:
                    raise GraphError(f"input {t!r} is not produced before this node", where=where)
            opdef = get_op(node.op, where=where)
            derived = opdef.infer([self.tensors[t] if t else None for t in node.inputs], node.attrs)
            for t, spec in zip(node.outputs, derived):
                if not t:
                    continue
                if self.tensors[t] != spec:
                    raise GraphError(
                        f"output {t!r} is recorded as {self.tensors[t]} but the rule gives {spec}",
                        where=where,
                    )
                if t in defined:
                    raise GraphError(f"tensor {t!r} is produced twice", where=where)
                defined.add(t)
        for t in self.outputs:
            if t not in defined:
                raise GraphError(f"graph output {t!r} is never produced", where=self.source)
        return self

    # ----------------------------------------------------------------- copying
    def copy(self, name: str | None = None) -> Graph:
        """A deep-enough copy: new containers and nodes; arrays are shared (read-only use)."""
        g = Graph(name or self.name, self.source)
        g.inputs = dict(self.inputs)
        g.params = dict(self.params)
        g.param_info = {k: ParamInfo(v.init, v.trainable, dict(v.options))
                        for k, v in self.param_info.items()}
        g.initializers = dict(self.initializers)
        g.tensors = dict(self.tensors)
        g.nodes = {k: n.copy() for k, n in self.nodes.items()}
        g.outputs = list(self.outputs)
        g.meta = dict(self.meta)
        g._producer = dict(self._producer)
        g._consumers = {k: list(v) for k, v in self._consumers.items()}
        g._nx = self._nx.copy()
        g._counter = self._counter
        return g

    def summary(self) -> str:
        """A one-paragraph description: nodes, params, FLOPs."""
        return (
            f"{self.name}: {len(self.nodes)} nodes, {self.param_count / 1e6:.3f}M params, "
            f"{self.flops / 1e9:.3f} GFLOP"
        )

    def __repr__(self) -> str:
        return f"<Graph {self.summary()}>"


def param_behind(g: Graph, tensor: str) -> str | None:
    """The parameter ``tensor`` is, directly or through ``Cast`` nodes (AMP), else None."""
    while tensor not in g.params:
        node = g.producer(tensor)
        if node is None or node.op != "Cast" or not node.inputs:
            return None
        tensor = node.inputs[0]
    return tensor
