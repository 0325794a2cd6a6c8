"""Operator fusion: elementwise chains join their producer; shape-only ops become aliases.

``fuse(graph)`` returns a new graph in which

* every elementwise op (activations, arithmetic with a bias or a residual, comparisons,
  single-output elementwise backward ops such as ReluGrad, inference-mode
  BatchNormalization, Cast, inference Dropout) and every shape-only op (Reshape, Squeeze,
  Unsqueeze, Flatten, Identity) that directly consumes a tensor made inside a group joins
  that group, so ``MatMul + Add + Gelu`` or ``Conv + BatchNormalization + Add + Relu`` become
  one ``Fused`` node. Its work is the sum of the members' FLOPs (GEMM shapes kept) but its
  bytes are only those of the group's external inputs and outputs: intermediates stay on
  chip. ``meta["fused"]`` lists the original node names;
* a ``Transpose`` (followed by shape-only ops) whose only consumer is a matrix op
  (``MatMul``, ``Gemm``, ``Attention``) joins that op's group as a prologue: GEMM and
  attention kernels take strided operands (the head split of Q, K, V and the head merge
  before the output projection become layouts, not copies), so no kernel is launched and
  the transposed tensor never goes to memory;
* a dequantising ``Cast`` (fp8 to a wider float; ``cast_graph(g, "fp8")`` puts one on each
  operand of an fp8 GEMM) whose only consumer is a matrix op (a GEMM, a convolution or its
  gradient) joins that op's group as a prologue too: an fp8 GEMM reads its operands in one
  byte each. So does a quantising ``Cast`` between a head-merge Transpose and that
  dequantise; otherwise a quantising cast is elementwise and joins the group that made its
  input (a layer norm writes the fp8 copy the projections read);
* sibling ``MatMul``/``Gemm`` groups that multiply the same activation (Q, K and V
  projections; an MLP's gate and up projections) merge into one group, as compilers
  concatenate their weights: one launch, and GEMMs of the same (m, k) become one GEMM whose n
  is their sum. A sibling joins only if all it reads is made before the first sibling's
  group, by the merged group itself, or by views of such tensors (which move in front of
  it), so the graph stays acyclic;
* the kernels between a layer's projections and its attention that are left on their own
  (head transposes that feed RoPE or a KV-cache append, RoPE on q and k, the append) merge
  into one group, the rope-and-cache kernel of inference engines (``_merge_preambles``);
* shape-only ops left alone are marked ``meta["alias_of"] = <input tensor>``: they cost
  nothing and their output shares the input's storage.

A node joins a group only if every other input it reads is made before the group's first
node, so the fused graph stays acyclic. The ``Fused`` op executes: its kernel runs the
members' kernels in order (attributes hold the sub-graph), rounding each intermediate to
its storage dtype as the unfused graph would.

>>> from sim.graph import Graph, TensorSpec
>>> g = Graph(); _ = g.add_input("x", TensorSpec((4, 8))); _ = g.add_param("w", TensorSpec((8, 8)))
>>> _ = g.add_node("MatMul", ["x", "w"], ["h"]); _ = g.add_node("Relu", ["h"], ["y"])
>>> g.set_outputs(["y"])
>>> f = fuse(g)
>>> [n.op for n in f], f.flops == g.flops
(['Fused'], True)
"""

from __future__ import annotations

from collections.abc import Callable

from sim.dtypes import is_float, itemsize
from sim.graph import Graph, Node
from sim.graph.rewrite import GraphBuilder, Rewriter
from sim.ops.registry import has_trait


def _view(op: str) -> bool:
    return has_trait(op, "view")


def _joinable(node: Node) -> bool:
    if _view(node.op):
        return True
    if len([o for o in node.outputs if o]) == 1 and has_trait(node.op, "elementwise"):
        return True  # also the elementwise backward ops (ReluGrad, GeluGrad, ...)
    if node.op == "BatchNormalization":
        return not int(node.attrs.get("training_mode", 0)) and len([o for o in node.outputs if o]) == 1
    if node.op == "Dropout":
        return not int(node.attrs.get("training_mode", 0)) and len([o for o in node.outputs if o]) == 1
    return False


