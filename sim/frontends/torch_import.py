"""PyTorch modules -> Graph, through ``torch.export`` (needs the ``torch`` extra).

``load_module(module, example_inputs)`` exports the module, maps each core ATen op onto the
op library (``aten.linear`` -> Gemm(transB=1), ``aten.conv2d`` -> Conv,
``aten.batch_norm`` -> BatchNormalization, ...), and takes parameters and buffers from the
module's state: parameters are trainable, buffers (BatchNorm running statistics) are not.
Shapes and dtypes come from the exported program (concrete: the example inputs fix them).
An ATen op without a mapping is an ``UnsupportedOpError`` naming it and the FX node.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sim.errors import GraphError, UnsupportedOpError
from sim.graph import Graph, ParamInfo, TensorSpec
from sim.graph.rewrite import GraphBuilder

_TORCH_DTYPES = {
    "torch.float32": "fp32", "torch.float64": "fp64", "torch.float16": "fp16",
    "torch.bfloat16": "bf16", "torch.int64": "int64", "torch.int32": "int32",
    "torch.int16": "int16", "torch.int8": "int8", "torch.uint8": "uint8", "torch.bool": "bool",
    "torch.float8_e4m3fn": "fp8", "torch.float8_e5m2": "fp8e5m2",
}


def torch_dtype(dt: Any, where: str | None = None) -> str:
    """Our dtype name for a ``torch.dtype``."""
    try:
        return _TORCH_DTYPES[str(dt)]
    except KeyError:
        raise GraphError(f"unsupported torch dtype {dt}", where=where) from None


class _Ctx:
    """What an ATen handler may use: the graph, argument resolution, node emission."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.b = GraphBuilder(graph)
        self.env: dict[str, Any] = {}  # fx node name -> our tensor name (or tuple / python value)
        self.node: Any = None

    @property
    def where(self) -> str:
        return f"fx node {self.node.name!r} ({self.node.target})"

    def arg(self, v: Any) -> Any:
        import torch.fx

        if isinstance(v, torch.fx.Node):
            return self.env[v.name]
        if isinstance(v, (list, tuple)):
            return type(v)(self.arg(x) for x in v)
        return v

    def spec(self, t: str) -> TensorSpec:
        return self.g.tensors[t]

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        base = self.node.name if self.node is not None else op.lower()
        name = self.g.unique_name(base)
        outs = [name if i == 0 else f"{name}:{i}" for i in range(n_out)]
        res = self.b.node(op, list(inputs), outs, attrs, name=name,
                              meta={"aten": str(self.node.target)} if self.node is not None else {})
        return res[0] if n_out == 1 else res

    def const(self, value: Any, dtype: str) -> str:
        """A scalar or small constant as a frozen parameter."""
        from sim.dtypes import to_numpy

        arr = np.asarray(value).astype(to_numpy(dtype))
        return self.b.constant(self.b.unique(f"{self.node.name}.const"), arr, dtype)

    def tensor_or_const(self, v: Any, like: str) -> str:
        return v if isinstance(v, str) else self.const(v, self.spec(like).dtype)


Handler = Callable[[_Ctx, list[Any], dict[str, Any]], Any]
_HANDLERS: dict[str, Handler] = {}


