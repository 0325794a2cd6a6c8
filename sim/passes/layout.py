"""Transposes a GEMM reads through its layout flags: ``strided_transposes``.

cuBLAS (``transa``/``transb``) and every GEMM library take a transposed operand as a flag on
the call, so ``MatMul(x, Transpose(w))`` launches one GEMM and no transpose kernel: the GEMM
reads ``w`` in place. Autodiff writes the backward GEMMs of a ``MatMul`` with explicit
``Transpose`` nodes (``dX = dY @ W^T``, ``dW = X^T @ dY``); scheduled as copies, the
transposes of weights (which depend only on parameters) run at the start of the step and
each holds a weight-sized buffer until its GEMM, inflating the peak.

``strided_transposes(graph)`` marks every ``Transpose`` that

* swaps the last two axes (and keeps the others), the layout a GEMM flag expresses,
* feeds only operand A or B of ``MatMul``/``Gemm`` nodes (ops with the ``strided_operands``
  trait; ``Attention`` has it too, but a fused attention kernel needs its last axis
  contiguous, which a last-two-axes swap breaks), and
* is not a graph output,

with ``strided=1``: the op then does no work, so the engine takes it as a view (no kernel, no
time, its output aliases the input's buffer, which stays alive until the GEMM has read it).
The executor still computes the transpose, so values do not change. Nothing else changes:
passes that look through ``Transpose`` (sharding, sparsity, fusion) see the same graph.
"""

from __future__ import annotations

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter
from sim.ops.registry import has_trait

GEMMS = ("MatMul", "Gemm")


def swaps_last_two(node: Node, rank: int) -> bool:
    """Whether a Transpose's ``perm`` (default: all axes reversed) swaps the last two axes only."""
    perm = [int(p) % rank for p in (node.attrs.get("perm") or range(rank)[::-1])]
    return rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2]


def gemm_operand_only(graph: Graph, tensor: str) -> bool:
    """Whether ``tensor`` is read only as operand A or B of GEMMs (and is not a graph output)."""
    users = graph.consumers(tensor)
    if not users or tensor in graph.outputs:
        return False
    return all(n.op in GEMMS and has_trait(n.op, "strided_operands") and tensor not in n.inputs[2:]
               for n in users)


class _Strided(Rewriter):
    """Every node copied; the qualifying Transposes get ``strided=1`` (see the module doc)."""

    def __init__(self, src: Graph) -> None:
        super().__init__(src)
        self.marked: list[str] = []

    def visit(self, node: Node) -> None:
        if node.op == "Transpose" and not int(node.attrs.get("strided", 0)) \
                and swaps_last_two(node, self.src.tensors[node.inputs[0]].rank) \
                and gemm_operand_only(self.src, node.outputs[0]):
            self.emit(node, attrs={**node.attrs, "strided": 1})
            self.marked.append(node.name)
        else:
            self.emit(node)


def strided_transposes(graph: Graph) -> Graph:
    """``graph`` with the Transposes its GEMMs read through layout flags marked ``strided=1``
    (names, values and structure unchanged); ``meta["strided_transposes"]`` counts them."""
    rw = _Strided(graph)
    out = rw.run()
    out.meta["strided_transposes"] = len(rw.marked) + int(graph.meta.get("strided_transposes", 0))
    return out.verify()
