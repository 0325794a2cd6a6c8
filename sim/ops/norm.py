"""Normalizations: BatchNormalization, LayerNormalization, RMSNormalization,
InstanceNormalization, GroupNormalization and their backward ops (ONNX semantics).

Conventions chosen here:

* BatchNormalization follows opset 15+: with ``training_mode=0`` it normalizes with the
  running statistics (inputs ``input_mean``, ``input_var``) and has one output; with
  ``training_mode=1`` it uses the batch statistics (biased variance) and has three outputs,
  ``Y, running_mean, running_var`` with ``running = input * momentum + batch * (1 - momentum)``.
* LayerNormalization (opset 17) has outputs ``Y, Mean, InvStdDev`` (shape ``X.shape[:axis]``
  followed by ones). ``stash_type`` picks their dtype (1 fp32, 11 fp64, 10 fp16, 16 bf16);
  the kernel computes the statistics in the compute dtype of X.
* RMSNormalization is opset 23 (``y = x / sqrt(mean(x^2) + epsilon) * scale`` over axes
  ``axis..``); GroupNormalization is opset 21 (per-channel ``scale`` and ``bias``);
  InstanceNormalization is group normalization with one channel per group.
* Backward ops recompute the statistics from X (no saved tensors): ``BatchNormGrad``
  (both modes; inference mode is the affine map), ``LayerNormGrad``, ``RMSNormGrad``,
  ``GroupNormGrad`` (also used by InstanceNormalization). Each returns the gradients of every
  differentiable input at once.
* Work per element of X: BatchNormalization inference 2 FLOP (multiply-add with folded
  per-channel constants), training 6 FLOP (mean 1, variance 3, normalize 2); LayerNorm and
  Group/InstanceNorm 6 FLOP (mean 1, centre 1, square-accumulate 2, multiply by 1/std 1,
  scale 1) plus 1 with a bias; RMSNorm 4 FLOP. Each normalized group costs one
  reciprocal square root (``transcendentals``) and 3 FLOP (divide the sums, add epsilon).
  Backward ops: 15 FLOP per element (``RMSNormGrad`` 10).
* Bytes: outputs written once; inputs read once, except that the tensors the size of X (X,
  dY) are read twice by every normalization that reduces statistics before it normalises
  (BatchNormalization in training mode, LayerNormalization, Group/InstanceNormalization
  and all their backward ops, inference-mode ``BatchNormGrad`` included): PyTorch's kernels
  reduce a row (or a channel) in one pass and apply in a second one that reads it again,
  and measured torch LayerNorm times are three passes over the tensor, not two (two reads
  and a write; Liger-Kernel's H100/A100 benchmark data, docs/validation.md).
  RMSNormalization and its gradient read X once (the fused kernels LLM runtimes use).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, io_bytes, need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

STASH_DTYPES = {1: "fp32", 11: "fp64", 10: "fp16", 16: "bf16"}


# ----------------------------------------------------------------------------- helpers
def _sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``a`` down to ``shape``, which broadcasts (right-aligned) to ``a.shape``."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and a.shape[lead + i] != 1
    )
    return a.sum(axis=axes, keepdims=True).reshape(shape) if axes else a.reshape(shape)


def _stats(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, 1/std, normalized x), statistics with keepdims over ``axes``."""
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    r = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
    return mu, r, xc * r


def _norm_dx(g: np.ndarray, xhat: np.ndarray, r: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """dx of ``xhat = (x - mean) / std`` over ``axes`` given ``g = dL/dxhat``."""
    return r * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))


def _eps(attrs: dict[str, Any]) -> float:
    return float(attrs.get("epsilon", 1e-5))


def _float(spec: TensorSpec, op: str) -> None:
    if not spec.dtype.startswith(("fp", "bf")):
        raise GraphError(f"{op} needs a float input, got {spec.dtype}")


