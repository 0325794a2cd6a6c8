"""Shared helpers for op definitions: broadcasting, axes, standard work shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.work import Work
from sim.tensor import TensorSpec


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy/ONNX multidirectional broadcasting.

    >>> broadcast_shapes((2, 1, 4), (3, 1))
    (2, 3, 4)
    """
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise GraphError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    """Turn a possibly negative axis into ``0..rank-1``; GraphError if out of range."""
    if not -rank <= axis < max(rank, 1):
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def need(specs: Sequence[TensorSpec | None], n: int, op: str) -> list[TensorSpec]:
    """The first ``n`` input specs, all present; GraphError otherwise."""
    if len(specs) < n or any(s is None for s in specs[:n]):
        raise GraphError(f"{op} needs {n} inputs, got {len([s for s in specs if s])}")
    return [s for s in specs[:n] if s is not None]


def io_bytes(ins: Sequence[TensorSpec | None], outs: Sequence[TensorSpec]) -> tuple[int, int]:
    """(bytes read, bytes written): each present input once, each output once."""
    return sum(s.nbytes for s in ins if s is not None), sum(s.nbytes for s in outs)


def elementwise_work(flops_per_elem: float = 1.0, transcendentals_per_elem: float = 0.0):
    """A ``work`` function for ops doing fixed work per output element."""

    def work(ins: Sequence[TensorSpec | None], outs: Sequence[TensorSpec], attrs: dict) -> Work:
        n = sum(o.numel for o in outs[:1])
        r, w = io_bytes(ins, outs)
        return Work(
            flops=flops_per_elem * n,
            transcendentals=transcendentals_per_elem * n,
            bytes_read=r,
            bytes_written=w,
        )

    return work


def movement_work(ins: Sequence[TensorSpec | None], outs: Sequence[TensorSpec], attrs: dict) -> Work:
    """Data movement only: reads inputs, writes outputs, no FLOPs."""
    r, w = io_bytes(ins, outs)
    return Work(bytes_read=r, bytes_written=w)


def free_work(ins: Sequence[TensorSpec | None], outs: Sequence[TensorSpec], attrs: dict) -> Work:
    """Metadata-only ops (a reshape of a contiguous tensor): no FLOPs, no traffic."""
    return Work()


def same_as_first(specs: Sequence[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    """Shape rule of unary elementwise ops."""
    (x,) = need(specs, 1, "op")
    return [x]


def as_tuple(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, np.ndarray):
        return tuple(int(i) for i in v.reshape(-1))
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v)
    return (int(v),)


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` whose fp32 products accumulate in fp64 and round once to fp32.

    The result is then (nearly always) the correctly rounded product, independent of how the
    BLAS library blocks or threads the reduction: two identical channels give identical
    outputs, and a run gives the same bits on every machine. Costs about 2x an fp32 matmul.
    """
    if a.dtype == np.float32 and b.dtype == np.float32:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    return np.matmul(a, b)
