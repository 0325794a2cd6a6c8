"""Gradient rules against torch autograd, in float64.

Op level: one-op graphs (``helpers.one_op_graph``) differentiated by
``sim.passes.autodiff.gradients`` with a random upstream gradient per output, run by the
executor, against ``torch.autograd.grad`` of the same function written with torch ops: every
output value and the gradient of every float input. Training level: whole steps of
``training_graph`` (through ``Trainer``) on an MLP and two CNNs from the YAML frontend, against
the identical torch model and ``torch.optim`` (SGD, momentum, Nesterov, Adam, AdamW), comparing
the loss, every updated parameter and the optimizer states after each of three steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

from helpers import one_op_gradients  # noqa: E402

from sim.frontends.yaml_loader import load_yaml_text  # noqa: E402
from sim.ops.shape import dropout_mask  # noqa: E402
from sim.training import Trainer  # noqa: E402

RTOL, ATOL = 1e-9, 1e-12
RNG = np.random.default_rng(20240611)
WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"


def r(*shape):
    return RNG.standard_normal(shape)


def pos(*shape, lo=0.5, hi=2.0):
    return RNG.uniform(lo, hi, shape)


def away(*shape):
    """Normal values pushed at least 0.5 away from zero (divisors)."""
    x = RNG.standard_normal(shape)
    return x + np.where(x >= 0, 0.5, -0.5)


def ints(high, *shape, low=0):
    return RNG.integers(low, high, shape).astype(np.int64)


# ------------------------------------------------------------------ the two sides


def dlsim_values_and_grads(op, inputs, attrs, n_out, wrt, seed=0):
    """Outputs, upstream gradients and input gradients of one op through autodiff + executor."""
    g, dys, vals, gmap = one_op_gradients(op, inputs, attrs, n_out, wrt, seed)
    return [vals[y] for y in g.outputs], [dys[y] for y in g.outputs], [vals[gmap[f"x{i}"]] for i in wrt]


def check_against_torch(op, inputs, attrs, ref, n_out=1, wrt=None):
    """Values of every output and gradients of the ``wrt`` inputs (default: every float
    input) against ``ref(attrs, *torch_inputs)`` (which may return more outputs than used)."""
    inputs = [None if a is None else np.asarray(a) for a in inputs]
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs) if a is not None and a.dtype == np.float64]
    ys, dys, grads = dlsim_values_and_grads(op, inputs, attrs or {}, n_out, wrt)
    ts = [None if a is None else torch.tensor(a, requires_grad=i in wrt) for i, a in enumerate(inputs)]
    outs = ref(attrs or {}, *ts)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    assert len(outs) >= len(ys), f"{op}: the reference gives {len(outs)} outputs, dlsim {len(ys)}"
    outs = outs[:len(ys)]
    for k, (y, t) in enumerate(zip(ys, outs)):
        assert y.dtype == np.float64, f"{op}: output {k} is {y.dtype}"
        assert y.shape == tuple(t.shape), f"{op}: output {k} has shape {y.shape}, torch {tuple(t.shape)}"
        np.testing.assert_allclose(y, t.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{op}: output {k}")
    live = [(t, torch.tensor(d)) for t, d in zip(outs, dys) if t.requires_grad]
    if live:
        tgrads = torch.autograd.grad([t for t, _ in live], [ts[i] for i in wrt], [d for _, d in live],
                                     allow_unused=True)
    else:  # piecewise constant (Floor, Hardmax ...): torch has no graph, the gradient is zero
        tgrads = (None,) * len(wrt)
    for i, ours, theirs in zip(wrt, grads, tgrads):
        want = np.zeros(inputs[i].shape) if theirs is None else theirs.numpy()
        assert ours.shape == want.shape, f"{op}: gradient of input {i} has shape {ours.shape}"
        np.testing.assert_allclose(ours, want, rtol=RTOL, atol=ATOL, err_msg=f"{op}: gradient of input {i}")


def case(id_, op, inputs, ref, attrs=None, n_out=1, wrt=None):
    return pytest.param(op, inputs, attrs, ref, n_out, wrt, id=id_)


def run_cases(cases):
    return pytest.mark.parametrize("op,inputs,attrs,ref,n_out,wrt", cases)


# ------------------------------------------------------------------ torch references


def _torch_pads(pads, nd):
    """ONNX [b1..bn, e1..en] as F.pad's (last axis first) list."""
    out = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[nd + i]]
    return out


