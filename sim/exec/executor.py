"""The NumPy executor: an environment dict plus dispatch over the op registry.

Runs a graph in topological order on real arrays, frees each tensor after its last use,
emulates storage dtypes (fp16 natively, bf16 and fp8 through ml_dtypes: kernels compute in
fp32 and outputs are rounded to the tensor's dtype), and records wall time per op.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from sim.dtypes import compute_numpy, is_float, to_numpy
from sim.errors import GraphError
from sim.graph import Graph, ParamInfo, TensorSpec
from sim.ops.registry import DTYPES_ATTR, get_op


def init_param(name: str, spec: TensorSpec, info: ParamInfo, seed: int = 0) -> np.ndarray:
    """Deterministic initial value of a parameter from ``(seed, name)``."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    shape = spec.shape
    opts = info.options
    # Default fans: a [in, out] matrix, a [out, in, *kernel] conv weight, a vector; scalars 1.
    if not shape:
        default_in = default_out = 1
    elif len(shape) <= 2:
        default_in, default_out = shape[0], shape[-1]
    else:
        default_in, default_out = int(np.prod(shape[1:])), shape[0]
    fan_in = int(opts.get("fan_in") or default_in or 1)
    fan_out = int(opts.get("fan_out") or default_out or 1)
    kind = info.init
    v: np.ndarray
    if kind == "zeros":
        v = np.zeros(shape)
    elif kind == "ones":
        v = np.ones(shape)
    elif kind == "constant":
        v = np.full(shape, float(opts.get("value", 0.0)))
    elif kind == "normal":
        v = rng.normal(0.0, float(opts.get("std", 0.02)), shape)
    elif kind == "uniform":
        s = float(opts.get("scale", 0.05))
        v = rng.uniform(-s, s, shape)
    elif kind == "he":
        v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif kind == "xavier":
        s = np.sqrt(6.0 / (fan_in + fan_out))
        v = rng.uniform(-s, s, shape)
    elif kind == "lstm":
        s = 1.0 / np.sqrt(float(opts.get("hidden", fan_out)))
        v = rng.uniform(-s, s, shape)
    elif kind == "arange":
        v = np.arange(spec.numel).reshape(shape)
    else:
        raise GraphError(f"unknown init {kind!r}", where=f"param {name!r}")
    if spec.dtype in ("int64", "int32", "int16", "int8", "uint8", "bool"):
        return v.astype(to_numpy(spec.dtype))
    return v.astype(to_numpy(spec.dtype))


@dataclass
class RunRecord:
    """What one run produced: the kept values and measured seconds per node."""

    values: dict[str, np.ndarray]
    times_s: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return float(sum(self.times_s.values()))


class Executor:
    """Runs a graph repeatedly; parameters persist between runs (so training can update them).

    >>> import numpy as np
    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph(); _ = g.add_input("x", TensorSpec((2,))); _ = g.add_node("Relu", ["x"], ["y"])
    >>> g.set_outputs(["y"])
    >>> Executor(g).run({"x": np.array([-1.0, 2.0], np.float32)}).values["y"]
    array([0., 2.], dtype=float32)
    """

    def __init__(self, graph: Graph, seed: int = 0, params: Mapping[str, np.ndarray] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.graph = graph
        self.clock = clock  # per-op timer: wall time, or e.g. time.process_time (CPU seconds)
        self.seed = seed
        self.params: dict[str, np.ndarray] = {}
        given = dict(params or {})
        for name, spec in graph.params.items():
            if name in given:
                self.params[name] = self._coerce(name, given[name], spec, "param")
            elif name in graph.initializers:
                self.params[name] = self._coerce(name, graph.initializers[name], spec, "param")
            else:
                self.params[name] = init_param(name, spec, graph.param_info[name], seed)
        self._order = graph.topo_order()
        last: dict[str, int] = {}
        for i, node in enumerate(self._order):
            for t in node.inputs:
                if t:
                    last[t] = i
        self._last_use = last

    def _coerce(self, name: str, value: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
        arr = np.asarray(value)
        if tuple(arr.shape) != spec.shape:
            where = f"{self.graph.source}: {what} {name!r}" if self.graph.source else f"{what} {name!r}"
            raise GraphError(f"shape {tuple(arr.shape)} given, {spec.shape} expected", where=where)
        return arr.astype(to_numpy(spec.dtype), copy=False)

    def run(
        self,
        inputs: Mapping[str, np.ndarray] | None = None,
        keep: Iterable[str] = (),
        record_times: bool = True,
    ) -> RunRecord:
        """Execute once. Returns the graph outputs plus any tensors named in ``keep``.

        ``inputs`` may also override parameters by name (for this run only).
        """
        g = self.graph
        feeds = dict(inputs or {})
        env: dict[str, np.ndarray] = dict(self.params)
        for name, spec in g.inputs.items():
            if name not in feeds:
                where = f"{g.source}: input {name!r}" if g.source else f"input {name!r}"
                raise GraphError("no value given for graph input", where=where)
            env[name] = self._coerce(name, feeds.pop(name), spec, "input")
        for name in list(feeds):
            if name in g.params:
                env[name] = self._coerce(name, feeds.pop(name), g.params[name], "param")
        if feeds:
            raise GraphError(f"values given for unknown tensors {sorted(feeds)}", where=g.source)
        wanted = set(g.outputs) | set(keep)
        times: dict[str, float] = {}
        for i, node in enumerate(self._order):
            opdef = get_op(node.op)
            args: list[np.ndarray | None] = []
            for t in node.inputs:
                if not t:
                    args.append(None)
                    continue
                v = env[t]
                spec = g.tensors[t]
                if is_float(spec.dtype):
                    v = v.astype(compute_numpy(spec.dtype), copy=False)
                args.append(v)
            attrs = node.attrs
            if getattr(opdef.kernel, "wants_dtypes", False):
                # kernels marked by sim.ops.registry.dtype_aware see the input dtype names
                attrs = {**attrs, DTYPES_ATTR: tuple(g.tensors[t].dtype if t else "" for t in node.inputs)}
            t0 = self.clock()
            try:
                outs = opdef.kernel(args, attrs)
            except Exception as err:  # noqa: BLE001 - re-raised with the node's text
                raise GraphError(
                    f"kernel failed: {type(err).__name__}: {err}", where=f"node {node.name!r} ({node.op})"
                ) from err
            if record_times:
                times[node.name] = self.clock() - t0
            for t, v in zip(node.outputs, outs):
                if t:
                    spec = g.tensors[t]
                    env[t] = np.asarray(v).astype(to_numpy(spec.dtype), copy=False)
            for t in node.inputs:
                if t and self._last_use.get(t) == i and t not in wanted and t not in self.params:
                    env.pop(t, None)
        values = {t: env[t] for t in wanted if t in env}
        missing = wanted - set(values)
        if missing:
            raise GraphError(f"tensors {sorted(missing)} were not computed", where=g.source)
        return RunRecord(values, times)


def execute(
    graph: Graph,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Run ``graph`` once on NumPy arrays; returns its outputs by tensor name.

    ``inputs`` maps graph-input names (and optionally parameter names) to arrays; parameters
    not supplied come from the graph's initializers or are initialised from ``seed``.
    """
    feeds = dict(inputs or {})
    params = {k: feeds.pop(k) for k in list(feeds) if k in graph.params}
    ex = Executor(graph, seed=seed, params=params)
    rec = ex.run(feeds)
    return {t: rec.values[t] for t in graph.outputs}
