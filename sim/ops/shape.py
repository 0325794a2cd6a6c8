"""Shape and data-movement ops: Reshape, Transpose, Expand, Concat, Slice, Pad, Cast, ...

Shape-like operands are attributes (``Reshape.shape``, ``Expand.shape``, ``Slice.starts`` ...),
so shape inference needs no values. Metadata-only ops (Reshape, Flatten, Squeeze, Unsqueeze,
Identity) cost nothing; ops that move data read each input once and write each output once
and do no FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.dtypes import canonical, compute_numpy, is_float
from sim.errors import GraphError
from sim.ops.common import as_tuple, broadcast_shapes, free_work, io_bytes, movement_work, need, norm_axis
from sim.ops.registry import add_traits, defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

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
    kernel=lambda xs, attrs: [np.reshape(xs[0], _reshape_infer([TensorSpec(xs[0].shape)], attrs)[0].shape)],
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


def _transpose_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """A copy, unless ``strided``: a GEMM reads the operand through its transpose flag."""
    return Work() if int(attrs.get("strided", 0)) else movement_work(ins, outs, attrs)


defop(
    "Transpose",
    infer=_transpose_infer,
    work=_transpose_work,
    kernel=lambda xs, attrs: [np.ascontiguousarray(np.transpose(xs[0], _perm(attrs, xs[0].ndim)))],
    grad=_transpose_grad,
    doc="attrs: perm (default: reverse the axes); strided=1 (ours; sim.passes.layout): the "
        "consumers are GEMMs that read it through a layout flag, so no copy, no work.",
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

# --------------------------------------------------------------------------- Identity, Flatten

Attrs = dict[str, Any]


defop(
    "Identity",
    infer=lambda specs, attrs: [need(specs, 1, "Identity")[0]],
    work=free_work,
    kernel=lambda xs, attrs: [np.array(xs[0])],
    grad=lambda gb, node, dys: [dys[0]],
)


def _flatten_shape(shape: tuple[int, ...], attrs: Attrs) -> tuple[int, ...]:
    rank = len(shape)
    axis = int(attrs.get("axis", 1))
    if not -rank <= axis <= rank:
        raise GraphError(f"Flatten axis {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    return math.prod(shape[:axis]), math.prod(shape[axis:])


# --------------------------------------------------------------------------- Squeeze, Unsqueeze


def _squeeze_shape(shape: tuple[int, ...], attrs: Attrs) -> tuple[int, ...]:
    axes = as_tuple(attrs.get("axes"))
    if not axes:
        return tuple(d for d in shape if d != 1)
    normed = {norm_axis(a, len(shape)) for a in axes}
    for a in normed:
        if shape[a] != 1:
            raise GraphError(f"Squeeze: axis {a} has size {shape[a]}, not 1")
    return tuple(d for i, d in enumerate(shape) if i not in normed)


def _unsqueeze_shape(shape: tuple[int, ...], attrs: Attrs) -> tuple[int, ...]:
    axes = as_tuple(attrs.get("axes"))
    if not axes:
        raise GraphError("Unsqueeze needs 'axes'")
    rank = len(shape) + len(axes)
    normed = [norm_axis(a, rank) for a in axes]
    if len(set(normed)) != len(normed):
        raise GraphError(f"Unsqueeze: repeated axis in {list(axes)}")
    rest = iter(shape)
    return tuple(1 if i in normed else next(rest) for i in range(rank))


def _metadata_op(name: str, fn: Callable[[tuple[int, ...], Attrs], tuple[int, ...]], doc: str) -> None:
    def infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
        (x,) = need(specs, 1, name)
        return [x.with_shape(fn(x.shape, attrs))]

    def kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
        return [np.reshape(xs[0], fn(xs[0].shape, attrs))]

    defop(name, infer=infer, work=free_work, kernel=kernel, grad=_to_input_shape, doc=doc)


_metadata_op("Flatten", _flatten_shape, "attrs: axis=1 (in [-rank, rank]); the output is 2-D.")
_metadata_op("Squeeze", _squeeze_shape, "attrs: axes (default: every size-1 axis).")
_metadata_op("Unsqueeze", _unsqueeze_shape, "attrs: axes (positions in the output).")


# --------------------------------------------------------------------------- Cast


def _cast_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Cast")
    if "to" not in attrs:
        raise GraphError("Cast needs 'to'")
    return [x.with_dtype(canonical(str(attrs["to"]), where="Cast.to"))]


def _cast_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    src = gb.spec(node.inputs[0]).dtype
    if not (is_float(src) and is_float(gb.spec(node.outputs[0]).dtype)):
        return [None]
    return [gb.op("Cast", [dys[0]], to=src)]


# largest finite value of each float8 type: the saturation bound of Cast(saturate=1)
FP8_MAX = {"fp8": 448.0, "fp8e5m2": 57344.0}


def _cast_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    to = canonical(str(attrs["to"]))
    x = xs[0]
    if to in FP8_MAX and int(attrs.get("saturate", 1)) and x.dtype != np.bool_:
        # saturate: out-of-range values (and +-inf) clamp to the largest finite value, NaN
        # stays NaN; without it the executor's rounding gives NaN (E4M3FN) or inf (E5M2)
        x = np.clip(x, -FP8_MAX[to], FP8_MAX[to])
    return [x.astype(compute_numpy(to))]


defop(
    "Cast",
    infer=_cast_infer,
    work=movement_work,
    kernel=_cast_kernel,
    grad=_cast_grad,
    doc="attrs: to (a dtype name: fp32, bf16, int64, ...), saturate=1 (float8 targets: "
        "out-of-range values clamp to the largest finite value; 0 gives NaN/inf). "
        "Float to int truncates toward zero.",
)

# --------------------------------------------------------------------------- Dropout


def _dropout_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Dropout")
    ratio = float(attrs.get("ratio", 0.5))
    if not 0.0 <= ratio < 1.0:
        raise GraphError(f"Dropout ratio must be in [0, 1), got {ratio}")
    return [x, x.with_dtype("bool")]


def _dropout_mode(xs: list[Any], attrs: Attrs) -> tuple[float, bool]:
    ratio = float(xs[1]) if len(xs) > 1 and xs[1] is not None else float(attrs.get("ratio", 0.5))
    training = bool(xs[2]) if len(xs) > 2 and xs[2] is not None else bool(int(attrs.get("training_mode", 0)))
    return ratio, training


def dropout_mask(shape: tuple[int, ...], ratio: float, seed: int) -> np.ndarray:
    """The keep-mask of a training-mode Dropout: deterministic in (shape, ratio, seed)."""
    return np.random.default_rng(seed).random(shape) >= ratio


def _dropout_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    ratio, training = _dropout_mode(xs, attrs)
    if not training or ratio == 0.0:
        return [np.array(x), np.ones(x.shape, dtype=bool)]
    mask = dropout_mask(x.shape, ratio, int(attrs.get("seed", 0)))
    return [(x * mask / (1.0 - ratio)).astype(x.dtype), mask]


def _dropout_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    """Training: a compare and a scale per element, y and the mask written. Inference: free
    (the identity; a requested mask is a constant)."""
    if int(attrs.get("training_mode", 0)) or len([s for s in ins if s is not None]) > 1:
        n = outs[0].numel
        r, w = io_bytes(ins, outs)
        return Work(flops=2 * n, bytes_read=r, bytes_written=w)
    return free_work(ins, outs, attrs)


def _dropout_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    if dys[0] is None:
        return [None]
    # the same (shape, ratio, seed) regenerates the same mask: dx = dy * mask / (1 - ratio)
    return [gb.op("Dropout", [dys[0], *node.inputs[1:]], **node.attrs)]


defop(
    "Dropout",
    infer=_dropout_infer,
    work=_dropout_work,
    kernel=_dropout_kernel,
    grad=_dropout_grad,
    doc="attrs: ratio=0.5, training_mode=0, seed=0 (masks are deterministic in the seed). "
        "Outputs (y, mask); inference is the identity.",
)

# --------------------------------------------------------------------------- Concat, Split


def _concat_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    xs = [s for s in specs if s is not None]
    if not xs:
        raise GraphError("Concat needs at least one input")
    rank = xs[0].rank
    if "axis" not in attrs:
        raise GraphError("Concat needs 'axis'")
    axis = norm_axis(int(attrs["axis"]), rank)
    for s in xs:
        if s.rank != rank or s.dtype != xs[0].dtype or any(
            d != e for i, (d, e) in enumerate(zip(s.shape, xs[0].shape)) if i != axis
        ):
            raise GraphError(f"Concat inputs disagree: {[str(t) for t in xs]} along axis {axis}")
    out = list(xs[0].shape)
    out[axis] = sum(s.shape[axis] for s in xs)
    return [xs[0].with_shape(tuple(out))]


def _concat_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    specs = [gb.spec(t) for t in node.inputs]
    axis = norm_axis(int(node.attrs["axis"]), specs[0].rank)
    if len(specs) == 1:
        return [dys[0]]
    parts = gb.op("Split", [dys[0]], n_out=len(specs), axis=axis, split=[s.shape[axis] for s in specs])
    return list(parts)


defop(
    "Concat",
    infer=_concat_infer,
    work=movement_work,
    kernel=lambda xs, attrs: [np.concatenate([x for x in xs if x is not None], axis=int(attrs["axis"]))],
    grad=_concat_grad,
    doc="attrs: axis.",
)


def split_sizes(dim: int, attrs: Attrs) -> list[int]:
    """Chunk sizes of Split: ``split`` given, or ``num_outputs`` chunks (the last may be smaller)."""
    split = list(as_tuple(attrs.get("split")))
    if split:
        if sum(split) != dim or any(s < 0 for s in split):
            raise GraphError(f"Split sizes {split} do not add up to {dim}")
        return split
    n = int(attrs.get("num_outputs", 0))
    if n <= 0:
        raise GraphError("Split needs 'split' or 'num_outputs'")
    chunk = -(-dim // n)
    return [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]


def _split_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Split")
    axis = norm_axis(int(attrs.get("axis", 0)), x.rank)
    outs = []
    for s in split_sizes(x.shape[axis], attrs):
        shape = list(x.shape)
        shape[axis] = s
        outs.append(x.with_shape(tuple(shape)))
    return outs


def _split_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    axis = norm_axis(int(attrs.get("axis", 0)), x.ndim)
    bounds = np.cumsum(split_sizes(x.shape[axis], attrs))[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


def _split_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x = gb.spec(node.inputs[0])
    axis = norm_axis(int(node.attrs.get("axis", 0)), x.rank)
    parts = []
    for i, size in enumerate(split_sizes(x.shape[axis], node.attrs)):
        d = dys[i] if i < len(dys) else None
        if d is None:
            shape = list(x.shape)
            shape[axis] = size
            d = gb.const(0.0, x.dtype, shape)
        parts.append(d)
    return [parts[0] if len(parts) == 1 else gb.op("Concat", parts, axis=axis)]


defop(
    "Split",
    infer=_split_infer,
    work=movement_work,
    kernel=_split_kernel,
    grad=_split_grad,
    doc="attrs: axis=0, split (sizes) or num_outputs (ONNX 18: the last chunk may be smaller).",
)

# --------------------------------------------------------------------------- Slice


def slice_plan(shape: tuple[int, ...], attrs: Attrs) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """NumPy slices and output shape of ONNX Slice (negative indices, steps, clamping).

    >>> slice_plan((10,), {"starts": [-3], "ends": [1000]})[1]
    (3,)
    """
    starts, ends = as_tuple(attrs.get("starts")), as_tuple(attrs.get("ends"))
    rank = len(shape)
    axes = as_tuple(attrs.get("axes")) or tuple(range(len(starts)))
    steps = as_tuple(attrs.get("steps")) or (1,) * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise GraphError("Slice: starts, ends, axes and steps differ in length")
    sl = [slice(None)] * rank
    out = list(shape)
    seen: set[int] = set()
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        a = norm_axis(ax, rank)
        if a in seen:
            raise GraphError(f"Slice: repeated axis {ax}")
        seen.add(a)
        if sp == 0:
            raise GraphError("Slice: step 0")
        dim = shape[a]
        st = st + dim if st < 0 else st
        en = en + dim if en < 0 else en
        if sp > 0:
            st, en = min(max(st, 0), dim), min(max(en, 0), dim)
            n = max(0, -(-(en - st) // sp))
        else:
            st, en = min(max(st, 0), dim - 1), min(max(en, -1), dim - 1)
            n = max(0, -(-(st - en) // -sp))
        sl[a] = slice(st, en if en >= 0 else None, sp)
        out[a] = n
    return tuple(sl), tuple(out)


def _slice_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Slice")
    return [x.with_shape(slice_plan(x.shape, attrs)[1])]


def _slice_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    shape = gb.spec(node.inputs[0]).shape
    return [gb.op("SliceGrad", [dys[0]], shape=list(shape), **node.attrs)]


defop(
    "Slice",
    infer=_slice_infer,
    work=movement_work,
    kernel=lambda xs, attrs: [np.array(xs[0][slice_plan(xs[0].shape, attrs)[0]])],
    grad=_slice_grad,
    doc="attrs: starts, ends, axes (default 0..), steps (default 1); ONNX clamping.",
)


def _slice_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (dy,) = need(specs, 1, "SliceGrad")
    shape = as_tuple(attrs.get("shape"))
    if slice_plan(shape, attrs)[1] != dy.shape:
        raise GraphError(f"SliceGrad: gradient shape {dy.shape} does not match the slice of {shape}")
    return [dy.with_shape(shape)]


def _slice_grad_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    shape = as_tuple(attrs["shape"])
    out = np.zeros(shape, dtype=xs[0].dtype)
    out[slice_plan(shape, attrs)[0]] = xs[0]
    return [out]


defop(
    "SliceGrad",
    infer=_slice_grad_infer,
    work=movement_work,
    kernel=_slice_grad_kernel,
    no_grad="backward op",
    doc="dy -> zeros(shape) with dy written at the slice; attrs: shape plus Slice's attributes.",
)

# --------------------------------------------------------------------------- Tile


def _tile_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Tile")
    reps = as_tuple(attrs.get("repeats"))
    if len(reps) != x.rank or any(r < 0 for r in reps):
        raise GraphError(f"Tile repeats {list(reps)} do not fit rank {x.rank}")
    return [x.with_shape(tuple(d * r for d, r in zip(x.shape, reps)))]


def _tile_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x = gb.spec(node.inputs[0])
    reps = as_tuple(node.attrs["repeats"])
    if all(r == 1 for r in reps):
        return [dys[0]]
    inter = [v for r, d in zip(reps, x.shape) for v in (r, d)]
    t = gb.op("Reshape", [dys[0]], shape=inter, allowzero=1)
    t = gb.op("ReduceSum", [t], axes=list(range(0, 2 * x.rank, 2)), keepdims=0)
    return [t]


defop(
    "Tile",
    infer=_tile_infer,
    work=movement_work,
    kernel=lambda xs, attrs: [np.tile(xs[0], as_tuple(attrs["repeats"]))],
    grad=_tile_grad,
    doc="attrs: repeats (one per axis).",
)

# --------------------------------------------------------------------------- Pad

PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_plan(shape: tuple[int, ...], attrs: Attrs) -> list[tuple[int, int, int]]:
    """(axis, before, after) for each padded axis; pads may be negative (cropping)."""
    rank = len(shape)
    pads = as_tuple(attrs.get("pads"))
    axes = [norm_axis(a, rank) for a in as_tuple(attrs.get("axes"))] or list(range(rank))
    if len(pads) != 2 * len(axes):
        raise GraphError(f"Pad: {len(pads)} pads for {len(axes)} axes (need 2 per axis)")
    mode = str(attrs.get("mode", "constant"))
    if mode not in PAD_MODES:
        raise GraphError(f"Pad mode {mode!r} is not one of {PAD_MODES}")
    plan = []
    for i, a in enumerate(axes):
        b, e = pads[i], pads[i + len(axes)]
        if shape[a] + b + e < 0:
            raise GraphError(f"Pad: pads {b}, {e} crop more than axis {a} holds")
        if mode != "constant" and (b > 0 or e > 0) and shape[a] == 0:
            raise GraphError(f"Pad mode {mode} cannot pad the empty axis {a}")
        plan.append((a, b, e))
    return plan


def pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each output position along one axis, the source index (-1: the constant).

    >>> pad_index(3, 2, 1, "reflect").tolist(), pad_index(3, 1, -1, "constant").tolist()
    ([2, 1, 0, 1, 2, 1], [-1, 0, 1])
    """
    i = np.arange(n + before + after) - before
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    m = np.mod(i, period)
    return np.where(m < n, m, period - m)


