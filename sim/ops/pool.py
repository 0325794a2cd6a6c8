"""Pooling: MaxPool, AveragePool, LpPool, the global pools, and their backward ops (ONNX).

Layout ``N x C x D1 x ... x Dn``; window geometry (``kernel_shape``, ``strides``, ``pads``,
``dilations``, ``auto_pad``, ``ceil_mode``) follows the ONNX rules shared with Conv
(``sim.ops.conv.window_geometry``; with ``ceil_mode`` the last window must start inside the
input or its left padding).

Conventions chosen here:

* Kernels view the padded input as windows (``sliding_window_view``) and reduce over the
  kernel axes; the backward ops scatter with one strided add per kernel tap (``col2im``).
* MaxPool's optional second output ``Indices`` (int64) is the flat index into the unpadded
  input, row-major over ``N, C, D1..Dn`` (``storage_order=0``), or with the spatial axes in
  column-major order (``storage_order=1``). Ties go to the first maximum.
* ``MaxPoolGrad(dY, X)`` recomputes the argmax from ``X`` (so it needs no Indices output) and
  routes each ``dY`` to it; ``GlobalMaxPool`` differentiates through it with the whole spatial
  extent as the window. ``AveragePoolGrad(dY)`` spreads ``dY / count`` over each window;
  ``GlobalAveragePool`` uses it too. ``LpPoolGrad(dY, X, Y)``.
* AveragePool divides by the number of input elements in the window
  (``count_include_pad=0``) or by the elements of input plus explicit padding
  (``count_include_pad=1``); a ceil-mode overhang past the padding never counts.
* Work: a max/compare or add is 1 FLOP per window element read (``N*C*outSpatial*K``);
  AveragePool adds 1 FLOP per output for the division; LpPool counts ``|x|^p`` as p FLOP per
  element and the root as 1 transcendental per output. Bytes: inputs once, outputs once.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import as_tuple, io_bytes, need
from sim.ops.conv import Geometry, col2im, pad_to_extent, window_geometry, windows
from sim.ops.registry import defop
from sim.ops.work import Work, reduction_layout
from sim.tensor import TensorSpec


def _geometry(shape: tuple[int, ...], attrs: dict[str, Any], op: str) -> Geometry:
    if len(shape) < 3:
        raise GraphError(f"{op} input must be N x C x spatial, got shape {shape}")
    kernel = as_tuple(attrs.get("kernel_shape"))
    if not kernel:
        raise GraphError(f"{op} needs kernel_shape")
    return window_geometry(tuple(shape[2:]), kernel, attrs, bool(int(attrs.get("ceil_mode", 0))))


def _lowest(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.floating):
        return -np.inf
    return float(np.iinfo(dtype).min)


def _pool_work(per_window: float = 1.0, per_output: float = 0.0, trans_per_output: float = 0.0,
               backward: bool = False):
    """Work of a windowed op: ``per_window`` FLOP per window element, plus ``per_output`` FLOP
    (and ``trans_per_output`` transcendentals) per window. Windows are the pooled output's
    elements, or for a backward op those of its first input, dY."""

    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        y = ins[0] if backward else outs[0]
        assert y is not None
        if "kernel_shape" in attrs:
            k = math.prod(as_tuple(attrs["kernel_shape"]))
        else:  # global pools: the window is the whole spatial extent of the first input
            first = ins[0]
            assert first is not None
            k = math.prod(first.shape[2:])  # (a global pool's backward names kernel_shape)
        r, w = io_bytes(ins, outs)
        return Work(
            flops=per_window * y.numel * k + per_output * y.numel,
            transcendentals=trans_per_output * y.numel,
            bytes_read=r,
            bytes_written=w,
        )

    return work


# ----------------------------------------------------------------------------- MaxPool
def _check_float(x: TensorSpec, op: str) -> None:
    if x.dtype == "bool":
        raise GraphError(f"{op} does not take bool tensors")


def _maxpool_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "MaxPool")
    _check_float(x, "MaxPool")
    g = _geometry(x.shape, attrs, "MaxPool")
    shape = (*x.shape[:2], *g.out)
    return [TensorSpec(shape, x.dtype), TensorSpec(shape, "int64")]


def _argmax(x: np.ndarray, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(max values, flat row-major input index of each maximum)."""
    n, c = x.shape[:2]
    d = len(g.inp)
    v = windows(pad_to_extent(x, g, _lowest(x.dtype)), g)  # (N, C, *out, *k)
    flat = v.reshape(n, c, *g.out, -1)
    am = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, am[..., None], axis=-1)[..., 0]
    taps = np.unravel_index(am, g.kernel)
    idx = np.arange(n * c, dtype=np.int64).reshape(n, c, *([1] * d))
    for j in range(d):
        o = np.arange(g.out[j], dtype=np.int64).reshape([-1 if a == j else 1 for a in range(d)])
        pos = o * g.strides[j] - g.begin[j] + taps[j] * g.dilations[j]
        idx = idx * g.inp[j] + np.clip(pos, 0, g.inp[j] - 1)
    return y, idx


