"""Convolutions: Conv, ConvTranspose and the backward ops of Conv (ONNX semantics).

Layout is ``N x C x D1 x ... x Dn`` (1-D, 2-D and 3-D alike). Conv weights are
``M x C/group x k1 x ... x kn``; ConvTranspose weights are ``C x M/group x k1 x ... x kn``
(the layout of the conv whose data gradient it is). ``pads`` is ``[b1, ..., bn, e1, ..., en]``.

Conventions chosen here:

* Kernels are im2col: the padded input is viewed with ``sliding_window_view`` (no copy),
  gathered once into a ``(group, N*outSpatial, C/group*prod(kernel))`` matrix and multiplied
  by the weights in one batched ``matmul`` (fp32 accumulates in fp64 and rounds once,
  ``sim.ops.common.matmul_exact``, so results do not depend on BLAS blocking). The data
  gradient (and ConvTranspose) multiplies first and scatters back with one strided add per
  kernel tap (col2im), never per pixel.
* Work is the implicit GEMM: Conv has ``m = N*outSpatial, n = Cout/group,
  k = Cin/group*prod(kernel), batch = group``. The bias add is 1 FLOP per output element,
  counted in ``flops`` (vector work), not in ``matmul_flops``. ``ConvGradData`` does the same
  multiply-adds as its forward conv, as the GEMM ``(N*outSpatial) x (Cin/group*K) x
  (Cout/group)`` (scatter form: no multiplies by inserted zeros), ``ConvGradFilter`` as
  ``(Cout/group) x (Cin/group*K) x (N*outSpatial)``. ConvTranspose is the data gradient of
  the conv it inverts: ``m = N*inSpatial, n = Cout/group*K, k = Cin/group``. Bytes: every
  input read once, every output written once.
* Gradient rules resolve ``auto_pad`` into explicit ``pads``, so the backward ops
  (``ConvGradData``, ``ConvGradFilter``) take explicit pads; the bias gradient is a
  ``ReduceSum`` over the batch and spatial axes.
* ``channels_last=1`` (ours, on ``Conv``, ``ConvGradData`` and ``ConvGradFilter``; set by
  ``sim.passes.layout.nhwc_convolutions``): every operand and result of rank >= 3 is stored
  channels last (``N x D1 .. Dn x C``; weights ``M x k1 .. kn x C/group``, cuDNN's KRSC),
  the layout a tensor-core convolution kernel reads. Attributes (``input_shape``,
  ``filter_shape``) keep the channels-first shapes; work and values are those of the
  channels-first op. Such an op has no gradient rule: the layout pass runs on the finished
  (training) graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sim.errors import GraphError
from sim.ops.common import as_tuple, io_bytes, matmul_exact, need
from sim.ops.registry import defop
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """Where a sliding window goes along each spatial axis.

    ``inp`` is the unpadded input size, ``out`` the number of window positions,
    ``begin``/``end`` the explicit padding (``end`` may be exceeded by a ceil-mode overhang).
    """

    inp: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def eff(self) -> tuple[int, ...]:
        """Dilated kernel extent along each axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))

    @property
    def extent(self) -> tuple[int, ...]:
        """Size of the padded input the windows cover (begin pad included)."""
        return tuple((o - 1) * s + e for o, s, e in zip(self.out, self.strides, self.eff))

    @property
    def pads(self) -> list[int]:
        return [*self.begin, *self.end]


def auto_pad(attrs: dict[str, Any]) -> str:
    v = attrs.get("auto_pad", "NOTSET")
    v = v.decode() if isinstance(v, bytes) else str(v)
    if v not in AUTO_PADS:
        raise GraphError(f"auto_pad {v!r} is not one of {', '.join(AUTO_PADS)}")
    return v


def spatial_attr(attrs: dict[str, Any], name: str, n: int, default: int) -> tuple[int, ...]:
    """A per-spatial-axis attribute (strides, dilations), defaulting to ``default``."""
    v = as_tuple(attrs.get(name))
    if not v:
        return (default,) * n
    if len(v) != n:
        raise GraphError(f"{name} has {len(v)} values for {n} spatial axes")
    if any(i < 1 for i in v):
        raise GraphError(f"{name} must be >= 1, got {list(v)}")
    return v


