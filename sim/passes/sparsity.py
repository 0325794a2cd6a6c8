"""Magnitude pruning and sparsity marking.

Two kinds of pruning of weight parameters (parameters that feed a matmul-like node,
possibly through ``Cast``/``Transpose``/``Reshape``/``Identity``):

* ``unstructured`` with a ``fraction``: in each weight, the ``floor(fraction * size)``
  entries of smallest magnitude become zero.
* ``N:M`` structured (``2:4`` on sparse tensor cores): in every group of M consecutive
  weights along the GEMM's reduction (K) dimension, only the N of largest magnitude stay.
  K is axis -2 of a MatMul's right operand (axis -1 of its left operand), axis 1 of a Gemm
  ``B`` with ``transB=1`` (else 0), and the flattened ``Cin/group * kH * kW`` of a Conv
  weight. A trailing group shorter than M stays dense.

Masks are applied to the executor's parameter arrays (``Trainer.set_masks`` re-applies them
after every update, so pruned weights stay zero during fine-tuning). ``mark_sparsity``
returns a copy of a graph whose forward matmul-like nodes that read a pruned weight carry
``meta["sparsity"] = {"kind": "2:4"}`` (or ``{"kind": "unstructured", "density": d}``) for the
cost models; backward GEMMs stay dense (they read the weight transposed, where the 2:4
pattern does not hold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter

PASS_THROUGH = ("Cast", "Transpose", "Reshape", "Identity")


@dataclass(frozen=True)
class PruneSpec:
    """``kind`` is ``"unstructured"`` (with ``fraction`` removed) or ``"N:M"`` (e.g. ``"2:4"``)."""

    kind: str
    fraction: float = 0.0
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind != "unstructured" else f"unstructured {self.fraction:g}"


def parse_prune(text: str | float) -> PruneSpec:
    """``"0.5"`` -> unstructured half; ``"2:4"`` -> 2 of every 4 kept.

    >>> parse_prune("2:4"), parse_prune("0.75").fraction
    (PruneSpec(kind='2:4', fraction=0.5, n=2, m=4), 0.75)
    """
    s = str(text).strip()
    if ":" in s:
        try:
            n, m = (int(v) for v in s.split(":"))
        except ValueError:
            raise GraphError(f"bad N:M pattern {s!r}", where="--prune") from None
        if not 0 < n < m:
            raise GraphError(f"N:M pattern needs 0 < N < M, got {s!r}", where="--prune")
        return PruneSpec(f"{n}:{m}", 1 - n / m, n, m)
    try:
        frac = float(s)
    except ValueError:
        raise GraphError(f"--prune expects a fraction (0.5) or N:M (2:4), got {s!r}",
                         where="--prune") from None
    if not 0.0 <= frac < 1.0:
        raise GraphError(f"pruning fraction must be in [0, 1), got {frac}", where="--prune")
    return PruneSpec("unstructured", frac)


def _weight_consumers(graph: Graph, param: str) -> list[tuple[Node, str, bool]]:
    """Matmul-like nodes reading ``param`` (through pass-through ops): (node, the tensor it
    reads, whether an odd number of last-two-axes transposes lies on the way)."""
    found: list[tuple[Node, str, bool]] = []
    stack = [(param, False)]
    seen = set()
    while stack:
        t, flipped = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        for node in graph.consumers(t):
            if node.op in PASS_THROUGH:
                flip = flipped
                if node.op == "Transpose":
                    perm = list(node.attrs.get("perm") or [])
                    rank = graph.tensors[t].rank
                    flip = flipped ^ (not perm or perm[-2:] == [rank - 1, rank - 2])
                stack.extend((o, flip) for o in node.outputs if o)
            elif graph.work(node).matmul_flops > 0:
                found.append((node, t, flipped))
    return found


def prunable_params(graph: Graph) -> list[str]:
    """Trainable floating parameters of rank >= 2 that feed a matmul-like node."""
    out = []
    for name, spec in graph.params.items():
        if not graph.param_info[name].trainable or not is_float(spec.dtype) or spec.rank < 2:
            continue
        if _weight_consumers(graph, name):
            out.append(name)
    return out


def _k_layout(graph: Graph, param: str) -> str:
    """Where the reduction dimension of ``param`` lies: ``"rows"`` (axis -2), ``"cols"``
    (axis -1) or ``"flat"`` (all axes after the first: a conv weight)."""
    for node, t, transposed in _weight_consumers(graph, param):
        idx = node.inputs.index(t)
        if node.op in ("Conv", "ConvTranspose") and idx == 1:
            return "flat"
        if node.op == "Gemm" and idx == 1:
            layout = "cols" if node.attrs.get("transB", 0) else "rows"
        elif node.op == "Gemm" and idx == 0:
            layout = "rows" if node.attrs.get("transA", 0) else "cols"
        else:
            layout = "rows" if idx == 1 else "cols"
        if transposed:
            layout = "cols" if layout == "rows" else "rows"
        return layout
    return "rows"


def nm_mask(w: np.ndarray, n: int, m: int, layout: str = "rows") -> np.ndarray:
    """Keep the ``n`` largest-magnitude entries of every ``m`` along the reduction axis.

    >>> nm_mask(np.array([[1.0], [-4.0], [3.0], [0.5]]), 2, 4)[:, 0].tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    a = np.abs(np.asarray(w, np.float64))
    if layout == "flat":
        moved = a.reshape(a.shape[0], -1)
    elif layout == "rows":
        moved = np.moveaxis(a, -2, -1)
    else:
        moved = a
    k = moved.shape[-1]
    full = (k // m) * m
    mask = np.ones_like(moved)
    if full:
        groups = moved[..., :full].reshape(*moved.shape[:-1], full // m, m)
        order = np.argsort(-groups, axis=-1, kind="stable")
        gm = np.zeros_like(groups)
        np.put_along_axis(gm, order[..., :n], 1.0, axis=-1)
        mask[..., :full] = gm.reshape(*moved.shape[:-1], full)
    if layout == "flat":
        return mask.reshape(a.shape)
    if layout == "rows":
        return np.moveaxis(mask, -1, -2)
    return mask


def unstructured_mask(w: np.ndarray, fraction: float) -> np.ndarray:
    """Zero the ``floor(fraction * size)`` smallest-magnitude entries (ties: first ones)."""
    a = np.abs(np.asarray(w, np.float64)).reshape(-1)
    k = int(np.floor(fraction * a.size))
    mask = np.ones_like(a)
    if k:
        mask[np.argsort(a, kind="stable")[:k]] = 0.0
    return mask.reshape(np.shape(w))


def magnitude_masks(params: Mapping[str, np.ndarray], names: Sequence[str], spec: PruneSpec,
                    graph: Graph | None = None) -> dict[str, np.ndarray]:
    """0/1 masks (same dtype as each parameter) for the parameters ``names``."""
    masks = {}
    for p in names:
        w = np.asarray(params[p])
        if spec.kind == "unstructured":
            m = unstructured_mask(w, spec.fraction)
        else:
            layout = _k_layout(graph, p) if graph is not None else ("flat" if w.ndim > 2 else "rows")
            m = nm_mask(w, spec.n, spec.m, layout)
        masks[p] = m.astype(w.dtype)
    return masks


def density(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of weights kept over all masks."""
    total = sum(m.size for m in masks.values())
    return float(sum(np.count_nonzero(m) for m in masks.values()) / total) if total else 1.0


def describe(masks: Mapping[str, np.ndarray]) -> str:
    return f"density {density(masks):.3f} over {len(masks)} weights"


class _MarkSparsity(Rewriter):
    """Re-emit every node; forward matmul-like nodes reading a pruned weight get
    ``meta["sparsity"]`` (nodes inside the backward pass are left dense)."""

    def __init__(self, src: Graph, masks: Mapping[str, np.ndarray], spec: PruneSpec) -> None:
        super().__init__(src)
        self.marks: dict[str, dict[str, Any]] = {}
        for p, m in masks.items():
            if p not in src.params:
                continue
            d = float(np.count_nonzero(m) / m.size)
            for node, _, _ in _weight_consumers(src, p):
                if "forward" in node.meta and "recompute" not in node.meta:
                    continue  # a gradient node
                self.marks[node.name] = ({"kind": "unstructured", "density": d} if spec.kind == "unstructured"
                                         else {"kind": spec.kind})

    def visit(self, node: Node) -> None:
        mark = self.marks.get(node.name)
        self.emit(node, meta=None if mark is None else {**node.meta, "sparsity": mark})


def mark_sparsity(graph: Graph, masks: Mapping[str, np.ndarray], spec: PruneSpec) -> Graph:
    """A copy of ``graph`` whose matmul-like nodes reading a pruned weight carry
    ``meta["sparsity"]`` (nodes inside the backward pass are left dense)."""
    return _MarkSparsity(graph, masks, spec).run()


def prune(graph: Graph, params: Mapping[str, np.ndarray], spec: PruneSpec | str | float
          ) -> tuple[dict[str, np.ndarray], Graph]:
    """Masks for every prunable weight of ``graph`` and the sparsity-marked graph."""
    spec = spec if isinstance(spec, PruneSpec) else parse_prune(spec)
    masks = magnitude_masks(params, prunable_params(graph), spec, graph)
    return masks, mark_sparsity(graph, masks, spec)
