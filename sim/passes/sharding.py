"""Sharding propagation rules for tensor parallelism (a small GSPMD).

Each tensor of a tensor-parallel graph is in one of three states over the ``n`` ranks:

* ``R`` (``None``): replicated, every rank holds the whole tensor;
* ``S(a)`` (an int ``a``): sharded, rank ``k`` holds the ``k``-th of ``n`` equal slices on axis ``a``;
* ``P`` (``"P"``): partial, the tensor is the sum of the ranks' tensors.

``rule(graph, node, states)`` says, for one node and its inputs' states, which state each
input must be in (``want``) and which state each output then has, or ``None`` when the node
has no sharded rule (the caller then makes every input replicated and runs the node whole).
A rule never changes what a node computes: converting the inputs to ``want`` (all-reduce,
all-gather, reduce-scatter or a local slice) and running the node on every rank gives each
rank its part of the original output in the stated state.
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.graph import Graph, Node

State = int | str | None
P = "P"
R = None
Rule = tuple[list[State], list[State]]

# ops that see their first input slice by slice along every axis except the listed ones
# (negative: from the end); their other inputs (weights, tables) must be replicated
_BATCHED_FIRST: dict[str, tuple[int, ...] | None] = {
    "Softmax": None, "LogSoftmax": None, "LayerNormalization": None, "RMSNormalization": None,
    "SimplifiedLayerNormalization": None, "RotaryEmbedding": (-2, -1),
    "LayerNormGrad": None, "RMSNormGrad": None,
    "Dropout": (),  # elementwise: any axis; each shard draws its own mask (Megatron's per-rank RNG)
}
# ops whose leading inputs are per-(batch, head) slices: axes 0 and 1 may be sharded
_HEADS = frozenset({"Attention", "AttentionGrad", "RotaryEmbeddingGrad", "SoftmaxGrad"})
# ops linear in a partial input: op -> the input positions that may be partial together
_LINEAR = {"Add": "all", "Sub": "all", "Neg": "all", "Identity": "all", "Mul": "one",
           "Div": "first", "Reshape": "all", "Transpose": "all", "ReduceSum": "all"}


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _present(node: Node, states: Sequence[State]) -> list[int]:
    return [i for i, t in enumerate(node.inputs) if t]


def partial_rule(node: Node, states: Sequence[State]) -> Rule | None:
    """Partial inputs through a linear op stay partial (the sum commutes with it)."""
    idx = _present(node, states)
    parts = [i for i in idx if states[i] == P]
    kind = _LINEAR.get(node.op)
    if not parts or kind is None:
        return None
    others = [i for i in idx if i not in parts]
    ok = (kind == "all" and not others) or (kind == "one" and len(parts) == 1) \
        or (kind == "first" and parts == [0])
    if not ok or any(states[i] is not R for i in others):
        return None
    return [states[i] if i in idx else R for i in range(len(node.inputs))], [P] * len(node.outputs)


def elementwise_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    """Broadcasting elementwise ops: the output shards where a sharded input does; inputs
    broadcast along that axis stay replicated, full-size ones are sliced alike."""
    out = g.tensors[node.outputs[0]]
    axis: int | None = None
    for i, t in enumerate(node.inputs):
        s = states[i]
        if t and isinstance(s, int):
            axis = s + out.rank - g.tensors[t].rank
            break
    if axis is None:
        return None
    want: list[State] = []
    for t in node.inputs:
        spec = g.tensors[t] if t else None
        local = axis - (out.rank - spec.rank) if spec is not None else -1
        want.append(local if spec is not None and local >= 0 and spec.shape[local] != 1 else R)
    outs: list[State] = []
    for t in node.outputs:
        ok = t and g.tensors[t].rank == out.rank and g.tensors[t].shape[axis] == out.shape[axis]
        outs.append(axis if ok else R)
    if R in outs and any(t for t in node.outputs[1:]):
        return None
    return want, outs


def _batched_axes(g: Graph, node: Node) -> set[int] | None:
    x = g.tensors[node.inputs[0]]
    if node.op in _HEADS:
        return {0, 1}
    if node.op not in _BATCHED_FIRST:
        return None
    fixed: tuple[int, ...] | None = _BATCHED_FIRST[node.op]
    if fixed is None:
        axis = int(node.attrs.get("axis", -1))
        fixed = tuple(range(_norm(axis, x.rank), x.rank))
    return set(range(x.rank)) - {_norm(a, x.rank) for a in fixed}


def batched_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    """Ops applied slice by slice (softmax, norms, rotary, attention): a sharded batch-like
    axis of the main inputs passes through; their small operands stay replicated."""
    allowed = _batched_axes(g, node)
    axis = next((s for s in states if isinstance(s, int)), None)
    if allowed is None or axis is None or axis not in allowed:
        return None
    x = g.tensors[node.inputs[0]]
    want: list[State] = []
    for i, t in enumerate(node.inputs):
        main = t and (i == 0 or node.op in _HEADS or node.op.endswith("Grad")) and g.tensors[t].rank == x.rank
        want.append(axis if main and g.tensors[t].shape[axis] != 1 else R)
    outs: list[State] = []
    for t in node.outputs:
        spec = g.tensors[t] if t else None
        if spec is not None and spec.rank == x.rank:
            outs.append(axis)
        elif spec is not None and node.op.endswith("Grad"):
            outs.append(P)  # parameter gradients summed over the sharded batch axis
        else:
            outs.append(R)
    return want, outs


def reduce_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    """ReduceSum (any reduce keeping the axis): a sharded axis reduced gives a partial sum."""
    s = states[0]
    if not isinstance(s, int) or node.op not in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
        return None
    x = g.tensors[node.inputs[0]]
    axes = node.attrs.get("axes")
    red = set(range(x.rank)) if axes is None else {_norm(int(a), x.rank) for a in axes}
    if s in red:
        return ([s], [P]) if node.op == "ReduceSum" and len(node.inputs) == 1 else None
    keep = int(node.attrs.get("keepdims", 1))
    return [s] + [R] * (len(node.inputs) - 1), [s if keep else s - sum(1 for a in red if a < s)]


def transpose_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    s = states[0]
    if not isinstance(s, int):
        return None
    perm = list(node.attrs.get("perm") or reversed(range(g.tensors[node.inputs[0]].rank)))
    return [s], [perm.index(s)]


def reshape_axis(src: Sequence[int], dst: Sequence[int], axis: int, n: int) -> int | None:
    """The axis of ``dst`` whose ``n``-way slices are ``src``'s slices on ``axis``, or None.

    Axes are grouped into runs of equal element count; the sharded axis must be the outermost
    non-unit axis of its run (so a slice is one contiguous block of the run), and so is the
    axis it maps to, which must divide by ``n``."""
    i = j = 0
    while i < len(src) or j < len(dst):
        gi, gj, pi, pj = [i], [j], src[i] if i < len(src) else 1, dst[j] if j < len(dst) else 1
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                pi *= src[i]; gi.append(i); i += 1  # noqa: E702
            else:
                pj *= dst[j]; gj.append(j); j += 1  # noqa: E702
        if axis in gi:
            lead_i = next((a for a in gi if a < len(src) and src[a] != 1), None)
            lead_j = next((a for a in gj if a < len(dst) and dst[a] != 1), None)
            if lead_i != axis or lead_j is None or dst[lead_j] % n:
                return None
            return lead_j
    return None


def _gemm_axes(g: Graph, node: Node) -> tuple[int, int, int, int]:
    """(a's contraction axis, a's row axis, b's contraction axis, b's column axis)."""
    a, b = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
    if node.op != "Gemm":
        return a.rank - 1, a.rank - 2, b.rank - 2, b.rank - 1
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    return (0 if ta else 1), (1 if ta else 0), (1 if tb else 0), (0 if tb else 1)


def _batch_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    """MatMul sharded on a broadcast batch axis: both sides sliced there (where not size 1)."""
    a, b = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
    out = g.tensors[node.outputs[0]]
    sa, sb = states[0], states[1]
    if isinstance(sa, int) and sa < a.rank - 2:
        axis = sa + out.rank - a.rank
    elif isinstance(sb, int) and sb < b.rank - 2:
        axis = sb + out.rank - b.rank
    else:
        return None
    want: list[State] = []
    for spec in (a, b):
        local = axis - (out.rank - spec.rank)
        want.append(local if 0 <= local < spec.rank - 2 and spec.shape[local] != 1 else R)
    return want, [axis]


def matmul_rule(g: Graph, node: Node, states: Sequence[State]) -> Rule | None:
    """MatMul/Gemm: contraction axis sharded on both sides -> partial; a free axis of one side
    sharded (the other replicated) -> the output sharded there."""
    a, b = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
    if a.rank < 2 or b.rank < 2:
        return None
    out = g.tensors[node.outputs[0]]
    ak, am, bk, bn = _gemm_axes(g, node)
    sa, sb = states[0], states[1]
    c: list[State] = [R] * (len(node.inputs) - 2)
    if sa == ak and sb == bk:
        return [ak, bk, *c], [P]
    if node.op == "MatMul":
        batch = _batch_rule(g, node, states)
        if batch is not None:
            return batch
    if sa == am and sb != bn:  # a's free axis split: b is used whole (gathered if split)
        return [sa, R, *_gemm_c(g, node, out.rank - 2)], [out.rank - 2]
    if sb == bn:  # a column-split weight: the activation is gathered whole (sequence parallel)
        return [R, sb, *_gemm_c(g, node, out.rank - 1)], [out.rank - 1]
    if sa == ak or sb == bk:  # one side sliced on the contraction: slice the other alike
        return [ak, bk, *c], [P]
    return None


def _gemm_c(g: Graph, node: Node, axis: int) -> list[State]:
    if len(node.inputs) < 3 or not node.inputs[2]:
        return [R] * (len(node.inputs) - 2)
    c = g.tensors[node.inputs[2]]
    local = axis - (2 - c.rank)
    return [local if local >= 0 and c.shape[local] != 1 else R]


def depend_rule(node: Node, states: Sequence[State]) -> Rule:
    """Depend passes its first input on; the others are only waited for, in any state."""
    return list(states), [states[0]]
