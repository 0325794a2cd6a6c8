"""Collective communication: AllReduce, AllGather, ReduceScatter, AllToAll (NCCL semantics).

Attributes shared by all three:

* ``group``: the device instance names taking part (``["gpu0", "gpu1", ...]``), in ring
  order; required, non-empty, no repeats.
* ``algorithm``: ``"ring"`` (the only one; the default).
* ``reduction`` (AllReduce, ReduceScatter): ``"sum"`` (default), ``"mean"`` or ``"max"``
  (NCCL's ``ncclMax``: the elementwise maximum, as vocabulary-parallel cross-entropy takes
  the row maximum of the logits; it has no gradient).
* ``axis`` (AllGather, ReduceScatter): the axis that is gathered or scattered (default 0).

A node takes one of two forms:

* **all members** (``len(inputs) == len(group)``): input ``j`` is member ``group[j]``'s
  tensor and output ``j`` is what that member holds afterwards. This is the whole collective
  in one node, and the NumPy kernels compute it exactly: AllReduce gives every member the sum
  (or mean) of all inputs; AllGather gives every member the concatenation of all inputs along
  ``axis``; ReduceScatter gives member ``j`` the ``j``-th of ``n`` equal slices (along
  ``axis``) of the sum (or mean). The engine keeps input and output ``j`` on ``group[j]``.
* **one member** (one input): the node is one member's part of an SPMD program whose other
  members are not in the graph. The executor sees only this member's tensor, so the kernel
  takes the other members to hold the same value under ``mean``: AllReduce is the identity
  (exact for a group of one, and for the mean of replicated values), AllGather repeats the
  shard ``n`` times along ``axis``, ReduceScatter returns the first of the ``n`` slices
  (``reduction="sum"`` is then off by the factor ``n``, which the one-member view cannot see).
  The engine still times the full collective over every member of the group.

``AllToAll`` (``axis``, default 0; ``torch.distributed.all_to_all_single``, TensorFlow's
``AllToAll`` with ``split_dimension == concat_dimension``): every member splits its tensor
into ``n`` chunks along ``axis`` and sends chunk ``j`` to member ``j``; member ``j``'s output
is the chunks it received, in member order (shape unchanged). The all-members form needs the
axis to split into ``n`` equal chunks and computes exactly that; the one-member form is the
identity (what each member receives when all hold the same tensor is a permutation of its
rows, taken in place) and accepts any length, its chunks then being ``np.array_split``'s
nearly equal parts. Its gradient is the AllToAll of the output gradients (a permutation's
transpose is its inverse, and AllToAll is its own inverse).

Work (for the whole node): FLOPs are the reduction's adds (compares for max), ``(n - 1)`` per element of one
member's tensor for AllReduce and ReduceScatter (plus one divide per result element for
``mean``); the one-member form counts its member's share, ``1/n`` of that. AllGather does no
arithmetic. Bytes are the local reads and writes: each input read once, each output written
once (``io_bytes``); what crosses the links is the engine's business
(``sim/engine/collectives.py``), and every record of a collective is ``bound == "comm"``.

Gradients are the transposes: the gradient of AllReduce is an AllReduce of the output
gradients (same reduction), of AllGather a ReduceScatter (sum), of ReduceScatter an AllGather
(scaled by ``1/n`` for ``mean``). They are exact for the all-members form (checked by finite
differences); the one-member form reuses them, which is what each member computes in a real
SPMD run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import io_bytes, norm_axis
from sim.ops.registry import add_traits, defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

COLLECTIVES = ("AllReduce", "AllGather", "ReduceScatter", "AllToAll")
ALGORITHMS = ("ring",)
REDUCTIONS = ("sum", "mean", "max")


def group_of(attrs: dict[str, Any]) -> list[str]:
    """The ``group`` attribute, checked: a non-empty list of distinct device names."""
    group = attrs.get("group")
    if isinstance(group, str) or not isinstance(group, (list, tuple)) or not group:
        raise GraphError("collective needs attribute group: a non-empty list of device names")
    names = [str(d) for d in group]
    if len(set(names)) != len(names):
        raise GraphError(f"collective group repeats a device: {names}")
    algo = attrs.get("algorithm", "ring")
    if algo not in ALGORITHMS:
        raise GraphError(f"unknown collective algorithm {algo!r} (choose from {', '.join(ALGORITHMS)})")
    red = attrs.get("reduction", "sum")
    if red not in REDUCTIONS:
        raise GraphError(f"unknown reduction {red!r} (choose from {', '.join(REDUCTIONS)})")
    return names


def _members(specs: list[TensorSpec | None], attrs: dict[str, Any], op: str) -> tuple[int, TensorSpec]:
    """(group size, the common input spec); the number of inputs is 1 or the group size."""
    n = len(group_of(attrs))
    if not specs or any(s is None for s in specs):
        raise GraphError(f"{op} needs its inputs present")
    if len(specs) not in (1, n):
        raise GraphError(f"{op} takes 1 input (one member) or {n} (one per group member), got {len(specs)}")
    first = specs[0]
    assert first is not None
    for s in specs[1:]:
        if s != first:
            raise GraphError(f"{op} inputs differ: {first} and {s}")
    return n, first


def _scatter_shape(x: TensorSpec, axis: int, n: int, op: str) -> tuple[int, ...]:
    ax = norm_axis(axis, x.rank)
    if x.rank == 0 or x.shape[ax] % n:
        raise GraphError(f"{op}: axis {axis} of shape {x.shape} does not split into {n} equal parts")
    shape = list(x.shape)
    shape[ax] //= n
    return tuple(shape)


# ---------------------------------------------------------------------------- AllReduce
def _allreduce_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    _, x = _members(specs, attrs, "AllReduce")
    return [x] * len(specs)


def _reduce_flops(numel: int, n: int, k: int, red: str) -> float:
    """Adds (and mean divides) of a reduction over ``n`` members, for ``k`` of them."""
    per_member = (n - 1) * numel / n + (numel / n if red == "mean" and n > 1 else 0.0)
    return per_member * n if k == n else per_member


def _collective_work(op: str, *, reduces: bool) -> Callable[..., Work]:
    """The work function of collective ``op``: its members' bytes in and out, and for a
    reduction the adds (``_reduce_flops``)."""

    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        n, x = _members(ins, attrs, op)
        flops = _reduce_flops(x.numel, n, len(ins), attrs.get("reduction", "sum")) if reduces else 0.0
        r, w = io_bytes(ins, outs)
        return Work(flops=flops, bytes_read=r, bytes_written=w)

    return work


def _allreduce_kernel(inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    if len(inputs) == 1:
        return [np.array(inputs[0], copy=True)]
    total = _combine([np.asarray(x) for x in inputs], attrs)
    return [np.array(total, copy=True) for _ in inputs]


def _combine(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    """The reduction of the members' tensors (sum, mean or elementwise max)."""
    red = attrs.get("reduction", "sum")
    if red == "max":
        return np.max(np.stack(xs), axis=0)
    total = np.sum(np.stack(xs), axis=0)
    return total / len(xs) if red == "mean" else total