def _aten(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            _HANDLERS[n] = fn
        return fn

    return deco


def _axis(d: int, rank: int) -> int:
    return d % rank if rank else 0


# ---------------------------------------------------------------------------- linear algebra
@_aten("aten.linear.default")
def _linear(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    """y = x @ W^T + b as Gemm(transB=1) on the flattened leading dims (the reshapes are
    free), so the weight is read in place, not transposed."""
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else kw.get("bias")
    shape = c.spec(x).shape
    out_f = c.spec(w).shape[0]
    x2 = x if len(shape) == 2 else c.op("Reshape", [x], shape=[-1, shape[-1]] if shape else [1, 1])
    y = c.op("Gemm", [x2, w] + ([b] if b is not None else []), transB=1)
    return y if len(shape) == 2 else c.op("Reshape", [y], shape=[*shape[:-1], out_f])


@_aten("aten.addmm.default")
def _addmm(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    beta, alpha = kw.get("beta", 1), kw.get("alpha", 1)
    if beta != 1 or alpha != 1:
        raise UnsupportedOpError("addmm with beta/alpha != 1", where=c.where)
    return c.op("Add", [c.op("MatMul", [a[1], a[2]]), a[0]])


@_aten("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("MatMul", [a[0], a[1]])


@_aten("aten.t.default", "aten.numpy_T.default")
def _t(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    r = c.spec(a[0]).rank
    return a[0] if r < 2 else c.op("Transpose", [a[0]], perm=list(reversed(range(r))))


@_aten("aten.transpose.int")
def _transpose(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    r = c.spec(a[0]).rank
    perm = list(range(r))
    i, j = _axis(a[1], r), _axis(a[2], r)
    perm[i], perm[j] = perm[j], perm[i]
    return c.op("Transpose", [a[0]], perm=perm)


@_aten("aten.permute.default")
def _permute(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    r = c.spec(a[0]).rank
    return c.op("Transpose", [a[0]], perm=[_axis(p, r) for p in a[1]])


# ---------------------------------------------------------------------------- conv, pool, norm
def _pair(v: Any, n: int = 2) -> list[int]:
    """An int or a list of ints as ``n`` ints (one value repeats)."""
    if isinstance(v, (list, tuple)):
        vals = [int(x) for x in v]
        return vals if len(vals) == n else vals[:1] * n
    return [int(v)] * n


def _conv(c: _Ctx, x: str, w: str, b: Any, stride: Any, padding: Any, dilation: Any,
          groups: int) -> Any:
    k = c.spec(w).shape[2:]
    n = len(k)
    attrs: dict[str, Any] = {"kernel_shape": list(k), "strides": _pair(stride, n),
                             "dilations": _pair(dilation, n), "group": int(groups)}
    if isinstance(padding, str):
        if padding == "same":
            attrs["auto_pad"] = "SAME_UPPER"
    else:
        p = _pair(padding, n)
        attrs["pads"] = p + p
    ins = [x, w] + ([b] if b is not None else [])
    return c.op("Conv", ins, **attrs)


@_aten("aten.conv2d.default", "aten.conv1d.default", "aten.conv3d.default",
       "aten.conv2d.padding", "aten.conv1d.padding")
def _conv_nd(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    a = a + [None] * (7 - len(a))
    b = a[2] if a[2] is not None else kw.get("bias")
    return _conv(c, a[0], a[1], b, a[3] if a[3] is not None else 1,
                 a[4] if a[4] is not None else 0, a[5] if a[5] is not None else 1,
                 a[6] if a[6] is not None else 1)


@_aten("aten.convolution.default")
def _convolution(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    if a[6]:
        raise UnsupportedOpError("transposed convolution", where=c.where)
    return _conv(c, a[0], a[1], a[2], a[3], a[4], a[5], a[8])


@_aten("aten.batch_norm.default")
def _batch_norm(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x, w, b, mean, var, training, _momentum, eps = a[:8]
    if training:
        raise UnsupportedOpError("batch_norm in training mode (export the module in eval())",
                                 where=c.where)
    return _bn(c, x, w, b, mean, var, eps)


def _bn(c: _Ctx, x: str, w: Any, b: Any, mean: str, var: str, eps: float) -> Any:
    ch = c.spec(x).shape[1]
    dt = c.spec(x).dtype
    w = w if w is not None else c.const(np.ones(ch), dt)
    b = b if b is not None else c.const(np.zeros(ch), dt)
    return c.op("BatchNormalization", [x, w, b, mean, var], epsilon=float(eps))


@_aten("aten._native_batch_norm_legit_no_training.default")
def _bn_no_training(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x, w, b, mean, var, _momentum, eps = a[:7]
    return (_bn(c, x, w, b, mean, var, eps), None, None)


@_aten("aten.layer_norm.default")
def _layer_norm(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x, shape = a[0], a[1]
    w = a[2] if len(a) > 2 else None
    b = a[3] if len(a) > 3 else None
    eps = a[4] if len(a) > 4 else 1e-5
    dt = c.spec(x).dtype
    n = [int(s) for s in shape]
    w = w if w is not None else c.const(np.ones(n), dt)
    ins = [x, w] + ([b] if b is not None else [])
    return c.op("LayerNormalization", ins, axis=-len(n), epsilon=float(eps))


@_aten("aten.native_layer_norm.default")
def _native_layer_norm(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return (_layer_norm(c, a, kw), None, None)


def _pool_attrs(c: _Ctx, x: str, k: Any, s: Any, p: Any, ceil: bool) -> dict[str, Any]:
    n = c.spec(x).rank - 2
    kk = _pair(k, n)
    ss = _pair(s, n) if s not in (None, [], ()) else kk
    pp = _pair(p, n)
    return {"kernel_shape": kk, "strides": ss, "pads": pp + pp, "ceil_mode": int(bool(ceil))}


@_aten("aten.max_pool2d.default", "aten.max_pool1d.default")
def _max_pool(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    a = a + [None] * (6 - len(a))
    attrs = _pool_attrs(c, a[0], a[1], a[2], a[3] if a[3] is not None else 0, bool(a[5]))
    if a[4] not in (None, 1, [1, 1], (1, 1)):
        attrs["dilations"] = _pair(a[4], len(attrs["strides"]))
    return c.op("MaxPool", [a[0]], **attrs)


@_aten("aten.max_pool2d_with_indices.default")
def _max_pool_idx(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return (_max_pool(c, a, kw), None)


@_aten("aten.avg_pool2d.default", "aten.avg_pool1d.default")
def _avg_pool(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    a = a + [None] * (7 - len(a))
    attrs = _pool_attrs(c, a[0], a[1], a[2], a[3] if a[3] is not None else 0, bool(a[4]))
    attrs["count_include_pad"] = int(a[5] if a[5] is not None else True)
    if a[6] is not None:
        raise UnsupportedOpError("avg_pool with divisor_override", where=c.where)
    return c.op("AveragePool", [a[0]], **attrs)


@_aten("aten.adaptive_avg_pool2d.default", "aten.adaptive_avg_pool1d.default")
def _adaptive_avg(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x = a[0]
    spatial = c.spec(x).shape[2:]
    out = _pair(a[1], len(spatial))
    if all(o == 1 for o in out):
        return c.op("GlobalAveragePool", [x])
    if any(s % o for s, o in zip(spatial, out)):
        raise UnsupportedOpError(f"adaptive_avg_pool from {spatial} to {out} (not divisible)",
                                 where=c.where)
    k = [s // o for s, o in zip(spatial, out)]
    return c.op("AveragePool", [x], kernel_shape=k, strides=k)


# ---------------------------------------------------------------------------- activations
def _unary(op: str, **fixed: Any) -> Handler:
    def h(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
        return c.op(op, [a[0]], **fixed)

    return h


for _name, _op in {
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log",
    "sqrt": "Sqrt", "neg": "Neg", "abs": "Abs", "erf": "Erf", "reciprocal": "Reciprocal",
    "sin": "Sin", "cos": "Cos", "floor": "Floor", "ceil": "Ceil", "sign": "Sign",
    "hardswish": "HardSwish", "mish": "Mish", "softplus": "Softplus",
}.items():
    _HANDLERS[f"aten.{_name}.default"] = _unary(_op)
    _HANDLERS[f"aten.{_name}_.default"] = _unary(_op)


@_aten("aten.gelu.default")
def _gelu(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    approx = kw.get("approximate", a[1] if len(a) > 1 else "none")
    return c.op("Gelu", [a[0]], approximate=str(approx))


@_aten("aten.silu.default", "aten.silu_.default")
def _silu(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Mul", [a[0], c.op("Sigmoid", [a[0]])])


@_aten("aten.rsqrt.default")
def _rsqrt(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Reciprocal", [c.op("Sqrt", [a[0]])])


@_aten("aten.leaky_relu.default")
def _leaky(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("LeakyRelu", [a[0]], alpha=float(a[1] if len(a) > 1 else 0.01))


@_aten("aten.hardtanh.default", "aten.clamp.default")
def _clamp(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    lo = a[1] if len(a) > 1 else kw.get("min")
    hi = a[2] if len(a) > 2 else kw.get("max")
    attrs: dict[str, Any] = {k: float(v) for k, v in (("min", lo), ("max", hi)) if v is not None}
    return c.op("Clip", [a[0]], **attrs)


@_aten("aten.softmax.int", "aten._softmax.default")
def _softmax(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Softmax", [a[0]], axis=int(a[1]))


@_aten("aten.log_softmax.int", "aten._log_softmax.default")
def _log_softmax(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("LogSoftmax", [a[0]], axis=int(a[1]))


# ---------------------------------------------------------------------------- arithmetic
def _binary(op: str) -> Handler:
    def h(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
        x, y = a[0], a[1]
        alpha = kw.get("alpha", 1)
        if isinstance(x, str) and not isinstance(y, str):
            y = c.tensor_or_const(y, x)
        elif isinstance(y, str) and not isinstance(x, str):
            x = c.tensor_or_const(x, y)
        if alpha != 1:
            y = c.op("Mul", [y, c.const(alpha, c.spec(y).dtype)])
        return c.op(op, [x, y])

    return h


for _name, _op in {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}.items():
    for _v in ("Tensor", "Scalar", "Tensor_Scalar"):
        _HANDLERS[f"aten.{_name}.{_v}"] = _binary(_op)
        _HANDLERS[f"aten.{_name}_.{_v}"] = _binary(_op)


@_aten("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return _binary("Sub")(c, [a[1], a[0]], kw)


@_aten("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax.default")
def _reduce(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    op = {"mean": "ReduceMean", "sum": "ReduceSum", "amax": "ReduceMax"}[
        str(c.node.target).split(".")[1]]
    x = a[0]
    dims = a[1] if len(a) > 1 and a[1] is not None else list(range(c.spec(x).rank))
    dims = [dims] if isinstance(dims, int) else list(dims)
    keep = a[2] if len(a) > 2 else kw.get("keepdim", False)
    return c.op(op, [x], axes=[int(d) for d in dims], keepdims=int(bool(keep)))


# ---------------------------------------------------------------------------- shape
@_aten("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def _view(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Reshape", [a[0]], shape=[int(s) for s in a[1]])


@_aten("aten.flatten.using_ints")
def _flatten(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    shape = c.spec(a[0]).shape
    r = len(shape)
    s = _axis(a[1] if len(a) > 1 else 0, r)
    e = _axis(a[2] if len(a) > 2 else -1, r)
    new = [*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:]]
    return c.op("Reshape", [a[0]], shape=new)


@_aten("aten.unflatten.int")
def _unflatten(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    shape = c.spec(a[0]).shape
    d = _axis(int(a[1]), len(shape))
    sizes = [int(v) for v in a[2]]
    if -1 in sizes:
        known = math.prod(v for v in sizes if v != -1)
        sizes[sizes.index(-1)] = shape[d] // known
    return c.op("Reshape", [a[0]], shape=[*shape[:d], *sizes, *shape[d + 1:]])


@_aten("aten.unsqueeze.default")
def _unsqueeze(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Unsqueeze", [a[0]], axes=[_axis(a[1], c.spec(a[0]).rank + 1)])


@_aten("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    shape = c.spec(a[0]).shape
    dims = a[1] if len(a) > 1 else [i for i, d in enumerate(shape) if d == 1]
    dims = [dims] if isinstance(dims, int) else list(dims)
    axes = [_axis(d, len(shape)) for d in dims if shape[_axis(d, len(shape))] == 1]
    return c.op("Squeeze", [a[0]], axes=axes) if axes else a[0]


@_aten("aten.expand.default")
def _expand(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    shape = c.spec(a[0]).shape
    want = [int(s) for s in a[1]]
    lead = len(want) - len(shape)
    full = [shape[i - lead] if s == -1 else s for i, s in enumerate(want)]
    return c.op("Expand", [a[0]], shape=full)


@_aten("aten.cat.default", "aten.concat.default")
def _cat(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Concat", list(a[0]), axis=int(a[1] if len(a) > 1 else kw.get("dim", 0)))


@_aten("aten.slice.Tensor")
def _slice(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x = a[0]
    dim = a[1] if len(a) > 1 else 0
    start = a[2] if len(a) > 2 and a[2] is not None else 0
    end = a[3] if len(a) > 3 and a[3] is not None else 2**62
    step = a[4] if len(a) > 4 else 1
    return c.op("Slice", [x], starts=[int(start)], ends=[int(min(end, 2**62))], axes=[int(dim)],
                steps=[int(step)])


@_aten("aten.select.int")
def _select(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x, dim, i = a[0], int(a[1]), int(a[2])
    idx = c.const(np.array(i, np.int64), "int64")
    return c.op("Gather", [x, idx], axis=dim)


@_aten("aten.unbind.int")
def _unbind(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x = a[0]
    shape = c.spec(x).shape
    dim = _axis(a[1] if len(a) > 1 else 0, len(shape))
    n = shape[dim]
    parts = c.op("Split", [x], n_out=n, axis=dim, num_outputs=n) if n > 1 else (x,)
    parts = (parts,) if isinstance(parts, str) else parts
    return tuple(c.op("Squeeze", [p], axes=[dim]) for p in parts)


@_aten("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def _split(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    x = a[0]
    shape = c.spec(x).shape
    dim = _axis(a[2] if len(a) > 2 else kw.get("dim", 0), len(shape))
    size = shape[dim]
    if "chunk" in str(c.node.target):
        step = -(-size // int(a[1]))
        sizes = [min(step, size - i) for i in range(0, size, step)]
    elif isinstance(a[1], (list, tuple)):
        sizes = [int(v) for v in a[1]]
    else:
        sizes = [min(int(a[1]), size - i) for i in range(0, size, int(a[1]))]
    if len(sizes) == 1:
        return (x,)
    parts = c.op("Split", [x], n_out=len(sizes), axis=dim, split=sizes)
    return tuple(parts)


@_aten("aten.embedding.default")
def _embedding(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return c.op("Gather", [a[0], a[1]], axis=0)


@_aten("aten.scaled_dot_product_attention.default")
def _sdpa(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    q, k, v = a[0], a[1], a[2]
    mask = a[3] if len(a) > 3 else kw.get("attn_mask")
    causal = a[5] if len(a) > 5 else kw.get("is_causal", False)
    scale = kw.get("scale")
    d = c.spec(q).shape[-1]
    dt = c.spec(q).dtype
    kt = c.op("Transpose", [k], perm=[*range(c.spec(k).rank - 2), c.spec(k).rank - 1,
                                      c.spec(k).rank - 2])
    s = c.op("Mul", [c.op("MatMul", [q, kt]), c.const(scale or 1.0 / math.sqrt(d), dt)])
    if mask is not None:
        if c.spec(mask).dtype == "bool":
            neg = c.const(np.float32(-np.inf), dt)
            zero = c.const(np.float32(0.0), dt)
            mask = c.op("Where", [mask, zero, neg])
        s = c.op("Add", [s, mask])
    if causal:
        lq, lk = c.spec(q).shape[-2], c.spec(k).shape[-2]
        tri = np.where(np.tril(np.ones((lq, lk), bool)), 0.0, -np.inf)
        s = c.op("Add", [s, c.const(tri, dt)])
    return c.op("MatMul", [c.op("Softmax", [s], axis=-1), v])


def _out_dtype(c: _Ctx) -> str:
    val = c.node.meta.get("val")
    return torch_dtype(val.dtype, where=c.where)


@_aten("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    vals = list(a) + [None] * (3 - len(a))
    start, end, step = (0, vals[0], 1) if len(a) == 1 else (vals[0], vals[1], vals[2] or 1)
    from sim.dtypes import to_numpy

    dt = to_numpy(_out_dtype(c))
    return c.op("Range", [], start=np.array(start, dt), limit=np.array(end, dt),
                delta=np.array(step, dt))


@_aten("aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default",
       "aten.zeros.default", "aten.ones.default", "aten.full.default")
def _fill(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    kind = str(c.node.target).split(".")[1]
    shape = list(c.node.meta["val"].shape)
    value = 0 if kind.startswith("zeros") else 1 if kind.startswith("ones") else a[1]
    from sim.dtypes import to_numpy

    return c.op("ConstantOfShape", [], shape=[int(d) for d in shape],
                value=np.array([value], to_numpy(_out_dtype(c))))


@_aten("aten.dropout.default", "aten.clone.default", "aten.contiguous.default",
       "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
       "aten.feature_dropout.default")
def _passthrough(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return a[0]


def _getitem(c: _Ctx, a: list[Any], kw: dict[str, Any]) -> Any:
    return a[0][a[1]]


# ---------------------------------------------------------------------------- the loader
def load_module(module: Any, example_inputs: Any, *, name: str | None = None) -> Graph:
    """Import a ``torch.nn.Module`` as a verified graph.

    ``example_inputs`` is a tensor or a tuple of tensors; they fix every shape. Export the
    module in the mode you want imported (``module.eval()`` for inference BatchNorm).

    Usage: ``g = load_module(torch.nn.Linear(4, 3), torch.randn(2, 4))``.
    """
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise GraphError("PyTorch import needs the torch extra (pip install dlsim[torch])") from err

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    label = name or type(module).__name__
    try:
        ep = torch.export.export(module, tuple(example_inputs))
    except Exception as err:  # noqa: BLE001 - export raises many kinds
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GraphError(f"torch.export failed: {msg}", where=f"module {label}") from None
    sig = ep.graph_signature
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    consts = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    state = ep.state_dict
    g = Graph(label, source=f"torch module {label}")
    c = _Ctx(g)
    for node in ep.graph.nodes:
        c.node = node
        if node.op == "placeholder":
            val = node.meta.get("val")
            if node.name in params or node.name in buffers or node.name in consts:
                fqn = params.get(node.name) or buffers.get(node.name) or consts[node.name]
                tensor = state[fqn] if fqn in state else ep.constants[fqn]
                arr = tensor.detach().cpu().float().numpy() if tensor.dtype == torch.bfloat16 \
                    else tensor.detach().cpu().numpy()
                dt = torch_dtype(tensor.dtype, where=f"parameter {fqn!r}")
                trainable = node.name in params and bool(getattr(tensor, "requires_grad", True))
                c.env[node.name] = c.b.param(fqn, TensorSpec(tuple(tensor.shape), dt),
                                             ParamInfo("constant", trainable), arr)
            else:
                if val is None or not hasattr(val, "shape"):
                    raise GraphError("only tensor inputs are supported", where=f"input {node.name!r}")
                spec = TensorSpec(tuple(int(s) for s in val.shape), torch_dtype(val.dtype))
                c.env[node.name] = c.b.input(node.name, spec)
        elif node.op == "call_function":
            args = c.arg(list(node.args))
            kwargs = {k: c.arg(v) for k, v in node.kwargs.items()}
            if node.target is operator.getitem:
                c.env[node.name] = _getitem(c, args, kwargs)
                continue
            key = str(node.target)
            if not key.startswith("aten."):
                key = f"aten.{key}" if key.count(".") == 1 else key
            handler = _HANDLERS.get(key)
            if handler is None:
                raise UnsupportedOpError(f"no mapping for ATen op {key}", where=c.where)
            try:
                c.env[node.name] = handler(c, args, kwargs)
            except UnsupportedOpError:
                raise
            except GraphError as err:
                raise GraphError(err.message, where=c.where) from None
        elif node.op == "output":
            outs = c.arg(node.args[0])
            outs = [outs] if isinstance(outs, str) else list(outs)
            named = []
            for o in outs:
                if o in g.inputs or o in g.params:
                    o = c.b.node("Identity", [o], None, {}, name=c.b.unique("output"))[0]
                named.append(o)
            g.set_outputs(named)
        elif node.op == "get_attr":
            raise UnsupportedOpError("get_attr nodes (submodules as values)", where=c.where)
    g.meta.update({"format": "torch", "module": label})
    return g.verify()