def _maxpool_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    g = _geometry(x.shape, attrs, "MaxPool")
    y, idx = _argmax(x, g)
    if int(attrs.get("storage_order", 0)) == 1:
        n_c, sp = idx // math.prod(g.inp), np.unravel_index(idx % math.prod(g.inp), g.inp)
        col = np.zeros_like(idx)
        for j in reversed(range(len(g.inp))):
            col = col * g.inp[j] + sp[j]
        idx = n_c * math.prod(g.inp) + col
    return [y, idx]


def _explicit(g: Geometry, attrs: dict[str, Any]) -> dict[str, Any]:
    return {
        "kernel_shape": list(g.kernel),
        "strides": list(g.strides),
        "dilations": list(g.dilations),
        "pads": g.pads,
        "ceil_mode": int(attrs.get("ceil_mode", 0)),
    }


def _maxpool_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    if dy is None:
        return [None]
    x = node.inputs[0]
    g = _geometry(gb.spec(x).shape, node.attrs, "MaxPool")
    return [gb.op("MaxPoolGrad", [dy, x], **_explicit(g, node.attrs))]


defop(
    "MaxPool",
    infer=_maxpool_infer,
    work=_pool_work(1.0),
    kernel=_maxpool_kernel,
    grad=_maxpool_grad,
    doc="Max over windows (ONNX MaxPool); outputs Y and optional int64 Indices.",
)


def _maxgrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any],
                   op: str = "MaxPoolGrad") -> list[TensorSpec]:
    dy, x = need(specs, 2, op)
    g = _geometry(x.shape, attrs, op)
    if dy.shape != (*x.shape[:2], *g.out):
        raise GraphError(f"{op}: dY shape {dy.shape} does not match the pool of {x.shape}")
    return [x.with_dtype(dy.dtype)]


def _maxgrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, x = xs[0], xs[1]
    g = _geometry(x.shape, attrs, "MaxPoolGrad")
    _, idx = _argmax(x, g)
    dx = np.bincount(idx.reshape(-1), weights=dy.reshape(-1), minlength=x.size)
    return [dx.reshape(x.shape).astype(dy.dtype)]


defop(
    "MaxPoolGrad",
    infer=_maxgrad_infer,
    work=_pool_work(1.0, 1.0, backward=True),
    kernel=_maxgrad_kernel,
    no_grad="backward op",
    doc="dX of MaxPool: inputs (dY, X); the pool's attrs with explicit pads.",
)


# ----------------------------------------------------------------------------- AveragePool
def _avg_counts(g: Geometry, include_pad: bool) -> np.ndarray:
    """Number of counted elements under each window, shape (*out)."""
    d = len(g.inp)
    mask = np.ones(())
    for j in range(d):
        q = np.arange(g.extent[j]) - g.begin[j]  # input index of each padded position
        lo, hi = (-g.begin[j], g.inp[j] + g.end[j]) if include_pad else (0, g.inp[j])
        mask = np.multiply.outer(mask, ((q >= lo) & (q < hi)).astype(np.float64))
    return windows(mask, g).sum(axis=tuple(range(-d, 0)))


def _avgpool_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "AveragePool")
    g = _geometry(x.shape, attrs, "AveragePool")
    return [TensorSpec((*x.shape[:2], *g.out), x.dtype)]


def _avgpool_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    g = _geometry(x.shape, attrs, "AveragePool")
    d = len(g.inp)
    s = windows(pad_to_extent(x, g, 0.0), g).sum(axis=tuple(range(-d, 0)))
    cnt = _avg_counts(g, bool(int(attrs.get("count_include_pad", 0))))
    return [(s / cnt).astype(x.dtype)]


def _avgpool_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    if dy is None:
        return [None]
    sx = gb.spec(node.inputs[0])
    g = _geometry(sx.shape, node.attrs, "AveragePool")
    return [gb.op("AveragePoolGrad", [dy], input_shape=list(sx.shape),
                  count_include_pad=int(node.attrs.get("count_include_pad", 0)),
                  **_explicit(g, node.attrs))]


defop(
    "AveragePool",
    infer=_avgpool_infer,
    work=_pool_work(1.0, 1.0),
    kernel=_avgpool_kernel,
    grad=_avgpool_grad,
    doc="Mean over windows (ONNX AveragePool): count_include_pad, ceil_mode, dilations.",
)


def _avggrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (dy,) = need(specs, 1, "AveragePoolGrad")
    shape = as_tuple(attrs.get("input_shape"))
    g = _geometry(shape, attrs, "AveragePoolGrad")
    if dy.shape != (*shape[:2], *g.out):
        raise GraphError(f"AveragePoolGrad: dY shape {dy.shape} does not match the pool of {shape}")
    return [TensorSpec(shape, dy.dtype)]


def _avggrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy = xs[0]
    shape = as_tuple(attrs["input_shape"])
    g = _geometry(shape, attrs, "AveragePoolGrad")
    d = len(g.inp)
    cnt = _avg_counts(g, bool(int(attrs.get("count_include_pad", 0))))
    per = (dy / cnt).reshape(*dy.shape, *([1] * d))
    cols = np.broadcast_to(per, (*dy.shape, *g.kernel))
    return [col2im(cols, g).astype(dy.dtype)]