def _no_max(node: Any) -> None:
    if node.attrs.get("reduction", "sum") == "max":
        raise GraphError(f"{node.op} with reduction='max' has no gradient")


def _zeros_for(gb: Any, node: Any, dys: list[str | None]) -> list[str]:
    out = []
    for t, dy in zip(node.outputs, dys):
        if dy is None:
            spec = gb.spec(t)
            dy = gb.const(0.0, spec.dtype, spec.shape)
        out.append(dy)
    return out


def _attrs(node: Any, **extra: Any) -> dict[str, Any]:
    a = {"group": list(node.attrs["group"]), "algorithm": node.attrs.get("algorithm", "ring")}
    a.update(extra)
    return a


def _allreduce_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    _no_max(node)
    dys_ = _zeros_for(gb, node, dys)
    red = node.attrs.get("reduction", "sum")
    res = gb.op("AllReduce", dys_, n_out=len(dys_), **_attrs(node, reduction=red))
    return [res] if len(dys_) == 1 else list(res)


defop("AllReduce", infer=_allreduce_infer, work=_collective_work("AllReduce", reduces=True),
      kernel=_allreduce_kernel, grad=_allreduce_grad,
      doc="Every member gets the sum (mean, max) of all members' tensors (ring algorithm).")


# ---------------------------------------------------------------------------- AllGather
def _allgather_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    n, x = _members(specs, attrs, "AllGather")
    if x.rank == 0:
        raise GraphError("AllGather needs a tensor of rank >= 1")
    ax = norm_axis(int(attrs.get("axis", 0)), x.rank)
    shape = list(x.shape)
    shape[ax] *= n
    return [TensorSpec(tuple(shape), x.dtype)] * len(specs)