def _norm_work(per_elem: Any, n_groups: Any, per_group: float = 3.0, trans: bool = True,
               passes: Any = 2, rowwise: bool = False):
    """Work of a normalization: ``per_elem`` FLOP per element of X, per normalized group
    ``per_group`` FLOP and one reciprocal square root. Inputs the size of X are read
    ``passes(attrs)`` times (a number or a function of the attributes): once to reduce
    the statistics, once more to normalise (see the module docstring). ``rowwise``: each
    group is one row normalised by one thread block (``Work.rows``)."""

    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        x = ins[0] if ins[0] is not None else ins[1]
        assert x is not None
        groups = n_groups(ins, attrs)
        r, w = io_bytes(ins, outs)
        reads = passes(attrs) if callable(passes) else passes
        r += (reads - 1) * sum(s.nbytes for s in ins if s is not None and s.numel == x.numel)
        return Work(flops=per_elem(ins, attrs) * x.numel + per_group * groups,
                    transcendentals=groups if trans else 0, bytes_read=r, bytes_written=w,
                    rows=groups if rowwise else 0, kernel="norm" if rowwise else "")

    return work


def _const(v: float):
    def per_elem(ins: list[TensorSpec | None], attrs: dict) -> float:
        return v

    return per_elem


# ----------------------------------------------------------------------------- BatchNormalization
def _bn_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, scale, b, mean, var = need(specs, 5, "BatchNormalization")
    _float(x, "BatchNormalization")
    if x.rank < 2:
        raise GraphError(f"BatchNormalization input must be N x C x ..., got shape {x.shape}")
    c = x.shape[1]
    for name, s in (("scale", scale), ("B", b), ("input_mean", mean), ("input_var", var)):
        if s.shape != (c,):
            raise GraphError(f"BatchNormalization {name} shape {s.shape} should be ({c},)")
    if int(attrs.get("training_mode", 0)):
        return [x, mean, var]
    return [x]


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def _bn_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale, b, mean, var = xs[:5]
    eps = _eps(attrs)
    nd = x.ndim
    if not int(attrs.get("training_mode", 0)):
        a = scale / np.sqrt(var + eps)
        return [x * _bcast(a, nd) + _bcast(b - mean * a, nd)]
    mom = float(attrs.get("momentum", 0.9))
    axes = _bn_axes(x)
    mu, r, xhat = _stats(x, axes, eps)
    y = xhat * _bcast(scale, nd) + _bcast(b, nd)
    bvar = x.var(axis=axes)
    return [y, mean * mom + mu.reshape(-1) * (1 - mom), var * mom + bvar * (1 - mom)]


def _bn_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dys = list(dys) + [None] * (3 - len(dys))
    if all(d is None for d in dys):
        return [None] * 5
    x, scale, _, mean, var = node.inputs[:5]
    ins = [dys[0] or "", x, scale, mean, var, dys[1] or "", dys[2] or ""]
    outs = gb.op("BatchNormGrad", ins, n_out=5, epsilon=_eps(node.attrs),
                 momentum=float(node.attrs.get("momentum", 0.9)),
                 training_mode=int(node.attrs.get("training_mode", 0)))
    return list(outs)


def _bn_per_elem(ins: list[TensorSpec | None], attrs: dict) -> float:
    return 6.0 if int(attrs.get("training_mode", 0)) else 2.0


def _channels(ins: list[TensorSpec | None], attrs: dict) -> int:
    x = ins[0] if ins[0] is not None else ins[1]
    assert x is not None
    return x.shape[1]


defop(
    "BatchNormalization",
    infer=_bn_infer,
    work=_norm_work(_bn_per_elem, _channels, per_group=5.0,
                    passes=lambda attrs: 2 if int(attrs.get("training_mode", 0)) else 1),
    kernel=_bn_kernel,
    grad=_bn_grad,
    doc="Per-channel normalization (ONNX opset 15): inputs X, scale, B, input_mean, input_var; "
        "epsilon, momentum, training_mode (outputs Y, running_mean, running_var).",
)


def _bngrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    specs = list(specs) + [None] * (7 - len(specs))
    x, scale, mean, var = need(specs[1:5], 4, "BatchNormGrad")
    dy = specs[0]
    if dy is not None and dy.shape != x.shape:
        raise GraphError(f"BatchNormGrad: dY shape {dy.shape} differs from X {x.shape}")
    return [x, scale, scale, mean, var]


