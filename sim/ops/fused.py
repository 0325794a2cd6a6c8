"""The Fused op: a sub-graph run as one node (groups made by ``sim.passes.fusion``).

Attributes: ``inputs`` and ``outputs`` (the sub-graph's boundary tensor names), ``nodes``
(each member's op, inputs, outputs and attrs, in execution order), ``dtypes`` (the storage
dtype of every tensor) and optionally ``shared_inputs`` (input positions read through another
input's buffer). Its shape rule re-derives the sub-graph's types through the members' rules,
its work is the members' FLOPs (sibling GEMMs of one activation concatenated) with only the
boundary bytes, and its kernel runs the members' kernels in order, rounding each
intermediate to its storage dtype as the unfused graph would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from sim.dtypes import compute_numpy, is_float, to_numpy
from sim.errors import GraphError
from sim.ops.registry import defop, get_op
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec


def _sub_nodes(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return list(attrs["nodes"])


def _sub_specs(in_specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, TensorSpec]:
    """Specs of every tensor of the sub-graph, re-derived from the inputs' specs."""
    specs: dict[str, TensorSpec] = {}
    for name, s in zip(attrs["inputs"], in_specs):
        if s is None:
            raise GraphError(f"Fused input {name!r} is missing")
        specs[name] = s
    for sub in _sub_nodes(attrs):
        opdef = get_op(sub["op"])
        outs = opdef.infer([specs[t] if t else None for t in sub["inputs"]], sub["attrs"])
        for t, s in zip(sub["outputs"], outs):
            if t:
                specs[t] = s
    return specs