def _pad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Pad")
    out = list(x.shape)
    for a, b, e in _pad_plan(x.shape, attrs):
        out[a] += b + e
    return [x.with_shape(tuple(out))]


def _pad_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    y = xs[0]
    mode = str(attrs.get("mode", "constant"))
    value = float(np.asarray(attrs.get("constant_value", 0)).reshape(-1)[0])
    for a, b, e in _pad_plan(y.shape, attrs):
        idx = pad_index(y.shape[a], b, e, mode)
        taken = np.take(y, np.maximum(idx, 0), axis=a) if y.shape[a] else np.zeros(
            tuple(len(idx) if i == a else d for i, d in enumerate(y.shape)), dtype=y.dtype)
        if mode == "constant":
            shape = [1] * y.ndim
            shape[a] = len(idx)
            taken = np.where((idx >= 0).reshape(shape), taken, np.asarray(value).astype(y.dtype))
        y = taken
    return [np.ascontiguousarray(y)]


def _pad_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    mode = str(node.attrs.get("mode", "constant"))
    if mode == "constant":  # crop back: the gradient of padding is padding by the negated pads
        attrs = {k: v for k, v in node.attrs.items() if k != "constant_value"}
        attrs["pads"] = [-p for p in as_tuple(node.attrs["pads"])]
        return [gb.op("Pad", [dys[0]], **attrs)]
    shape = gb.spec(node.inputs[0]).shape
    return [gb.op("PadGrad", [dys[0]], shape=list(shape), **node.attrs)]


