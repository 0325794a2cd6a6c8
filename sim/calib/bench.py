"""Microbenchmarks of the executor's own kernels on this machine.

Each case is one op of the library on given input shapes, run as a one-node graph through
``sim.exec.Executor`` exactly as a whole network runs (the same NumPy kernel, the same dtype
handling, the same per-op timer). A case is repeated until ``min_time`` seconds have been
spent (at least ``min_reps`` runs) and its time is the fastest run: on a shared machine the
minimum is the run least disturbed by other processes.

The shapes are those of common networks' layers (GEMMs of transformer layers, ResNet
convolutions, the normalisations, activations and copies between them), from tiny (where the
per-op overhead dominates) to a few MB (where memory or arithmetic does), so that a fit sees
every regime of the cost model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.graph import Graph, TensorSpec
from sim.ops.work import Work

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Case:
    """One microbenchmark: ``op`` on inputs of ``shapes`` (float inputs, or int64 below
    ``int_high`` for those listed in ``ints``) with ``attrs``."""

    name: str
    op: str
    shapes: tuple[Shape, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    ints: tuple[int, ...] = ()
    int_high: int = 2
    n_out: int = 1
    positive: tuple[int, ...] = ()  # float inputs that must be > 0 (a variance)


@dataclass(frozen=True)
class Sample:
    """A measured case: its work (as the cost model sees it) and its best time in seconds."""

    name: str
    op: str
    work: Work
    seconds: float
    reps: int


def _c(name: str, op: str, *shapes: Shape, **attrs: Any) -> Case:
    return Case(name, op, tuple(shapes), dict(attrs))


def _gemms(quick: bool) -> list[Case]:
    sizes = [(128, 768, 768), (128, 3072, 768), (128, 768, 3072), (512, 512, 512), (32, 1000, 2048),
             (1, 768, 768), (256, 256, 64), (1024, 1024, 256)]
    if quick:
        sizes = [(64, 256, 256), (1, 256, 256), (128, 512, 128)]
    out = [_c(f"gemm_{m}x{n}x{k}", "Gemm", (m, k), (k, n), (n,)) for m, n, k in sizes]
    batched = [(12, 128, 128, 64), (12, 128, 64, 128), (16, 64, 64, 64)]
    if quick:
        batched = [(4, 64, 64, 32)]
    out += [_c(f"bmm_{b}x{m}x{n}x{k}", "MatMul", (b, m, k), (b, k, n)) for b, m, n, k in batched]
    return out


def _convs(quick: bool) -> list[Case]:
    # (channels in, out, spatial, kernel, stride): ResNet-50 layers at batch 1
    layers = [(3, 64, 224, 7, 2), (64, 64, 56, 1, 1), (64, 64, 56, 3, 1), (64, 256, 56, 1, 1),
              (256, 128, 56, 1, 1), (128, 128, 28, 3, 1), (128, 512, 28, 1, 1), (256, 256, 14, 3, 1),
              (1024, 256, 14, 1, 1), (512, 512, 7, 3, 1), (512, 2048, 7, 1, 1), (256, 512, 56, 1, 2)]
    if quick:
        layers = [(16, 16, 28, 3, 1), (32, 64, 14, 1, 1), (3, 8, 32, 7, 2)]
    out = []
    for cin, cout, hw, k, s in layers:
        p = k // 2
        out.append(_c(f"conv_{cin}_{cout}_{hw}_k{k}s{s}", "Conv", (1, cin, hw, hw), (cout, cin, k, k),
                      pads=[p, p, p, p], strides=[s, s]))
    return out


def _vector(quick: bool) -> list[Case]:
    sizes = [(1, 64, 112, 112), (1, 256, 56, 56), (1, 512, 28, 28), (1, 2048, 7, 7), (4, 16), (128, 768)]
    if quick:
        sizes = [(1, 16, 32, 32), (4, 16), (64, 256)]
    out: list[Case] = []
    for s in sizes:
        tag = "x".join(map(str, s))
        out.append(_c(f"relu_{tag}", "Relu", s))
        out.append(_c(f"add_{tag}", "Add", s, s))
        if len(s) == 4:
            c = s[1]
            bn = _c(f"bn_{tag}", "BatchNormalization", s, (c,), (c,), (c,), (c,), epsilon=1e-5)
            out.append(Case(bn.name, bn.op, bn.shapes, bn.attrs, positive=(4,)))
    rows = [(128, 768), (128, 3072), (12 * 128, 128), (8, 64)]
    if quick:
        rows = [(64, 256), (8, 64)]
    for r in rows:
        tag = "x".join(map(str, r))
        out.append(_c(f"softmax_{tag}", "Softmax", r, axis=-1))
        out.append(_c(f"gelu_{tag}", "Gelu", r))
        out.append(_c(f"tanh_{tag}", "Tanh", r))
        out.append(_c(f"layernorm_{tag}", "LayerNormalization", r, (r[-1],), (r[-1],), axis=-1))
    pools = [((1, 64, 112, 112), 3, 2), ((1, 2048, 7, 7), 7, 1)]
    if quick:
        pools = [((1, 16, 32, 32), 3, 2)]
    for s, k, st in pools:
        out.append(_c(f"maxpool_{'x'.join(map(str, s))}", "MaxPool", s, kernel_shape=[k, k], strides=[st, st],
                      pads=[k // 2] * 4 if k == 3 else [0] * 4))
    if not quick:  # working sets beyond the last-level cache: main-memory bandwidth
        big = (2048, 8192)
        out += [_c("relu_big", "Relu", big), _c("add_big", "Add", big, big),
                _c("transpose_big", "Transpose", (64, 64, 32, 64), perm=[0, 2, 1, 3])]
    copies = [(1, 128, 12, 64), (8, 12, 128, 64), (2, 4, 8, 16)]
    if quick:
        copies = [(1, 32, 4, 16), (2, 4, 8, 16)]
    for s in copies:
        out.append(_c(f"transpose_{'x'.join(map(str, s))}", "Transpose", s, perm=[0, 2, 1, 3]))
    return out


def _attention(quick: bool) -> list[Case]:
    dims = [(1, 12, 128, 64), (4, 12, 64, 64)] if not quick else [(1, 2, 32, 16)]
    return [_c(f"attention_{'x'.join(map(str, d))}", "Attention", d, d, d, scale=d[-1] ** -0.5)
            for d in dims]


def cases(quick: bool = False) -> list[Case]:
    """The microbenchmark suite (``quick``: a reduced one that runs in about a second)."""
    out = _gemms(quick) + _convs(quick) + _vector(quick) + _attention(quick)
    out.append(Case("gather_embedding", "Gather", ((2000, 64) if quick else (30522, 768), (1, 128)),
                    {}, ints=(1,), int_high=2000 if quick else 30522))
    return out


def one_op_graph(case: Case, dtype: str = "fp32") -> Graph:
    """``case`` as a graph of one node named ``op``."""
    g = Graph(case.name)
    names = []
    for i, s in enumerate(case.shapes):
        names.append(g.add_input(f"in{i}", TensorSpec(s, "int64" if i in case.ints else dtype)))
    outs = [f"out{i}" for i in range(case.n_out)]
    g.add_node(case.op, names, outs, dict(case.attrs), name="op")
    g.set_outputs(outs)
    return g.verify()


def random_inputs(graph: Graph, seed: int = 0, int_high: Callable[[str], int] | None = None
                  ) -> dict[str, np.ndarray]:
    """Deterministic inputs: floats from a normal distribution, ints in [0, int_high(name))."""
    from sim.dtypes import to_numpy

    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in graph.inputs.items():
        if spec.dtype in ("int64", "int32", "int16", "int8", "uint8"):
            high = int_high(name) if int_high is not None else 2
            out[name] = rng.integers(0, max(high, 1), spec.shape).astype(to_numpy(spec.dtype))
        elif spec.dtype == "bool":
            out[name] = rng.random(spec.shape) < 0.5
        else:
            out[name] = rng.standard_normal(spec.shape).astype(to_numpy(spec.dtype))
    return out


def time_case(case: Case, *, min_time: float = 0.05, min_reps: int = 3, max_reps: int = 200,
              dtype: str = "fp32", clock: Callable[[], float] = time.process_time,
              cold_bytes: float = 0.0) -> Sample:
    """Run ``case`` through the executor until ``min_time`` is spent; the fastest run.

    ``clock`` times each run: CPU seconds of this process by default (with one BLAS thread,
    the time the kernel ran, whatever other processes took from the core meanwhile).
    With ``cold_bytes`` > 0 (the last-level cache's size) the runs cycle through enough
    copies of the inputs (up to 16) that together they exceed it, so each run finds its data
    out of cache, as a layer inside a network does (its weights were last touched a whole
    pass ago), while the interpreter's own code and objects stay as warm as in a network."""
    from sim.exec import Executor

    g = one_op_graph(case, dtype)
    node = g.nodes["op"]
    work = g.work(node)
    copies = 1
    if cold_bytes > 0 and work.bytes_read > 0:
        copies = int(min(16, max(1, math.ceil(cold_bytes / work.bytes_read))))
    feeds = []
    for k in range(copies):
        f = random_inputs(g, seed=k, int_high=lambda _name: case.int_high)
        for i in case.positive:
            f[f"in{i}"] = np.abs(f[f"in{i}"]) + 0.1
        feeds.append(f)
    ex = Executor(g, clock=clock)
    ex.run(feeds[0])  # warm-up: first-touch page faults, BLAS thread start
    best, spent, reps = float("inf"), 0.0, 0
    while reps < max(min_reps, copies) or (spent < min_time and reps < max_reps):
        rec = ex.run(feeds[(reps + 1) % copies])
        t = rec.times_s["op"]
        best = min(best, t)
        spent += t
        reps += 1
    return Sample(case.name, case.op, work, best, reps)


def run_suite(suite: Sequence[Case], *, min_time: float = 0.05, progress: Callable[[str], None] | None = None,
              dtype: str = "fp32", clock: Callable[[], float] = time.process_time,
              cold_bytes: float = 0.0) -> list[Sample]:
    """Time every case of ``suite`` (``progress`` is told each case's name first); see
    ``time_case`` for ``cold_bytes``."""
    out = []
    for i, case in enumerate(suite):
        if progress is not None:
            progress(f"[{i + 1}/{len(suite)}] {case.name}")
        out.append(time_case(case, min_time=min_time, dtype=dtype, clock=clock, cold_bytes=cold_bytes))
    return out