def _fused_infer(in_specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    specs = _sub_specs(in_specs, attrs)
    return [specs[t] for t in attrs["outputs"]]


def _fused_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    specs = _sub_specs(ins, attrs)
    total = Work()
    swapped = _last2_transposed(_sub_nodes(attrs), specs)
    for sub in _sub_nodes(attrs):
        opdef = get_op(sub["op"])
        w = opdef.work([specs[t] if t else None for t in sub["inputs"]],
                       [specs[t] for t in sub["outputs"] if t], sub["attrs"])
        gemms = w.gemms
        if sub["op"] in ("MatMul", "Gemm") and len(sub["inputs"]) > 1 and sub["inputs"][1] in swapped:
            # B read through the strides of a transpose of its last two axes: the layout flips
            gemms = tuple(replace(g, b_kmajor=not g.b_kmajor) for g in gemms)
        total = total + Work(w.flops, w.matmul_flops, w.transcendentals, gemms=gemms)
    shared = set(attrs.get("shared_inputs", ()))
    read = sum(s.nbytes * _read_fraction(attrs["inputs"][i], attrs, specs)
               for i, s in enumerate(ins) if s is not None and i not in shared)
    written = sum(_written_bytes(name, o, attrs, specs) for name, o in zip(attrs["outputs"], outs))
    total = Work(total.flops, total.matmul_flops, total.transcendentals, gemms=_concat_gemms(total.gemms))
    return total + Work(bytes_read=read, bytes_written=written)


def _written_bytes(t: str, spec: TensorSpec, attrs: dict[str, Any], specs: dict[str, TensorSpec]) -> float:
    """Bytes the group writes of its output ``t``: all of it, but only the update of a cache
    that a ``TensorScatter`` member writes in place."""
    for sub in _sub_nodes(attrs):
        if sub["op"] == "TensorScatter" and t in sub["outputs"]:
            return float(specs[sub["inputs"][1]].nbytes)
    return float(spec.nbytes)


def _read_fraction(t: str, attrs: dict[str, Any], specs: dict[str, TensorSpec]) -> float:
    """The share of boundary input ``t`` the group reads: all of it, unless every member that
    reads it (through casts and views) reads less: an MoE kernel reading it as expert
    weights reads only the experts its tokens are routed to (``moe.expert_read_fraction``),
    a ``TensorScatter`` writes into it as its cache in place and reads none of it."""
    from sim.ops.moe import expert_read_fraction
    from sim.ops.registry import has_trait

    frac, readers = 0.0, 0
    names, seen = [t], set()
    while names:
        name = names.pop()
        for sub in _sub_nodes(attrs):
            if name not in sub["inputs"] or sub["op"] == "Constant":
                continue
            readers += 1
            slots = [i for i, x in enumerate(sub["inputs"]) if x == name]
            if sub["op"] == "Cast" or has_trait(sub["op"], "view"):
                if any(o in attrs["outputs"] for o in sub["outputs"]):
                    return 1.0  # leaves the group: read to be written out
                names += [o for o in sub["outputs"] if o and o not in seen]
                seen.update(sub["outputs"])
            elif sub["op"] == "MoE" and min(slots) >= 2:
                frac = max(frac, expert_read_fraction([specs[x] if x else None for x in sub["inputs"]],
                                                      sub["attrs"]))
            elif not (sub["op"] == "TensorScatter" and slots == [0]):
                return 1.0
    return frac if readers else 1.0


def _last2_transposed(nodes: list[dict[str, Any]], specs: dict[str, TensorSpec]) -> set[str]:
    """Outputs of the group's Transposes that swap the last two axes and keep the others
    (no ``perm``: all axes reversed, which is that swap for a matrix).

    >>> sorted(_last2_transposed([{"op": "Transpose", "outputs": ["wt"], "attrs": {"perm": [1, 0]}},
    ...                           {"op": "Transpose", "outputs": ["u"], "attrs": {"perm": [1, 0, 2]}}], {}))
    ['wt']
    """
    out = set()
    for sub in nodes:
        if sub["op"] != "Transpose":
            continue
        perm = list(sub["attrs"].get("perm", ()))
        if not perm and sub["outputs"][0] in specs:
            perm = list(range(specs[sub["outputs"][0]].rank))[::-1]
        r = len(perm)
        if r >= 2 and perm == [*range(r - 2), r - 1, r - 2]:
            out.add(sub["outputs"][0])
    return out


def _concat_gemms(gemms: tuple[GemmShape, ...]) -> tuple[GemmShape, ...]:
    """GEMMs of one group with the same (m, k, batch, kernel, k_runs, b_bytes, b_kmajor) as one GEMM
    of summed n: in
    a fused group they come from sibling projections of one activation (weights concatenated).

    >>> merged = _concat_gemms((GemmShape(8, 4, 16), GemmShape(8, 6, 16), GemmShape(2, 2, 2)))
    >>> [(g.m, g.n, g.k) for g in merged]
    [(8, 10, 16), (2, 2, 2)]
    """
    merged: dict[tuple[int, int, int, str, int, float, bool], int] = {}
    for g in gemms:
        key = (g.m, g.k, g.batch, g.kernel, g.k_runs, g.b_bytes, g.b_kmajor)
        merged[key] = merged.get(key, 0) + g.n
    return tuple(GemmShape(m, n, k, b, kern, runs, bb, km)
                 for (m, k, b, kern, runs, bb, km), n in merged.items())


def _fused_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    env: dict[str, Any] = dict(zip(attrs["inputs"], xs))
    dtypes: dict[str, str] = attrs["dtypes"]
    for sub in _sub_nodes(attrs):
        opdef = get_op(sub["op"])
        outs = opdef.kernel([env[t] if t else None for t in sub["inputs"]], sub["attrs"])
        for t, v in zip(sub["outputs"], outs):
            if t:
                dt = dtypes[t]
                v = np.asarray(v).astype(to_numpy(dt), copy=False)
                env[t] = v.astype(compute_numpy(dt), copy=False) if is_float(dt) else v
    return [env[t] for t in attrs["outputs"]]


defop(
    "Fused",
    infer=_fused_infer,
    work=_fused_work,
    kernel=_fused_kernel,
    no_grad="fusion runs after autodiff (fuse the training graph instead)",
    doc="A fused group: attrs inputs, outputs, nodes (op, inputs, outputs, attrs per member), "
        "dtypes (storage dtype per tensor). Work: summed FLOPs, external bytes only.",
)