def _bngrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    xs = list(xs) + [None] * (7 - len(xs))
    dy, x, scale, mean, var, drm, drv = xs
    eps = _eps(attrs)
    nd = x.ndim
    axes = _bn_axes(x)
    if dy is None:
        dy = np.zeros_like(x)
    if not int(attrs.get("training_mode", 0)):
        r = 1.0 / np.sqrt(var + eps)
        xc = x - _bcast(mean, nd)
        sdy = dy.sum(axis=axes)
        sdyx = (dy * xc).sum(axis=axes)
        dx = dy * _bcast(scale * r, nd)
        return [dx, sdyx * r, sdy, -sdy * scale * r, -0.5 * sdyx * scale * r**3]
    mom = float(attrs.get("momentum", 0.9))
    mu, r, xhat = _stats(x, axes, eps)
    dx = _norm_dx(dy * _bcast(scale, nd), xhat, r, axes)
    count = x.size // x.shape[1]
    dmean = np.zeros_like(mean)
    dvar = np.zeros_like(var)
    if drm is not None:  # running_mean = mom * input_mean + (1 - mom) * batch mean
        dx = dx + _bcast(drm, nd) * (1 - mom) / count
        dmean = drm * mom
    if drv is not None:  # running_var = mom * input_var + (1 - mom) * biased batch var
        dx = dx + _bcast(drv, nd) * (1 - mom) * 2.0 * (x - mu) / count
        dvar = drv * mom
    return [dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes), dmean, dvar]


defop(
    "BatchNormGrad",
    infer=_bngrad_infer,
    work=_norm_work(_const(15.0), _channels, per_group=10.0),
    kernel=_bngrad_kernel,
    no_grad="backward op",
    doc="Gradients of BatchNormalization: inputs (dY, X, scale, input_mean, input_var, "
        "[d running_mean], [d running_var]); outputs dX, dScale, dB, dMean, dVar.",
)


# ----------------------------------------------------------------------------- LayerNormalization
def _stash(attrs: dict[str, Any]) -> str:
    st = int(attrs.get("stash_type", 1))
    if st not in STASH_DTYPES:
        raise GraphError(f"stash_type {st} is not one of {sorted(STASH_DTYPES)}")
    return STASH_DTYPES[st]


def _check_affine(x: TensorSpec, axis: int, t: TensorSpec | None, name: str, op: str) -> None:
    if t is None:
        return
    try:
        ok = t.rank <= x.rank - axis and broadcast_shapes(x.shape[axis:], t.shape) == x.shape[axis:]
    except GraphError:
        ok = False
    if not ok:
        raise GraphError(f"{op} {name} shape {t.shape} does not broadcast to {x.shape[axis:]}")


def _ln_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, scale = need(specs, 2, "LayerNormalization")
    _float(x, "LayerNormalization")
    axis = norm_axis(int(attrs.get("axis", -1)), x.rank)
    _check_affine(x, axis, scale, "Scale", "LayerNormalization")
    _check_affine(x, axis, specs[2] if len(specs) > 2 else None, "B", "LayerNormalization")
    stat = TensorSpec((*x.shape[:axis], *([1] * (x.rank - axis))), _stash(attrs))
    return [x, stat, stat]


def _ln_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    mu, r, xhat = _stats(x, tuple(range(axis, x.ndim)), _eps(attrs))
    y = xhat * scale
    if b is not None:
        y = y + b
    return [y, mu, r]


def _ln_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dys = list(dys) + [None] * (3 - len(dys))
    if all(d is None for d in dys):
        return [None] * len(node.inputs)
    x, scale = node.inputs[0], node.inputs[1]
    has_b = len(node.inputs) > 2 and bool(node.inputs[2])
    attrs: dict[str, Any] = {"axis": int(node.attrs.get("axis", -1)), "epsilon": _eps(node.attrs)}
    if has_b:
        attrs["bias_shape"] = list(gb.spec(node.inputs[2]).shape)
    outs = gb.op("LayerNormGrad", [dys[0] or "", x, scale, dys[1] or "", dys[2] or ""], n_out=3, **attrs)
    return [outs[0], outs[1], outs[2] if has_b else None]


def _rows(ins: list[TensorSpec | None], attrs: dict) -> int:
    x = ins[0] if ins[0] is not None else ins[1]
    assert x is not None
    return math.prod(x.shape[: norm_axis(int(attrs.get("axis", -1)), x.rank)])


def _ln_per_elem(ins: list[TensorSpec | None], attrs: dict) -> float:
    return 7.0 if len(ins) > 2 and ins[2] is not None else 6.0


