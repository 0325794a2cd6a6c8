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

with ``strided=1``. ``strided_transposes(graph, batched=True)`` also marks any other
permutation a strided batched GEMM (``cublasGemmStridedBatched``, which PyTorch's ``bmm``
calls on a view when its strides allow) reads in place: one of the two matrix axes has
unit stride, and the batch axes (those of size 1 left out) collapse into one batch stride.
A head split ``[b, s, h, d] -> [b, h, s, d]`` qualifies at ``b = 1`` (batch stride ``d``,
leading dimension ``h d``) and not for ``b > 1``, where ``torch.matmul``'s reshape to
``[b h, s, d]`` copies: PyTorch eager launches no kernel for the head transposes of a
batch-1 attention and one copy each otherwise. In the same mode a Transpose that keeps the
last axis last and feeds only Q, K or V of a fused ``Attention`` is marked too, at any batch:
``scaled_dot_product_attention``'s kernels (flash, memory-efficient, cuDNN) take separate
batch, head and sequence strides and need only unit-stride rows. So is the transpose that
merges the heads of an ``Attention`` output back (``_heads_merged``).

A marked op does no work, so the engine takes it as a view (no kernel, no time, its output
aliases the input's buffer, which stays alive until the GEMM has read it).
The executor still computes the transpose, so values do not change. Nothing else changes:
passes that look through ``Transpose`` (sharding, sparsity, fusion) see the same graph.

``nhwc_convolutions(graph)`` goes the other way, for the layout a convolution library needs.
cuDNN 8's tensor-core convolutions read and write NHWC; given PyTorch's default NCHW tensors
it transposes the input and the filter to NHWC, runs the NHWC kernel and transposes the
result back, three kernels of their own per call (NVIDIA, *Convolutional Layers User's
Guide*, "Tensor Layouts In Memory: NCHW vs NHWC": NCHW on Tensor Cores "include[s] some
overhead due to automatic transpose operations"; an nvprof trace of one fp16 NCHW conv under
cuDNN 8.2 shows two ``nchwToNhwcKernel`` and one ``nhwcToNchwKernel`` per call:
PaddlePaddle/docs ``docs/dev_guides/op_dtype_extension/op_dtype_extension_acceptance_criteria_cn.md``
@d9a110c2). The pass rewrites every ``Conv``, ``ConvGradData`` and ``ConvGradFilter`` that
computes in a tensor-core dtype (``TENSOR_CORE_DTYPES``) as that sequence: a ``Transpose`` to
channels last of each operand of rank >= 3, the op with ``channels_last=1``
(``sim.ops.conv``) and a ``Transpose`` of its result back to the name it had. The
transposes are launched by the library inside the framework's call, so they pay no host
dispatch of their own (``launches=0``). A GPU spec says whether its library does this
(``arch.nchw_conv_transposes``); ``sim.passes.runtime`` applies the pass in eager mode only
(``torch.compile`` converts a convolutional model to channels last, TensorRT and AITemplate
run NHWC engines).
"""

from __future__ import annotations

from typing import Any

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter
from sim.ops.conv import to_channels_first, to_channels_last
from sim.ops.registry import has_trait

GEMMS = ("MatMul", "Gemm")


def _perm(node: Node, rank: int) -> list[int]:
    """A Transpose's ``perm`` as non-negative axes (default: all axes reversed)."""
    return [int(p) % rank for p in (node.attrs.get("perm") or range(rank)[::-1])]


def swaps_last_two(node: Node, rank: int) -> bool:
    """Whether a Transpose's ``perm`` (default: all axes reversed) swaps the last two axes only."""
    perm = _perm(node, rank)
    return rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2]


def batched_view(node: Node, shape: tuple[int, ...]) -> bool:
    """Whether a Transpose of a contiguous ``shape`` gives a view a strided batched GEMM reads
    in place (module doc): a unit-stride matrix axis, and batch axes with one stride."""
    rank = len(shape)
    if rank < 2:
        return False
    perm = _perm(node, rank)
    stride = [1] * rank
    for i in range(rank - 2, -1, -1):
        stride[i] = stride[i + 1] * shape[i + 1]
    sizes, strides = [shape[p] for p in perm], [stride[p] for p in perm]
    if 1 not in (strides[-1], strides[-2]) and 1 not in (sizes[-1], sizes[-2]):
        return False
    batch = [(n, st) for n, st in zip(sizes[:-2], strides[:-2]) if n > 1]
    return all(a[1] == b[0] * b[1] for a, b in zip(batch, batch[1:]))


def gemm_operand_only(graph: Graph, tensor: str, attention: bool = False) -> bool:
    """Whether ``tensor`` is read only as operand A or B of GEMMs (with ``attention``: only as
    Q, K or V of fused ``Attention`` ops), and is not a graph output."""
    users = graph.consumers(tensor)
    if not users or tensor in graph.outputs:
        return False
    ops, operands = (("Attention",), 3) if attention else (GEMMS, 2)
    return all(n.op in ops and has_trait(n.op, "strided_operands") and tensor not in n.inputs[operands:]
               for n in users)