defop(
    "AveragePoolGrad",
    infer=_avggrad_infer,
    work=_pool_work(1.0, 1.0, backward=True),
    kernel=_avggrad_kernel,
    no_grad="backward op",
    doc="dX of AveragePool: input dY; attrs input_shape, count_include_pad and the pool's "
        "attrs with explicit pads.",
)


# ----------------------------------------------------------------------------- LpPool
def _lp_p(attrs: dict[str, Any]) -> float:
    p = float(attrs.get("p", 2))
    if p <= 0:
        raise GraphError(f"LpPool p must be > 0, got {p}")
    return p


def _lppool_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    g = _geometry(x.shape, attrs, "LpPool")
    d = len(g.inp)
    p = _lp_p(attrs)
    s = (np.abs(windows(pad_to_extent(x, g, 0.0), g)) ** p).sum(axis=tuple(range(-d, 0)))
    return [(s ** (1.0 / p)).astype(x.dtype)]


def _lppool_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    if dy is None:
        return [None]
    x = node.inputs[0]
    g = _geometry(gb.spec(x).shape, node.attrs, "LpPool")
    return [gb.op("LpPoolGrad", [dy, x, node.outputs[0]], p=_lp_p(node.attrs), **_explicit(g, node.attrs))]


defop(
    "LpPool",
    infer=_avgpool_infer,
    work=_pool_work(3.0, 0.0, 1.0),
    kernel=_lppool_kernel,
    grad=_lppool_grad,
    doc="(sum |x|^p)^(1/p) over windows (ONNX LpPool); attr p (default 2).",
)


def _lpgrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, x, y = need(specs, 3, "LpPoolGrad")
    if y.shape != dy.shape:
        raise GraphError(f"LpPoolGrad: Y {y.shape} and dY {dy.shape} differ")
    return _maxgrad_infer([dy, x], attrs, "LpPoolGrad")


def _lpgrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, x, y = xs
    g = _geometry(x.shape, attrs, "LpPoolGrad")
    d = len(g.inp)
    p = _lp_p(attrs)
    v = windows(pad_to_extent(x, g, 0.0), g)
    ex = (*y.shape, *([1] * d))
    safe = np.where(y == 0, 1.0, y) ** (p - 1.0)
    scale = np.where(y == 0, 0.0, dy / safe).reshape(ex)
    cols = scale * np.sign(v) * np.abs(v) ** (p - 1.0)
    return [col2im(cols, g).astype(dy.dtype)]


defop(
    "LpPoolGrad",
    infer=_lpgrad_infer,
    work=_pool_work(4.0, 1.0, backward=True),
    kernel=_lpgrad_kernel,
    no_grad="backward op",
    doc="dX of LpPool: inputs (dY, X, Y); dx = dy * sign(x)|x|^(p-1) / y^(p-1) per window.",
)


# ----------------------------------------------------------------------------- global pools
def _spatial_mean_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """A global average pool's work, laid out as the mean over the spatial axes it is (PyTorch
    runs ``adaptive_avg_pool2d`` to 1 x 1 as ``mean(-1, -2)``, its generic reduce kernel)."""
    w = _pool_work(1.0, 1.0)(ins, outs, attrs)
    x = ins[0]
    if x is None:
        return w
    return replace(w, reduction=reduction_layout(x.shape, tuple(range(2, x.rank))))


def _global_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "global pool")
    if x.rank < 3:
        raise GraphError(f"global pool input must be N x C x spatial, got shape {x.shape}")
    return [TensorSpec((*x.shape[:2], *([1] * (x.rank - 2))), x.dtype)]


def _gap_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    if dy is None:
        return [None]
    sx = gb.spec(node.inputs[0])
    return [gb.op("AveragePoolGrad", [dy], input_shape=list(sx.shape), kernel_shape=list(sx.shape[2:]))]


defop(
    "GlobalAveragePool",
    infer=_global_infer,
    work=_spatial_mean_work,
    kernel=lambda xs, attrs: [xs[0].mean(axis=tuple(range(2, xs[0].ndim)), keepdims=True)],
    grad=_gap_grad,
    doc="Mean over all spatial axes (ONNX GlobalAveragePool); output N x C x 1 x ... x 1.",
)


def _gmp_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dy = dys[0]
    if dy is None:
        return [None]
    x = node.inputs[0]
    return [gb.op("MaxPoolGrad", [dy, x], kernel_shape=list(gb.spec(x).shape[2:]))]


defop(
    "GlobalMaxPool",
    infer=_global_infer,
    work=_pool_work(1.0),
    kernel=lambda xs, attrs: [xs[0].max(axis=tuple(range(2, xs[0].ndim)), keepdims=True)],
    grad=_gmp_grad,
    doc="Max over all spatial axes (ONNX GlobalMaxPool); output N x C x 1 x ... x 1.",
)