defop(
    "LayerNormalization",
    infer=_ln_infer,
    work=_norm_work(_ln_per_elem, _rows, rowwise=True),
    kernel=_ln_kernel,
    grad=_ln_grad,
    doc="Normalization over axes axis.. (ONNX opset 17): inputs X, Scale, optional B; outputs "
        "Y, Mean, InvStdDev; axis, epsilon, stash_type.",
)


def _lngrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    specs = list(specs) + [None] * (5 - len(specs))
    x, scale = need(specs[1:3], 2, "LayerNormGrad")
    bshape = tuple(attrs.get("bias_shape") or scale.shape)
    return [x, scale, TensorSpec(bshape, scale.dtype)]


def _lngrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    xs = list(xs) + [None] * (5 - len(xs))
    dy, x, scale, dmean, dinv = xs
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    axes = tuple(range(axis, x.ndim))
    bshape = tuple(attrs.get("bias_shape") or scale.shape)
    if dy is None:
        dy = np.zeros_like(x)
    mu, r, xhat = _stats(x, axes, _eps(attrs))
    dx = _norm_dx(dy * scale, xhat, r, axes)
    d = math.prod(x.shape[axis:])
    if dmean is not None:  # Mean = mean(x)
        dx = dx + dmean / d
    if dinv is not None:  # InvStdDev = (var + eps)^-1/2: d/dx = -r^3 (x - mu) / D
        dx = dx - dinv * r**2 * xhat / d
    return [dx, _sum_to(dy * xhat, scale.shape), _sum_to(dy, bshape)]


defop(
    "LayerNormGrad",
    infer=_lngrad_infer,
    work=_norm_work(_const(15.0), _rows, rowwise=True),
    kernel=_lngrad_kernel,
    no_grad="backward op",
    doc="Gradients of LayerNormalization: inputs (dY, X, Scale, [dMean], [dInvStdDev]); "
        "outputs dX, dScale, dB (shape bias_shape, default Scale's); attrs axis, epsilon.",
)


# ----------------------------------------------------------------------------- RMSNormalization
def _rms_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, scale = need(specs, 2, "RMSNormalization")
    _float(x, "RMSNormalization")
    axis = norm_axis(int(attrs.get("axis", -1)), x.rank)
    _check_affine(x, axis, scale, "scale", "RMSNormalization")
    return [x]


def _rms_r(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    return 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)


def _rms_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale = xs[0], xs[1]
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    return [x * _rms_r(x, tuple(range(axis, x.ndim)), _eps(attrs)) * scale]


def _rms_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    if dys[0] is None:
        return [None, None]
    outs = gb.op("RMSNormGrad", [dys[0], node.inputs[0], node.inputs[1]], n_out=2,
                 axis=int(node.attrs.get("axis", -1)), epsilon=_eps(node.attrs))
    return list(outs)


defop(
    "RMSNormalization",
    infer=_rms_infer,
    work=_norm_work(_const(4.0), _rows, passes=1, rowwise=True),
    kernel=_rms_kernel,
    grad=_rms_grad,
    doc="x / sqrt(mean(x^2) + epsilon) * scale over axes axis.. (ONNX opset 23).",
)


def _rmsgrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, x, scale = need(specs, 3, "RMSNormGrad")
    if dy.shape != x.shape:
        raise GraphError(f"RMSNormGrad: dY shape {dy.shape} differs from X {x.shape}")
    return [x, scale]


def _rmsgrad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, x, scale = xs
    axis = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    axes = tuple(range(axis, x.ndim))
    r = _rms_r(x, axes, _eps(attrs))
    g = dy * scale
    dx = r * g - r**3 * x * (g * x).mean(axis=axes, keepdims=True)
    return [dx, _sum_to(dy * x * r, scale.shape)]


defop(
    "RMSNormGrad",
    infer=_rmsgrad_infer,
    work=_norm_work(_const(10.0), _rows, passes=1, rowwise=True),
    kernel=_rmsgrad_kernel,
    no_grad="backward op",
    doc="Gradients of RMSNormalization: inputs (dY, X, scale); outputs dX, dScale.",
)


