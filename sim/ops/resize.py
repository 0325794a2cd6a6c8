"""Resize (ONNX opsets 11-19) and its backward op ResizeGrad.

Shape operands are attributes: ``scales`` (floats) or ``sizes`` (ints), one per axis of
``axes`` (default: every axis), and ``roi`` (``[starts..., ends...]`` over the same axes, used
by ``tf_crop_and_resize``). The other attributes are ONNX's: ``mode`` (nearest | linear |
cubic), ``coordinate_transformation_mode`` (half_pixel | half_pixel_symmetric |
pytorch_half_pixel | align_corners | asymmetric | tf_crop_and_resize | tf_half_pixel_for_nn),
``nearest_mode`` (round_prefer_floor | round_prefer_ceil | floor | ceil), ``cubic_coeff_a``,
``exclude_outside``, ``extrapolation_value``, ``keep_aspect_ratio_policy`` (stretch |
not_larger | not_smaller) and ``antialias`` (linear and cubic: the filter is stretched by
1 / scale when downscaling).

Every mode is separable: the output is one 1-D resampling per resized axis, each a fixed
linear map from ``n_in`` to ``n_out`` positions whose rows hold ``taps`` weights (nearest 1,
linear 2, cubic 4; with antialias ``2 ceil(1/scale)`` and ``2 ceil(2/scale)`` for a scale
below 1). The kernel applies the maps one axis at a time (a gather for nearest, a dense
``n_out x n_in`` matrix product otherwise); ResizeGrad applies their transposes in reverse
order, so every mode has a gradient.

Work: nearest does no arithmetic (a gather); linear and cubic do one multiply-add (2 FLOP) per
tap for every element each axis pass produces, i.e. ``2 * taps`` FLOPs per element of the
pass's output (the last pass's output is the Resize output; an earlier pass's output has the
axes resized so far at their new size). ``tf_crop_and_resize`` adds one select per element
of each pass (the extrapolation value). Bytes: the input read once, the output written once.
ResizeGrad does the same multiply-adds (each forward tap becomes one scatter-add).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import as_tuple, io_bytes, need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

Attrs = dict[str, Any]

MODES = ("nearest", "linear", "cubic")
COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _text(attrs: Attrs, key: str, default: str, allowed: tuple[str, ...]) -> str:
    v = attrs.get(key, default)
    v = v.decode() if isinstance(v, bytes) else str(v)
    if v not in allowed:
        raise GraphError(f"Resize {key} {v!r} is not one of {', '.join(allowed)}")
    return v


@dataclass(frozen=True)
class AxisPlan:
    """The 1-D resampling of one axis: ``n_in`` -> ``n_out`` positions at ``scale``."""

    axis: int
    n_in: int
    n_out: int
    scale: float
    roi: tuple[float, float]


def resize_plan(shape: tuple[int, ...], attrs: Attrs) -> tuple[list[AxisPlan], tuple[int, ...]]:
    """The axis passes (identity axes left out) and the output shape of a Resize.

    >>> plans, out = resize_plan((1, 1, 2, 3), {"scales": [1, 1, 2, 1.5]})
    >>> out, [(p.axis, p.n_out) for p in plans]
    ((1, 1, 4, 4), [(2, 4), (3, 4)])
    """
    rank = len(shape)
    raw_axes = as_tuple(attrs.get("axes"))
    axes = [norm_axis(a, rank) for a in raw_axes] if raw_axes else list(range(rank))
    if len(set(axes)) != len(axes):
        raise GraphError(f"Resize axes {list(raw_axes)} repeat an axis")
    has_scales = attrs.get("scales") is not None and np.asarray(attrs["scales"]).size > 0
    has_sizes = attrs.get("sizes") is not None and np.asarray(attrs["sizes"]).size > 0
    if has_scales == has_sizes:
        raise GraphError("Resize needs exactly one of the attributes scales and sizes")
    scale = [1.0] * rank
    out = list(shape)
    if has_scales:
        vals = [float(v) for v in np.asarray(attrs["scales"], dtype=np.float64).reshape(-1)]
        if len(vals) != len(axes):
            raise GraphError(f"Resize has {len(vals)} scales for {len(axes)} axes")
        if any(not v > 0 for v in vals):
            raise GraphError(f"Resize scales {vals} must be positive")
        for a, v in zip(axes, vals):
            scale[a] = v
            out[a] = int(v * shape[a])  # floor(scale * size), as ONNX
    else:
        sizes = as_tuple(attrs["sizes"])
        if len(sizes) != len(axes):
            raise GraphError(f"Resize has {len(sizes)} sizes for {len(axes)} axes")
        if any(s < 0 for s in sizes):
            raise GraphError(f"Resize sizes {list(sizes)} must not be negative")
        if any(shape[a] == 0 for a in axes):
            raise GraphError(f"Resize cannot take sizes for an empty axis of {shape}")
        policy = _text(attrs, "keep_aspect_ratio_policy", "stretch", ASPECT_POLICIES)
        ratios = [s / shape[a] for a, s in zip(axes, sizes)]
        if policy == "stretch":
            for a, s, r in zip(axes, sizes, ratios):
                scale[a], out[a] = r, s
        else:
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                scale[a], out[a] = common, int(common * shape[a] + 0.5)  # round half up
    crop = _text(attrs, "coordinate_transformation_mode", "half_pixel", COORD_MODES) \
        == "tf_crop_and_resize"
    roi_vals = np.asarray(attrs.get("roi", []) if crop else [], dtype=np.float64).reshape(-1)
    roi = [(0.0, 1.0)] * rank
    if roi_vals.size:
        if roi_vals.size != 2 * len(axes):
            raise GraphError(f"Resize roi holds {roi_vals.size} values for {len(axes)} axes "
                             f"(need 2 per axis)")
        for i, a in enumerate(axes):
            roi[a] = (float(roi_vals[i]), float(roi_vals[len(axes) + i]))
    plans = []
    for a in range(rank):
        identity = math.isclose(scale[a], 1.0) and out[a] == shape[a] and (
            not crop or (math.isclose(roi[a][0], 0.0) and math.isclose(roi[a][1], 1.0)))
        if not identity:
            plans.append(AxisPlan(a, shape[a], out[a], scale[a], roi[a]))
    return plans, tuple(out)


def source_coords(p: AxisPlan, attrs: Attrs) -> tuple[np.ndarray, np.ndarray | None]:
    """For each output position along the axis, the input coordinate it samples, and (for
    tf_crop_and_resize) which positions fall outside the input (extrapolated)."""
    mode = _text(attrs, "coordinate_transformation_mode", "half_pixel", COORD_MODES)
    y = np.arange(p.n_out, dtype=np.float64)
    s, n_in = p.scale, p.n_in
    width = s * n_in  # the output length before flooring
    extrapolated = None
    if mode == "align_corners":
        x = np.zeros(p.n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / s
    elif mode == "tf_crop_and_resize":
        start, end = p.roi
        if width == 1:
            x = np.full(p.n_out, (end - start) * (n_in - 1) / 2)
        else:
            x = y * (end - start) * (n_in - 1) / (width - 1)
        x = x + start * (n_in - 1)
        extrapolated = (x < 0) | (x > n_in - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(p.n_out, -0.5) if width == 1 else (y + 0.5) / s - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / s - 0.5
    elif mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - p.n_out / width)
        x = offset + (y + 0.5) / s - 0.5
    else:  # tf_half_pixel_for_nn (opsets 11-12)
        x = (y + 0.5) / s
    return x, extrapolated


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient ``a`` at distances ``d``."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def axis_taps(p: AxisPlan, attrs: Attrs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indices [n_out, taps], weights [n_out, taps], extrapolated mask or None) of one axis.

    Indices are clamped into the input (edge padding), as ONNX does.
    """
    mode = _text(attrs, "mode", "nearest", MODES)
    x, extrapolated = source_coords(p, attrs)
    base = np.floor(x)
    ratio = x - base
    if mode == "nearest":
        nm = _text(attrs, "nearest_mode", "round_prefer_floor", NEAREST_MODES)
        if nm == "round_prefer_floor":
            idx = base + (ratio > 0.5)
        elif nm == "round_prefer_ceil":
            idx = base + (ratio >= 0.5)
        elif nm == "floor":
            idx = base
        else:
            idx = np.ceil(x)
        idx = np.clip(idx, 0, p.n_in - 1).astype(np.int64)[:, None]
        return idx, np.ones(idx.shape), extrapolated
    # an integer coordinate counts as ratio 1 from the pixel on its left (ONNX's convention)
    on_pixel = ratio == 0
    base = np.where(on_pixel, base - 1, base)
    ratio = np.where(on_pixel, 1.0, ratio)
    antialias = bool(int(attrs.get("antialias", 0)))
    s = min(p.scale, 1.0) if antialias else 1.0
    half = 1 if mode == "linear" else 2  # the kernel's support radius
    first = int(math.floor(-half / s) + 1)  # the first tap, relative to base
    offsets = np.arange(first, 1 - first + 1)  # 2 - 2 * first taps
    dist = (offsets[None, :] - ratio[:, None]) * s
    if mode == "linear":
        w = np.clip(1 - np.abs(dist), 0, 1)
    else:
        w = _cubic(dist, float(attrs.get("cubic_coeff_a", -0.75)))
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    idx = base[:, None].astype(np.int64) + offsets[None, :]
    if int(attrs.get("exclude_outside", 0)):
        w = np.where((idx < 0) | (idx >= p.n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, p.n_in - 1), w, extrapolated


def axis_matrix(p: AxisPlan, attrs: Attrs) -> tuple[np.ndarray, np.ndarray | None]:
    """The dense ``[n_out, n_in]`` map of one axis pass and its extrapolation mask."""
    idx, w, extrapolated = axis_taps(p, attrs)
    m = np.zeros((p.n_out, p.n_in))
    rows = np.broadcast_to(np.arange(p.n_out)[:, None], idx.shape)
    np.add.at(m, (rows, idx), w)
    return m, extrapolated


# axes up to this many matrix entries (32 MiB in float64) resample by a dense matrix product;
# longer ones gather (forward) or scatter-add (backward) their taps
DENSE_MAX_ENTRIES = 1 << 22


def apply_axis(p: AxisPlan, attrs: Attrs, t: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Resample axis ``p.axis`` of ``t`` (float64) by the pass's map, or by its transpose."""
    if p.n_in * p.n_out <= DENSE_MAX_ENTRIES:
        m, _ = axis_matrix(p, attrs)
        return np.moveaxis(np.tensordot(m.T if transpose else m, t, axes=([1], [p.axis])), 0,
                           p.axis)
    idx, w, _ = axis_taps(p, attrs)
    moved = np.moveaxis(t, p.axis, 0)
    bshape = (-1,) + (1,) * (moved.ndim - 1)
    if transpose:
        out = np.zeros((p.n_in, *moved.shape[1:]))
        for k in range(idx.shape[1]):
            np.add.at(out, idx[:, k], w[:, k].reshape(bshape) * moved)
    else:
        out = sum(w[:, k].reshape(bshape) * moved[idx[:, k]] for k in range(idx.shape[1]))
    return np.moveaxis(np.asarray(out), 0, p.axis)


def _mask_shape(rank: int, axis: int, n: int) -> tuple[int, ...]:
    return tuple(n if i == axis else 1 for i in range(rank))


def _resize_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    x = need(specs, 1, "Resize")[0]
    _text(attrs, "mode", "nearest", MODES)
    _text(attrs, "nearest_mode", "round_prefer_floor", NEAREST_MODES)
    return [x.with_shape(resize_plan(x.shape, attrs)[1])]


def _resize_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    x = xs[0]
    plans, out_shape = resize_plan(x.shape, attrs)
    if x.size == 0 or math.prod(out_shape) == 0:
        return [np.zeros(out_shape, x.dtype)]
    nearest = _text(attrs, "mode", "nearest", MODES) == "nearest"
    fill = float(attrs.get("extrapolation_value", 0.0))
    y = x if nearest else x.astype(np.float64)
    for p in plans:
        if nearest:
            idx, _, extrapolated = axis_taps(p, attrs)
            y = np.take(y, idx[:, 0], axis=p.axis)
        else:
            extrapolated = source_coords(p, attrs)[1]
            y = apply_axis(p, attrs, y)
        if extrapolated is not None and extrapolated.any():
            mask = extrapolated.reshape(_mask_shape(y.ndim, p.axis, p.n_out))
            y = np.where(mask, np.asarray(fill).astype(y.dtype), y)
    if np.issubdtype(x.dtype, np.integer) and y.dtype != x.dtype:
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return [np.ascontiguousarray(y.reshape(out_shape)).astype(x.dtype)]


def _pass_elems(shape: tuple[int, ...], plans: list[AxisPlan]) -> list[int]:
    cur = list(shape)
    counts = []
    for p in plans:
        cur[p.axis] = p.n_out
        counts.append(math.prod(cur))
    return counts


def resize_flops(shape: tuple[int, ...], attrs: Attrs) -> float:
    """FLOPs of a Resize of an input of ``shape`` (see the module docstring)."""
    plans, _ = resize_plan(shape, attrs)
    nearest = _text(attrs, "mode", "nearest", MODES) == "nearest"
    crop = attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize"
    total = 0.0
    for p, n in zip(plans, _pass_elems(shape, plans)):
        if not nearest and p.n_out:
            taps = axis_taps(AxisPlan(p.axis, p.n_in, 1, p.scale, p.roi), attrs)[0].shape[1]
            total += 2 * taps * n
        if crop:
            total += n
    return total


def _resize_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    r, w = io_bytes(ins[:1], outs)
    return Work(flops=resize_flops(need(ins, 1, "Resize")[0].shape, attrs),
                bytes_read=r, bytes_written=w)


def _resize_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    shape = gb.spec(node.inputs[0]).shape
    dx = gb.op("ResizeGrad", [dys[0]], shape=list(shape), **node.attrs)
    return [dx] + [None] * (len(node.inputs) - 1)


defop(
    "Resize",
    infer=_resize_infer,
    work=_resize_work,
    kernel=_resize_kernel,
    grad=_resize_grad,
    doc="attrs: scales or sizes (+ axes, keep_aspect_ratio_policy), mode=nearest | linear | "
        "cubic, coordinate_transformation_mode=half_pixel, nearest_mode=round_prefer_floor, "
        "cubic_coeff_a=-0.75, exclude_outside=0, roi + extrapolation_value (tf_crop_and_resize), "
        "antialias=0. ONNX opset 11-19 semantics.",
)


# --------------------------------------------------------------------------- ResizeGrad


def _resize_grad_infer(specs: list[TensorSpec | None], attrs: Attrs) -> list[TensorSpec]:
    (dy,) = need(specs, 1, "ResizeGrad")
    shape = as_tuple(attrs.get("shape"))
    if "shape" not in attrs:
        raise GraphError("ResizeGrad needs the attribute shape (the Resize input's shape)")
    if resize_plan(shape, attrs)[1] != dy.shape:
        raise GraphError(f"ResizeGrad: gradient shape {dy.shape} does not match the resize "
                         f"of {shape}")
    return [dy.with_shape(shape)]


def _resize_grad_kernel(xs: list[Any], attrs: Attrs) -> list[np.ndarray]:
    dy = xs[0]
    shape = as_tuple(attrs["shape"])
    plans, _ = resize_plan(shape, attrs)
    if dy.size == 0 or math.prod(shape) == 0:
        return [np.zeros(shape, dy.dtype)]
    g = dy.astype(np.float64)
    for p in reversed(plans):
        extrapolated = source_coords(p, attrs)[1]
        if extrapolated is not None and extrapolated.any():
            g = np.where(extrapolated.reshape(_mask_shape(g.ndim, p.axis, p.n_out)), 0.0, g)
        g = apply_axis(p, attrs, g, transpose=True)
    return [np.ascontiguousarray(g.reshape(shape)).astype(dy.dtype)]


def _resize_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: Attrs) -> Work:
    r, w = io_bytes(ins[:1], outs)
    return Work(flops=resize_flops(as_tuple(attrs["shape"]), attrs), bytes_read=r, bytes_written=w)


defop(
    "ResizeGrad",
    infer=_resize_grad_infer,
    work=_resize_grad_work,
    kernel=_resize_grad_kernel,
    no_grad="backward op",
    doc="dy -> dx of Resize: the transposed axis maps applied in reverse order (extrapolated "
        "positions get no gradient); attrs: shape plus Resize's attributes.",
)
