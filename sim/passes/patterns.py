"""Pattern rewrites: the exporter's decomposed subgraphs back into the library's fused ops.

``torch.onnx.export`` (and other exporters) write what a framework runs as one kernel as a
chain of primitive ONNX ops. ``rewrite(graph, patterns)`` finds these chains and replaces each
with one op whose kernel computes the same values:

* ``attention``: ``MatMul(Q, K^T) -> [Div(c) | Mul(c)] -> [Add(mask) | Where(keep, ., fill)]
  -> Softmax(-1) -> MatMul(., V)`` on 4-D [batch, heads, seq, dim] tensors becomes
  ``Attention(Q, K, V[, mask], scale)`` (the fused SDPA / flash kernel); the Transpose that
  made K^T is folded into one that makes K, which GEMM kernels read as a strided operand.
  ``Where`` with a large negative constant ``fill`` (HF GPT-2's ``torch.where(causal_mask,
  w, finfo.min)``) is a boolean keep-mask; a constant mask that is exactly the causal one
  becomes ``is_causal=1`` (the kernel skips the masked half). The scale may also sit on Q
  and K^T as ``Mul(Q, sqrt s)`` and ``Mul(K^T, sqrt s)``: how ``torch.onnx.export`` writes
  ``F.scaled_dot_product_attention``;
* ``sdpa``: only that last form. It records that the model called
  ``scaled_dot_product_attention``, which eager PyTorch runs as one fused kernel, so the
  eager runtime rewrites it too (and leaves hand-written attention as its ops);
* ``gelu``: ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (any order of the two products, ``x / sqrt 2``
  or ``x * (1 / sqrt 2)``) becomes ``Gelu(x)``; ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
  x^3)))`` becomes ``Gelu(x, approximate="tanh")``; ``gelu_erf`` is the first form only (what
  ``nn.GELU()`` exports; a tanh formula in an export below opset 20 may be ``nn.GELU(
  approximate="tanh")`` or one written in Python, as HF's ``gelu_new`` for GPT-2 is, which
  eager PyTorch runs as its eight elementwise ops);
* ``layernorm``: ``ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div ->
  Mul(gamma) [-> Add(beta)]`` over the last axis becomes ``LayerNormalization``;
* ``fold``: an op whose inputs are all small constants becomes a Constant (the exporter's
  ``Pow(d, 0.5)`` of a 1/sqrt(d) scale; a framework computes it on the host);
* ``bias``: ``MatMul(x, W) + b`` with a 1-D ``b`` becomes ``Gemm(x, W, b)`` (2-D ``x``), or
  ``Reshape -> Gemm -> Reshape`` for a [batch, seq, k] ``x`` (views around one GEMM with its
  bias in the epilogue, as ``nn.Linear`` runs ``addmm``);
* ``conv_bias`` goes the other way: ``Conv(x, W, b)`` (and ``ConvTranspose``) becomes
  ``Conv(x, W)`` then ``Add`` of ``b`` viewed as [C, 1, ...], two kernels, as PyTorch eager
  runs a cuDNN convolution: ``at::_convolution`` calls ``cudnn_convolution`` without the bias
  and then ``output.add_(reshape_bias(...))`` (pytorch/pytorch
  ``aten/src/ATen/native/Convolution.cpp``, ``case ConvBackend::Cudnn``). An exporter folds
  an eval-mode BatchNorm into its convolution's weights and bias, so this is also where the
  export's missing BatchNorm kernels come back as the bias adds that replace them.

A chain is rewritten only when every intermediate tensor is used inside the chain alone and
is no graph output, so values downstream are unchanged (up to fp32 rounding of the fused
kernel's order of operations). Replacement ops keep the chain's output tensor names; new
nodes are named after the node they replace.

>>> from sim.graph import Graph, TensorSpec
>>> g = Graph(); _ = g.add_input("x", TensorSpec((2, 8)))
>>> _ = g.add_node("Constant", [], ["r2"], {"value": np.array(2 ** 0.5, np.float32)})
>>> _ = g.add_node("Constant", [], ["one"], {"value": np.array(1.0, np.float32)})
>>> _ = g.add_node("Constant", [], ["half"], {"value": np.array(0.5, np.float32)})
>>> _ = g.add_node("Div", ["x", "r2"], ["u"]); _ = g.add_node("Erf", ["u"], ["e"])
>>> _ = g.add_node("Add", ["e", "one"], ["a"]); _ = g.add_node("Mul", ["x", "a"], ["m"])
>>> _ = g.add_node("Mul", ["m", "half"], ["y"]); g.set_outputs(["y"])
>>> [n.op for n in rewrite(g)]
['Gelu']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter

PATTERNS = ("attention", "gelu", "layernorm", "bias", "fold")  # the fusing rewrites; "conv_bias" splits


@dataclass
class Match:
    """Nodes to drop and the nodes (op, inputs, outputs, attrs, name) that replace them."""

    drop: list[Node]
    add: list[tuple[str, list[str], list[str], dict[str, Any], str]] = field(default_factory=list)


# ------------------------------------------------------------------------------ helpers
def constant(graph: Graph, t: str, depth: int = 3, limit: int = 64) -> np.ndarray | None:
    """The value of ``t`` if it is constant: an initializer, a Constant node, or an op of up
    to ``depth`` levels over such (the exporter writes ``sqrt(d)`` as ``Pow(d, 0.5)``) whose
    arguments hold at most ``limit`` elements in all."""
    if t in graph.initializers:
        return np.asarray(graph.initializers[t])
    p = graph.producer(t)
    if p is None:
        return None
    if p.op == "Constant" and not p.inputs:
        from sim.ops.generate import constant_value

        return np.asarray(constant_value(p.attrs))
    if depth <= 0 or not p.inputs or len(p.outputs) != 1 or p.op in ("RandomNormal", "RandomUniform"):
        return None
    args = [constant(graph, i, depth - 1, limit) if i else None for i in p.inputs]
    if any(a is None for a in args if a is not None) or any(a is None for a, i in zip(args, p.inputs) if i):
        return None
    if sum(a.size for a in args if a is not None) > limit:
        return None
    from sim.ops.registry import get_op

    return np.asarray(get_op(p.op).kernel(args, p.attrs)[0])


def scalar(graph: Graph, t: str) -> float | None:
    """The value of ``t`` if it is a one-element numeric constant (see ``constant``)."""
    a = constant(graph, t) if t else None
    if a is None or a.size != 1 or not np.issubdtype(a.dtype, np.number):
        return None
    return float(a.reshape(-1)[0])


def _close(v: float | None, want: float, rel: float = 1e-4) -> bool:
    return v is not None and abs(v - want) <= rel * abs(want)


def _only_user(graph: Graph, t: str) -> Node | None:
    """The single consumer of ``t`` when it has exactly one and is no graph output."""
    users = graph.consumers(t)
    return users[0] if len(users) == 1 and t not in graph.outputs else None


def _made_by(graph: Graph, t: str, op: str) -> Node | None:
    p = graph.producer(t)
    return p if p is not None and p.op == op else None


def _other(node: Node, t: str) -> str | None:
    """The other input of a binary node one of whose inputs is ``t``."""
    if len(node.inputs) != 2 or t not in node.inputs:
        return None
    a, b = node.inputs
    return b if a == t else a


def _constants_of(graph: Graph, nodes: Iterable[Node], keep: set[str]) -> list[Node]:
    """Nodes computing constants (Constant nodes and ops over them) used only by ``nodes`` or
    by each other: they go with them, unless they make a tensor in ``keep``."""
    names = {n.name for n in nodes}
    out: list[Node] = []
    grew = True
    while grew:
        grew = False
        for n in [*nodes, *out]:
            for t in n.inputs:
                p = graph.producer(t) if t else None
                if (p is None or p.name in names or t in keep or t in graph.outputs
                        or not all(c.name in names for c in graph.consumers(t))
                        or constant(graph, t, limit=1 << 20) is None):
                    continue
                names.add(p.name)
                out.append(p)
                grew = True
    return out


# ------------------------------------------------------------------------------ attention
@dataclass
class _Scores:
    """The chain from a softmax's input back to ``Q @ K^T``: its nodes, the mask it adds
    (None when causal or absent), whether that mask is causal, the scale, and whether the
    scale sits on Q and K^T as ``torch.onnx.export`` writes ``scaled_dot_product_attention``."""

    chain: list[Node]
    q: str
    kt: str
    qk: Node
    mask: str | None = None
    causal: bool = False
    scale: float = 1.0
    sdpa: bool = False


def _scaled_by(graph: Graph, node: Node | None, t: str) -> tuple[str, float] | None:
    """``(x, c)`` when ``t`` is ``Div(x, c)`` or ``Mul(x, c)`` / ``Mul(c, x)`` with a scalar
    constant ``c`` (a Div as ``1 / c``), used only once."""
    if node is None or node.op not in ("Div", "Mul") or _only_user(graph, t) is None:
        return None
    x, c = node.inputs[0], scalar(graph, node.inputs[1])
    if c is None and node.op == "Mul":
        x, c = node.inputs[1], scalar(graph, node.inputs[0])
    if c is None or c == 0:
        return None
    return x, (1.0 / c if node.op == "Div" else c)


def _mask_of(graph: Graph, sm: Node, chain: list[Node]) -> tuple[str, str | None, bool]:
    """Past an additive ``Add(scores, mask)`` or ``Where(keep, scores, fill)`` (fill a large
    negative constant): (the scores tensor, the mask, whether it is a boolean keep-mask)."""
    t = sm.inputs[0]
    node = graph.producer(t)
    if node is None or _only_user(graph, t) is not sm:
        return t, None, False
    if node.op == "Add":
        a, b = node.inputs
        inner = a if (pa := graph.producer(a)) is not None and pa.op in ("Div", "Mul", "MatMul") else b
        chain.append(node)
        return inner, (b if inner == a else a), False
    if node.op == "Where" and graph.tensors[node.inputs[0]].dtype == "bool":
        fill = scalar(graph, node.inputs[2])
        if fill is not None and fill <= -1e4:
            chain.append(node)
            return node.inputs[1], node.inputs[0], True
    return t, None, False


def _is_causal(graph: Graph, mask: str, keep: bool, sq: int, t: int) -> bool:
    """Whether a constant ``mask`` is the causal one for ``sq`` queries over ``t`` keys (query
    i sees keys j <= i + t - sq): True / 0 there, False / a large negative value elsewhere."""
    m = constant(graph, mask, depth=8, limit=1 << 24)
    if m is None or m.ndim < 2 or m.shape[-2:] != (sq, t) or any(d != 1 for d in m.shape[:-2]):
        return False
    m = m.reshape(sq, t)
    seen = np.arange(t)[None, :] <= np.arange(sq)[:, None] + (t - sq)
    if keep:
        return bool(np.array_equal(m.astype(bool), seen))
    return bool(np.all(m[seen] == 0) and np.all(m[~seen] <= -1e4))


def _scores(graph: Graph, sm: Node) -> _Scores | None:
    chain: list[Node] = []
    t, mask, keep = _mask_of(graph, sm, chain)
    scale = 1.0
    node = graph.producer(t)
    scaled = _scaled_by(graph, node, t)
    if scaled is not None and node is not None:
        chain.append(node)
        t, scale = scaled
        node = graph.producer(t)
    if node is None or node.op != "MatMul" or _only_user(graph, t) is None:
        return None
    chain.append(node)
    s = _Scores(chain, node.inputs[0], node.inputs[1], node, mask, scale=scale)
    mq, mk = graph.producer(s.q), graph.producer(s.kt)
    on_q, on_k = _scaled_by(graph, mq, s.q), _scaled_by(graph, mk, s.kt)
    if on_q is not None and on_k is not None and mq is not None and mk is not None and mq is not mk:
        # torch.onnx.export's scaled_dot_product_attention: Q and K^T each times sqrt(scale)
        chain += [mq, mk]
        (s.q, cq), (s.kt, ck) = on_q, on_k
        s.scale *= cq * ck
        s.sdpa = True
    if mask is not None:
        sq, tk = graph.tensors[sm.inputs[0]].shape[-2:]
        if _is_causal(graph, mask, keep, sq, tk):
            s.mask, s.causal = None, True
        elif not keep and graph.tensors[mask].dtype == "bool":
            return None
    return s


def _match_attention(graph: Graph, sm: Node, sdpa_only: bool = False) -> Match | None:
    if sm.op != "Softmax" or int(sm.attrs.get("axis", -1)) not in (-1, graph.tensors[sm.inputs[0]].rank - 1):
        return None
    pv = _only_user(graph, sm.outputs[0])
    if pv is None or pv.op != "MatMul" or pv.inputs[0] != sm.outputs[0]:
        return None
    s = _scores(graph, sm)
    if s is None or (sdpa_only and not s.sdpa):
        return None
    v = pv.inputs[1]
    if any(graph.tensors[x].rank != 4 for x in (s.q, s.kt, v)):
        return None
    match = Match([sm, pv, *s.chain])
    ktp = _made_by(graph, s.kt, "Transpose")
    if ktp is not None and graph.consumers(s.kt) == [match.drop[-1] if s.sdpa else s.qk]:
        # K^T = transpose(X, p1): K = transpose(X, p1 o [0, 1, 3, 2]); the old Transpose goes
        p1 = list(ktp.attrs.get("perm", [3, 2, 1, 0]))
        perm = [p1[i] for i in (0, 1, 3, 2)]
        k_in = ktp.inputs[0]
        match.drop.append(ktp)
        k_name = ktp.name
    else:
        perm, k_in, k_name = [0, 1, 3, 2], s.kt, graph.unique_name(f"{s.qk.name}.k")
    k = graph.unique_name(f"{sm.name}.k")
    match.add.append(("Transpose", [k_in], [k], {"perm": perm}, k_name))
    ins = [s.q, k, v] + ([s.mask] if s.mask is not None else [])
    attrs: dict[str, Any] = {"scale": float(s.scale), **({"is_causal": 1} if s.causal else {})}
    match.add.append(("Attention", ins, [pv.outputs[0]], attrs, graph.unique_name(f"{sm.name}.attention")))
    return match


def _match_sdpa(graph: Graph, sm: Node) -> Match | None:
    """Only what ``scaled_dot_product_attention`` exported (``_Scores.sdpa``): a model that
    called it runs one fused kernel in eager PyTorch too."""
    return _match_attention(graph, sm, sdpa_only=True)


# ------------------------------------------------------------------------------ gelu
def _product_tail(graph: Graph, a: str, x: str) -> tuple[Node, list[Node]] | None:
    """``x * 0.5 * a`` in any order of the two products, starting from ``a``: (the node that
    makes the result, every node of the tail)."""
    n1 = _only_user(graph, a)
    if n1 is None or n1.op != "Mul":
        return None
    o1 = _other(n1, a)
    if o1 is None:
        return None
    if o1 == x or _close(scalar(graph, o1), 0.5):
        n2 = _only_user(graph, n1.outputs[0])
        if n2 is None or n2.op != "Mul":
            return None
        o2 = _other(n2, n1.outputs[0])
        want_half = o1 == x
        if o2 is None or (want_half and not _close(scalar(graph, o2), 0.5)) or (not want_half and o2 != x):
            return None
        return n2, [n1, n2]
    h = _made_by(graph, o1, "Mul")
    if (h is not None and _only_user(graph, o1) is n1 and x in h.inputs
            and _close(scalar(graph, _other(h, x) or ""), 0.5)):
        return n1, [h, n1]
    return None


def _plus_one(graph: Graph, t: str) -> Node | None:
    add = _only_user(graph, t)
    if add is None or add.op != "Add" or not _close(scalar(graph, _other(add, t) or ""), 1.0):
        return None
    return add


def _match_gelu_erf(graph: Graph, erf: Node) -> Match | None:
    if erf.op != "Erf":
        return None
    u = _only_user(graph, erf.inputs[0]) and graph.producer(erf.inputs[0])
    if u is None or u.op not in ("Div", "Mul") or _only_user(graph, u.outputs[0]) is not erf:
        return None
    x = u.inputs[0]
    c = scalar(graph, u.inputs[1])
    if u.op == "Mul" and c is None:
        x, c = u.inputs[1], scalar(graph, u.inputs[0])
    if not (_close(c, 2 ** 0.5) if u.op == "Div" else _close(c, 2 ** -0.5)):
        return None
    add = _plus_one(graph, erf.outputs[0])
    tail = _product_tail(graph, add.outputs[0], x) if add is not None else None
    if add is None or tail is None:
        return None
    final, nodes = tail
    m = Match([u, erf, add, *nodes])
    m.add.append(("Gelu", [x], [final.outputs[0]], {}, graph.unique_name(f"{erf.name}.gelu")))
    return m


def _match_gelu_tanh(graph: Graph, th: Node) -> Match | None:
    if th.op != "Tanh":
        return None
    s = graph.producer(th.inputs[0])
    if s is None or s.op != "Mul" or _only_user(graph, th.inputs[0]) is not th:
        return None
    inner = next((i for i in s.inputs if not _close(scalar(graph, i), (2 / np.pi) ** 0.5)), None)
    if inner is None or inner == s.inputs[0] == s.inputs[1] or _only_user(graph, inner) is not s:
        return None
    add = _made_by(graph, inner, "Add")
    if add is None:
        return None
    for x, cube_t in (add.inputs, add.inputs[::-1]):
        cm = _made_by(graph, cube_t, "Mul")
        if cm is None or _only_user(graph, cube_t) is not add:
            continue
        pw_t = next((i for i in cm.inputs if _close(scalar(graph, i) if i else None, 0.044715)), None)
        pw = _made_by(graph, _other(cm, pw_t) or "", "Pow") if pw_t else None
        if pw is None or pw.inputs[0] != x or not _close(scalar(graph, pw.inputs[1]), 3.0):
            continue
        one = _plus_one(graph, th.outputs[0])
        tail = _product_tail(graph, one.outputs[0], x) if one is not None else None
        if one is None or tail is None:
            return None
        final, nodes = tail
        m = Match([pw, cm, add, s, th, one, *nodes])
        m.add.append(("Gelu", [x], [final.outputs[0]], {"approximate": "tanh"},
                      graph.unique_name(f"{th.name}.gelu")))
        return m
    return None


# ------------------------------------------------------------------------------ layernorm
def _last_axis_mean(graph: Graph, n: Node) -> bool:
    if n.op != "ReduceMean" or not int(n.attrs.get("keepdims", 1)):
        return False
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1]:
        p = graph.producer(n.inputs[1])
        if p is None or p.op != "Constant":
            return False
        from sim.ops.generate import constant_value

        axes = constant_value(p.attrs).reshape(-1).tolist()
    rank = graph.tensors[n.inputs[0]].rank
    return axes is not None and [int(a) % rank for a in axes] == [rank - 1]


def _match_layernorm(graph: Graph, r1: Node) -> Match | None:
    if not _last_axis_mean(graph, r1):
        return None
    x = r1.inputs[0]
    sub = _only_user(graph, r1.outputs[0])
    if sub is None or sub.op != "Sub" or tuple(sub.inputs) != (x, r1.outputs[0]):
        return None
    d = sub.outputs[0]
    users = graph.consumers(d)
    if len(users) != 2 or d in graph.outputs:
        return None
    pw = next((u for u in users if u.op == "Pow" and _close(scalar(graph, u.inputs[1]), 2.0)), None)
    div = next((u for u in users if u.op == "Div" and u.inputs[0] == d), None)
    if pw is None or div is None:
        return None
    r2 = _only_user(graph, pw.outputs[0])
    if r2 is None or not _last_axis_mean(graph, r2):
        return None
    add = _only_user(graph, r2.outputs[0])
    eps = scalar(graph, _other(add, r2.outputs[0]) or "") if add is not None and add.op == "Add" else None
    if add is None or eps is None:
        return None
    sq = _only_user(graph, add.outputs[0])
    if (sq is None or sq.op != "Sqrt" or div.inputs[1] != sq.outputs[0]
            or _only_user(graph, sq.outputs[0]) is not div):
        return None
    mul = _only_user(graph, div.outputs[0])
    gamma = _other(mul, div.outputs[0]) if mul is not None and mul.op == "Mul" else None
    hidden = graph.tensors[x].shape[-1]
    if mul is None or gamma is None or graph.tensors[gamma].shape != (hidden,):
        return None
    chain = [r1, sub, pw, r2, add, sq, div, mul]
    out, ins = mul.outputs[0], [x, gamma]
    bias = _only_user(graph, out)
    beta = _other(bias, out) if bias is not None and bias.op == "Add" else None
    if bias is not None and beta is not None and graph.tensors[beta].shape == (hidden,):
        chain.append(bias)
        out, ins = bias.outputs[0], [x, gamma, beta]
    for n in (r1, r2):
        if len(n.inputs) > 1 and n.inputs[1]:
            p = graph.producer(n.inputs[1])
            if p is not None and all(c in (r1, r2) for c in graph.consumers(n.inputs[1])):
                chain.append(p)
    m = Match(chain)
    m.add.append(("LayerNormalization", ins, [out], {"axis": -1, "epsilon": float(eps)},
                  graph.unique_name(f"{r1.name}.layernorm")))
    return m


# ------------------------------------------------------------------------------ constants
def _match_fold(graph: Graph, n: Node) -> Match | None:
    """An op over constants only (``Pow(8, 0.5)`` for a 1/sqrt(d) scale) becomes a Constant:
    a framework computes it on the host, not in a kernel."""
    if n.op == "Constant" or not n.inputs or len(n.outputs) != 1 or n.outputs[0] in graph.outputs:
        return None
    value = constant(graph, n.outputs[0], depth=1)
    if value is None:
        return None
    return Match([n], [("Constant", [], [n.outputs[0]], {"value": value}, n.name)])


# ------------------------------------------------------------------------------ bias add
def _match_bias(graph: Graph, mm: Node) -> Match | None:
    if mm.op != "MatMul":
        return None
    add = _only_user(graph, mm.outputs[0])
    b = _other(add, mm.outputs[0]) if add is not None and add.op == "Add" else None
    a, w = mm.inputs
    sa, sw = graph.tensors[a], graph.tensors[w]
    if add is None or b is None or sw.rank != 2 or sa.rank not in (2, 3):
        return None
    if (graph.tensors[b].shape != (sw.shape[1],)
            or graph.tensors[add.outputs[0]].shape != graph.tensors[mm.outputs[0]].shape):
        return None
    m = Match([mm, add])
    y = add.outputs[0]
    if sa.rank == 2:
        m.add.append(("Gemm", [a, w, b], [y], {}, mm.name))
        return m
    a2 = graph.unique_name(f"{mm.name}.in2d")
    y2 = graph.unique_name(f"{mm.name}.out2d")
    m.add += [
        ("Reshape", [a], [a2], {"shape": [sa.shape[0] * sa.shape[1], sa.shape[2]]},
         graph.unique_name(f"{mm.name}.flatten")),
        ("Gemm", [a2, w, b], [y2], {}, mm.name),
        ("Reshape", [y2], [y], {"shape": [sa.shape[0], sa.shape[1], sw.shape[1]]},
         graph.unique_name(f"{mm.name}.unflatten")),
    ]
    return m


# ------------------------------------------------------------------------------ conv bias (eager)
def _split_conv_bias(graph: Graph, conv: Node) -> Match | None:
    """``Conv(x, W, b)`` -> ``Conv(x, W)`` + ``Add(., b as [C, 1, ...])``: eager PyTorch's
    cuDNN path adds the bias in a kernel of its own (module doc)."""
    if conv.op not in ("Conv", "ConvTranspose") or len(conv.inputs) < 3 or not conv.inputs[2]:
        return None
    x, w, b = conv.inputs[:3]
    y = conv.outputs[0]
    sy = graph.tensors[y]
    if graph.tensors[b].rank != 1 or sy.rank < 3:
        return None
    y0 = graph.unique_name(f"{conv.name}.nobias")
    bv = graph.unique_name(f"{conv.name}.bias_view")
    return Match([conv], [
        (conv.op, [x, w], [y0], dict(conv.attrs), conv.name),
        ("Reshape", [b], [bv], {"shape": [graph.tensors[b].shape[0]] + [1] * (sy.rank - 2)},
         graph.unique_name(f"{conv.name}.bias_reshape")),
        ("Add", [y0, bv], [y], {}, graph.unique_name(f"{conv.name}.bias_add")),
    ])


MATCHERS: dict[str, Sequence[Callable[[Graph, Node], Match | None]]] = {
    "attention": (_match_attention,),
    "sdpa": (_match_sdpa,),
    "gelu": (_match_gelu_erf, _match_gelu_tanh),
    "gelu_erf": (_match_gelu_erf,),
    "layernorm": (_match_layernorm,),
    "bias": (_match_bias,),
    "fold": (_match_fold,),
    "conv_bias": (_split_conv_bias,),
}


# ------------------------------------------------------------------------------ the pass
def find(graph: Graph, patterns: Sequence[str] = PATTERNS) -> list[Match]:
    """Non-overlapping matches of ``patterns``, in order of the patterns, then of the graph."""
    from sim.errors import GraphError

    unknown = [p for p in patterns if p not in MATCHERS]
    if unknown:
        raise GraphError(f"unknown pattern(s) {unknown} (choose from {', '.join(MATCHERS)})", where="rewrite")
    taken: set[str] = set()
    out: list[Match] = []
    order = graph.topo_order()
    for pat in patterns:
        for fn in MATCHERS[pat]:
            for node in order:
                if node.name in taken:
                    continue
                m = fn(graph, node)
                if m is None or any(n.name in taken for n in m.drop):
                    continue
                keep = {t for _op, ins, _outs, _attrs, _nm in m.add for t in ins}
                m.drop += [c for c in _constants_of(graph, m.drop, keep) if c.name not in taken]
                taken.update(n.name for n in m.drop)
                out.append(m)
    return out


def rewrite(graph: Graph, patterns: Sequence[str] = PATTERNS) -> Graph:
    """A new graph with every match of ``patterns`` replaced by its fused op (module doc)."""
    matches = find(graph, patterns)
    if not matches:
        return graph.copy()
    pos = {n.name: i for i, n in enumerate(graph.topo_order())}
    dropped = {n.name for m in matches for n in m.drop}
    # each replacement goes where the last node it replaces was: all it reads exists by then
    at: dict[str, Match] = {max((n for n in m.drop), key=lambda n: pos[n.name]).name: m for m in matches}
    return _Replace(graph, at, dropped).run().verify()


class _Replace(Rewriter):
    """Copy the graph, emitting each match's replacement where the last node it replaces was
    and leaving out the nodes it drops. Tensor names are kept."""

    def __init__(self, src: Graph, at: dict[str, Match], dropped: set[str]) -> None:
        super().__init__(src)
        self.at, self.dropped = at, dropped

    def visit(self, node: Node) -> None:
        if node.name in self.at:
            m = self.at[node.name]
            for op, ins, outs, attrs, nm in m.add:
                self.b.node(op, ins, outs, attrs, name=self.b.unique(nm) if nm in self.out.nodes else nm,
                            meta={"rewritten": [n.name for n in m.drop]})
        if node.name not in self.dropped:
            self.emit(node, inputs=list(node.inputs))

    def finish(self) -> None:
        self.out.set_outputs(self.src.outputs)