def _same_pads(inp, kernel, strides, dilations, upper=True):
    """ONNX SAME_UPPER / SAME_LOWER padding, written out from the spec."""
    begin, end = [], []
    for i, k, s, d in zip(inp, kernel, strides, dilations):
        out = -(-i // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - i)
        small, big = total // 2, total - total // 2
        begin.append(small if upper else big)
        end.append(big if upper else small)
    return begin + end


def conv_ref(a, x, w, b=None):
    nd = x.dim() - 2
    strides = a.get("strides", [1] * nd)
    dil = a.get("dilations", [1] * nd)
    if a.get("auto_pad", "NOTSET").startswith("SAME"):
        pads = _same_pads(x.shape[2:], w.shape[2:], strides, dil, a["auto_pad"] == "SAME_UPPER")
    else:
        pads = a.get("pads", [0] * (2 * nd))
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return conv(F.pad(x, _torch_pads(pads, nd)), w, b, stride=strides, dilation=dil,
                groups=a.get("group", 1))


def conv_transpose_ref(a, x, w, b=None):
    nd = x.dim() - 2
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    y = conv(x, w, b, stride=a.get("strides", 1), output_padding=a.get("output_padding", 0),
             groups=a.get("group", 1), dilation=a.get("dilations", 1))
    pads = a.get("pads", [0] * (2 * nd))
    crop = tuple(slice(pads[i], y.shape[2 + i] - pads[nd + i]) for i in range(nd))
    return y[(slice(None), slice(None), *crop)]


def maxpool_ref(a, x):
    nd = x.dim() - 2
    pads = a.get("pads", [0] * (2 * nd))
    if pads[:nd] != pads[nd:]:
        x, pad = F.pad(x, _torch_pads(pads, nd), value=-math.inf), 0
    else:
        pad = pads[:nd]
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    return pool(x, a["kernel_shape"], a.get("strides", [1] * nd), pad, a.get("dilations", 1),
                ceil_mode=bool(a.get("ceil_mode", 0)))


def avgpool_ref(a, x):
    nd = x.dim() - 2
    pads = a.get("pads", [0] * (2 * nd))
    k, s = a["kernel_shape"], a.get("strides", [1] * nd)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    if pads[:nd] == pads[nd:]:
        return pool(x, k, s, pads[:nd], ceil_mode=bool(a.get("ceil_mode", 0)),
                    count_include_pad=bool(a.get("count_include_pad", 0)))
    # asymmetric pads: pool the zero-padded input; without count_include_pad divide by the
    # pooled mask of real elements instead of the window size
    xp = F.pad(x, _torch_pads(pads, nd))
    if a.get("count_include_pad", 0):
        return pool(xp, k, s)
    mask = F.pad(torch.ones_like(x), _torch_pads(pads, nd))
    return pool(xp, k, s) / pool(mask, k, s)


def layernorm_ref(a, x, scale, b=None):
    axis = a.get("axis", -1) % x.dim()
    dims = tuple(range(axis, x.dim()))
    eps = a.get("epsilon", 1e-5)
    shape = x.shape[axis:]
    if scale.shape == shape and (b is None or b.shape == shape):
        y = F.layer_norm(x, shape, scale, b, eps)
    else:  # scale / bias broadcast to the normalized shape
        y = F.layer_norm(x, shape, None, None, eps) * scale
        y = y if b is None else y + b
    mean = x.mean(dims, keepdim=True)
    inv = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    return y, mean, inv


def batchnorm_ref(a, x, scale, b, mean, var):
    eps, mom = a.get("epsilon", 1e-5), a.get("momentum", 0.9)
    if not a.get("training_mode", 0):
        # F.batch_norm does not differentiate the running statistics: write it out
        sh = (1, -1) + (1,) * (x.dim() - 2)
        want = F.batch_norm(x, mean.detach(), var.detach(), scale, b, training=False, eps=eps)
        y = (x - mean.view(sh)) / torch.sqrt(var.view(sh) + eps) * scale.view(sh) + b.view(sh)
        torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
        return y
    y = F.batch_norm(x, None, None, scale, b, training=True, eps=eps)
    dims = (0, *range(2, x.dim()))
    # ONNX running statistics use the biased batch variance (torch's buffers use the unbiased)
    return y, mean * mom + x.mean(dims) * (1 - mom), var * mom + x.var(dims, unbiased=False) * (1 - mom)


def attention_ref(a, q, k, v, mask=None, pk=None, pv=None):
    three_d = q.dim() == 3
    if three_d:
        hq, hkv = a["q_num_heads"], a["kv_num_heads"]
        q, k, v = (t.unflatten(-1, (h, -1)).transpose(1, 2) for t, h in ((q, hq), (k, hkv), (v, hkv)))
    if pk is not None:
        k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
    present_k, present_v = k, v
    Sq, T = q.shape[2], k.shape[2]
    past = 0 if pk is None else pk.shape[2]
    causal = bool(a.get("is_causal", 0))
    left, right = a.get("left_window_size", -1), a.get("right_window_size", -1)
    if left >= 0 or right >= 0:  # a sliding window: an explicit mask (query i at position i + past)
        d = torch.arange(Sq)[:, None] + past - torch.arange(T)[None, :]
        ok = torch.ones(Sq, T, dtype=torch.bool)
        ok = ok & (d <= left) if left >= 0 else ok
        ok = ok & (-d <= right) if right >= 0 else ok
        mask = ok if mask is None else mask & ok
    scale = a.get("scale")
    cap = a.get("softcap", 0.0)
    gqa = q.shape[1] != k.shape[1]
    if cap:  # no softcap in torch's SDPA: the formula
        kr, vr = (t.repeat_interleave(q.shape[1] // t.shape[1], 1) for t in (k, v))
        s = q @ kr.transpose(-1, -2) * (scale if scale is not None else q.shape[-1] ** -0.5)
        s = cap * torch.tanh(s / cap)
        if causal:
            s = s.masked_fill(~torch.ones(Sq, T, dtype=torch.bool).tril(past), -math.inf)
        if mask is not None:
            s = s + mask if mask.dtype != torch.bool else s.masked_fill(~mask, -math.inf)
        y = torch.softmax(s, -1) @ vr
    elif mask is None and past == 0:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    else:
        bias = torch.zeros(Sq, T, dtype=q.dtype)
        if causal:  # offset by the past length (bottom-right aligned)
            bias = bias.masked_fill(~torch.ones(Sq, T, dtype=torch.bool).tril(past), -math.inf)
        if mask is not None:
            bias = bias + mask if mask.dtype != torch.bool else bias.masked_fill(~mask, -math.inf)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=gqa)
    if three_d:
        y = y.transpose(1, 2).flatten(2)
    return y, present_k, present_v


def sce_ref(a, scores, labels, weights=None):
    loss = F.cross_entropy(scores, labels, weight=weights, ignore_index=a.get("ignore_index", -100),
                           reduction=a.get("reduction", "mean"))
    return loss, F.log_softmax(scores, 1)


def mse_ref(a, pred, target):
    return F.mse_loss(pred, target.expand_as(pred), reduction=a.get("reduction", "mean"))


def reduce_ref(fn):
    def ref(a, x):
        axes = a.get("axes") or list(range(x.dim()))
        return fn(x, dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))

    return ref


def slice_ref(a, x):
    starts, ends = a["starts"], a["ends"]
    axes = a.get("axes", list(range(len(starts))))
    steps = a.get("steps", [1] * len(starts))
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        idx = list(range(x.shape[ax]))[slice(st, en, sp)]  # Python's slice clamping = ONNX's
        x = x.index_select(ax, torch.tensor(idx, dtype=torch.long))
    return x


def gather_ref(a, data, idx):
    ax = a.get("axis", 0) % data.dim()
    n = data.shape[ax]
    flat = data.index_select(ax, (idx.reshape(-1) % n))
    return flat.reshape(*data.shape[:ax], *idx.shape, *data.shape[ax + 1:])


def resize_ref(a, x):
    """F.interpolate for the ONNX modes it shares (nearest = asymmetric + floor; linear and
    cubic with half_pixel or align_corners; cubic_coeff_a -0.75, no antialias)."""
    nd = x.dim() - 2
    if "scales" in a:
        size = [int(math.floor(n * s)) for n, s in zip(x.shape[2:], a["scales"][2:])]
    else:
        size = a["sizes"][2:]
    if a["mode"] == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    mode = ("linear", "bilinear", "trilinear")[nd - 1] if a["mode"] == "linear" else "bicubic"
    align = a.get("coordinate_transformation_mode", "half_pixel") == "align_corners"
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


# ------------------------------------------------------------------ cases: linear algebra


MATMUL = [
    case("2d", "MatMul", [r(3, 4), r(4, 5)], lambda a, x, y: x @ y),
    case("batched", "MatMul", [r(2, 3, 4), r(2, 4, 5)], lambda a, x, y: x @ y),
    case("broadcast-batch", "MatMul", [r(2, 1, 3, 4), r(5, 4, 2)], lambda a, x, y: x @ y),
    case("broadcast-3d-2d", "MatMul", [r(2, 3, 4), r(4, 5)], lambda a, x, y: x @ y),
    case("vec-mat", "MatMul", [r(4), r(2, 4, 3)], lambda a, x, y: x @ y),
    case("mat-vec", "MatMul", [r(2, 3, 4), r(4)], lambda a, x, y: x @ y),
    case("vec-vec", "MatMul", [r(4), r(4)], lambda a, x, y: x @ y),
]


def gemm_ref(a, x, w, c=None):
    x = x.T if a.get("transA", 0) else x
    w = w.T if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


GEMM = [
    case("plain", "Gemm", [r(3, 4), r(4, 5)], gemm_ref),
    case("bias-row", "Gemm", [r(3, 4), r(4, 5), r(5)], gemm_ref),
    case("transA-transB", "Gemm", [r(4, 3), r(5, 4), r(3, 5)], gemm_ref, {"transA": 1, "transB": 1}),
    case("transA-alpha-beta-col", "Gemm", [r(4, 3), r(4, 5), r(3, 1)], gemm_ref,
         {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    case("transB-beta-rowvec", "Gemm", [r(3, 4), r(5, 4), r(1, 5)], gemm_ref,
         {"transB": 1, "alpha": -1.5, "beta": 0.25}),
    case("bias-scalar", "Gemm", [r(3, 4), r(4, 5), r()], gemm_ref, {"beta": 3.0}),
]

EINSUM = [
    case("bmm", "Einsum", [r(2, 3, 4), r(2, 4, 5)], lambda a, x, y: torch.einsum("bij,bjk->bik", x, y),
         {"equation": "bij,bjk->bik"}),
    case("outer-sum", "Einsum", [r(3, 4), r(5)], lambda a, x, y: torch.einsum("ij,k->ik", x, y),
         {"equation": "ij,k->ik"}),
    case("ellipsis", "Einsum", [r(2, 3, 4), r(4, 3)], lambda a, x, y: torch.einsum("...ij,ji->...", x, y),
         {"equation": "...ij,ji->..."}),
]


@run_cases(MATMUL + GEMM + EINSUM)
def test_linalg_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: convolution


CONV = [
    case("1d-stride-pads-dilation-groups", "Conv", [r(2, 4, 11), r(6, 2, 3), r(6)], conv_ref,
         {"strides": [2], "pads": [1, 2], "dilations": [2], "group": 2}),
    case("1d-causal-pad", "Conv", [r(2, 3, 8), r(4, 3, 3)], conv_ref, {"pads": [2, 0]}),
    case("2d-bias-pad1", "Conv", [r(2, 3, 7, 6), r(4, 3, 3, 3), r(4)], conv_ref, {"pads": [1, 1, 1, 1]}),
    case("2d-strides-asym-pads-dilations", "Conv", [r(2, 3, 8, 9), r(4, 3, 3, 2)], conv_ref,
         {"strides": [2, 1], "pads": [0, 1, 2, 1], "dilations": [1, 2]}),
    case("2d-grouped", "Conv", [r(1, 6, 5, 5), r(4, 3, 2, 2), r(4)], conv_ref,
         {"group": 2, "strides": [2, 2]}),
    case("2d-depthwise", "Conv", [r(2, 4, 6, 6), r(4, 1, 3, 3), r(4)], conv_ref,
         {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    case("2d-depthwise-multiplier", "Conv", [r(1, 3, 5, 5), r(6, 1, 3, 3)], conv_ref,
         {"group": 3, "pads": [1, 0, 1, 2]}),
    case("2d-same-upper-stride2", "Conv", [r(1, 2, 6, 7), r(3, 2, 3, 3)], conv_ref,
         {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    case("2d-same-lower", "Conv", [r(1, 2, 6, 6), r(3, 2, 2, 4)], conv_ref, {"auto_pad": "SAME_LOWER"}),
    case("2d-1x1-stride", "Conv", [r(2, 4, 5, 5), r(3, 4, 1, 1)], conv_ref, {"strides": [2, 2]}),
    case("3d", "Conv", [r(1, 2, 4, 5, 4), r(3, 2, 2, 3, 2), r(3)], conv_ref,
         {"pads": [1, 0, 0, 0, 1, 1], "strides": [1, 2, 1]}),
]

CONV_TRANSPOSE = [
    case("2d-stride2-pads-output-padding", "ConvTranspose", [r(2, 3, 4, 4), r(3, 2, 3, 3), r(2)],
         conv_transpose_ref, {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    case("2d-groups-dilations-asym-pads", "ConvTranspose", [r(1, 4, 3, 4), r(4, 3, 2, 3)],
         conv_transpose_ref, {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [0, 1, 1, 0]}),
    case("2d-plain", "ConvTranspose", [r(2, 2, 3, 3), r(2, 3, 2, 2), r(3)], conv_transpose_ref),
    case("1d-stride3-output-padding2", "ConvTranspose", [r(2, 2, 4), r(2, 3, 3)], conv_transpose_ref,
         {"strides": [3], "pads": [1, 0], "output_padding": [2]}),
    case("2d-depthwise", "ConvTranspose", [r(1, 3, 3, 3), r(3, 1, 3, 3)], conv_transpose_ref,
         {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@run_cases(CONV + CONV_TRANSPOSE)
def test_conv_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: pooling


POOL = [
    case("max-2d-k2s2", "MaxPool", [r(2, 3, 6, 6)], maxpool_ref, {"kernel_shape": [2, 2], "strides": [2, 2]}),
    case("max-2d-k3s2-pad1", "MaxPool", [r(2, 2, 7, 6)], maxpool_ref,
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    case("max-2d-dilated", "MaxPool", [r(1, 2, 7, 7)], maxpool_ref,
         {"kernel_shape": [3, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    case("max-2d-ceil", "MaxPool", [r(1, 2, 6, 7)], maxpool_ref,
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    case("max-2d-asym-pads", "MaxPool", [r(1, 3, 5, 6)], maxpool_ref,
         {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 1, 1]}),
    case("max-1d-ceil", "MaxPool", [r(2, 3, 8)], maxpool_ref,
         {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}),
    case("max-3d", "MaxPool", [r(1, 2, 4, 4, 4)], maxpool_ref,
         {"kernel_shape": [2, 2, 2], "strides": [2, 1, 2]}),
    case("avg-2d-k3s2-pad1-exclude", "AveragePool", [r(2, 2, 7, 6)], avgpool_ref,
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0}),
    case("avg-2d-k3s2-pad1-include", "AveragePool", [r(2, 2, 7, 6)], avgpool_ref,
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    case("avg-2d-ceil-include", "AveragePool", [r(1, 2, 6, 6)], avgpool_ref,
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1,
          "ceil_mode": 1}),
    case("avg-2d-ceil-exclude", "AveragePool", [r(1, 2, 6, 7)], avgpool_ref,
         {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    case("avg-2d-asym-pads-include", "AveragePool", [r(1, 2, 5, 5)], avgpool_ref,
         {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 2], "count_include_pad": 1}),
    case("avg-2d-asym-pads-exclude", "AveragePool", [r(1, 2, 5, 5)], avgpool_ref,
         {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 2], "count_include_pad": 0}),
    case("avg-1d", "AveragePool", [r(2, 3, 7)], avgpool_ref, {"kernel_shape": [2]}),
    case("avg-3d", "AveragePool", [r(1, 2, 4, 4, 4)], avgpool_ref,
         {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    case("global-avg-2d", "GlobalAveragePool", [r(2, 3, 4, 5)], lambda a, x: x.mean((2, 3), keepdim=True)),
    case("global-avg-1d", "GlobalAveragePool", [r(2, 3, 6)], lambda a, x: x.mean(2, keepdim=True)),
    case("global-max-2d", "GlobalMaxPool", [r(2, 3, 4, 5)], lambda a, x: x.amax((2, 3), keepdim=True)),
    case("lp-2d-p2", "LpPool", [r(1, 2, 6, 6)],
         lambda a, x: F.lp_pool2d(x, 2, a["kernel_shape"], a["strides"]),
         {"kernel_shape": [2, 3], "strides": [2, 1]}),
]


@run_cases(POOL)
def test_pool_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: normalization


NORM = [
    case("bn-inference-4d", "BatchNormalization", [r(2, 3, 4, 4), r(3), r(3), r(3), pos(3)], batchnorm_ref,
         {"epsilon": 1e-3}),
    case("bn-inference-2d", "BatchNormalization", [r(5, 3), r(3), r(3), r(3), pos(3)], batchnorm_ref),
    case("bn-training-4d-y", "BatchNormalization", [r(2, 3, 4, 5), r(3), r(3), r(3), pos(3)], batchnorm_ref,
         {"training_mode": 1, "momentum": 0.8}),
    case("bn-training-4d-running-stats", "BatchNormalization", [r(2, 3, 4, 5), r(3), r(3), r(3), pos(3)],
         batchnorm_ref, {"training_mode": 1, "momentum": 0.8}, n_out=3),
    case("bn-training-2d-running-stats", "BatchNormalization", [r(6, 4), r(4), r(4), r(4), pos(4)],
         batchnorm_ref, {"training_mode": 1, "epsilon": 1e-2}, n_out=3),
    case("bn-training-3d", "BatchNormalization", [r(3, 2, 5), r(2), r(2), r(2), pos(2)], batchnorm_ref,
         {"training_mode": 1}),
    case("ln-last-axis", "LayerNormalization", [r(3, 4, 6), r(6), r(6)], layernorm_ref),
    case("ln-last-axis-stats", "LayerNormalization", [r(3, 4, 6), r(6), r(6)], layernorm_ref,
         {"stash_type": 11}, n_out=3),
    case("ln-axis1-multi", "LayerNormalization", [r(2, 3, 4, 5), r(3, 4, 5), r(3, 4, 5)], layernorm_ref,
         {"axis": 1, "epsilon": 1e-3}),
    case("ln-axis-2-stats", "LayerNormalization", [r(2, 3, 4, 5), r(4, 5), r(4, 5)], layernorm_ref,
         {"axis": -2, "stash_type": 11}, n_out=3),
    case("ln-broadcast-affine", "LayerNormalization", [r(2, 3, 4, 5), r(4, 1), r(5)], layernorm_ref,
         {"axis": 2}),
    case("ln-no-bias", "LayerNormalization", [r(4, 7), r(7)], layernorm_ref),
    case("rms-last-axis", "RMSNormalization", [r(3, 4, 6), r(6)],
         lambda a, x, s: F.rms_norm(x, (6,), s, a["epsilon"]), {"epsilon": 1e-5}),
    case("rms-axis1", "RMSNormalization", [r(2, 3, 4), r(3, 4)],
         lambda a, x, s: F.rms_norm(x, (3, 4), s, a["epsilon"]), {"axis": 1, "epsilon": 1e-4}),
    case("group-norm", "GroupNormalization", [r(2, 6, 3, 4), r(6), r(6)],
         lambda a, x, s, b: F.group_norm(x, 3, s, b, 1e-5), {"num_groups": 3}),
    case("instance-norm", "InstanceNormalization", [r(2, 3, 4, 5), r(3), r(3)],
         lambda a, x, s, b: F.instance_norm(x, weight=s, bias=b, eps=1e-5)),
]


@run_cases(NORM)
def test_norm_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: elementwise, softmax


def _unary(name, fn, x=None, attrs=None, id_=None):
    x = r(3, 4, 5) if x is None else x
    return case(id_ or name, name, [x], lambda a, t: fn(t), attrs)


ELEMENTWISE = [
    _unary("Relu", torch.relu),
    _unary("Gelu", lambda t: F.gelu(t), id_="Gelu-erf"),
    _unary("Gelu", lambda t: F.gelu(t, approximate="tanh"), attrs={"approximate": "tanh"}, id_="Gelu-tanh"),
    _unary("Sigmoid", torch.sigmoid, x=3 * r(3, 4, 5)),
    _unary("Tanh", torch.tanh),
    _unary("Erf", torch.erf),
    _unary("Exp", torch.exp),
    _unary("Log", torch.log, x=pos(3, 4, 5, lo=0.1, hi=5)),
    _unary("Sqrt", torch.sqrt, x=pos(3, 4, 5, lo=0.1, hi=5)),
    _unary("Reciprocal", torch.reciprocal, x=away(3, 4)),
    _unary("Neg", torch.neg),
    _unary("Abs", torch.abs),
    _unary("Softplus", F.softplus, x=4 * r(3, 4)),
    _unary("Softsign", F.softsign),
    _unary("LeakyRelu", lambda t: F.leaky_relu(t, 0.1), attrs={"alpha": 0.1}),
    _unary("Elu", lambda t: F.elu(t, 0.7), attrs={"alpha": 0.7}),
    # ONNX's default constants are torch's rounded to float32: give torch's exactly
    _unary("Selu", F.selu, attrs={"alpha": 1.6732632423543772848170429916717,
                                  "gamma": 1.0507009873554804934193349852946}),
    _unary("Celu", lambda t: F.celu(t, 1.5), attrs={"alpha": 1.5}),
    _unary("HardSigmoid", lambda t: torch.clamp(0.3 * t + 0.4, 0, 1), x=2 * r(3, 4),
           attrs={"alpha": 0.3, "beta": 0.4}),
    _unary("HardSwish", F.hardswish, x=3 * r(3, 4)),
    _unary("Mish", F.mish),
    _unary("Sin", torch.sin),
    _unary("Cos", torch.cos),
    _unary("Tan", torch.tan, x=RNG.uniform(-1.2, 1.2, (3, 4))),
    _unary("Asin", torch.asin, x=RNG.uniform(-0.9, 0.9, (3, 4))),
    _unary("Acos", torch.acos, x=RNG.uniform(-0.9, 0.9, (3, 4))),
    _unary("Atan", torch.atan),
    _unary("Sinh", torch.sinh),
    _unary("Cosh", torch.cosh),
    _unary("Asinh", torch.asinh),
    _unary("Acosh", torch.acosh, x=pos(3, 4, lo=1.1, hi=4)),
    _unary("Atanh", torch.atanh, x=RNG.uniform(-0.9, 0.9, (3, 4))),
    _unary("ThresholdedRelu", lambda t: torch.where(t > 0.5, t, 0.0), attrs={"alpha": 0.5}),
    _unary("Identity", lambda t: t),
    _unary("Floor", torch.floor),
    _unary("Ceil", torch.ceil),
    _unary("Round", torch.round),
    _unary("Sign", torch.sign),
    case("Hardmax", "Hardmax", [r(3, 4)], lambda a, x: F.one_hot(x.argmax(-1), 4).to(x.dtype)),
    case("Mod-python", "Mod", [3 * r(3, 4), away(4)], lambda a, x, y: torch.remainder(x, y)),
    case("Mod-fmod", "Mod", [3 * r(3, 4), away(3, 1)], lambda a, x, y: torch.fmod(x, y), {"fmod": 1}),
    case("Pow-float-exponent-broadcast", "Pow", [pos(3, 4), r(4)], lambda a, x, y: torch.pow(x, y)),
    case("Pow-scalar-exponent", "Pow", [pos(2, 3), np.array(2.5)], lambda a, x, y: torch.pow(x, y)),
    case("Pow-int-exponent", "Pow", [r(2, 3), np.array([3, 2, 1], np.int64)],
         lambda a, x, y: torch.pow(x, y)),
    case("Add-broadcast", "Add", [r(2, 3, 4), r(3, 1)], lambda a, x, y: x + y),
    case("Add-both-broadcast", "Add", [r(1, 4), r(3, 1)], lambda a, x, y: x + y),
    case("Sub-broadcast", "Sub", [r(3, 1, 4), r(2, 1)], lambda a, x, y: x - y),
    case("Sub-scalar", "Sub", [r(), r(2, 3)], lambda a, x, y: x - y),
    case("Mul-broadcast", "Mul", [r(2, 3, 4), r(4)], lambda a, x, y: x * y),
    case("Mul-both-broadcast", "Mul", [r(2, 1, 4), r(3, 1)], lambda a, x, y: x * y),
    case("Div-broadcast", "Div", [r(2, 3, 4), away(3, 1)], lambda a, x, y: x / y),
    case("Div-both-broadcast", "Div", [r(1, 4), away(3, 1)], lambda a, x, y: x / y),
    case("Max-variadic", "Max", [r(3, 4), r(4), r(3, 1)],
         lambda a, x, y, z: torch.maximum(torch.maximum(x, y), z)),
    case("Min-binary", "Min", [r(3, 4), r(3, 4)], lambda a, x, y: torch.minimum(x, y)),
    case("Sum-variadic", "Sum", [r(3, 4), r(4), r(3, 1)], lambda a, x, y, z: x + y + z),
    case("Mean-variadic", "Mean", [r(3, 4), r(4), r(3, 1)], lambda a, x, y, z: (x + y + z) / 3),
    case("PRelu", "PRelu", [r(2, 3, 4), r(3, 1)], lambda a, x, s: torch.where(x < 0, s * x, x)),
    case("Clip", "Clip", [r(3, 4)], lambda a, x: torch.clamp(x, -0.5, 0.7), {"min": -0.5, "max": 0.7}),
    # no gradient flows to bounds given as inputs (documented): only X's is compared
    case("Clip-input-bounds", "Clip", [r(3, 4), np.array(-0.5), np.array(0.7)],
         lambda a, x, lo, hi: torch.clamp(x, lo, hi), wrt=[0]),
    case("Where-broadcast", "Where", [RNG.random((3, 1)) > 0.5, r(3, 4), r(4)],
         lambda a, c, x, y: torch.where(c, x, y)),
    case("Where-bcast-cond", "Where", [RNG.random((2, 3, 4)) > 0.5, r(3, 1), r()],
         lambda a, c, x, y: torch.where(c, x, y)),
]

SOFTMAX = [
    case(f"{op}-axis{axis}", op, [r(2, 3, 4)], (lambda f: lambda a, x: f(x, a["axis"]))(fn), {"axis": axis})
    for op, fn in (("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax))
    for axis in (-1, 0, 1)
] + [
    case("Softmax-default-axis", "Softmax", [r(3, 5)], lambda a, x: torch.softmax(x, -1)),
    case("LogSoftmax-default-axis", "LogSoftmax", [r(3, 5)], lambda a, x: torch.log_softmax(x, -1)),
]


@run_cases(ELEMENTWISE + SOFTMAX)
def test_elementwise_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: reductions


TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, 2.0], [0.5, -4.0, 0.5, 0.25]])
REDUCE = [
    case(f"{op}-{name}-keep{keep}", op, [r(2, 3, 4)], reduce_ref(fn), {**axes, "keepdims": keep})
    for op, fn in (("ReduceMean", torch.mean), ("ReduceSum", torch.sum), ("ReduceMax", torch.amax),
                   ("ReduceMin", torch.amin))
    for name, axes in (("axis1", {"axes": [1]}), ("axes0-2", {"axes": [0, 2]}), ("neg-axis", {"axes": [-1]}),
                       ("all", {}))
    for keep in (1, 0)
] + [
    case("ReduceMax-ties", "ReduceMax", [TIES], reduce_ref(torch.amax), {"axes": [1], "keepdims": 0}),
    case("ReduceMax-ties-all", "ReduceMax", [TIES], reduce_ref(torch.amax), {"keepdims": 1}),
    case("ReduceMin-ties", "ReduceMin", [TIES], reduce_ref(torch.amin), {"axes": [0], "keepdims": 1}),
    case("ReduceProd", "ReduceProd", [away(2, 3, 4)], lambda a, x: torch.prod(x, 1, keepdim=True),
         {"axes": [1]}),
    case("ReduceL1", "ReduceL1", [r(2, 3, 4)], reduce_ref(lambda x, dim, keepdim: x.abs().sum(dim, keepdim)),
         {"axes": [0, 2], "keepdims": 0}),
    case("ReduceL2", "ReduceL2", [r(2, 3, 4)],
         reduce_ref(lambda x, dim, keepdim: x.square().sum(dim, keepdim).sqrt()),
         {"axes": [2]}),
    case("ReduceSumSquare", "ReduceSumSquare", [r(2, 3, 4)],
         reduce_ref(lambda x, dim, keepdim: x.square().sum(dim, keepdim)), {"axes": [1], "keepdims": 0}),
    case("ReduceLogSum", "ReduceLogSum", [pos(2, 3, 4)],
         reduce_ref(lambda x, dim, keepdim: x.sum(dim, keepdim).log()), {"axes": [1]}),
    case("ReduceLogSumExp", "ReduceLogSumExp", [r(2, 3, 4)], reduce_ref(torch.logsumexp),
         {"axes": [0, 2], "keepdims": 0}),
    case("CumSum", "CumSum", [r(3, 4)], lambda a, x: torch.cumsum(x, 1), {"axis": 1}),
    case("CumSum-reverse-exclusive", "CumSum", [r(3, 4)],
         lambda a, x: torch.flip(torch.cumsum(torch.flip(x, [0]), 0), [0]) - x, {"axis": 0, "reverse": 1,
                                                                                  "exclusive": 1}),
]


@run_cases(REDUCE)
def test_reduce_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: shape and indexing


SHAPE = [
    case("Reshape-zero-and-minus1", "Reshape", [r(2, 3, 4)], lambda a, x: x.reshape(2, 12),
         {"shape": [0, -1]}),
    case("Reshape-4d", "Reshape", [r(2, 6)], lambda a, x: x.reshape(3, 1, 2, 2), {"shape": [3, 1, 2, 2]}),
    case("Flatten-axis1", "Flatten", [r(2, 3, 4)], lambda a, x: x.reshape(2, 12)),
    case("Flatten-axis0", "Flatten", [r(2, 3, 4)], lambda a, x: x.reshape(1, 24), {"axis": 0}),
    case("Flatten-axis-neg1", "Flatten", [r(2, 3, 4)], lambda a, x: x.reshape(6, 4), {"axis": -1}),
    case("Transpose-perm", "Transpose", [r(2, 3, 4)], lambda a, x: x.permute(2, 0, 1), {"perm": [2, 0, 1]}),
    case("Transpose-default", "Transpose", [r(2, 3, 4)], lambda a, x: x.permute(2, 1, 0)),
    case("Concat-axis1", "Concat", [r(2, 3, 4), r(2, 1, 4), r(2, 2, 4)], lambda a, *xs: torch.cat(xs, 1),
         {"axis": 1}),
    case("Concat-neg-axis", "Concat", [r(3, 2), r(3, 5)], lambda a, *xs: torch.cat(xs, -1), {"axis": -1}),
    case("Split-sizes", "Split", [r(2, 7, 3)], lambda a, x: torch.split(x, [2, 4, 1], 1),
         {"axis": 1, "split": [2, 4, 1]}, n_out=None),
    case("Split-num-outputs-uneven", "Split", [r(7, 3)], lambda a, x: torch.split(x, [3, 3, 1], 0),
         {"num_outputs": 3}, n_out=None),
    case("Split-first-output-only", "Split", [r(4, 6)], lambda a, x: torch.split(x, [2, 4], -1),
         {"axis": -1, "split": [2, 4]}, n_out=1),
    case("Slice-steps", "Slice", [r(6, 7)], slice_ref, {"starts": [1, 0], "ends": [6, 7], "axes": [0, 1],
                                                        "steps": [2, 3]}),
    case("Slice-negative-indices", "Slice", [r(5, 6, 4)], slice_ref,
         {"starts": [-4, -3], "ends": [-1, 1000], "axes": [1, -1]}),
    case("Slice-negative-step", "Slice", [r(5, 6)], slice_ref,
         {"starts": [-1, 4], "ends": [-1000, 0], "axes": [0, 1], "steps": [-2, -1]}),
    case("Slice-clamped", "Slice", [r(4, 5)], slice_ref, {"starts": [-100], "ends": [3], "axes": [1]}),
    case("Gather-embedding-axis0", "Gather", [r(10, 4), np.array([[1, 3, 3], [9, 0, 1]], np.int64)],
         lambda a, w, i: F.embedding(i, w)),
    case("Gather-axis1-negative-repeats", "Gather", [r(3, 5, 2), np.array([4, -1, 0, 2, 0], np.int64)],
         gather_ref, {"axis": 1}),
    case("Gather-axis1-scalar-index", "Gather", [r(3, 5), np.array(2, np.int64)], gather_ref, {"axis": 1}),
    case("Gather-axis-neg1-2d-index", "Gather", [r(2, 3, 5), np.array([[0, 4], [4, 4]], np.int64)],
         gather_ref, {"axis": -1}),
    case("GatherElements", "GatherElements", [r(3, 4), ints(3, 2, 4)], lambda a, x, i: torch.gather(x, 0, i)),
    case("Unsqueeze", "Unsqueeze", [r(3, 4)], lambda a, x: x.reshape(1, 3, 4, 1), {"axes": [0, -1]}),
    case("Squeeze-axes", "Squeeze", [r(3, 1, 4, 1)], lambda a, x: x.squeeze(1), {"axes": [1]}),
    case("Squeeze-all", "Squeeze", [r(1, 3, 1, 4)], lambda a, x: x.reshape(3, 4)),
    case("Expand-rank-up", "Expand", [r(3, 1)], lambda a, x: x.expand(2, 3, 4), {"shape": [2, 3, 4]}),
    case("Expand-smaller-shape", "Expand", [r(1, 4)], lambda a, x: torch.broadcast_to(x, (3, 4)),
         {"shape": [3, 1]}),
    case("Tile", "Tile", [r(2, 3)], lambda a, x: torch.tile(x, (2, 3)), {"repeats": [2, 3]}),
    case("Pad-constant", "Pad", [r(2, 3)], lambda a, x: F.pad(x, (2, 0, 1, 1), value=0.5),
         {"pads": [1, 2, 1, 0], "constant_value": 0.5}),
    case("Pad-reflect", "Pad", [r(1, 2, 5)], lambda a, x: F.pad(x, (2, 3), mode="reflect"),
         {"pads": [0, 0, 2, 0, 0, 3], "mode": "reflect"}),
    case("Pad-edge", "Pad", [r(1, 2, 4)], lambda a, x: F.pad(x, (3, 1), mode="replicate"),
         {"pads": [0, 0, 3, 0, 0, 1], "mode": "edge"}),
    case("Pad-wrap", "Pad", [r(1, 2, 4)], lambda a, x: F.pad(x, (2, 1), mode="circular"),
         {"pads": [0, 0, 2, 0, 0, 1], "mode": "wrap"}),
    case("GatherND", "GatherND", [r(3, 4, 2), np.array([[2, 1], [0, 3], [2, 1]], np.int64)],
         lambda a, x, i: x[i[:, 0], i[:, 1]]),
    case("GatherND-batch-dims", "GatherND", [r(2, 3, 4), np.array([[[2], [0]], [[1], [1]]], np.int64)],
         lambda a, x, i: x[torch.arange(2)[:, None], i[..., 0]], {"batch_dims": 1}),
    case("ScatterElements", "ScatterElements", [r(3, 4), np.array([[0, 2, 1, 1], [2, 0, 0, 2]], np.int64),
                                                r(2, 4)], lambda a, x, i, u: x.scatter(0, i, u)),
    case("ScatterElements-add", "ScatterElements", [r(3, 4), ints(4, 3, 2), r(3, 2)],
         lambda a, x, i, u: x.scatter_add(1, i, u), {"axis": 1, "reduction": "add"}),
    case("ScatterND", "ScatterND", [r(4, 3), np.array([[3], [1]], np.int64), r(2, 3)],
         lambda a, x, i, u: x.index_put((i[:, 0],), u)),
    case("ScatterND-add", "ScatterND", [r(4, 3), np.array([[3, 0], [1, 2], [3, 0]], np.int64), r(3)],
         lambda a, x, i, u: x.index_put((i[:, 0], i[:, 1]), u, accumulate=True), {"reduction": "add"}),
    case("TopK-largest", "TopK", [r(3, 6)], lambda a, x: torch.topk(x, 3, -1)[0], {"k": 3}),
    case("TopK-smallest-axis0", "TopK", [r(5, 3)], lambda a, x: torch.topk(x, 2, 0, largest=False)[0],
         {"k": 2, "axis": 0, "largest": 0}),
    case("Trilu-upper-k1", "Trilu", [r(2, 4, 5)], lambda a, x: torch.triu(x, 1), {"k": 1}),
    case("Trilu-lower-k-neg1", "Trilu", [r(4, 5)], lambda a, x: torch.tril(x, -1), {"upper": 0, "k": -1}),
    case("ReverseSequence", "ReverseSequence", [r(5, 3, 2), np.array([5, 2, 1], np.int64)],
         lambda a, x, n: torch.stack([torch.cat([x[:k, b].flip(0), x[k:, b]])
                                      for b, k in enumerate(n.tolist())], 1)),
    case("Depend", "Depend", [r(3, 4), r(2)], lambda a, x, after: x),
    case("Dropout-training", "Dropout", [r(4, 5)],
         lambda a, x: x * torch.tensor(dropout_mask((4, 5), 0.3, 5)) / 0.7,
         {"ratio": 0.3, "training_mode": 1, "seed": 5}),
    case("Dropout-inference", "Dropout", [r(4, 5)], lambda a, x: x, {"ratio": 0.3}),
    case("Resize-linear-half-pixel", "Resize", [r(1, 2, 4, 4)], resize_ref,
         {"mode": "linear", "scales": [1, 1, 2, 1.5]}),
    case("Resize-linear-align-corners", "Resize", [r(1, 2, 4, 4)], resize_ref,
         {"mode": "linear", "scales": [1, 1, 2, 1.5], "coordinate_transformation_mode": "align_corners"}),
    case("Resize-linear-down", "Resize", [r(1, 2, 6, 5)], resize_ref,
         {"mode": "linear", "sizes": [1, 2, 3, 2]}),
    case("Resize-linear-1d", "Resize", [r(1, 2, 4)], resize_ref, {"mode": "linear", "scales": [1, 1, 2.5]}),
    case("Resize-cubic", "Resize", [r(1, 2, 4, 4)], resize_ref, {"mode": "cubic", "scales": [1, 1, 2, 1.5]}),
    case("Resize-nearest-asymmetric-floor", "Resize", [r(1, 2, 3, 2)], resize_ref,
         {"mode": "nearest", "scales": [1, 1, 2, 3], "coordinate_transformation_mode": "asymmetric",
          "nearest_mode": "floor"}),
    case("DepthToSpace-CRD", "DepthToSpace", [r(1, 8, 2, 3)], lambda a, x: F.pixel_shuffle(x, 2),
         {"blocksize": 2, "mode": "CRD"}),
    case("SpaceToDepth", "SpaceToDepth", [r(1, 2, 4, 6)],
         lambda a, x: x.reshape(1, 2, 2, 2, 3, 2).permute(0, 3, 5, 1, 2, 4).reshape(1, 8, 2, 3),
         {"blocksize": 2}),
]


@run_cases(SHAPE)
def test_shape_ops_match_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: attention


def _mask(*shape):
    m = RNG.random(shape) > 0.3
    m[..., 0] = True  # every query sees a key
    return m


ATTENTION = [
    case("plain", "Attention", [r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 3)], attention_ref),
    case("causal", "Attention", [r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4)], attention_ref,
         {"is_causal": 1}),
    case("causal-gqa", "Attention", [r(1, 4, 5, 4), r(1, 2, 5, 4), r(1, 2, 5, 3)], attention_ref,
         {"is_causal": 1}),
    case("causal-rect-top-left", "Attention", [r(1, 2, 3, 4), r(1, 2, 6, 4), r(1, 2, 6, 4)], attention_ref,
         {"is_causal": 1}),
    case("scale", "Attention", [r(1, 2, 4, 4), r(1, 2, 6, 4), r(1, 2, 6, 2)], attention_ref, {"scale": 0.3}),
    case("float-mask-grad", "Attention", [r(1, 2, 4, 4), r(1, 2, 5, 4), r(1, 2, 5, 4), r(4, 5)],
         attention_ref),
    case("float-mask-broadcast-causal", "Attention",
         [r(2, 2, 4, 3), r(2, 2, 4, 3), r(2, 2, 4, 3), r(2, 1, 1, 4)], attention_ref, {"is_causal": 1}),
    case("bool-mask", "Attention", [r(1, 2, 4, 4), r(1, 2, 5, 4), r(1, 2, 5, 4), _mask(1, 2, 4, 5)],
         attention_ref),
    case("past-kv-causal-present", "Attention",
         [r(1, 2, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 3), None, r(1, 2, 2, 4), r(1, 2, 2, 3)], attention_ref,
         {"is_causal": 1}, n_out=3),
    case("past-kv-gqa", "Attention",
         [r(1, 4, 2, 4), r(1, 2, 2, 4), r(1, 2, 2, 4), None, r(1, 2, 3, 4), r(1, 2, 3, 4)], attention_ref,
         {"is_causal": 1}),
    case("3d-heads-causal", "Attention", [r(2, 5, 8), r(2, 5, 4), r(2, 5, 6)], attention_ref,
         {"is_causal": 1, "q_num_heads": 4, "kv_num_heads": 2}),
    case("softcap-causal", "Attention", [r(1, 2, 4, 4), r(1, 2, 4, 4), r(1, 2, 4, 4)], attention_ref,
         {"is_causal": 1, "softcap": 1.5}),
    case("softcap-float-mask", "Attention", [r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 4), r(3, 5)],
         attention_ref, {"softcap": 2.0, "scale": 0.4}),
    case("sliding-window-causal", "Attention", [r(1, 2, 6, 4), r(1, 2, 6, 4), r(1, 2, 6, 4)], attention_ref,
         {"is_causal": 1, "left_window_size": 2}),
    case("sliding-window-two-sided-past", "Attention",
         [r(1, 2, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 4), None, r(1, 2, 2, 4), r(1, 2, 2, 4)], attention_ref,
         {"left_window_size": 1, "right_window_size": 1}),
]


def rotary_ref(a, x, cos, sin, pos=None):
    four_d = x.dim() == 4
    xs = x.transpose(1, 2) if four_d else x.unflatten(-1, (a["num_heads"], -1))  # [B, S, H, Dh]
    rd = a.get("rotary_embedding_dim", 0) or xs.shape[-1]
    if pos is not None:
        cos, sin = cos[pos], sin[pos]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    rot, rest = xs[..., :rd], xs[..., rd:]
    if a.get("interleaved", 0):
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack([c * x1 - s * x2, s * x1 + c * x2], -1).flatten(-2)
    else:
        x1, x2 = rot.chunk(2, -1)
        rot = torch.cat([c * x1 - s * x2, s * x1 + c * x2], -1)
    y = torch.cat([rot, rest], -1)
    return y.transpose(1, 2) if four_d else y.flatten(-2)


ROTARY = [
    case("rotary-4d-caches", "RotaryEmbedding", [r(2, 2, 3, 4), r(2, 3, 2), r(2, 3, 2)], rotary_ref),
    case("rotary-4d-position-ids-interleaved", "RotaryEmbedding",
         [r(1, 2, 3, 6), r(8, 3), r(8, 3), np.array([[5, 0, 5]], np.int64)], rotary_ref, {"interleaved": 1}),
    case("rotary-3d-partial", "RotaryEmbedding", [r(2, 3, 12), r(2, 3, 2), r(2, 3, 2)], rotary_ref,
         {"num_heads": 2, "rotary_embedding_dim": 4}),
]


def recurrent_ref(kind):
    """LSTM / GRU / RNN through ``torch.nn`` with the ONNX tensors as its parameters."""
    order = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}[kind]  # ONNX gates -> torch's

    def ref(a, x, w, rec, b, _seq_lens=None, h0=None, c0=None):
        H, layout, direction = a["hidden_size"], a.get("layout", 0), a.get("direction", "forward")
        D = w.shape[0]

        def gates(t):
            return torch.cat([t.unflatten(0, (len(order), H))[i] for i in order])

        mod = getattr(nn, kind)(x.shape[-1], H, bidirectional=D == 2, batch_first=layout == 1,
                                dtype=torch.float64)
        params = {}
        for d, sfx in enumerate(["_l0", "_l0_reverse"][:D]):
            bw, br = b[d].chunk(2)
            params.update({f"weight_ih{sfx}": gates(w[d]), f"weight_hh{sfx}": gates(rec[d]),
                           f"bias_ih{sfx}": gates(bw), f"bias_hh{sfx}": gates(br)})
        t_axis = 1 if layout else 0
        if direction == "reverse":  # torch has no reverse-only RNN: run forward on reversed time
            x = x.flip(t_axis)
        states = [s if s is None or not layout else s.transpose(0, 1) for s in (h0, c0)]
        init = tuple(states) if kind == "LSTM" else states[0]
        y, hn = torch.func.functional_call(mod, params, (x, init))
        if direction == "reverse":
            y = y.flip(t_axis)
        y = y.unflatten(-1, (D, H))
        y = y if layout else y.transpose(1, 2)  # [T, D, B, H] (layout 1: [B, T, D, H])
        hs = list(hn) if kind == "LSTM" else [hn]
        return (y, *(h.transpose(0, 1) if layout else h for h in hs))

    return ref


def _rnn_inputs(kind, D, layout=0, T=4, B=2, I=3, H=3):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    x = r(B, T, I) if layout else r(T, B, I)
    st = (B, D, H) if layout else (D, B, H)
    ins = [x, 0.6 * r(D, G * H, I), 0.6 * r(D, G * H, H), 0.5 * r(D, 2 * G * H), None, r(*st)]
    return ins + [r(*st)] if kind == "LSTM" else ins


RECURRENT = [
    case("GRU-bidirectional-linear-before-reset", "GRU", _rnn_inputs("GRU", 2), recurrent_ref("GRU"),
         {"hidden_size": 3, "direction": "bidirectional", "linear_before_reset": 1}, n_out=None),
    case("GRU-reverse-layout1", "GRU", _rnn_inputs("GRU", 1, layout=1), recurrent_ref("GRU"),
         {"hidden_size": 3, "direction": "reverse", "linear_before_reset": 1, "layout": 1}, n_out=None),
    case("RNN-bidirectional", "RNN", _rnn_inputs("RNN", 2), recurrent_ref("RNN"),
         {"hidden_size": 3, "direction": "bidirectional"}, n_out=None),
    case("RNN-forward-layout1", "RNN", _rnn_inputs("RNN", 1, layout=1), recurrent_ref("RNN"),
         {"hidden_size": 3, "layout": 1}, n_out=None),
    case("LSTM-reverse", "LSTM", _rnn_inputs("LSTM", 1), recurrent_ref("LSTM"),
         {"hidden_size": 3, "direction": "reverse"}, n_out=None),
    case("LSTM-forward-layout1", "LSTM", _rnn_inputs("LSTM", 1, layout=1), recurrent_ref("LSTM"),
         {"hidden_size": 3, "layout": 1}, n_out=None),
]


@run_cases(RECURRENT)
def test_recurrent_matches_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


@run_cases(ATTENTION + ROTARY)
def test_attention_matches_torch_sdpa(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ cases: losses


def _labels(n, c, *rest, ignore=None):
    lab = ints(c, n, *rest)
    if ignore is not None:
        lab.reshape(-1)[::3] = ignore
    return lab


LOSS = [
    case("sce-mean", "SoftmaxCrossEntropyLoss", [r(5, 4), _labels(5, 4)], sce_ref),
    case("sce-sum", "SoftmaxCrossEntropyLoss", [r(5, 4), _labels(5, 4)], sce_ref, {"reduction": "sum"}),
    case("sce-none", "SoftmaxCrossEntropyLoss", [r(5, 4), _labels(5, 4)], sce_ref, {"reduction": "none"}),
    case("sce-mean-log-prob", "SoftmaxCrossEntropyLoss", [r(5, 4), _labels(5, 4)], sce_ref, n_out=2),
    case("sce-mean-weights", "SoftmaxCrossEntropyLoss", [r(6, 4), _labels(6, 4), pos(4)], sce_ref, wrt=[0]),
    case("sce-sum-weights", "SoftmaxCrossEntropyLoss", [r(6, 4), _labels(6, 4), pos(4)], sce_ref,
         {"reduction": "sum"}, wrt=[0]),
    case("sce-mean-ignore-valid-class", "SoftmaxCrossEntropyLoss", [r(7, 4), _labels(7, 4, ignore=1)],
         sce_ref, {"ignore_index": 1}),
    case("sce-mean-ignore-negative", "SoftmaxCrossEntropyLoss", [r(7, 4), _labels(7, 4, ignore=-1)], sce_ref,
         {"ignore_index": -1}),
    case("sce-none-ignore", "SoftmaxCrossEntropyLoss", [r(7, 4), _labels(7, 4, ignore=-1)], sce_ref,
         {"ignore_index": -1, "reduction": "none"}),
    case("sce-mean-weights-ignore-log-prob", "SoftmaxCrossEntropyLoss",
         [r(7, 4), _labels(7, 4, ignore=2), pos(4)], sce_ref, {"ignore_index": 2}, n_out=2, wrt=[0]),
    case("sce-4d-mean-weights", "SoftmaxCrossEntropyLoss", [r(2, 3, 2, 3), _labels(2, 3, 2, 3), pos(3)],
         sce_ref, wrt=[0]),
    case("sce-3d-sum-ignore", "SoftmaxCrossEntropyLoss", [r(2, 4, 5), _labels(2, 4, 5, ignore=0)], sce_ref,
         {"reduction": "sum", "ignore_index": 0}),
    case("mse-mean", "MSELoss", [r(3, 4), r(3, 4)], mse_ref),
    case("mse-sum", "MSELoss", [r(3, 4), r(3, 4)], mse_ref, {"reduction": "sum"}),
    case("mse-none", "MSELoss", [r(3, 4), r(3, 4)], mse_ref, {"reduction": "none"}),
    case("mse-mean-broadcast-target", "MSELoss", [r(3, 4), r(4)], mse_ref),
    case("mse-sum-broadcast-target", "MSELoss", [r(2, 3, 4), r(3, 1)], mse_ref, {"reduction": "sum"}),
]


@run_cases(LOSS)
def test_losses_match_torch(op, inputs, attrs, ref, n_out, wrt):
    check_against_torch(op, inputs, attrs, ref, n_out, wrt)


# ------------------------------------------------------------------ whole training steps


def _workload(name, **params):
    """A bundled workload in float64."""
    text = (WORKLOADS / f"{name}.yaml").read_text(encoding="utf-8").replace("fp32", "fp64")
    return load_yaml_text(text, f"{name}.yaml", **params)


CNN_YAML = """
name: cnn
params: {batch: 4, classes: 5}
inputs:
  x: {shape: [batch, 3, 10, 10], dtype: fp64}
weights:
  bn1.weight: {shape: [8], dtype: fp64, init: ones}
  bn1.bias: {shape: [8], dtype: fp64, init: zeros}
  bn1.running_mean: {shape: [8], dtype: fp64, init: zeros, trainable: false}
  bn1.running_var: {shape: [8], dtype: fp64, init: ones, trainable: false}
graph:
  - {layer: conv2d, name: conv1, in: x, out_channels: 8, kernel: 3, stride: 2, padding: 1, bias: false}
  - {op: BatchNormalization, name: bn1, in: [conv1, bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var],
     out: [bn1, bn1.mean_out, bn1.var_out], training_mode: 1, momentum: 0.9}
  - {layer: relu, name: act1, in: bn1}
  - {layer: conv2d, name: conv2, out_channels: 8, kernel: 3, padding: 1, groups: 2, bias: false}
  - {layer: batchnorm, name: bn2}   # inference mode as written; training_graph trains it
  - {layer: maxpool, name: pool, kernel: 2}
  - {layer: gelu, name: act2}
  - {layer: conv2d, name: dw, out_channels: 8, kernel: 3, padding: 1, groups: 8}
  - {layer: tanh, name: act3}
  - {layer: global_avgpool, name: gap}
  - {layer: flatten, name: flat}
  - {layer: linear, name: fc, out_features: classes, out: logits}
outputs: [logits]
"""


def _linear(P, name):
    w = P[f"{name}.weight"]
    m = nn.Linear(*w.shape, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w.T))
        m.bias.copy_(torch.tensor(P[f"{name}.bias"]))
    return m


def _conv(P, name, **kw):
    w = P[f"{name}.weight"]
    bias = f"{name}.bias" in P
    m = nn.Conv2d(w.shape[1] * kw.get("groups", 1), w.shape[0], w.shape[2:], bias=bias, dtype=torch.float64,
                  **kw)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        if bias:
            m.bias.copy_(torch.tensor(P[f"{name}.bias"]))
    return m


def _bn(P, name, train):
    m = nn.BatchNorm2d(P[f"{name}.weight"].shape[0], eps=1e-5, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(m, attr).copy_(torch.tensor(P[f"{name}.{attr}"]))
    return m.train(train)


def torch_model(kind, P):
    """The torch twin of a dlsim forward graph with parameters ``P``, and a map from each
    dlsim parameter name to (torch parameter, whether dlsim stores it transposed)."""
    if kind == "mlp":
        model = nn.Sequential(_linear(P, "fc1"), nn.ReLU(), _linear(P, "fc2"))
        names = {"fc1": model[0], "fc2": model[2]}
    elif kind == "lenet5":
        model = nn.Sequential(_conv(P, "c1"), nn.Tanh(), nn.AvgPool2d(2), _conv(P, "c3"), nn.Tanh(),
                              nn.AvgPool2d(2), nn.Flatten(), _linear(P, "f5"), nn.Tanh(), _linear(P, "f6"),
                              nn.Tanh(), _linear(P, "out"))
        names = {"c1": model[0], "c3": model[3], "f5": model[7], "f6": model[9], "out": model[11]}
    else:
        model = nn.Sequential(_conv(P, "conv1", stride=2, padding=1), _bn(P, "bn1", train=True), nn.ReLU(),
                              _conv(P, "conv2", padding=1, groups=2), _bn(P, "bn2", train=True),
                              nn.MaxPool2d(2), nn.GELU(), _conv(P, "dw", padding=1, groups=8), nn.Tanh(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), _linear(P, "fc"))
        names = {"conv1": model[0], "bn1": model[1], "conv2": model[3], "bn2": model[4], "dw": model[7],
                 "fc": model[11]}
    pairs = {}
    for prefix, mod in names.items():
        for attr, p in mod.named_parameters():
            pairs[f"{prefix}.{attr}"] = (p, isinstance(mod, nn.Linear) and attr == "weight")
    return model, pairs


MODELS = {
    "mlp": lambda: _workload("mlp-mnist", batch=4, in_features=12, hidden=8, classes=5),
    "lenet5": lambda: _workload("lenet5", batch=3, image=16, classes=4),
    "cnn": lambda: load_yaml_text(CNN_YAML, "cnn.yaml"),
}

OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.1, "weight_decay": 0.01},
            lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01)),
    "momentum": ("momentum", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01)),
    "nesterov": ("momentum", {"lr": 0.05, "momentum": 0.8, "nesterov": 1},
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    # spelled as torch.optim spells it: "sgd" with a momentum (and dampening, nesterov)
    "sgd_momentum_dampening": ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
                               lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3,
                                                          weight_decay=0.01)),
    "sgd_nesterov": ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True},
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": ("adam", {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.01},
             lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)),
    "adamw": ("adamw", {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1},
              lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
}
STATES = {"sgd": {}, "momentum": {"velocity": "momentum_buffer"}, "nesterov": {"velocity": "momentum_buffer"},
          "sgd_momentum_dampening": {"velocity": "momentum_buffer"},
          "sgd_nesterov": {"velocity": "momentum_buffer"},
          "adam": {"m": "exp_avg", "v": "exp_avg_sq"}, "adamw": {"m": "exp_avg", "v": "exp_avg_sq"}}


def _close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def _train_and_compare(kind, opt, loss="cross_entropy", steps=3, **extra):
    forward = MODELS[kind]()
    name, hyper, make_opt = OPTIMIZERS[opt]
    trainer = Trainer(forward, loss=loss, optimizer=name, seed=0, **hyper, **extra)
    assert trainer.graph.tensors[trainer.graph.meta["loss"]].dtype == "fp64"
    P = {k: np.array(v) for k, v in trainer.params.items()}
    model, pairs = torch_model(kind, P)
    assert sorted(pairs) == sorted(p for p in forward.params if forward.param_info[p].trainable)
    optim = make_opt([p for p, _ in pairs.values()])
    x_name = next(iter(forward.inputs))
    rng = np.random.default_rng(7)
    out_shape = forward.tensors[forward.outputs[0]].shape
    for step in range(1, steps + 1):
        x = rng.standard_normal(forward.inputs[x_name].shape)
        if loss == "mse":
            y = rng.standard_normal(out_shape)
            tloss_fn = F.mse_loss
        else:
            y = rng.integers(0, out_shape[1], out_shape[0]).astype(np.int64)
            tloss_fn = F.cross_entropy
        ours = trainer.step(x, y)
        optim.zero_grad()
        tloss = tloss_fn(model(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        optim.step()
        _close(ours, tloss.item(), f"loss at step {step}")
        for pname, (tp, transposed) in pairs.items():
            want = tp.detach().numpy()
            _close(trainer.params[pname], want.T if transposed else want, f"{pname} after step {step}")
            for ours_state, torch_state in STATES[opt].items():
                s = optim.state[tp][torch_state].numpy()
                _close(trainer.params[f"{pname}.{ours_state}"], s.T if transposed else s,
                       f"{pname}.{ours_state} after step {step}")
        assert int(trainer.params["optimizer.step"]) == step
        if kind == "cnn":  # the batchnorm layer's running mean moves as torch's buffer does
            # (its running variance is ONNX's biased one; torch's buffer keeps the unbiased)
            _close(trainer.params["bn2.running_mean"], model[4].running_mean.numpy(),
                   f"bn2.running_mean after step {step}")
            assert not np.allclose(trainer.params["bn2.running_mean"], 0.0)
    return trainer


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", list(MODELS))
def test_training_steps_match_torch(kind, opt):
    _train_and_compare(kind, opt)


def test_mse_training_steps_match_torch():
    _train_and_compare("mlp", "adam", loss="mse")


def test_checkpointed_training_steps_match_torch():
    trainer = _train_and_compare("cnn", "momentum", checkpoint=True, segment=3)
    assert any(n.meta.get("recompute") for n in trainer.graph.nodes.values())