defop(
    "Pad",
    infer=_pad_infer,
    work=movement_work,
    kernel=_pad_kernel,
    grad=_pad_grad,
    doc="attrs: pads ([begin..., end...] over axes; negative crops), mode (constant | reflect | "
        "edge | wrap), constant_value=0, axes (default all).",
)


def _pad_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (dy,) = need(specs, 1, "PadGrad")
    shape = as_tuple(attrs.get("shape"))
    if _pad_infer([TensorSpec(shape, dy.dtype)], attrs)[0].shape != dy.shape:
        raise GraphError(f"PadGrad: gradient shape {dy.shape} does not match padding {shape}")
    return [dy.with_shape(shape)]


def _pad_grad_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    g = xs[0]
    shape = as_tuple(attrs["shape"])
    mode = str(attrs.get("mode", "constant"))
    for a, b, e in _pad_plan(shape, attrs):
        idx = pad_index(shape[a], b, e, mode)
        keep = idx >= 0
        moved = np.moveaxis(g, a, 0)
        acc = np.zeros((shape[a], *moved.shape[1:]), dtype=g.dtype)
        np.add.at(acc, idx[keep], moved[keep])
        g = np.moveaxis(acc, 0, a)
    return [np.ascontiguousarray(g)]


def _pad_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    """dy read once, dx written once, one add per element of dy accumulated into its source
    (reflect / edge / wrap; constant padding differentiates as a crop, ``Pad``)."""
    r, w = io_bytes(ins, outs)
    dy = ins[0]
    adds = dy.numel if dy is not None and str(attrs.get("mode", "constant")) != "constant" else 0
    return Work(flops=adds, bytes_read=r, bytes_written=w)


