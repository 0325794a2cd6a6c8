"""YAML layers: conveniences that expand into library ops plus named parameters.

Each layer is a function ``fn(ctx, inputs, out) -> out`` registered in ``LAYERS``. It reads its
arguments through ``ctx.args`` (typed getters that evaluate size expressions), declares
parameters with ``ctx.param`` (named ``<layer>.weight`` and so on) and emits ops with
``ctx.op``; the last op it emits writes the tensor ``out``. Every node carries
``meta["layer"]`` (the full layer name) and ``meta["layer_type"]``.

Parameter layouts: linear weights are ``[in, out]``; conv weights ``[out, in/groups, *kernel]``;
LSTM tensors follow ONNX (``W [1, 4H, in]``, ``R [1, 4H, H]``, ``B [1, 8H]``).
Initialisation: ``he`` for conv/linear weights, zeros for biases, ones/zeros for norm
scale/shift, ``normal(0.02)`` for embeddings, BatchNorm running statistics are buffers
(``trainable=False``).
"""

from __future__ import annotations

import difflib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sim.dtypes import canonical, is_float
from sim.errors import GraphError
from sim.frontends.expr import resolve
from sim.graph import Graph, ParamInfo, TensorSpec
from sim.graph.rewrite import GraphBuilder
from sim.ops.registry import has_op

_REQUIRED = object()