# ------------------------------------------------------------------------------ the pass
def fuse(graph: Graph, join: Callable[[Graph, Node], bool] | None = None) -> Graph:
    """A new graph with elementwise chains fused into their producers (see module doc).

    ``join`` restricts fusion to a framework's hand-written kernels: only a node it accepts
    joins its producer's group, and no prologues or siblings merge (``megatron_epilogues``);
    only the dequantising casts of fp8 GEMMs still join their GEMM, as any fp8 kernel reads
    fp8 operands."""
    pos = {n.name: i for i, n in enumerate(graph.topo_order())}
    prologue = _prologues(graph, dequantise_only=join is not None)  # node -> the matrix op it opens
    pending, shared_const = _openers(graph, prologue, pos)
    groups = _grow_groups(graph, prologue, pending, pos, join)
    if join is None:
        groups = _merge_siblings(graph, groups, prologue, pos)
        groups = _merge_preambles(graph, groups, pos)
    groups = _split_trailing_views(graph, groups, pos)
    out = _Fuse(graph, [[c] for c in shared_const] + groups).run()
    out.meta["fused"] = True
    return out.verify()


class _Fuse(Rewriter):
    """Emit ``groups`` in the order of their first member (every external input of a group is
    made before that member, hence by a group emitted earlier): a single node as it is (a view
    recording what it aliases), a larger group as one ``Fused`` node. Names are kept."""

    def __init__(self, src: Graph, groups: list[list[Node]]) -> None:
        super().__init__(src)
        self.groups = groups

    def visit(self, node: Node) -> None:
        meta = dict(node.meta)
        if _view(node.op) and node.inputs:
            meta["alias_of"] = node.inputs[0]
        self.emit(node, inputs=list(node.inputs), meta=meta)

    def run(self) -> Graph:
        self.leaves()
        outputs = set(self.src.outputs)
        for members in self.groups:
            if len(members) == 1:
                self.visit(members[0])
            else:
                _emit_group(self.src, self.b, members, outputs)
        self.out.set_outputs(self.src.outputs)
        return self.out


def fold_dequantise(graph: Graph) -> Graph:
    """Only the dequantising casts of fp8 GEMMs join their GEMM, nothing else fuses: an eager
    framework's fp8 GEMM (``torch._scaled_mm``, cuBLASLt) reads its fp8 operands itself,
    while its other ops stay one kernel each."""
    prologue = _prologues(graph, dequantise_only=True)
    if not prologue:
        return graph.copy()
    pending: dict[str, list[Node]] = {}
    for node in graph.topo_order():
        if node.name in prologue:
            pending.setdefault(prologue[node.name], []).append(node)
    groups = [[*pending.get(n.name, []), n] for n in graph.topo_order() if n.name not in prologue]
    return _Groups(graph, groups).run()


class _Groups(_Fuse):
    """``_Fuse`` without marking views as aliases (single nodes are copied as they are)."""

    def visit(self, node: Node) -> None:
        self.emit(node, inputs=list(node.inputs))


def _openers(graph: Graph, prologue: dict[str, str], pos: dict[str, int]
             ) -> tuple[dict[str, list[Node]], list[Node]]:
    """Nodes that open a later node's group (Transpose prologues of matrix ops, and Constants
    with a single consumer), by that node; and the other Constants (emitted first)."""
    pending: dict[str, list[Node]] = {}
    shared_const: list[Node] = []
    for node in graph.topo_order():
        if node.name in prologue:
            pending.setdefault(prologue[node.name], []).append(node)
        elif node.op == "Constant" and not node.inputs:
            users = [c for t in node.outputs if t for c in graph.consumers(t)]
            if len(users) == 1 and not set(node.outputs) & set(graph.outputs):
                pending.setdefault(users[0].name, []).append(node)
            else:
                shared_const.append(node)
            pos[node.name] = -1
    return pending, shared_const


def _join_target(graph: Graph, node: Node, made_in: dict[str, int], first: list[int],
                 pos: dict[str, int], join: Callable[[Graph, Node], bool] | None = None) -> int | None:
    """The latest-started group ``node`` can join: one that made an input of it, when every
    other input it reads is made before that group's first node (the graph stays acyclic)."""
    if not _joinable(node) or (join is not None and not join(graph, node)):
        return None
    cands = {made_in[t] for t in node.inputs if t and t in made_in}
    for gid in sorted(cands, key=lambda g: -first[g]):
        others = [t for t in node.inputs if t and made_in.get(t) != gid]
        if all((p := graph.producer(t)) is None or pos[p.name] < first[gid] or p.op == "Constant"
               for t in others):
            return gid
    return None


