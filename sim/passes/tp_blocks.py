"""Find the blocks tensor parallelism splits, by graph pattern (not by layer names).

A *linear* is a ``Gemm`` or ``MatMul`` whose second operand is a rank-2 parameter (directly or
through ``Cast`` nodes, as AMP leaves it). Two patterns make Megatron-LM's blocks:

* **attention**: an ``Attention`` node, or the spelled-out core ``MatMul(q, k^T) -> (scale,
  mask) -> Softmax -> (dropout) -> MatMul(p, v)`` that ONNX and torch exports write. Walking back from q, k
  and v through per-head ops (reshapes, transposes, rotary, bias adds) reaches their
  projections (column-parallel); walking forward from the context through reshapes and
  transposes reaches the output projection (row-parallel).
* **mlp**: a linear (row-parallel, the *down* projection) whose input comes, through
  elementwise ops only (activation, gate product, bias add), from linears (column-parallel: the
  *up* and *gate* projections) of its input width, with at least one non-linear op between.

* **vocabulary** (Megatron-LM's ``VocabParallelEmbedding`` and parallel LM head): the largest
  table (a rank-2 parameter) that a ``Gather`` on axis 0 reads with token ids (a graph input)
  splits by rows; a linear outside the blocks whose output width is the table's row count
  (the LM head, tied to the table or not) splits by output columns.

The result maps each weight parameter to its split: ``("column", out_axis)`` or ``("row",
in_axis)``, each bias parameter added to a column-parallel output to ``("column", 0)``, and the
vocabulary's table, LM-head weight and bias to ``("vocab", vocabulary axis)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.graph import Graph, Node, param_behind

# ops a q/k/v path may pass through between its projection and the attention core
_HEAD_PATH = frozenset({"Reshape", "Transpose", "Add", "Mul", "Div", "Sub", "Neg", "Cast",
                        "RotaryEmbedding", "Slice", "Concat", "Split", "Unsqueeze", "Squeeze",
                        "Expand", "Identity"})
_VIEWS = frozenset({"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"})
_NONLINEAR_HINT = frozenset({"Add", "Sub", "Reshape", "Identity", "Cast", "Mul", "Div", "Neg"})


@dataclass
class Plan:
    """What tensor parallelism splits: parameter -> (role, axis), and the blocks found."""

    params: dict[str, tuple[str, int]] = field(default_factory=dict)
    attention: list[str] = field(default_factory=list)  # attention core node names
    mlp: list[str] = field(default_factory=list)  # down-projection node names
    vocab: int = 0  # rows of the vocabulary-parallel table (0: none)
    embedding: list[str] = field(default_factory=list)  # the table's Gather node names
    lm_head: list[str] = field(default_factory=list)  # the vocabulary-parallel linears


def linear_weight(g: Graph, node: Node) -> tuple[str, int, int] | None:
    """``(weight, in_axis, out_axis)`` if ``node`` is a linear (GEMM with a rank-2 weight)."""
    if node.op not in ("Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    w = param_behind(g, node.inputs[1])
    if w is None or g.params[w].rank != 2:
        return None
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return None
    transposed = node.op == "Gemm" and int(node.attrs.get("transB", 0))
    return (w, 1, 0) if transposed else (w, 0, 1)


def _out_width(g: Graph, node: Node) -> int:
    lw = linear_weight(g, node)
    assert lw is not None
    return g.params[lw[0]].shape[lw[2]]


def _walk_back(g: Graph, start: str, allowed: frozenset[str]) -> tuple[list[Node], bool]:
    """Linears reached walking back from ``start`` through ``allowed`` ops, and whether every
    path ended at a linear or a parameter/constant (False: it left the block)."""
    found: list[Node] = []
    seen: set[str] = set()
    stack, closed = [start], True
    while stack:
        t = stack.pop()
        if not t or t in seen or t in g.params:
            continue
        seen.add(t)
        node = g.producer(t)
        if node is None:
            closed = False
            continue
        if not any(node.inputs):
            continue  # a constant
        if linear_weight(g, node) is not None:
            if node not in found:
                found.append(node)
            continue
        if node.op not in allowed:
            closed = False
            continue
        stack.extend(node.inputs)
    return found, closed


def _walk_forward(g: Graph, start: str, fwd: set[str]) -> Node | None:
    """The linear that consumes ``start`` (through single-consumer views) as its input 0."""
    t = start
    for _ in range(8):
        cons = [c for c in g.consumers(t) if c.name in fwd]
        if len(cons) != 1:
            return None
        node = cons[0]
        if linear_weight(g, node) is not None and node.inputs[0] == t:
            return node
        if node.op not in _VIEWS:
            return None
        t = node.outputs[0]
    return None


def _attention_cores(g: Graph, fwd: set[str]) -> list[tuple[Node, list[str], str]]:
    """(core node, [q, k, v] tensors, context tensor) for each attention core."""
    cores: list[tuple[Node, list[str], str]] = []
    for node in g.topo_order():
        if node.name not in fwd:
            continue
        if node.op == "Attention" and len(node.inputs) >= 3:
            cores.append((node, list(node.inputs[:3]), node.outputs[0]))
        elif node.op == "Softmax":
            core = _spelled_out_core(g, node, fwd)
            if core is not None:
                cores.append(core)
    return cores


def _spelled_out_core(g: Graph, softmax: Node, fwd: set[str]) -> tuple[Node, list[str], str] | None:
    """``MatMul(q, kT) -> [Div/Mul/Add]* -> Softmax -> [Dropout/Cast]* -> MatMul(., v)`` around
    ``softmax``."""
    probs = softmax.outputs[0]
    for _ in range(4):
        cons = [c for c in g.consumers(probs) if c.name in fwd]
        if len(cons) != 1 or cons[0].op not in ("Dropout", "Cast"):
            break
        probs = cons[0].outputs[0]
    if len(cons) != 1 or cons[0].op != "MatMul" or cons[0].inputs[0] != probs:
        return None
    t = softmax.inputs[0]
    for _ in range(4):
        prod = g.producer(t)
        if prod is None:
            return None
        if prod.op == "MatMul":
            if any(x in g.params for x in prod.inputs):
                return None
            return cons[0], [prod.inputs[0], prod.inputs[1], cons[0].inputs[1]], cons[0].outputs[0]
        if prod.op not in ("Div", "Mul", "Add", "Cast", "Where"):
            return None
        t = prod.inputs[0]
    return None


def _bias_of(g: Graph, node: Node, width: int, fwd: set[str]) -> str | None:
    """The bias parameter added to a linear's output (Gemm's C, or a following Add)."""
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
        return param_behind(g, node.inputs[2])
    cons = [c for c in g.consumers(node.outputs[0]) if c.name in fwd]
    if len(cons) == 1 and cons[0].op == "Add":
        for t in cons[0].inputs:
            p = param_behind(g, t) if t else None
            if p is not None and g.params[p].shape == (width,):
                return p
    return None


def _column(g: Graph, plan: Plan, node: Node, fwd: set[str]) -> None:
    lw = linear_weight(g, node)
    assert lw is not None
    plan.params[lw[0]] = ("column", lw[2])
    bias = _bias_of(g, node, g.params[lw[0]].shape[lw[2]], fwd)
    if bias is not None:
        plan.params[bias] = ("column", 0)


def _row(g: Graph, plan: Plan, node: Node) -> None:
    lw = linear_weight(g, node)
    assert lw is not None
    plan.params[lw[0]] = ("row", lw[1])


def _find_attention(g: Graph, plan: Plan, fwd: set[str]) -> None:
    for core, qkv, ctx in _attention_cores(g, fwd):
        projections = []
        for t in qkv:
            found, closed = _walk_back(g, t, _HEAD_PATH)
            if len(found) != 1 or not closed:
                break
            projections.append(found[0])
        out = _walk_forward(g, ctx, fwd)
        if len(projections) != 3 or out is None:
            continue
        for p in projections:
            _column(g, plan, p, fwd)
        _row(g, plan, out)
        plan.attention.append(core.name)


def _find_mlp(g: Graph, plan: Plan, elementwise: frozenset[str], fwd: set[str]) -> None:
    claimed = set(plan.params)
    for node in g.topo_order():
        lw = linear_weight(g, node) if node.name in fwd else None
        if lw is None or lw[0] in claimed:
            continue
        width = g.params[lw[0]].shape[lw[1]]
        prod = g.producer(node.inputs[0])
        found, closed = _walk_back(g, node.inputs[0], elementwise | _VIEWS)
        if not found or not closed or prod is None or prod in found:
            continue
        if any(linear_weight(g, f)[0] in claimed or _out_width(g, f) != width  # type: ignore[index]
               for f in found):
            continue
        if _only_linear_ops(g, node.inputs[0], found):
            continue
        for f in found:
            _column(g, plan, f, fwd)
        _row(g, plan, node)
        claimed.update(plan.params)
        plan.mlp.append(node.name)


def _only_linear_ops(g: Graph, start: str, stop: list[Node]) -> bool:
    """True when the path from the up projections to ``start`` has no non-linear op (two
    stacked linears, not an MLP)."""
    stop_outs = {t for n in stop for t in n.outputs}
    t = start
    while t not in stop_outs:
        node = g.producer(t)
        if node is None or node.op not in _NONLINEAR_HINT:
            return False
        nxt = [x for x in node.inputs if x and x not in g.params and any(_producer_inputs(g, x))]
        if len(nxt) != 1:
            return False
        t = nxt[0]
    return True


def _producer_inputs(g: Graph, t: str) -> tuple[str, ...]:
    prod = g.producer(t)
    return prod.inputs if prod is not None else ("input",)


def _token_ids(g: Graph, t: str) -> bool:
    """True when ``t`` is a graph input (token ids), directly or through views and casts."""
    for _ in range(8):
        if t in g.inputs:
            return True
        node = g.producer(t)
        if node is None or node.op not in _VIEWS | {"Cast"}:
            return False
        t = node.inputs[0]
    return False


def _find_vocab(g: Graph, plan: Plan, fwd: set[str]) -> None:
    tables: list[tuple[int, str]] = []
    for node in g.topo_order():
        w = param_behind(g, node.inputs[0]) if node.op == "Gather" and node.name in fwd else None
        if w is None or w in plan.params or g.params[w].rank != 2 or int(node.attrs.get("axis", 0)):
            continue
        if _token_ids(g, node.inputs[1]):
            tables.append((g.params[w].shape[0], w))
    if not tables:
        return
    plan.vocab, table = max(tables)
    plan.params[table] = ("vocab", 0)
    plan.embedding = [n.name for n in g.topo_order() if n.name in fwd and n.op == "Gather"
                      and param_behind(g, n.inputs[0]) == table]
    for node in g.topo_order():
        lw = linear_weight(g, node) if node.name in fwd else None
        if lw is None or g.params[lw[0]].shape[lw[2]] != plan.vocab:
            continue
        if plan.params.get(lw[0], ("vocab", lw[2])) != ("vocab", lw[2]):
            continue  # a block's projection, or the table laid out the other way
        plan.params[lw[0]] = ("vocab", lw[2])
        bias = _bias_of(g, node, plan.vocab, fwd)
        if bias is not None:
            plan.params[bias] = ("vocab", 0)
        plan.lm_head.append(node.name)


def find_blocks(g: Graph, elementwise: frozenset[str], forward: set[str]) -> Plan:
    """The tensor-parallel plan of ``g``'s ``forward`` nodes: attention blocks, MLPs, then the
    vocabulary-parallel embedding and LM head."""
    plan = Plan()
    _find_attention(g, plan, forward)
    _find_mlp(g, plan, elementwise, forward)
    _find_vocab(g, plan, forward)
    return plan