def window_geometry(
    inp: tuple[int, ...], kernel: tuple[int, ...], attrs: dict[str, Any], ceil_mode: bool = False
) -> Geometry:
    """Output size and padding of a sliding window op (Conv, pools), ONNX rules.

    >>> g = window_geometry((224, 224), (7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]})
    >>> g.out, g.extent
    ((112, 112), (229, 229))
    >>> window_geometry((8,), (3,), {"strides": [2], "auto_pad": "SAME_LOWER"}).pads
    [1, 0]
    """
    n = len(inp)
    if len(kernel) != n:
        raise GraphError(f"kernel has {len(kernel)} axes for {n} spatial axes")
    strides = spatial_attr(attrs, "strides", n, 1)
    dil = spatial_attr(attrs, "dilations", n, 1)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    mode = auto_pad(attrs)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(inp, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, inp)]
        if mode == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    else:
        if mode == "VALID":
            begin, end = [0] * n, [0] * n
        else:
            pads = as_tuple(attrs.get("pads")) or (0,) * (2 * n)
            if len(pads) != 2 * n:
                raise GraphError(f"pads has {len(pads)} values, {2 * n} expected")
            begin, end = list(pads[:n]), list(pads[n:])
        out = []
        for i, b, e, k, s in zip(inp, begin, end, eff, strides):
            span = i + b + e - k
            if span < 0:
                raise GraphError(f"window of extent {k} does not fit input {i} padded by {b}+{e}")
            o = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (o - 1) * s >= i + b:  # last window must start inside the input
                o -= 1
            out.append(o)
    return Geometry(tuple(inp), tuple(kernel), strides, dil, tuple(begin), tuple(end), tuple(out))


# ----------------------------------------------------------------------------- im2col / col2im
def pad_to_extent(x: np.ndarray, g: Geometry, fill: float, first: int = 2) -> np.ndarray:
    """Pad (or crop, for negative pads) the spatial axes ``first..`` of ``x`` to ``g.extent``."""
    d = len(g.inp)
    keep = tuple(slice(max(0, -b), min(i, ext - b)) for i, ext, b in zip(g.inp, g.extent, g.begin))
    x = x[(slice(None),) * first + keep]
    widths = [(0, 0)] * x.ndim
    for j, (b, ext) in enumerate(zip(g.begin, g.extent)):
        widths[first + j] = (max(b, 0), ext - max(b, 0) - x.shape[first + j])
    assert len(keep) == d
    if all(w == (0, 0) for w in widths):
        return x
    return np.pad(x, widths, mode="constant", constant_values=fill)


def windows(xp: np.ndarray, g: Geometry, first: int | None = None) -> np.ndarray:
    """View of padded ``xp`` as window positions and taps; no copy.

    Spatial axes start at ``first`` (default: the last ``len(g.inp)`` axes); the result has the
    window positions in their place and the kernel taps appended: (.., *out, .., *kernel).
    """
    d = len(g.inp)
    first = xp.ndim - d if first is None else first
    v = sliding_window_view(xp, g.eff, axis=tuple(range(first, first + d)))
    idx = (
        (slice(None),) * first
        + tuple(slice(None, None, s) for s in g.strides)
        + (slice(None),) * (xp.ndim - first - d)
        + tuple(slice(None, None, dl) for dl in g.dilations)
    )
    return v[idx]


def col2im(cols: np.ndarray, g: Geometry, channels_last: bool = False) -> np.ndarray:
    """Scatter-add patches back onto the input: (N, C, *out, *kernel) -> (N, C, *inp).

    With ``channels_last`` the patches are (N, *out, *kernel, C). One strided add per kernel
    tap; positions in the padding are dropped.
    """
    d = len(g.inp)
    n, c = (cols.shape[0], cols.shape[-1]) if channels_last else cols.shape[:2]
    lo = [min(0, b) for b in g.begin]  # negative pads: the output extends past the windows
    full = tuple(max(ext, b + i) - low for ext, b, i, low in zip(g.extent, g.begin, g.inp, lo))
    acc = np.zeros((n, *full, c) if channels_last else (n, c, *full), dtype=cols.dtype)
    for tap in np.ndindex(*g.kernel):
        sl = tuple(
            slice(t * dl - low, t * dl - low + (o - 1) * s + 1, s)
            for t, dl, o, s, low in zip(tap, g.dilations, g.out, g.strides, lo)
        )
        if channels_last:
            acc[(slice(None), *sl)] += cols[(slice(None),) * (1 + d) + tap]
        else:
            acc[(slice(None), slice(None), *sl)] += cols[(Ellipsis, *tap)]
    crop = tuple(slice(b - low, b - low + i) for b, i, low in zip(g.begin, g.inp, lo))
    if channels_last:
        return np.ascontiguousarray(np.moveaxis(acc[(slice(None), *crop)], -1, 1))
    return np.ascontiguousarray(acc[(slice(None), slice(None), *crop)])