def _grow_groups(graph: Graph, prologue: dict[str, str], pending: dict[str, list[Node]],
                 pos: dict[str, int], join: Callable[[Graph, Node], bool] | None = None) -> list[list[Node]]:
    """Each node joins the group of a producer (``_join_target``) or opens its own."""
    groups: list[list[Node]] = []
    first: list[int] = []  # topological position of each group's first node
    made_in: dict[str, int] = {}  # tensor -> group id of its producer
    for node in graph.topo_order():
        if (node.op == "Constant" and not node.inputs) or node.name in prologue:
            continue
        target = _join_target(graph, node, made_in, first, pos, join)
        if target is None:
            target = len(groups)
            groups.append([])
            first.append(pos[node.name])
        groups[target].extend(pending.get(node.name, []))
        groups[target].append(node)
        if has_trait(node.op, "collective"):
            continue  # a collective runs on the links, not in a kernel: nothing fuses into it
        made_in.update({t: target for t in node.outputs if t})
    return groups


def _view_root(graph: Graph, t: str) -> str:
    """The tensor ``t`` is a view of, through any chain of shape-only producers."""
    while (p := graph.producer(t)) is not None and _view(p.op):
        t = p.inputs[0]
    return t


def _merge_siblings(graph: Graph, groups: list[list[Node]], prologue: dict[str, str],
                    pos: dict[str, int]) -> list[list[Node]]:
    """Merge groups headed by a MatMul/Gemm that read the same activation as their A operand.

    The merged group takes the place of the first sibling (groups are in creation order). A
    later sibling joins if everything it reads from outside is made by an earlier group, by
    the merged group itself, or by views (shape-only nodes) of such tensors, which then move
    in front of the merged group; so the graph stays acyclic. ``pos`` orders members (the
    topological position, -1 for a Constant that reads nothing).
    """
    merge = _Siblings(graph, groups)
    for gids in _sibling_sets(graph, groups, prologue).values():
        merge.absorb(gids)
    if not merge.into:
        return groups
    out: list[list[Node]] = []
    for gid, members in enumerate(groups):
        if gid in merge.into or gid in merge.moved:
            continue
        out.extend(groups[v] for v in sorted(merge.moved) if merge.moved[v] == gid)
        if gid in merge.into.values():
            joined = [n for g, lead in merge.into.items() if lead == gid for n in groups[g]]
            members = sorted(members + joined, key=lambda n: pos[n.name])
        out.append(members)
    return out


def _sibling_sets(graph: Graph, groups: list[list[Node]], prologue: dict[str, str]) -> dict[str, list[int]]:
    """Groups headed by a matrix op, by the activation (through views) their A operand is."""
    siblings: dict[str, list[int]] = {}
    for gid, members in enumerate(groups):
        # the group's main op: the first member that is not a constant or a prologue
        head = next((n for n in members if n.op != "Constant" and n.name not in prologue), None)
        if head is None or head.op not in ("MatMul", "Gemm"):
            continue
        a = head.inputs[0]
        if a in graph.params or (head.op == "Gemm" and int(head.attrs.get("transA", 0))):
            continue
        # each projection may view the activation through its own Reshape, and an fp8 one
        # dequantise its fp8 copy through its own cast
        while (p := graph.producer(a)) is not None and p.name in prologue and p.op == "Cast":
            a = p.inputs[0]
        siblings.setdefault(_view_root(graph, a), []).append(gid)
    return siblings


class _Siblings:
    """Which sibling groups join their lead (``into``) and which view groups move in front
    of a merged group (``moved``)."""

    def __init__(self, graph: Graph, groups: list[list[Node]]) -> None:
        self.graph, self.groups = graph, groups
        self.group_of = {n.name: gid for gid, members in enumerate(groups) for n in members}
        self.into: dict[int, int] = {}  # absorbed group -> the group it joins
        self.moved: dict[int, int] = {}  # view group -> the merged group it now precedes

    def source(self, t: str) -> int | None:
        p = self.graph.producer(t)
        return self.group_of.get(p.name) if p is not None else None

    def views_before(self, gid: int, lead: int) -> set[int] | None:
        """The chain of single-view groups ending at ``gid`` if it starts before ``lead``."""
        members = self.groups[gid]
        if len(members) != 1 or not _view(members[0].op):
            return None
        inner = self.source(members[0].inputs[0])
        if inner is None or inner < lead:
            return {gid}
        rest = self.views_before(inner, lead) if inner > lead else None
        return None if rest is None else rest | {gid}

    def _moves(self, gid: int, lead: int, merged: set[int]) -> set[int] | None:
        moves: set[int] | None = set()
        for n in self.groups[gid]:
            for t in n.inputs:
                src = self.source(t) if t else None
                if src is None or src < lead or src in merged or src == gid or moves is None:
                    continue
                chain = self.views_before(src, lead)
                moves = None if chain is None else moves | chain
        return moves

    def absorb(self, gids: list[int]) -> None:
        lead, merged = gids[0], {gids[0]}
        for gid in gids[1:]:
            moves = self._moves(gid, lead, merged)
            if moves is None:
                continue
            merged.add(gid)
            self.into[gid] = lead
            for v in moves:  # a view wanted by two merged groups precedes the earlier one
                self.moved[v] = min(self.moved.get(v, lead), lead)