class Args:
    """A layer's arguments: typed getters that resolve expressions; unused keys are errors."""

    def __init__(self, raw: Mapping[str, Any], env: Mapping[str, Any], kind: str) -> None:
        self.raw = dict(raw)
        self.env = env
        self.kind = kind
        self.used: set[str] = set()

    def _get(self, key: str, default: Any, strict: bool) -> Any:
        self.used.add(key)
        if key not in self.raw or self.raw[key] is None:
            if default is _REQUIRED:
                close = difflib.get_close_matches(key, [k for k in self.raw if k != key], n=1)
                hint = f" (is {close[0]!r} a typo?)" if close else ""
                raise GraphError(f"layer {self.kind} needs argument {key!r}{hint}")
            return default
        try:
            return resolve(self.raw[key], self.env, strict)
        except GraphError as err:
            raise GraphError(f"argument {key!r}: {err.message}") from None

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def integer(self, key: str, default: Any = _REQUIRED) -> int:
        v = self._get(key, default, True)
        if isinstance(v, bool) or not isinstance(v, int | float) or float(v) != int(v):
            raise GraphError(f"argument {key!r} of layer {self.kind} must be a whole number, got {v!r}")
        return int(v)

    def number(self, key: str, default: Any = _REQUIRED) -> float:
        v = self._get(key, default, True)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise GraphError(f"argument {key!r} of layer {self.kind} must be a number, got {v!r}")
        return float(v)

    def flag(self, key: str, default: Any = _REQUIRED) -> bool:
        v = self._get(key, default, False)
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float) and v in (0, 1):
            return bool(v)
        raise GraphError(f"argument {key!r} of layer {self.kind} must be true or false, got {v!r}")

    def text(self, key: str, default: Any = _REQUIRED, choices: Sequence[str] | None = None) -> str:
        v = self._get(key, default, False)
        if not isinstance(v, str):
            raise GraphError(f"argument {key!r} of layer {self.kind} must be a name, got {v!r}")
        if choices is not None and v not in choices:
            raise GraphError(f"argument {key!r} of layer {self.kind} is {v!r}, expected one of "
                             f"{', '.join(choices)}")
        return v

    def integers(self, key: str, n: int, default: Any = _REQUIRED) -> list[int]:
        """``n`` whole numbers; a single number is repeated (``kernel: 3`` -> ``[3, 3]``)."""
        v = self._get(key, default, True)
        vals = v if isinstance(v, list) else [v] * n
        if len(vals) != n or any(isinstance(x, bool) or not isinstance(x, int) for x in vals):
            raise GraphError(f"argument {key!r} of layer {self.kind} must be a whole number or a list "
                             f"of {n}, got {v!r}")
        return [int(x) for x in vals]

    def any(self, key: str, default: Any = _REQUIRED) -> Any:
        """The argument resolved loosely (names stay names)."""
        return self._get(key, default, False)

    def unresolved(self, key: str, default: Any = _REQUIRED) -> Any:
        """The raw YAML value (lists of entries for ``residual``)."""
        self.used.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                raise GraphError(f"layer {self.kind} needs argument {key!r}")
            return default
        return self.raw[key]

    def check_unused(self, known: Sequence[str] = ()) -> None:
        extra = [k for k in self.raw if k not in self.used]
        if extra:
            cands = sorted(self.used | set(known))
            close = difflib.get_close_matches(extra[0], cands, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GraphError(
                f"unknown argument {extra[0]!r} for layer {self.kind}{hint}; it takes "
                f"{', '.join(cands) or 'no arguments'}"
            )


# (entries, input tensor, name prefix) -> output tensor; supplied by the YAML loader so that
# layers holding sub-graphs (``residual``) can expand entries in a nested scope.
ExpandFn = Callable[[list[Any], str, str, str], str]
LookupFn = Callable[[str], str]


class LayerContext:
    """What a layer expansion may do: read args, declare params, emit ops, nest layers."""

    def __init__(self, graph: Graph, name: str, kind: str, args: Args, *, dtype: str = "fp32",
                 expand: ExpandFn | None = None, lookup: LookupFn | None = None) -> None:
        self.graph = graph
        self.b = GraphBuilder(graph)
        self.name = name
        self.kind = kind
        self.args = args
        self.dtype = dtype
        self._expand = expand
        self._lookup = lookup

    # ------------------------------------------------------------------ building
    def spec(self, tensor: str) -> TensorSpec:
        return self.graph.tensors[tensor]

    def op(self, op: str, inputs: Sequence[str], out: str | None = None, suffix: str | None = None,
           **attrs: Any) -> str:
        """Emit one node. Its output is ``out`` (the layer's result) or ``<layer>.<suffix>``."""
        if out is None:
            out = self.graph.unique_name(f"{self.name}.{suffix or op.lower()}")
            node = out
        else:
            node = self.graph.unique_name(self.name)
        meta = {"layer": self.name, "layer_type": self.kind}
        return self.b.node(op, list(inputs), [out], attrs, name=node, meta=meta)[0]

    def param(self, suffix: str, shape: Sequence[int], init: str, dtype: str | None = None,
              trainable: bool = True, value: np.ndarray | None = None, **options: Any) -> str:
        """Declare parameter ``<layer>.<suffix>``."""
        name = f"{self.name}.{suffix}"
        if any(int(d) <= 0 for d in shape):
            raise GraphError(f"parameter {name!r} would have shape {list(shape)}")
        return self.b.param(name, TensorSpec(tuple(shape), dtype or self.dtype),
                            ParamInfo(init, trainable, dict(options)), value)

    def sub(self, suffix: str, kind: str, args: Mapping[str, Any]) -> LayerContext:
        """A nested layer ``<layer>.<suffix>`` with Python-given args."""
        return LayerContext(self.graph, f"{self.name}.{suffix}", kind, Args(args, {}, kind),
                            dtype=self.dtype, expand=self._expand, lookup=self._lookup)

    def call(self, kind: str, suffix: str, inputs: Sequence[str], out: str | None = None,
             **args: Any) -> str:
        """Expand nested layer ``kind`` named ``<layer>.<suffix>``; returns its output."""
        ctx = self.sub(suffix, kind, args)
        result = LAYERS[kind](ctx, list(inputs), out or ctx.name)
        ctx.args.check_unused()
        return result

    def expand(self, entries: list[Any], x: str, prefix: str, what: str) -> str:
        if self._expand is None:
            raise GraphError(f"layer {self.kind} cannot hold entries here")
        return self._expand(entries, x, prefix, what)

    def lookup(self, tensor: str) -> str:
        if self._lookup is not None:
            return self._lookup(tensor)
        if tensor not in self.graph.tensors:
            raise GraphError(f"tensor {tensor!r} is not defined")
        return tensor

    def float_dtype(self, x: str) -> str:
        d = self.spec(x).dtype
        return d if is_float(d) else self.dtype


LayerFn = Callable[[LayerContext, list[str], str], str]
LAYERS: dict[str, LayerFn] = {}


def layer(name: str) -> Callable[[LayerFn], LayerFn]:
    def deco(fn: LayerFn) -> LayerFn:
        LAYERS[name] = fn
        return fn

    return deco


def _one(inputs: list[str], kind: str) -> str:
    if len(inputs) != 1:
        raise GraphError(f"layer {kind} takes one input, got {len(inputs)}")
    return inputs[0]


# ---------------------------------------------------------------------- dense layers
@layer("linear")
def linear(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """y = x @ W + b with W ``[in, out]``; ``weight: <param>`` ties to an existing tensor,
    ``transpose: true`` uses it as ``[out, in]`` (a GPT-2 LM head sharing the embedding)."""
    a = ctx.args
    x = _one(inputs, "linear")
    xs = ctx.spec(x)
    in_f = xs.shape[-1]
    dtype = ctx.float_dtype(x)
    use_bias = a.flag("bias", True)
    transpose = a.flag("transpose", False)
    if a.has("weight"):
        w = ctx.lookup(str(a.unresolved("weight")))
        ws = ctx.spec(w)
        if ws.rank != 2 or ws.shape[1 if transpose else 0] != in_f:
            raise GraphError(f"tied weight {w!r} has shape {list(ws.shape)}, which does not take "
                             f"{in_f} input features{' (transposed)' if transpose else ''}")
        out_f = ws.shape[0 if transpose else 1]
        if a.has("out_features") and a.integer("out_features") != out_f:
            raise GraphError(f"out_features {a.integer('out_features')} differs from tied weight {w!r}")
    else:
        out_f = a.integer("out_features")
        shape = [out_f, in_f] if transpose else [in_f, out_f]
        w = ctx.param("weight", shape, "he", dtype, fan_in=in_f, fan_out=out_f)
    b = ctx.param("bias", [out_f], "zeros", dtype) if use_bias else None
    if b is None and not transpose:
        return ctx.op("MatMul", [x, w], out=out)
    # With a bias (or a transposed weight) the layer is one Gemm over the flattened rows, as
    # frameworks run it (cuBLASLt/oneDNN add the bias in the GEMM's epilogue): the bias add
    # costs no extra pass over the output. The reshapes around it are free views.
    lead = list(xs.shape[:-1])
    x2 = ctx.op("Reshape", [x], suffix="flat", shape=[math.prod(lead), in_f]) if xs.rank != 2 else x
    y2 = ctx.op("Gemm", [x2, w] + ([b] if b else []), out=out if xs.rank == 2 else None,
                suffix="gemm", transB=1 if transpose else 0)
    if xs.rank == 2:
        return y2
    return ctx.op("Reshape", [y2], out=out, shape=[*lead, out_f])


# ---------------------------------------------------------------------- convolution
def _conv_pads(padding: Any, k: list[int], s: list[int], d: list[int], spatial: Sequence[int],
               nd: int) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) for an int, a list, or same/valid/causal."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * nd)
        if padding == "causal":
            return [d[i] * (k[i] - 1) for i in range(nd)] + [0] * nd
        if padding == "same":
            begins, ends = [], []
            for i in range(nd):
                out = -(-spatial[i] // s[i])
                total = max((out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - spatial[i], 0)
                begins.append(total // 2)
                ends.append(total - total // 2)
            return begins + ends
        raise GraphError(f"padding {padding!r} is not one of same, valid, causal, or a number")
    if isinstance(padding, bool):
        raise GraphError(f"padding must be a number, a list, or same/valid/causal, got {padding!r}")
    if isinstance(padding, int):
        return [padding] * (2 * nd)
    if isinstance(padding, list) and all(isinstance(p, int) for p in padding):
        if len(padding) == nd:
            return list(padding) * 2
        if len(padding) == 2 * nd:
            return list(padding)
    raise GraphError(f"padding {padding!r} needs {nd} or {2 * nd} numbers")


def _conv(ctx: LayerContext, inputs: list[str], out: str, nd: int) -> str:
    a = ctx.args
    x = _one(inputs, ctx.kind)
    xs = ctx.spec(x)
    if xs.rank != nd + 2:
        raise GraphError(f"{ctx.kind} expects a rank-{nd + 2} input [N, C, ...], got {list(xs.shape)}")
    cin = xs.shape[1]
    cout = a.integer("out_channels")
    k = a.integers("kernel", nd)
    s = a.integers("stride", nd, 1)
    d = a.integers("dilation", nd, 1)
    g = a.integer("groups", 1)
    if cin % g or cout % g:
        raise GraphError(f"groups={g} does not divide in_channels {cin} and out_channels {cout}")
    pads = _conv_pads(a.any("padding", 0), k, s, d, xs.shape[2:], nd)
    dtype = ctx.float_dtype(x)
    w = ctx.param("weight", [cout, cin // g, *k], "he", dtype, fan_in=cin // g * math.prod(k))
    ins = [x, w]
    if a.flag("bias", True):
        ins.append(ctx.param("bias", [cout], "zeros", dtype))
    return ctx.op("Conv", ins, out=out, kernel_shape=k, strides=s, pads=pads, dilations=d, group=g)


@layer("conv2d")
def conv2d(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """2-D convolution on ``[N, C, H, W]``."""
    return _conv(ctx, inputs, out, 2)


@layer("conv1d")
def conv1d(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """1-D convolution on ``[N, C, L]``; ``padding: causal`` pads on the left only."""
    return _conv(ctx, inputs, out, 1)


# ---------------------------------------------------------------------- normalisation
@layer("batchnorm")
def batchnorm(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """BatchNormalization over channel axis 1; running statistics are buffers."""
    a = ctx.args
    x = _one(inputs, "batchnorm")
    c = ctx.spec(x).shape[1]
    dt = ctx.float_dtype(x)
    scale = ctx.param("weight", [c], "ones", dt)
    shift = ctx.param("bias", [c], "zeros", dt)
    mean = ctx.param("running_mean", [c], "zeros", dt, trainable=False)
    var = ctx.param("running_var", [c], "ones", dt, trainable=False)
    return ctx.op("BatchNormalization", [x, scale, shift, mean, var], out=out,
                  epsilon=a.number("eps", 1e-5), momentum=a.number("momentum", 0.9))


@layer("layernorm")
def layernorm(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """LayerNormalization over the last axis, with scale (and shift unless ``bias: false``)."""
    a = ctx.args
    x = _one(inputs, "layernorm")
    d = ctx.spec(x).shape[-1]
    dt = ctx.float_dtype(x)
    ins = [x, ctx.param("weight", [d], "ones", dt)]
    if a.flag("bias", True):
        ins.append(ctx.param("bias", [d], "zeros", dt))
    return ctx.op("LayerNormalization", ins, out=out, axis=-1, epsilon=a.number("eps", 1e-5))


@layer("rmsnorm")
def rmsnorm(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """RMSNormalization over the last axis, with a scale (Llama)."""
    a = ctx.args
    x = _one(inputs, "rmsnorm")
    d = ctx.spec(x).shape[-1]
    w = ctx.param("weight", [d], "ones", ctx.float_dtype(x))
    return ctx.op("RMSNormalization", [x, w], out=out, axis=-1, epsilon=a.number("eps", 1e-6))


# ---------------------------------------------------------------------- embeddings
@layer("embedding")
def embedding(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Token ids ``[...]`` -> vectors ``[..., dim]`` (Gather rows of a ``[vocab, dim]`` table)."""
    a = ctx.args
    ids = _one(inputs, "embedding")
    dtype = canonical(a.text("dtype", ctx.dtype))
    w = ctx.param("weight", [a.integer("vocab"), a.integer("dim")], "normal", dtype, std=0.02)
    return ctx.op("Gather", [w, ids], out=out, axis=0)


@layer("position_embedding")
def position_embedding(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Adds learned positions to ``[batch, seq, dim]``: the first ``seq`` rows of a
    ``[max_len, dim]`` table (GPT-2 ``wpe``, BERT ``position_embeddings``)."""
    a = ctx.args
    x = _one(inputs, "position_embedding")
    xs = ctx.spec(x)
    if xs.rank != 3:
        raise GraphError(f"position_embedding expects [batch, seq, dim], got {list(xs.shape)}")
    max_len = a.integer("max_len")
    if xs.shape[1] > max_len:
        raise GraphError(f"sequence length {xs.shape[1]} exceeds max_len {max_len}")
    w = ctx.param("weight", [max_len, xs.shape[2]], "normal", xs.dtype, std=0.02)
    if a.integer("kv_cache", 0) > 0:
        # with a KV cache the new tokens sit after the cached ones: rows cache_lens + i
        pos = ctx.op("Gather", [w, cache_positions(ctx, xs.shape[0], xs.shape[1])], suffix="rows",
                     axis=0)
        return ctx.op("Add", [x, pos], out=out)
    pos = ctx.op("Slice", [w], suffix="slice", starts=[0], ends=[xs.shape[1]], axes=[0], steps=[1])
    return ctx.op("Add", [x, pos], out=out)


# ---------------------------------------------------------------------- attention
def _rotary_cache(ctx: LayerContext, seq: int, rot_dim: int, base: float, dtype: str) -> tuple[str, str]:
    """Shared ``rotary.cos`` / ``rotary.sin`` buffers ``[seq, rot_dim/2]`` (one per graph)."""
    g = ctx.graph
    cos_name, sin_name = f"rotary.cos_{seq}x{rot_dim}", f"rotary.sin_{seq}x{rot_dim}"
    if cos_name not in g.params:
        inv = 1.0 / (base ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim))
        ang = np.outer(np.arange(seq, dtype=np.float64), inv)
        ctx.b.constant(cos_name, np.cos(ang), dtype)
        ctx.b.constant(sin_name, np.sin(ang), dtype)
    return cos_name, sin_name


def _rotary_positions(ctx: LayerContext, batch: int, seq: int) -> str:
    g = ctx.graph
    name = f"rotary.positions_{batch}x{seq}"
    if name not in g.params:
        pos = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()
        ctx.b.constant(name, pos, "int64")
    return name


CACHE_LENS = "cache_lens"


def cache_lens(ctx: LayerContext, batch: int) -> str:
    """Graph input ``cache_lens`` [batch] (int64): tokens already in each sequence's KV cache,
    which is also where this step's keys and values are written (one per graph)."""
    g = ctx.graph
    if CACHE_LENS not in g.tensors:
        ctx.b.input(CACHE_LENS, TensorSpec((batch,), "int64"))
    spec = g.tensors[CACHE_LENS]
    if spec.shape != (batch,):
        raise GraphError(f"{CACHE_LENS} is {list(spec.shape)}, this layer's batch is {batch}")
    return CACHE_LENS


def cache_positions(ctx: LayerContext, batch: int, seq: int) -> str:
    """``cache_lens[:, None] + arange(seq)`` [batch, seq]: absolute positions of the new tokens
    (shared by every layer of the graph)."""
    g = ctx.graph
    name = f"kv.positions_{batch}x{seq}"
    if name not in g.tensors:
        lens = cache_lens(ctx, batch)
        ar = f"kv.arange_{seq}"
        ctx.b.constant(ar, np.arange(seq, dtype=np.int64)[None, :], "int64")
        col = ctx.b.node("Unsqueeze", [lens], ["kv.lens_col"], {"axes": [1]}, name="kv.lens_col")[0]
        ctx.b.node("Add", [col, ar], [name], name=name)
    return name


def _int_const(g: Graph, name: str, value: list[int]) -> str:
    return GraphBuilder(g).constant(name, np.asarray(value, dtype=np.int64), "int64")


def _total_lens(ctx: LayerContext, batch: int, seq: int) -> str:
    """``cache_lens + seq`` [batch]: valid keys per sequence after this step's append."""
    g = ctx.graph
    name = f"kv.total_lens_{seq}"
    if name not in g.tensors:
        ctx.b.node("Add", [cache_lens(ctx, batch), _int_const(g, f"kv.seq_{seq}", [seq])], [name],
                   name=name)
    return name


def _kv_heads(a: Args, heads: int) -> int:
    """``kv_heads`` (alias ``n_kv_heads``), default ``heads``."""
    if a.has("kv_heads") and a.has("n_kv_heads"):
        raise GraphError("give kv_heads or n_kv_heads, not both")
    return a.integer("n_kv_heads") if a.has("n_kv_heads") else a.integer("kv_heads", heads)


@layer("attention")
def attention(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Multi-head self-attention on ``[batch, seq, dim]``: q/k/v projections, heads split by
    Reshape+Transpose, the fused ``Attention`` op (``causal``), heads merged, output projection.
    ``kv_heads`` < ``heads`` gives grouped-query attention; ``rotary: true`` applies
    ``RotaryEmbedding`` to q and k. An optional second input is an additive attention mask.
    ``impl: unfused`` spells the core out with the scores materialised (``_unfused_attention``)
    and ``dropout: p`` then drops the attention probabilities (training mode)."""
    a = ctx.args
    if len(inputs) not in (1, 2):
        raise GraphError(f"attention takes x and an optional mask, got {len(inputs)} inputs")
    x = inputs[0]
    xs = ctx.spec(x)
    if xs.rank != 3:
        raise GraphError(f"attention expects [batch, seq, dim], got {list(xs.shape)}")
    bsz, seq, dim = xs.shape
    heads = a.integer("heads")
    kv_heads = _kv_heads(a, heads)
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise GraphError(f"heads ({heads}) must be a positive multiple of kv_heads ({kv_heads})")
    if not a.has("head_dim") and dim % heads:
        raise GraphError(f"dim {dim} is not divisible by heads {heads}; give head_dim")
    hd = a.integer("head_dim", dim // heads)
    bias = a.flag("bias", True)
    causal = a.flag("causal", False)
    rotary = a.flag("rotary", False)
    base = a.number("rotary_base", 10000.0)
    kv_cache = a.integer("kv_cache", 0)
    if kv_cache < 0 or 0 < kv_cache < seq:
        raise GraphError(f"kv_cache {kv_cache} must be 0 (no cache) or at least seq ({seq})")
    impl = a.text("impl", "fused", choices=("auto", "fused", "unfused"))
    p_drop = a.number("dropout", 0.0)
    if impl == "auto":
        # the workload leaves the kernel to the hardware (``sim.load(..., target_attention=)``);
        # unresolved it is the fused op, whose flash-style kernels drop the probabilities inside
        # the kernel: that dropout is neither timed nor executed here
        impl, p_drop = "fused", 0.0
    if kv_cache and (impl == "unfused" or p_drop):
        raise GraphError("attention with kv_cache is the fused op without dropout (impl: fused, dropout: 0)")

    def heads_of(t: str, n: int, tag: str) -> str:
        r = ctx.op("Reshape", [t], suffix=f"{tag}_split", shape=[bsz, seq, n, hd])
        return ctx.op("Transpose", [r], suffix=f"{tag}_heads", perm=[0, 2, 1, 3])

    q = heads_of(ctx.call("linear", "q", [x], out_features=heads * hd, bias=bias), heads, "q")
    k = heads_of(ctx.call("linear", "k", [x], out_features=kv_heads * hd, bias=bias), kv_heads, "k")
    v = heads_of(ctx.call("linear", "v", [x], out_features=kv_heads * hd, bias=bias), kv_heads, "v")
    if rotary:
        cos, sin = _rotary_cache(ctx, kv_cache or seq, hd, base, ctx.float_dtype(x))
        pos = cache_positions(ctx, bsz, seq) if kv_cache else _rotary_positions(ctx, bsz, seq)
        q = ctx.op("RotaryEmbedding", [q, cos, sin, pos], suffix="q_rope")
        k = ctx.op("RotaryEmbedding", [k, cos, sin, pos], suffix="k_rope")
    if kv_cache:
        if len(inputs) == 2:
            raise GraphError("attention with kv_cache takes no mask (the cache lengths mask it)")
        return _cached_attention(ctx, q, k, v, out, kv_cache, causal, bias, dim)
    mask = inputs[1] if len(inputs) == 2 else None
    if impl == "unfused":
        o = _unfused_attention(ctx, q, k, v, mask, causal, 1.0 / math.sqrt(hd), p_drop)
    else:
        if p_drop:
            raise GraphError(f"attention dropout {p_drop:g} needs impl: unfused (the fused Attention op has "
                             "no dropout); set it to 0, or the attention to auto (flash kernels drop inside "
                             "the kernel, untimed)")
        att_in = [q, k, v] + ([mask] if mask else [])
        o = ctx.op("Attention", att_in, suffix="sdpa", is_causal=int(causal), scale=1.0 / math.sqrt(hd))
    o = ctx.op("Transpose", [o], suffix="merge", perm=[0, 2, 1, 3])
    o = ctx.op("Reshape", [o], suffix="concat", shape=[bsz, seq, heads * hd])
    return ctx.call("linear", "o", [o], out=out, out_features=dim, bias=bias)


def _train_dropout(ctx: LayerContext, x: str, ratio: float, suffix: str) -> str:
    """``Dropout`` of ``x`` (seeded by the node's name), or ``x`` when ``ratio`` is 0: the
    identity at inference, dropping once ``training_graph`` puts the step in training mode."""
    if not ratio:
        return x
    if not 0.0 < ratio < 1.0:
        raise GraphError(f"dropout ratio must be in [0, 1), got {ratio}")
    seed = zlib.crc32(f"{ctx.name}.{suffix}".encode()) & 0x7FFFFFFF
    return ctx.op("Dropout", [x], suffix=suffix, ratio=float(ratio), seed=seed)


def _unfused_attention(ctx: LayerContext, q: str, k: str, v: str, mask: str | None, causal: bool,
                       scale: float, p_drop: float) -> str:
    """Attention with the scores materialised, as Megatron-LM ran it before fused (flash)
    kernels: ``q`` scaled, ``MatMul(q, k^T)`` -> [batch, heads, seq, seq], the causal (and
    any given) additive mask, ``Softmax``, ``Dropout`` of the probabilities, ``MatMul(p, v)``.
    Needs as many key/value heads as query heads."""
    g = ctx.graph
    bsz, heads, seq, _ = ctx.spec(q).shape
    if ctx.spec(k).shape[1] != heads:
        raise GraphError("attention impl: unfused needs kv_heads == heads")
    dt = ctx.float_dtype(q)
    sname = f"{ctx.name}.scale"
    ctx.b.param(sname, TensorSpec((), dt), ParamInfo("constant", False), np.array(scale))
    qs = ctx.op("Mul", [q, sname], suffix="q_scaled")
    kt = ctx.op("Transpose", [k], suffix="k_t", perm=[0, 1, 3, 2])
    s = ctx.op("MatMul", [qs, kt], suffix="scores")
    if causal:
        mname = f"causal_mask_{seq}"
        if mname not in g.params:
            tri = np.triu(np.full((seq, seq), -1e9, dtype=np.float64), k=1)
            ctx.b.constant(mname, tri, dt)
        s = ctx.op("Add", [s, mname], suffix="masked")
    if mask:
        s = ctx.op("Add", [s, mask], suffix="user_masked")
    p = ctx.op("Softmax", [s], suffix="probs", axis=-1)
    p = _train_dropout(ctx, p, p_drop, "attn_dropout")
    return ctx.op("MatMul", [p, v], suffix="context")


def _cached_attention(ctx: LayerContext, q: str, k: str, v: str, out: str, kv_cache: int,
                      causal: bool, bias: bool, dim: int) -> str:
    """Attention over a contiguous KV cache, in ONNX opset-24 form: graph inputs
    ``<layer>.past_key`` / ``<layer>.past_value`` [batch, kv_heads, kv_cache, head_dim] hold the
    cache; ``TensorScatter`` writes this step's keys/values at ``cache_lens`` (giving
    ``<layer>.present_key`` / ``.present_value``, listed in ``graph.meta["kv_cache"]``), and
    ``Attention`` reads the first ``cache_lens + seq`` keys of each sequence
    (``nonpad_kv_seqlen``), causally aligned at the end."""
    g = ctx.graph
    bsz, kvh, seq, hd = ctx.spec(k).shape
    heads = ctx.spec(q).shape[1]
    lens = cache_lens(ctx, bsz)
    spec = TensorSpec((bsz, kvh, kv_cache, hd), ctx.spec(k).dtype)
    past_k = ctx.b.input(f"{ctx.name}.past_key", spec)
    past_v = ctx.b.input(f"{ctx.name}.past_value", spec)
    pres_k = ctx.op("TensorScatter", [past_k, k, lens], out=f"{ctx.name}.present_key", axis=2)
    pres_v = ctx.op("TensorScatter", [past_v, v, lens], out=f"{ctx.name}.present_value", axis=2)
    g.meta.setdefault("kv_cache", []).append((past_k, pres_k, past_v, pres_v))
    total = _total_lens(ctx, bsz, seq)
    o = ctx.op("Attention", [q, pres_k, pres_v, "", "", "", total], suffix="sdpa",
               is_causal=int(causal), scale=1.0 / math.sqrt(hd))
    o = ctx.op("Transpose", [o], suffix="merge", perm=[0, 2, 1, 3])
    o = ctx.op("Reshape", [o], suffix="concat", shape=[bsz, seq, heads * hd])
    return ctx.call("linear", "o", [o], out=out, out_features=dim, bias=bias)


@layer("mlp")
def mlp(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Position-wise feed-forward: ``fc1 -> act -> fc2`` (``act``: gelu, gelu_tanh, relu, silu),
    or for ``act: swiglu`` ``down(silu(gate(x)) * up(x))`` (Llama)."""
    a = ctx.args
    x = _one(inputs, "mlp")
    d = ctx.spec(x).shape[-1]
    hidden = a.integer("hidden")
    out_f = a.integer("out_features", d)
    act = a.text("act", "gelu", choices=("gelu", "gelu_tanh", "relu", "silu", "swiglu"))
    bias = a.flag("bias", True)
    if act == "swiglu":
        gate = ctx.call("linear", "gate", [x], out_features=hidden, bias=bias)
        up = ctx.call("linear", "up", [x], out_features=hidden, bias=bias)
        h = ctx.op("Mul", [_silu(ctx, gate, "act"), up], suffix="glu")
        return ctx.call("linear", "down", [h], out=out, out_features=out_f, bias=bias)
    h = ctx.call("linear", "fc1", [x], out_features=hidden, bias=bias)
    h = _activation(ctx, act, h, None)
    return ctx.call("linear", "fc2", [h], out=out, out_features=out_f, bias=bias)


@layer("moe")
def moe(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Mixture-of-experts FFN (Mixtral): a router ``linear`` to ``experts`` logits, then the
    ``MoE`` op sending each token to its ``top_k`` experts (softmax over the chosen k), each
    expert a SwiGLU (``act: swiglu``, weights ``w1`` gate, ``w3`` up, ``w2`` down) or a plain
    ``act`` MLP (relu, gelu, silu) of width ``hidden``."""
    a = ctx.args
    x = _one(inputs, "moe")
    d = ctx.spec(x).shape[-1]
    hidden = a.integer("hidden")
    n_exp = a.integer("experts")
    k = a.integer("top_k", 2)
    act = a.text("act", "swiglu", choices=("swiglu", "relu", "gelu", "silu"))
    shards = a.integer("expert_shards", 1)
    if n_exp < 1 or not 1 <= k <= n_exp:
        raise GraphError(f"moe needs experts >= 1 and 1 <= top_k <= experts, got {n_exp} and {k}")
    if shards < 1 or n_exp % shards:
        raise GraphError(f"expert_shards {shards} does not divide the {n_exp} experts")
    local = n_exp // shards
    dt = ctx.float_dtype(x)
    router = ctx.call("linear", "router", [x], out_features=n_exp, bias=False)
    w1 = ctx.param("w1", [local, d, hidden], "he", dt, fan_in=d, fan_out=hidden)
    w2 = ctx.param("w2", [local, hidden, d], "he", dt, fan_in=hidden, fan_out=d)
    ins = [x, router, w1, "", w2, ""]
    if act == "swiglu":
        ins += [ctx.param("w3", [local, d, hidden], "he", dt, fan_in=d, fan_out=hidden)]
    attrs: dict[str, Any] = {"k": k, "normalize_routing_weights": 1,
                             "activation_type": "silu" if act == "swiglu" else act}
    if shards > 1:
        attrs["global_experts"] = n_exp
    return ctx.op("MoE", ins, out=out, **attrs)


@layer("transformer_block")
def transformer_block(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Attention + MLP (or ``experts: E`` with ``top_k``: a ``moe`` FFN) with residual adds.
    ``prenorm: true`` (GPT-2, Llama):
    ``h = x + attn(norm1(x)); y = h + mlp(norm2(h))``; ``prenorm: false`` (BERT):
    ``h = norm1(x + attn(x)); y = norm2(h + mlp(h))``. ``dropout: p`` drops the attention and
    MLP outputs before each residual add (training mode); ``attention: unfused`` materialises
    the scores (``attn_dropout: p`` then drops the probabilities), ``fused`` (default) is one
    ``Attention`` op, ``auto`` whichever the target GPU's ``attention_kernel`` runs (unfused
    for ``materialized``, else fused with ``attn_dropout`` left inside the kernel, untimed)."""
    a = ctx.args
    x = _one(inputs, "transformer_block")
    d = ctx.spec(x).shape[-1]
    norm = a.text("norm", "layernorm", choices=("layernorm", "rmsnorm"))
    eps = a.number("eps", 1e-5)
    prenorm = a.flag("prenorm", True)
    bias = a.flag("bias", True)
    att: dict[str, Any] = {"heads": a.integer("heads"), "kv_heads": _kv_heads(a, a.integer("heads")),
                           "causal": a.flag("causal", False), "bias": bias,
                           "rotary": a.flag("rotary", False),
                           "rotary_base": a.number("rotary_base", 10000.0),
                           "kv_cache": a.integer("kv_cache", 0),
                           "impl": a.text("attention", "fused", choices=("auto", "fused", "unfused")),
                           "dropout": a.number("attn_dropout", 0.0)}
    p_hidden = a.number("dropout", 0.0)
    if a.has("head_dim"):
        att["head_dim"] = a.integer("head_dim")
    ff: dict[str, Any] = {"hidden": a.integer("hidden", 4 * d), "act": a.text("act", "gelu"), "bias": bias}
    ffn = "mlp"
    if a.integer("experts", 0):
        ffn = "moe"
        ff = {"hidden": ff["hidden"], "act": ff["act"], "experts": a.integer("experts"),
              "top_k": a.integer("top_k", 2), "expert_shards": a.integer("expert_shards", 1)}
    nargs: dict[str, Any] = {"eps": eps}
    if norm == "layernorm":
        nargs["bias"] = a.flag("norm_bias", True)
    if prenorm:
        h = ctx.call("attention", "attn", [ctx.call(norm, "norm1", [x], **nargs)], **att)
        h = ctx.op("Add", [x, _train_dropout(ctx, h, p_hidden, "attn_out_dropout")], suffix="add1")
        m = ctx.call(ffn, ffn, [ctx.call(norm, "norm2", [h], **nargs)], **ff)
        return ctx.op("Add", [h, _train_dropout(ctx, m, p_hidden, "mlp_out_dropout")], out=out)
    a_out = _train_dropout(ctx, ctx.call("attention", "attn", [x], **att), p_hidden, "attn_out_dropout")
    h = ctx.op("Add", [x, a_out], suffix="add1")
    h = ctx.call(norm, "norm1", [h], **nargs)
    m = ctx.op("Add", [h, _train_dropout(ctx, ctx.call(ffn, ffn, [h], **ff), p_hidden, "mlp_out_dropout")],
               suffix="add2")
    return ctx.call(norm, "norm2", [m], out=out, **nargs)


# ---------------------------------------------------------------------- recurrent
@layer("lstm")
def lstm(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """A stack of ``layers`` unidirectional LSTMs (the ONNX LSTM op) on ``[batch, seq, features]``
    -> ``[batch, seq, hidden]``; zero initial state. Params per layer ``l``: ``W_l``, ``R_l``,
    ``B_l`` in ONNX layout (gates i, o, f, c; B holds both input and recurrent biases)."""
    a = ctx.args
    x = _one(inputs, "lstm")
    xs = ctx.spec(x)
    if xs.rank != 3:
        raise GraphError(f"lstm expects [batch, seq, features], got {list(xs.shape)}")
    bsz, seq, feat = xs.shape
    hidden = a.integer("hidden")
    n_layers = a.integer("layers", 1)
    if n_layers < 1 or hidden < 1:
        raise GraphError(f"lstm needs layers >= 1 and hidden >= 1, got {n_layers} and {hidden}")
    dt = ctx.float_dtype(x)
    h = x
    in_f = feat
    for layer_i in range(n_layers):
        w = ctx.param(f"W_l{layer_i}", [1, 4 * hidden, in_f], "lstm", dt, hidden=hidden)
        r = ctx.param(f"R_l{layer_i}", [1, 4 * hidden, hidden], "lstm", dt, hidden=hidden)
        b = ctx.param(f"B_l{layer_i}", [1, 8 * hidden], "lstm", dt, hidden=hidden)
        in_f = hidden
        # layout 1: X [batch, seq, in] -> Y [batch, seq, 1, hidden]
        y = ctx.op("LSTM", [h, w, r, b], suffix=f"l{layer_i}", hidden_size=hidden, layout=1)
        last = layer_i == n_layers - 1
        h = ctx.op("Reshape", [y], out=out if last else None, suffix=f"l{layer_i}_out",
                   shape=[bsz, seq, hidden])
    return h


# ---------------------------------------------------------------------- structure
@layer("residual")
def residual(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """``act(branch(x) + shortcut(x))``: ``branch`` and ``shortcut`` are lists of entries
    (expanded with names under this layer); no shortcut (or one whose entries are all skipped
    by ``if``) is the identity; ``act`` is an optional activation after the add."""
    a = ctx.args
    x = _one(inputs, "residual")
    branch = a.unresolved("branch")
    shortcut = a.unresolved("shortcut", None)
    act = a.any("act", None)
    if not isinstance(branch, list) or not branch:
        raise GraphError("residual needs a non-empty list of entries in 'branch'")
    if shortcut is not None and not isinstance(shortcut, list):
        raise GraphError("residual 'shortcut' must be a list of entries")
    y = ctx.expand(branch, x, f"{ctx.name}.", "branch")
    s = ctx.expand(shortcut, x, f"{ctx.name}.", "shortcut") if shortcut else x
    if act is None:
        return ctx.op("Add", [y, s], out=out)
    if not isinstance(act, str) or act not in _ACTS:
        raise GraphError(f"residual act {act!r} is not one of {', '.join(sorted(_ACTS))}")
    return _activation(ctx, act, ctx.op("Add", [y, s], suffix="add"), out)


def _pool(ctx: LayerContext, inputs: list[str], out: str, op: str) -> str:
    a = ctx.args
    x = _one(inputs, ctx.kind)
    xs = ctx.spec(x)
    nd = xs.rank - 2
    if nd < 1:
        raise GraphError(f"{ctx.kind} expects [N, C, ...], got {list(xs.shape)}")
    k = a.integers("kernel", nd)
    s = a.integers("stride", nd, k)
    pads = _conv_pads(a.any("padding", 0), k, s, [1] * nd, xs.shape[2:], nd)
    attrs: dict[str, Any] = {"kernel_shape": k, "strides": s, "pads": pads,
                             "ceil_mode": int(a.flag("ceil_mode", False))}
    if op == "AveragePool":
        attrs["count_include_pad"] = int(a.flag("count_include_pad", False))
    return ctx.op(op, [x], out=out, **attrs)


@layer("maxpool")
def maxpool(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """MaxPool: ``kernel``, ``stride`` (default kernel), ``padding``, ``ceil_mode``."""
    return _pool(ctx, inputs, out, "MaxPool")


@layer("avgpool")
def avgpool(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """AveragePool: ``kernel``, ``stride`` (default kernel), ``padding``, ``count_include_pad``."""
    return _pool(ctx, inputs, out, "AveragePool")


@layer("global_avgpool")
def global_avgpool(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """GlobalAveragePool ``[N, C, ...]`` -> ``[N, C, 1, ...]``."""
    return ctx.op("GlobalAveragePool", [_one(inputs, "global_avgpool")], out=out)


@layer("flatten")
def flatten(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Flatten to 2-D at ``axis`` (default 1)."""
    return ctx.op("Flatten", [_one(inputs, "flatten")], out=out, axis=ctx.args.integer("axis", 1))


@layer("last_position")
def last_position(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """The last position of ``[batch, seq, dim]``, ``[batch, 1, dim]``: what an inference
    engine's prefill feeds its LM head, which needs only the next token's logits (TensorRT-LLM's
    ``gather_last_token_logits``)."""
    x = _one(inputs, "last_position")
    xs = ctx.spec(x)
    if xs.rank != 3:
        raise GraphError(f"last_position expects [batch, seq, dim], got {list(xs.shape)}")
    s = xs.shape[1]
    return ctx.op("Slice", [x], out=out, starts=[s - 1], ends=[s], axes=[1], steps=[1])


@layer("dropout")
def dropout(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Dropout with ``rate`` (the identity at inference)."""
    x = _one(inputs, "dropout")
    rate = ctx.args.number("rate", 0.5)
    if not 0.0 <= rate < 1.0:
        raise GraphError(f"dropout rate {rate} is not in [0, 1)")
    if has_op("Dropout"):
        return ctx.op("Dropout", [x], out=out, ratio=rate)
    return ctx.op("Identity", [x], out=out)


# ---------------------------------------------------------------------- activations
def _silu(ctx: LayerContext, x: str, suffix: str, out: str | None = None) -> str:
    s = ctx.op("Sigmoid", [x], suffix=f"{suffix}_sigmoid")
    return ctx.op("Mul", [x, s], out=out, suffix=suffix)


_ACTS = {"relu", "gelu", "gelu_tanh", "tanh", "sigmoid", "silu"}


def _activation(ctx: LayerContext, act: str, x: str, out: str | None) -> str:
    if act == "relu":
        return ctx.op("Relu", [x], out=out, suffix="relu")
    if act == "gelu":
        return ctx.op("Gelu", [x], out=out, suffix="gelu")
    if act == "gelu_tanh":
        return ctx.op("Gelu", [x], out=out, suffix="gelu", approximate="tanh")
    if act == "tanh":
        return ctx.op("Tanh", [x], out=out, suffix="tanh")
    if act == "sigmoid":
        return ctx.op("Sigmoid", [x], out=out, suffix="sigmoid")
    if act == "silu":
        return _silu(ctx, x, "silu", out)
    raise GraphError(f"unknown activation {act!r}")


def _act_layer(act: str) -> LayerFn:
    def fn(ctx: LayerContext, inputs: list[str], out: str) -> str:
        return _activation(ctx, act, _one(inputs, act), out)

    fn.__doc__ = f"Elementwise {act}."
    return fn


for _act in ("relu", "tanh", "sigmoid", "silu"):
    LAYERS[_act] = _act_layer(_act)


@layer("gelu")
def gelu(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Gelu; ``approximate: tanh`` for the tanh form (GPT-2)."""
    approx = ctx.args.text("approximate", "none", choices=("none", "tanh"))
    return _activation(ctx, "gelu_tanh" if approx == "tanh" else "gelu", _one(inputs, "gelu"), out)


@layer("softmax")
def softmax(ctx: LayerContext, inputs: list[str], out: str) -> str:
    """Softmax along ``axis`` (default -1)."""
    return ctx.op("Softmax", [_one(inputs, "softmax")], out=out, axis=ctx.args.integer("axis", -1))