def _im2col(x: np.ndarray, g: Geometry, group: int) -> np.ndarray:
    """(group, N*P, K*C/group) matrix of input patches, taps outer and channels inner.

    The input is made channels-last first so that the one gathering copy moves runs of
    contiguous channels.
    """
    n, c = x.shape[:2]
    d = len(g.inp)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # (N, *sp, C)
    v = windows(pad_to_extent(xl, g, 0.0, first=1), g, first=1)  # (N, *out, C, *k)
    v = v.reshape(n, *g.out, group, c // group, *g.kernel)
    perm = (d + 1, 0, *range(1, d + 1), *range(d + 3, 2 * d + 3), d + 2)
    return v.transpose(perm).reshape(group, n * math.prod(g.out), math.prod(g.kernel) * (c // group))


def _wmat(w: np.ndarray, group: int) -> np.ndarray:
    """Conv weights (M, C/group, *k) as (group, M/group, K*C/group), taps outer."""
    d = w.ndim - 2
    wg = w.reshape(group, w.shape[0] // group, *w.shape[1:])
    return wg.transpose(0, 1, *range(3, 3 + d), 2).reshape(group, w.shape[0] // group, -1)


def _rows(t: np.ndarray, group: int) -> np.ndarray:
    """(N, M, *sp) -> (group, N*P, M/group)."""
    n, m = t.shape[:2]
    p = math.prod(t.shape[2:])
    return t.reshape(n, group, m // group, p).transpose(1, 0, 3, 2).reshape(group, n * p, m // group)


def _unrows(r: np.ndarray, n: int, sp: tuple[int, ...]) -> np.ndarray:
    """(group, N*P, M/group) -> (N, M, *sp)."""
    group, _, mg = r.shape
    return np.ascontiguousarray(
        r.reshape(group, n, math.prod(sp), mg).transpose(1, 0, 3, 2).reshape(n, group * mg, *sp)
    )


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: Geometry, group: int) -> np.ndarray:
    cols = _im2col(x, g, group)
    y = _unrows(matmul_exact(cols, _wmat(w, group).transpose(0, 2, 1)), x.shape[0], g.out)
    if b is not None:
        y += b.reshape(1, -1, *([1] * len(g.out)))
    return y


def conv_grad_data(dy: np.ndarray, w: np.ndarray, g: Geometry, group: int) -> np.ndarray:
    """dx of a conv with weights ``w`` (M, C/group, *k) and output gradient ``dy``."""
    n = dy.shape[0]
    d = len(g.inp)
    cg = w.shape[1]
    dcols = matmul_exact(_rows(dy, group), _wmat(w, group))  # (G, N*P, K*Cg)
    dcols = dcols.reshape(group, n, *g.out, *g.kernel, cg)
    perm = (1, *range(2, 2 + 2 * d), 0, 2 + 2 * d)
    dc = dcols.transpose(perm).reshape(n, *g.out, *g.kernel, group * cg)
    return col2im(dc, g, channels_last=True)


def conv_grad_filter(x: np.ndarray, dy: np.ndarray, g: Geometry, group: int,
                     wshape: tuple[int, ...]) -> np.ndarray:
    d = len(g.inp)
    cols = _im2col(x, g, group)
    dw = matmul_exact(_rows(dy, group).transpose(0, 2, 1), cols)  # (G, Mg, K*Cg)
    dw = dw.reshape(group, wshape[0] // group, *g.kernel, wshape[1])
    return np.ascontiguousarray(dw.transpose(0, 1, 2 + d, *range(2, 2 + d))).reshape(wshape)


# ----------------------------------------------------------------------------- Conv
def _group(attrs: dict[str, Any]) -> int:
    g = int(attrs.get("group", 1))
    if g < 1:
        raise GraphError(f"group must be >= 1, got {g}")
    return g


def _check_kernel(attrs: dict[str, Any], kernel: tuple[int, ...]) -> None:
    ks = as_tuple(attrs.get("kernel_shape"))
    if ks and ks != kernel:
        raise GraphError(f"kernel_shape {list(ks)} does not match weights {list(kernel)}")


def _conv_parts(x: TensorSpec, w: TensorSpec, attrs: dict[str, Any]) -> tuple[Geometry, int]:
    if x.rank < 3:
        raise GraphError(f"Conv input must be N x C x spatial, got shape {x.shape}")
    if w.rank != x.rank:
        raise GraphError(f"Conv weight rank {w.rank} differs from input rank {x.rank}")
    group = _group(attrs)
    if x.shape[1] % group or w.shape[0] % group:
        raise GraphError(f"channels {x.shape[1]} -> {w.shape[0]} are not divisible by group {group}")
    if w.shape[1] * group != x.shape[1]:
        raise GraphError(
            f"weight has {w.shape[1]} input channels per group, input has {x.shape[1]} "
            f"channels in {group} groups"
        )
    kernel = w.shape[2:]
    _check_kernel(attrs, kernel)
    return window_geometry(x.shape[2:], kernel, attrs), group


# ----------------------------------------------------------------------------- channels last
def to_channels_last(rank: int) -> list[int]:
    """Transpose ``perm`` from channels first to channels last (``N C D.. -> N D.. C``)."""
    return [0, *range(2, rank), 1]


def to_channels_first(rank: int) -> list[int]:
    """Transpose ``perm`` from channels last back to channels first (``N D.. C -> N C D..``)."""
    return [0, rank - 1, *range(1, rank - 1)]


def _nchw_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[i] for i in to_channels_first(len(shape))) if len(shape) >= 3 else shape


def _nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[i] for i in to_channels_last(len(shape))) if len(shape) >= 3 else shape


def _spec_as(spec: TensorSpec | None, fn: Any) -> TensorSpec | None:
    return None if spec is None else TensorSpec(fn(spec.shape), spec.dtype)


def _channels_last(infer: Any, work: Any, kernel: Any) -> dict[str, Any]:
    """``defop``'s ``infer``, ``work`` and ``kernel`` for a channels-first conv op's, taking and
    giving its rank >= 3 tensors channels last when the node has ``channels_last=1`` (module doc)."""
    def last(attrs: dict[str, Any]) -> bool:
        return bool(int(attrs.get("channels_last", 0)))

    def infer_cl(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
        if not last(attrs):
            return infer(specs, attrs)
        outs = infer([_spec_as(s, _nchw_shape) for s in specs], attrs)
        return [TensorSpec(_nhwc_shape(o.shape), o.dtype) for o in outs]

    def work_cl(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
        if not last(attrs):
            return work(ins, outs, attrs)
        first = [TensorSpec(_nchw_shape(o.shape), o.dtype) for o in outs]
        return work([_spec_as(s, _nchw_shape) for s in ins], first, attrs)

    def kernel_cl(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        if not last(attrs):
            return kernel(xs, attrs)
        firsts = [np.transpose(x, to_channels_first(x.ndim)) if x is not None and x.ndim >= 3 else x
                  for x in xs]
        outs = kernel(firsts, attrs)
        return [np.ascontiguousarray(np.transpose(o, to_channels_last(o.ndim))) if o.ndim >= 3 else o
                for o in outs]

    return {"infer": infer_cl, "work": work_cl, "kernel": kernel_cl}


def _conv_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, w = need(specs, 2, "Conv")
    if x.dtype != w.dtype:
        raise GraphError(f"Conv dtypes differ: {x.dtype} and {w.dtype}")
    g, _ = _conv_parts(x, w, attrs)
    b = specs[2] if len(specs) > 2 else None
    if b is not None and b.shape != (w.shape[0],):
        raise GraphError(f"Conv bias shape {b.shape} should be ({w.shape[0]},)")
    return [TensorSpec((x.shape[0], w.shape[0], *g.out), x.dtype)]


def conv_gemm(n: int, out_sp: tuple[int, ...], cin: int, cout: int, kernel: tuple[int, ...],
              group: int) -> GemmShape:
    """Implicit GEMM of a forward conv (``kernel="conv"``: a spec may rate convolution kernels
    apart from the GEMM library, ``arch.kernel_efficiency``).

    >>> conv_gemm(1, (112, 112), 3, 64, (7, 7), 1).flops  # ResNet-50 stem
    236027904.0
    """
    taps = math.prod(kernel)
    return GemmShape(n * math.prod(out_sp), cout // group, cin // group * taps, group, "conv", taps)


def _conv_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    x, w = need(ins, 2, "Conv")
    y = outs[0]
    gemm = conv_gemm(x.shape[0], y.shape[2:], x.shape[1], w.shape[0], w.shape[2:], _group(attrs))
    bias = y.numel if len(ins) > 2 and ins[2] is not None else 0
    r, wr = io_bytes(ins, outs)
    return Work(flops=gemm.flops + bias, matmul_flops=gemm.flops, bytes_read=r, bytes_written=wr,
                gemms=(gemm,))


def _conv_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    g = window_geometry(x.shape[2:], w.shape[2:], attrs)
    return [conv_forward(x, w, b, g, _group(attrs))]


def _explicit(g: Geometry, group: int) -> dict[str, Any]:
    return {
        "kernel_shape": list(g.kernel),
        "strides": list(g.strides),
        "dilations": list(g.dilations),
        "pads": g.pads,
        "group": group,
    }


def _bias_grad(gb: Any, dy: str) -> str:
    rank = gb.spec(dy).rank
    return gb.op("ReduceSum", [dy], axes=[0, *range(2, rank)], keepdims=0)


def _conv_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    if dy is None:
        return [None] * len(node.inputs)
    if int(node.attrs.get("channels_last", 0)):
        raise GraphError(f"{node.name}: a channels_last Conv has no gradient rule (differentiate "
                         "the channels-first graph; the layout pass runs after)")
    x, w = node.inputs[0], node.inputs[1]
    sx, sw = gb.spec(x), gb.spec(w)
    g, group = _conv_parts(sx, sw, node.attrs)
    attrs = _explicit(g, group)
    dx = gb.op("ConvGradData", [dy, w], input_shape=list(sx.shape), **attrs)
    dw = gb.op("ConvGradFilter", [x, dy], filter_shape=list(sw.shape), **attrs)
    grads: list[str | None] = [dx, dw]
    if len(node.inputs) > 2 and node.inputs[2]:
        grads.append(_bias_grad(gb, dy))
    return grads


defop(
    "Conv",
    **_channels_last(_conv_infer, _conv_work, _conv_kernel),
    grad=_conv_grad,
    doc="N-d convolution (ONNX Conv): inputs X, W, optional B; group, strides, dilations, "
        "pads, auto_pad; channels_last=1 (ours): X, W and Y stored channels last.",
)


# ----------------------------------------------------------------------------- backward ops
def _bwd_geometry(attrs: dict[str, Any], in_shape: tuple[int, ...], wshape: tuple[int, ...],
                  dy: TensorSpec, op: str) -> Geometry:
    group = _group(attrs)
    if len(in_shape) != dy.rank or len(wshape) != dy.rank:
        raise GraphError(f"{op}: input_shape/filter ranks do not match dY rank {dy.rank}")
    if in_shape[1] != wshape[1] * group or wshape[0] != dy.shape[1] or wshape[0] % group:
        raise GraphError(f"{op}: channels of input {in_shape}, filter {wshape}, dY {dy.shape} disagree")
    g = window_geometry(tuple(in_shape[2:]), tuple(wshape[2:]), attrs)
    if (in_shape[0], *g.out) != (dy.shape[0], *dy.shape[2:]):
        raise GraphError(f"{op}: dY shape {dy.shape} does not match the conv of input {in_shape}")
    return g


def _gdata_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, w = need(specs, 2, "ConvGradData")
    in_shape = as_tuple(attrs.get("input_shape"))
    _bwd_geometry(attrs, in_shape, w.shape, dy, "ConvGradData")
    return [TensorSpec(in_shape, dy.dtype)]


def _gdata_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    dy, w = need(ins, 2, "ConvGradData")
    group = _group(attrs)
    fwd = conv_gemm(dy.shape[0], dy.shape[2:], outs[0].shape[1], w.shape[0], w.shape[2:], group)
    gemm = GemmShape(fwd.m, fwd.k, fwd.n, group, "conv")
    r, wr = io_bytes(ins, outs)
    return Work(flops=gemm.flops, matmul_flops=gemm.flops, bytes_read=r, bytes_written=wr, gemms=(gemm,))


def _gdata_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, w = xs[0], xs[1]
    in_shape = as_tuple(attrs["input_shape"])
    g = window_geometry(in_shape[2:], w.shape[2:], attrs)
    return [conv_grad_data(dy, w, g, _group(attrs))]


defop(
    "ConvGradData",
    **_channels_last(_gdata_infer, _gdata_work, _gdata_kernel),
    no_grad="backward op",
    doc="dX of Conv: inputs (dY, W); attrs input_shape, kernel_shape, strides, dilations, "
        "pads (explicit), group; channels_last=1 (ours): dY, W and dX stored channels last.",
)


def _gfilter_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, dy = need(specs, 2, "ConvGradFilter")
    wshape = as_tuple(attrs.get("filter_shape"))
    _bwd_geometry(attrs, x.shape, wshape, dy, "ConvGradFilter")
    return [TensorSpec(wshape, dy.dtype)]


def _gfilter_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    x, dy = need(ins, 2, "ConvGradFilter")
    w = outs[0]
    group = _group(attrs)
    fwd = conv_gemm(x.shape[0], dy.shape[2:], x.shape[1], w.shape[0], w.shape[2:], group)
    gemm = GemmShape(fwd.n, fwd.k, fwd.m, group, "conv_wgrad")
    r, wr = io_bytes(ins, outs)
    return Work(flops=gemm.flops, matmul_flops=gemm.flops, bytes_read=r, bytes_written=wr, gemms=(gemm,))


def _gfilter_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, dy = xs[0], xs[1]
    wshape = as_tuple(attrs["filter_shape"])
    g = window_geometry(x.shape[2:], wshape[2:], attrs)
    return [conv_grad_filter(x, dy, g, _group(attrs), wshape)]


defop(
    "ConvGradFilter",
    **_channels_last(_gfilter_infer, _gfilter_work, _gfilter_kernel),
    no_grad="backward op",
    doc="dW of Conv: inputs (X, dY); attrs filter_shape, kernel_shape, strides, dilations, "
        "pads (explicit), group; channels_last=1 (ours): X, dY and dW stored channels last.",
)


# ----------------------------------------------------------------------------- ConvTranspose
def convtranspose_geometry(x: TensorSpec | tuple[int, ...], w: tuple[int, ...],
                           attrs: dict[str, Any]) -> tuple[Geometry, int]:
    """The geometry of the conv whose data gradient this ConvTranspose is, and the group.

    The returned ``Geometry.inp`` is the ConvTranspose output's spatial size and
    ``Geometry.out`` its input's.
    """
    shape = x.shape if isinstance(x, TensorSpec) else tuple(x)
    if len(shape) < 3 or len(w) != len(shape):
        raise GraphError(f"ConvTranspose needs N x C x spatial input and same-rank weights, "
                         f"got {shape} and {w}")
    group = _group(attrs)
    if w[0] != shape[1] or shape[1] % group:
        raise GraphError(f"ConvTranspose weight {w} does not fit input channels {shape[1]} "
                         f"in {group} groups")
    n = len(shape) - 2
    inp = shape[2:]
    kernel = tuple(w[2:])
    _check_kernel(attrs, kernel)
    strides = spatial_attr(attrs, "strides", n, 1)
    dil = spatial_attr(attrs, "dilations", n, 1)
    opad = as_tuple(attrs.get("output_padding")) or (0,) * n
    if len(opad) != n:
        raise GraphError(f"output_padding has {len(opad)} values for {n} spatial axes")
    if any(not 0 <= op < max(s, d) for op, s, d in zip(opad, strides, dil)):
        raise GraphError(f"output_padding {list(opad)} must be >= 0 and below the stride or dilation")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    natural = [s * (i - 1) + op + e for s, i, op, e in zip(strides, inp, opad, eff)]
    mode = auto_pad(attrs)
    oshape = as_tuple(attrs.get("output_shape"))
    if len(oshape) == n + 2:
        oshape = oshape[2:]
    if oshape or mode in ("SAME_UPPER", "SAME_LOWER"):
        if not oshape:
            oshape = tuple(i * s for i, s in zip(inp, strides))
        if len(oshape) != n:
            raise GraphError(f"output_shape has {len(oshape)} values for {n} spatial axes")
        total = [nat - o for nat, o in zip(natural, oshape)]  # negative: output grows
        if mode == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    elif mode == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = as_tuple(attrs.get("pads")) or (0,) * (2 * n)
        if len(pads) != 2 * n:
            raise GraphError(f"pads has {len(pads)} values, {2 * n} expected")
        begin, end = list(pads[:n]), list(pads[n:])
    out = tuple(nat - b - e for nat, b, e in zip(natural, begin, end))
    if any(o < 1 for o in out):
        raise GraphError(f"ConvTranspose output size {list(out)} is not positive")
    g = Geometry(out, kernel, strides, dil, tuple(begin), tuple(end), tuple(inp))
    return g, group


def _ct_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, w = need(specs, 2, "ConvTranspose")
    if x.dtype != w.dtype:
        raise GraphError(f"ConvTranspose dtypes differ: {x.dtype} and {w.dtype}")
    g, group = convtranspose_geometry(x, w.shape, attrs)
    m = w.shape[1] * group
    b = specs[2] if len(specs) > 2 else None
    if b is not None and b.shape != (m,):
        raise GraphError(f"ConvTranspose bias shape {b.shape} should be ({m},)")
    return [TensorSpec((x.shape[0], m, *g.inp), x.dtype)]


def _ct_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    x, w = need(ins, 2, "ConvTranspose")
    group = _group(attrs)
    k = math.prod(w.shape[2:])
    gemm = GemmShape(x.shape[0] * math.prod(x.shape[2:]), w.shape[1] * k, x.shape[1] // group, group, "conv")
    bias = outs[0].numel if len(ins) > 2 and ins[2] is not None else 0
    r, wr = io_bytes(ins, outs)
    return Work(flops=gemm.flops + bias, matmul_flops=gemm.flops, bytes_read=r, bytes_written=wr,
                gemms=(gemm,))


def _ct_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    g, group = convtranspose_geometry(x.shape, w.shape, attrs)
    y = conv_grad_data(x, w, g, group)
    if b is not None:
        y += b.reshape(1, -1, *([1] * len(g.inp)))
    return [y]


def _ct_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    if dy is None:
        return [None] * len(node.inputs)
    x, w = node.inputs[0], node.inputs[1]
    sx, sw = gb.spec(x), gb.spec(w)
    g, group = convtranspose_geometry(sx, sw.shape, node.attrs)
    attrs = _explicit(g, group)
    # ConvTranspose(X, W) = ConvGradData(X, W) of a conv over the output: its adjoint in X is
    # that conv, and its filter gradient is the conv's filter gradient with the roles swapped.
    dx = gb.op("Conv", [dy, w], **attrs)
    if gb.spec(dx).shape != sx.shape:
        raise GraphError(f"ConvTranspose gradient: output_padding larger than stride gives "
                         f"{gb.spec(dx).shape}, expected {sx.shape}")
    dw = gb.op("ConvGradFilter", [dy, x], filter_shape=list(sw.shape), **attrs)
    grads: list[str | None] = [dx, dw]
    if len(node.inputs) > 2 and node.inputs[2]:
        grads.append(_bias_grad(gb, dy))
    return grads


defop(
    "ConvTranspose",
    infer=_ct_infer,
    work=_ct_work,
    kernel=_ct_kernel,
    grad=_ct_grad,
    doc="N-d transposed convolution (ONNX ConvTranspose): inputs X, W (C x M/group x k...), "
        "optional B; strides, pads, output_padding, output_shape, dilations, group, auto_pad.",
)