# ----------------------------------------------------------------------------- Group / Instance
def _gn_check(specs: list[TensorSpec | None], groups: int, op: str) -> TensorSpec:
    x, scale, bias = need(specs, 3, op)
    _float(x, op)
    if x.rank < 3:
        raise GraphError(f"{op} input must be N x C x spatial, got shape {x.shape}")
    c = x.shape[1]
    if groups < 1 or c % groups:
        raise GraphError(f"{op}: {c} channels do not split into {groups} groups")
    for name, s in (("scale", scale), ("bias", bias)):
        if s.shape != (c,):
            raise GraphError(f"{op} {name} shape {s.shape} should be ({c},)")
    return x


def _num_groups(attrs: dict[str, Any], specs: list[TensorSpec | None] | None = None) -> int:
    if "num_groups" in attrs:
        return int(attrs["num_groups"])
    raise GraphError("GroupNormalization needs num_groups")


def _gn_forward(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, groups: int, eps: float) -> np.ndarray:
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    _, _, xhat = _stats(xg, (2,), eps)
    return xhat.reshape(x.shape) * _bcast(scale, x.ndim) + _bcast(bias, x.ndim)


def _gn_backward(dy: np.ndarray, x: np.ndarray, scale: np.ndarray, groups: int,
                 eps: float) -> list[np.ndarray]:
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    _, r, xhat = _stats(xg, (2,), eps)
    g = (dy * _bcast(scale, x.ndim)).reshape(xg.shape)
    dx = _norm_dx(g, xhat, r, (2,)).reshape(x.shape)
    axes = _bn_axes(x)
    return [dx, (dy * xhat.reshape(x.shape)).sum(axis=axes), dy.sum(axis=axes)]


def _gn_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    return [_gn_check(specs, _num_groups(attrs), "GroupNormalization")]


def _gn_grad_rule(groups_of: Any):
    def grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
        if dys[0] is None:
            return [None, None, None]
        x = node.inputs[0]
        outs = gb.op("GroupNormGrad", [dys[0], x, node.inputs[1]], n_out=3,
                     num_groups=groups_of(gb.spec(x), node.attrs), epsilon=_eps(node.attrs))
        return list(outs)

    return grad


def _groups_in(ins: list[TensorSpec | None], attrs: dict) -> int:
    x = ins[0] if ins[0] is not None else ins[1]
    assert x is not None
    groups = int(attrs["num_groups"]) if "num_groups" in attrs else x.shape[1]
    return x.shape[0] * groups


defop(
    "GroupNormalization",
    infer=_gn_infer,
    work=_norm_work(_const(7.0), _groups_in),
    kernel=lambda xs, attrs: [_gn_forward(xs[0], xs[1], xs[2], _num_groups(attrs), _eps(attrs))],
    grad=_gn_grad_rule(lambda x, attrs: _num_groups(attrs)),
    doc="Normalization over channel groups and spatial axes (ONNX opset 21): inputs X, "
        "scale (C), bias (C); num_groups, epsilon, stash_type.",
)


def _in_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x = need(specs, 1, "InstanceNormalization")[0]
    return [_gn_check(specs, x.shape[1] if x.rank >= 2 else 1, "InstanceNormalization")]


defop(
    "InstanceNormalization",
    infer=_in_infer,
    work=_norm_work(_const(7.0), _groups_in),
    kernel=lambda xs, attrs: [_gn_forward(xs[0], xs[1], xs[2], xs[0].shape[1], _eps(attrs))],
    grad=_gn_grad_rule(lambda x, attrs: x.shape[1]),
    doc="Per-(sample, channel) normalization over spatial axes (ONNX): inputs input, scale, B.",
)


def _gngrad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, x, scale = need(specs, 3, "GroupNormGrad")
    if dy.shape != x.shape:
        raise GraphError(f"GroupNormGrad: dY shape {dy.shape} differs from X {x.shape}")
    _gn_check([x, scale, scale], _num_groups(attrs), "GroupNormGrad")
    return [x, scale, scale]


defop(
    "GroupNormGrad",
    infer=_gngrad_infer,
    work=_norm_work(_const(15.0), lambda ins, attrs: _groups_in(ins[1:], attrs)),
    kernel=lambda xs, attrs: _gn_backward(xs[0], xs[1], xs[2], _num_groups(attrs), _eps(attrs)),
    no_grad="backward op",
    doc="Gradients of Group/InstanceNormalization: inputs (dY, X, scale); outputs dX, dScale, "
        "dBias; attrs num_groups, epsilon.",
)
