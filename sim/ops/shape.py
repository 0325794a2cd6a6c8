"""Shape and data-movement ops: Reshape, Transpose, Expand, Concat, Slice, Pad, Cast, ...

Shape-like operands are attributes (``Reshape.shape``, ``Expand.shape``, ``Slice.starts`` ...),
so shape inference needs no values. Metadata-only ops (Reshape, Flatten, Squeeze, Unsqueeze,
Identity) cost nothing; ops that move data read each input once and write each output once
and do no FLOPs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.graph.tensor import TensorSpec
from sim.ops.common import as_tuple, broadcast_shapes, free_work, movement_work, need, norm_axis
from sim.ops.registry import defop

# --------------------------------------------------------------------------- Reshape


def reshape_target(shape: tuple[int, ...], target: tuple[int, ...], allowzero: int = 0) -> tuple[int, ...]:
    """ONNX Reshape: ``0`` copies the input dim (unless ``allowzero``), one ``-1`` is inferred.

    >>> reshape_target((2, 3, 4), (0, -1))
    (2, 12)
    """
    out = list(target)
    for i, d in enumerate(out):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise GraphError(f"Reshape: 0 at position {i} but the input has rank {len(shape)}")
            out[i] = shape[i]
        elif d < -1:
            raise GraphError(f"Reshape: bad target dim {d}")
    n = math.prod(shape)
    unknown = [i for i, d in enumerate(out) if d == -1]
    if len(unknown) > 1:
        raise GraphError(f"Reshape: more than one -1 in {list(target)}")
    if unknown:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or n % known:
            raise GraphError(f"Reshape: cannot infer -1 reshaping {shape} to {list(target)}")
        out[unknown[0]] = n // known
    if math.prod(out) != n:
        raise GraphError(f"Reshape: {shape} ({n} elements) cannot become {tuple(out)}")
    return tuple(out)


def _reshape_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Reshape")
    if "shape" not in attrs:
        raise GraphError("Reshape needs a 'shape' attribute")
    target = reshape_target(x.shape, as_tuple(attrs["shape"]), int(attrs.get("allowzero", 0)))
    return [x.with_shape(target)]


def _to_input_shape(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    """Gradient of a metadata op: reshape the output gradient back to the input's shape."""
    shape = gb.spec(node.inputs[0]).shape
    return [gb.op("Reshape", [dys[0]], shape=list(shape), allowzero=1)]


defop(
    "Reshape",
    infer=_reshape_infer,
    work=free_work,
    kernel=lambda xs, attrs: [
        np.reshape(xs[0], reshape_target(xs[0].shape, as_tuple(attrs["shape"]), int(attrs.get("allowzero", 0))))
    ],
    grad=_to_input_shape,
    doc="attrs: shape (0 copies the input dim unless allowzero=1; one -1 is inferred), allowzero.",
)

# --------------------------------------------------------------------------- Transpose


def _perm(attrs: dict[str, Any], rank: int) -> tuple[int, ...]:
    perm = as_tuple(attrs.get("perm")) or tuple(reversed(range(rank)))
    if sorted(norm_axis(p, rank) for p in perm) != list(range(rank)):
        raise GraphError(f"Transpose: perm {list(perm)} is not a permutation of rank {rank}")
    return tuple(norm_axis(p, rank) for p in perm)


def _transpose_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Transpose")
    perm = _perm(attrs, x.rank)
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


def _transpose_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    perm = _perm(node.attrs, gb.spec(node.inputs[0]).rank)
    return [gb.op("Transpose", [dys[0]], perm=[int(i) for i in np.argsort(perm)])]


defop(
    "Transpose",
    infer=_transpose_infer,
    work=movement_work,
    kernel=lambda xs, attrs: [np.ascontiguousarray(np.transpose(xs[0], _perm(attrs, xs[0].ndim)))],
    grad=_transpose_grad,
    doc="attrs: perm (default: reverse the axes).",
)

# --------------------------------------------------------------------------- Expand


def _expand_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Expand")
    if "shape" not in attrs:
        raise GraphError("Expand needs a 'shape' attribute")
    return [x.with_shape(broadcast_shapes(x.shape, as_tuple(attrs["shape"])))]


def _expand_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [gb.unbroadcast(dys[0], gb.spec(node.inputs[0]).shape)]


defop(
    "Expand",
    infer=_expand_infer,
    work=movement_work,
    kernel=lambda xs, attrs: [
        np.array(np.broadcast_to(xs[0], broadcast_shapes(xs[0].shape, as_tuple(attrs["shape"]))))
    ],
    grad=_expand_grad,
    doc="attrs: shape; the output shape is broadcast(input shape, shape) (ONNX semantics).",
)