PREAMBLE = frozenset({"Transpose", "RotaryEmbedding", "TensorScatter"})


def _merge_preambles(graph: Graph, groups: list[list[Node]], pos: dict[str, int]) -> list[list[Node]]:
    """The single-node kernels between a layer's projections and its attention (head
    transposes, the rotary embedding of q and k, the KV-cache append) become one group: the
    rope-and-cache kernel inference engines run (TensorRT-LLM's attention plugin applies
    RoPE and writes the cache in one kernel, ``applyBiasRopeUpdateKVCache``), where each was
    a launch of its own. The group takes the place of its last member, so it is merged only
    if nothing outside it reads a member's output before that."""
    group_of = {n.name: gid for gid, members in enumerate(groups) for n in members}
    merged: dict[int, list[int]] = {}
    taken: set[int] = set()
    for att in graph.nodes.values():
        if att.op != "Attention":
            continue
        found: set[int] = set()
        stack = [p for t in att.inputs if t and (p := graph.producer(t)) is not None]
        while stack:
            p = stack.pop()
            gid = group_of[p.name]
            if (p.op not in PREAMBLE and not _view(p.op)) or len(groups[gid]) != 1 or gid in found:
                continue
            found.add(gid)
            stack += [q for t in p.inputs if t and (q := graph.producer(t)) is not None]
        kernels = [g for g in found if not _view(groups[g][0].op)]
        if len(kernels) < 2 or found & taken:
            continue
        last = max(found)
        users = {group_of[c.name] for g in found for n in groups[g] for t in n.outputs if t
                 for c in graph.consumers(t)}
        if all(u in found or u > last for u in users):
            merged[last] = sorted(found)
            taken |= found
    if not merged:
        return groups
    out: list[list[Node]] = []
    for gid, members in enumerate(groups):
        if gid in merged:
            out.append(sorted((n for g in merged[gid] for n in groups[g]), key=lambda n: pos[n.name]))
        elif gid not in taken:
            out.append(members)
    return out


def _split_trailing_views(graph: Graph, groups: list[list[Node]], pos: dict[str, int]) -> list[list[Node]]:
    """Shape-only members whose output is used only outside their group leave it and follow it
    as alias nodes: a view is free and shares its input's buffer, whereas as a group output it
    would be written (and allocated) as a tensor of its own."""
    result: list[list[Node]] = []
    for members in groups:
        keep = list(members)
        tail: list[Node] = []
        while len(keep) > 1:
            inside = {n.name for n in keep}
            made = {t for n in keep for t in n.outputs}
            leaving = next((n for n in reversed(keep) if _view(n.op) and n.inputs[0] in made
                            and not any(c.name in inside for c in graph.consumers(n.outputs[0]))), None)
            if leaving is None:
                break
            keep.remove(leaving)
            tail.append(leaving)
        result.append(keep)
        result.extend([n] for n in sorted(tail, key=lambda n: pos[n.name]))
    return result


def _fp8_cast(graph: Graph, node: Node, dequantise: bool) -> bool:
    """A ``Cast`` between floats from (``dequantise``) or to a one-byte float (fp8)."""
    if node.op != "Cast" or not node.inputs or not node.outputs[0]:
        return False
    src, dst = graph.tensors[node.inputs[0]].dtype, graph.tensors[node.outputs[0]].dtype
    if not (is_float(src) and is_float(dst)):
        return False
    return itemsize(src) == 1 < itemsize(dst) if dequantise else itemsize(dst) == 1 < itemsize(src)