defop(
    "PadGrad",
    infer=_pad_grad_infer,
    work=_pad_grad_work,
    kernel=_pad_grad_kernel,
    no_grad="backward op",
    doc="dy -> dx summing every output position into its source; attrs: shape plus Pad's attributes.",
)

# --------------------------------------------------------------------------- DepthToSpace, SpaceToDepth


def _space_plan(shape: tuple[int, ...], attrs: Attrs, op: str):
    """(6-D shape before the transpose, perm, output shape) of DepthToSpace/SpaceToDepth."""
    if len(shape) != 4:
        raise GraphError(f"{op} needs a 4-D (N, C, H, W) input, got rank {len(shape)}")
    b = int(attrs.get("blocksize", 0))
    if b <= 0:
        raise GraphError(f"{op} needs a positive 'blocksize'")
    n, c, h, w = shape
    if op == "DepthToSpace":
        if c % (b * b):
            raise GraphError(f"DepthToSpace: channels {c} not divisible by blocksize^2 = {b * b}")
        mode = str(attrs.get("mode", "DCR"))
        if mode == "DCR":
            six, perm = (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
        elif mode == "CRD":
            six, perm = (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)
        else:
            raise GraphError(f"DepthToSpace mode must be DCR or CRD, got {mode!r}")
        return six, perm, (n, c // (b * b), h * b, w * b)
    if h % b or w % b:
        raise GraphError(f"SpaceToDepth: spatial {h}x{w} not divisible by blocksize {b}")
    mode = str(attrs.get("mode", "DCR"))
    if mode not in ("DCR", "CRD"):
        raise GraphError(f"SpaceToDepth mode must be DCR or CRD, got {mode!r}")
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    return (n, c, h // b, b, w // b, b), perm, (n, c * b * b, h // b, w // b)


def _space_op(op: str) -> None:
    def infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
        (x,) = need(specs, 1, op)
        return [x.with_shape(_space_plan(x.shape, attrs, op)[2])]

    def kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
        six, perm, out = _space_plan(xs[0].shape, attrs, op)
        return [np.ascontiguousarray(xs[0].reshape(six).transpose(perm)).reshape(out)]

    def grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
        shape = gb.spec(node.inputs[0]).shape
        six, perm, _ = _space_plan(shape, node.attrs, op)
        t = gb.op("Reshape", [dys[0]], shape=[six[p] for p in perm])
        t = gb.op("Transpose", [t], perm=[int(i) for i in np.argsort(perm)])
        return [gb.op("Reshape", [t], shape=list(shape))]

    doc = "attrs: blocksize, mode (DCR | CRD; SpaceToDepth inverts DepthToSpace of the same mode)."
    defop(op, infer=infer, work=movement_work, kernel=kernel, grad=grad, doc=doc)


_space_op("DepthToSpace")
_space_op("SpaceToDepth")

add_traits("view", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
add_traits("no_kernel", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
add_traits("elementwise", "Cast", "Identity")