def last_axis_kept(node: Node, rank: int) -> bool:
    """Whether a Transpose leaves the last axis last (its rows stay unit-stride)."""
    return rank >= 1 and _perm(node, rank)[-1] == rank - 1


class _Strided(Rewriter):
    """Every node copied; the qualifying Transposes get ``strided=1`` (see the module doc)."""

    def __init__(self, src: Graph, batched: bool) -> None:
        super().__init__(src)
        self.marked: list[str] = []
        self.batched = batched

    def visit(self, node: Node) -> None:
        shape = self.src.tensors[node.inputs[0]].shape if node.op == "Transpose" else ()
        if (node.op == "Transpose" and not int(node.attrs.get("strided", 0))
                and _reads_in_place(self.src, node, shape, self.batched)):
            self.emit(node, attrs={**node.attrs, "strided": 1})
            self.marked.append(node.name)
        else:
            self.emit(node)


def _heads_merged(src: Graph, node: Node) -> bool:
    """A ``[b, h, s, d] -> [b, s, h, d]`` Transpose of a fused ``Attention``'s output: the
    flash, memory-efficient and cuDNN kernels write O as ``[b, s, h, d]`` and return the
    ``[b, h, s, d]`` view, so the transpose back (and torch's ``.contiguous()``) copies nothing."""
    p = src.producer(node.inputs[0])
    return (p is not None and p.op == "Attention" and src.tensors[node.inputs[0]].rank == 4
            and _perm(node, 4) == [0, 2, 1, 3] and node.outputs[0] not in src.outputs)


def _reads_in_place(src: Graph, node: Node, shape: tuple[int, ...], batched: bool) -> bool:
    out = node.outputs[0]
    if swaps_last_two(node, len(shape)) and gemm_operand_only(src, out):
        return True
    if not batched:
        return False
    if _heads_merged(src, node):
        return True
    return ((batched_view(node, shape) and gemm_operand_only(src, out))
            or (last_axis_kept(node, len(shape)) and gemm_operand_only(src, out, attention=True)))


def strided_transposes(graph: Graph, batched: bool = False) -> Graph:
    """``graph`` with the Transposes its GEMMs read through layout flags (``batched``: also
    through batch strides) marked ``strided=1`` (names, values and structure unchanged);
    ``meta["strided_transposes"]`` counts them."""
    rw = _Strided(graph, batched)
    out = rw.run()
    out.meta["strided_transposes"] = len(rw.marked) + int(graph.meta.get("strided_transposes", 0))
    return out.verify()


TENSOR_CORE_DTYPES = ("fp16", "bf16", "tf32")  # compute dtypes a convolution runs on the tensor cores
CONV_OPS = ("Conv", "ConvGradData", "ConvGradFilter")


class _Nhwc(Rewriter):
    """Tensor-core convolutions between transposes to and from channels last (module doc)."""

    def __init__(self, src: Graph) -> None:
        super().__init__(src)
        self.count = 0

    def visit(self, node: Node) -> Any:
        if (node.op not in CONV_OPS or int(node.attrs.get("channels_last", 0))
                or self.src.compute_dtype(node) not in TENSOR_CORE_DTYPES):
            return self.emit(node)
        meta = {k: v for k, v in node.meta.items() if k != "compute_dtype"}
        ins = []
        for i, t in enumerate(node.inputs):
            rank = self.src.tensors[t].rank if t else 0
            if rank < 3:
                ins.append(self.map(t))
                continue
            ins.append(self.b.op("Transpose", [self.map(t)], name=f"{node.name}/to_nhwc{i}", meta=dict(meta),
                                 perm=to_channels_last(rank), launches=0))
        inner = [self.b.unique(f"{t}/nhwc") for t in node.outputs]
        self.b.node(node.op, ins, inner, {**node.attrs, "channels_last": 1}, name=node.name,
                    meta=dict(node.meta))
        for i, (t, n) in enumerate(zip(node.outputs, inner)):
            back = to_channels_first(self.src.tensors[t].rank)
            self.b.node("Transpose", [n], [t], {"perm": back, "launches": 0},
                        name=self.b.unique(f"{node.name}/to_nchw{i}"), meta=dict(meta))
            self.env[t] = t
        self.count += 1


def nhwc_convolutions(graph: Graph) -> Graph:
    """``graph`` with every tensor-core convolution run channels last between transposes
    (module doc); ``meta["nhwc_convolutions"]`` counts the convolutions rewritten."""
    rw = _Nhwc(graph)
    out = rw.run()
    out.meta["nhwc_convolutions"] = rw.count + int(graph.meta.get("nhwc_convolutions", 0))
    return out.verify()