def _allgather_kernel(inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    n = len(group_of(attrs))
    xs = [np.asarray(x) for x in inputs]
    ax = norm_axis(int(attrs.get("axis", 0)), xs[0].ndim)
    parts = xs if len(xs) == n else xs * n
    out = np.concatenate(parts, axis=ax)
    return [np.array(out, copy=True) for _ in inputs]


def _allgather_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dys_ = _zeros_for(gb, node, dys)
    res = gb.op("ReduceScatter", dys_, n_out=len(dys_),
                **_attrs(node, axis=int(node.attrs.get("axis", 0)), reduction="sum"))
    return [res] if len(dys_) == 1 else list(res)


defop("AllGather", infer=_allgather_infer, work=_collective_work("AllGather", reduces=False),
      kernel=_allgather_kernel, grad=_allgather_grad,
      doc="Every member gets all members' tensors concatenated along axis (ring algorithm).")


# ---------------------------------------------------------------------------- ReduceScatter
def _reducescatter_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    n, x = _members(specs, attrs, "ReduceScatter")
    shape = _scatter_shape(x, int(attrs.get("axis", 0)), n, "ReduceScatter")
    return [TensorSpec(shape, x.dtype)] * len(specs)


def _reducescatter_kernel(inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    n = len(group_of(attrs))
    xs = [np.asarray(x) for x in inputs]
    ax = norm_axis(int(attrs.get("axis", 0)), xs[0].ndim)
    if len(xs) == 1:
        return [np.array(np.split(xs[0], n, axis=ax)[0], copy=True)]
    return [np.array(p, copy=True) for p in np.split(_combine(xs, attrs), n, axis=ax)]


def _reducescatter_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    _no_max(node)
    dys_ = _zeros_for(gb, node, dys)
    n = len(node.attrs["group"])
    res = gb.op("AllGather", dys_, n_out=len(dys_), **_attrs(node, axis=int(node.attrs.get("axis", 0))))
    outs = [res] if len(dys_) == 1 else list(res)
    if node.attrs.get("reduction", "sum") == "mean" and len(dys_) > 1:
        scale = gb.const(1.0 / n, gb.spec(outs[0]).dtype)
        outs = [gb.op("Mul", [o, scale]) for o in outs]
    return outs


defop("ReduceScatter", infer=_reducescatter_infer, work=_collective_work("ReduceScatter", reduces=True),
      kernel=_reducescatter_kernel, grad=_reducescatter_grad,
      doc="Member j gets the j-th equal slice (along axis) of the sum (or mean) of all members' tensors.")

# ---------------------------------------------------------------------------- AllToAll
def _alltoall_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    n, x = _members(specs, attrs, "AllToAll")
    if x.rank == 0:
        raise GraphError("AllToAll needs a tensor of rank >= 1")
    if len(specs) > 1:
        _scatter_shape(x, int(attrs.get("axis", 0)), n, "AllToAll")
    return [x] * len(specs)


def _alltoall_kernel(inputs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    n = len(group_of(attrs))
    xs = [np.asarray(x) for x in inputs]
    if len(xs) == 1:
        return [np.array(xs[0], copy=True)]
    ax = norm_axis(int(attrs.get("axis", 0)), xs[0].ndim)
    chunks = [np.split(x, n, axis=ax) for x in xs]
    return [np.concatenate([chunks[i][j] for i in range(n)], axis=ax) for j in range(n)]


def _alltoall_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dys_ = _zeros_for(gb, node, dys)
    res = gb.op("AllToAll", dys_, n_out=len(dys_), **_attrs(node, axis=int(node.attrs.get("axis", 0))))
    return [res] if len(dys_) == 1 else list(res)


defop("AllToAll", infer=_alltoall_infer, work=_collective_work("AllToAll", reduces=False),
      kernel=_alltoall_kernel, grad=_alltoall_grad,
      doc="Member i sends the j-th chunk (along axis) of its tensor to member j; "
          "member j gets them in member order.")

add_traits("collective", *COLLECTIVES)