def _prologues(graph: Graph, dequantise_only: bool = False) -> dict[str, str]:
    """Transposes (and the shape-only ops and casts after them) that only feed a matrix op,
    and the dequantising casts that only feed a GEMM, mapped to that op.

    A chain ``Transpose -> (shape-only | fp8 cast)* -> M`` qualifies when every link has exactly
    one consumer, no link is a graph output and ``M`` reads strided operands (or, for a chain
    of a dequantise alone, is any matrix op); ``M`` starts its own group (matrix ops never join
    one), so pulling the chain in front of it keeps the fused graph acyclic.
    """
    outputs = set(graph.outputs)
    out: dict[str, str] = {}
    for node in graph.topo_order():
        dq = _fp8_cast(graph, node, dequantise=True)
        if not dq and (node.op != "Transpose" or dequantise_only):
            continue
        chain = [node]
        while True:
            t = chain[-1].outputs[0]
            users = graph.consumers(t)
            if t in outputs or len(users) != 1:
                break
            nxt = users[0]
            if not dq and (_view(nxt.op) or _fp8_cast(graph, nxt, True) or _fp8_cast(graph, nxt, False)):
                chain.append(nxt)
                continue
            if has_trait(nxt.op, "strided_operands") or (dq and graph.work(nxt).matmul_flops > 0):
                out.update({n.name: nxt.name for n in chain})
            break
    return out


def _emit_group(graph: Graph, b: GraphBuilder, members: list[Node], graph_outputs: set[str]) -> None:
    names = {n.name for n in members}
    made = {t for n in members for t in n.outputs if t}
    ext_in: list[str] = []
    for n in members:
        for t in n.inputs:
            if t and t not in made and t not in ext_in:
                ext_in.append(t)
    ext_out = [t for n in members for t in n.outputs if t and (
        t in graph_outputs or any(c.name not in names for c in graph.consumers(t)))]
    sub = [{"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs), "attrs": dict(n.attrs)}
           for n in members]
    dtypes = {t: graph.tensors[t].dtype for t in made}
    # the group's main op gives its meta (compute_dtype above all): a matrix op, not the
    # Transpose or Cast prologue that opens its group
    head = next((n for n in members if graph.work(n).matmul_flops > 0),
                next((n for n in members if n.op != "Constant"), members[0]))
    meta = dict(head.meta)
    meta["fused"] = [n.name for n in members]
    meta["fused_ops"] = [n.op for n in members]
    # several external inputs may be views of one buffer (the projections of one activation):
    # the group reads it once
    roots: list[str] = []
    shared: list[int] = []
    for i, t in enumerate(ext_in):
        t = _view_root(graph, t)
        if t in roots:
            shared.append(i)
        roots.append(t)
    attrs = {"inputs": ext_in, "outputs": ext_out, "nodes": sub, "dtypes": dtypes, "shared_inputs": shared}
    b.node("Fused", ext_in, ext_out, attrs, name=b.unique(f"{head.name}.fused"), meta=meta)


def _constant(graph: Graph, t: str) -> bool:
    """Whether ``t`` is a non-trainable parameter or a ``Constant``, directly or through casts."""
    while (prod := graph.producer(t)) is not None and prod.op == "Cast" and prod.inputs:
        t = prod.inputs[0]
    if t in graph.params:
        return not graph.param_info[t].trainable
    return prod is not None and prod.op == "Constant"


def megatron_epilogues(graph: Graph, node: Node) -> bool:
    """The elementwise ops Megatron-LM's kernels take in: a ``Mul`` or ``Add`` of a constant
    operand (the attention scale, folded into ``baddbmm``'s alpha; the causal mask, inside
    ``FusedScaleMaskSoftmax``) joins the kernel that made its other operand, and so does the
    quantise of an fp8 GEMM's input (Transformer Engine's fused cast). Residual adds,
    dropouts and activations stay kernels of their own."""
    if _fp8_cast(graph, node, dequantise=False):
        return True  # Transformer Engine writes the fp8 copy from the norm / activation kernel
    if node.op == "Add" and any((p := graph.producer(t)) is not None and p.op == "Dropout"
                                and int(p.attrs.get("training_mode", 0)) for t in node.inputs if t):
        return True  # bias-dropout-add: the residual add inside the dropout's kernel
    return node.op in ("Mul", "Add") and any(t and _constant(graph, t) for t in node.inputs)
