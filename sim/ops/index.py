"""Indexing ops: Gather, GatherElements, GatherND, scatters, TopK, OneHot, Trilu.

Gathers read only the elements they fetch (plus the indices), so an embedding lookup costs
``tokens x width`` bytes, not the whole table. Their gradients scatter-add the output
gradient back into a zero tensor of the data's shape (``GatherGrad`` ...), backward ops
that cost one add per scattered element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph.tensor import TensorSpec
from sim.ops.common import need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work

_INT = ("int64", "int32", "int16", "int8", "uint8")


def _check_int(spec: TensorSpec, op: str, what: str = "indices") -> None:
    if spec.dtype not in _INT:
        raise GraphError(f"{op} {what} must be an integer tensor, got {spec.dtype}")


def _gather_read_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """A gather reads its indices and the elements it fetches (at most all of data)."""
    data, idx = need(ins, 2, "gather")
    fetched = min(data.nbytes, outs[0].nbytes)
    return Work(bytes_read=idx.nbytes + fetched, bytes_written=outs[0].nbytes)


def _scatter_add_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """Scatter-add of ``updates`` (input 0) into zeros: one add per update element."""
    upd, idx = need(ins, 2, "scatter")
    return Work(flops=upd.numel, bytes_read=upd.nbytes + idx.nbytes, bytes_written=outs[0].nbytes)


def _fix_neg(idx: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + dim, idx)


# ---------------------------------------------------------------------------------- Gather
def _gather_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx = need(specs, 2, "Gather")
    _check_int(idx, "Gather")
    if data.rank == 0:
        raise GraphError("Gather data must have rank >= 1")
    ax = norm_axis(int(attrs.get("axis", 0)), data.rank)
    return [TensorSpec((*data.shape[:ax], *idx.shape, *data.shape[ax + 1:]), data.dtype)]


def _gather_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx = xs[0], xs[1]
    ax = norm_axis(int(attrs.get("axis", 0)), data.ndim)
    return [np.take(data, _fix_neg(idx, data.shape[ax]), axis=ax)]


def _gather_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    data, idx = node.inputs
    ds = gb.spec(data)
    ax = norm_axis(int(node.attrs.get("axis", 0)), ds.rank)
    return [gb.op("GatherGrad", [dys[0], idx], axis=ax, shape=list(ds.shape)), None]


defop(
    "Gather",
    infer=_gather_infer,
    work=_gather_read_work,
    kernel=_gather_kernel,
    grad=_gather_grad,
    doc="ONNX Gather: out = take(data, indices, axis); negative indices count from the end.",
)


def _gather_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, idx = need(specs, 2, "GatherGrad")
    _check_int(idx, "GatherGrad")
    shape = tuple(int(d) for d in attrs["shape"])
    ax = norm_axis(int(attrs.get("axis", 0)), len(shape))
    want = (*shape[:ax], *idx.shape, *shape[ax + 1:])
    if dy.shape != want:
        raise GraphError(f"GatherGrad gradient has shape {dy.shape}, expected {want}")
    return [TensorSpec(shape, dy.dtype)]


def _gather_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, idx = xs[0], xs[1]
    shape = tuple(int(d) for d in attrs["shape"])
    ax = norm_axis(int(attrs.get("axis", 0)), len(shape))
    out = np.zeros(shape, dtype=dy.dtype)
    idx = _fix_neg(idx, shape[ax])
    # move the gathered axis first so that np.add.at scatters along it
    out_m = np.moveaxis(out, ax, 0)
    dy_m = np.moveaxis(dy.reshape(*shape[:ax], idx.size, *shape[ax + 1:]), ax, 0)
    np.add.at(out_m, idx.reshape(-1), dy_m)
    return [out]


defop(
    "GatherGrad",
    infer=_gather_grad_infer,
    work=_scatter_add_work,
    kernel=_gather_grad_kernel,
    no_grad="backward op",
    doc="Gradient of Gather w.r.t. data: scatter-add dy into zeros(shape) along axis; "
        "inputs (dy, indices); attrs axis, shape.",
)
