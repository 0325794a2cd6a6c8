"""Execution modes: how a framework would run a graph (``sim run --runtime``).

The same network costs different numbers of kernels, and different host time, depending on
what runs it. ``prepare(graph, mode)`` returns the graph as that runtime would execute it and
the engine options that go with it (``sim.engine.simulate``'s ``dispatch_s`` and
``cuda_graphs``):

* ``eager`` (PyTorch eager): one kernel per framework op, each issued by the host (an fp8
  GEMM reads its fp8 operands: ``cast_graph``'s dequantise casts fold into it)
  (``dispatch_s`` per kernel: the spec's ``arch.host_dispatch``, else ``EAGER_DISPATCH_S``,
  an estimate inside the 5-25 us range docs/engine.md cites). Exported subgraphs that
  PyTorch runs as one ATen kernel are put back first: GELU (``aten::gelu``), layer norm
  (``aten::native_layer_norm``) and the bias of a linear layer (``aten::addmm``)
  (``sim.passes.patterns``); a convolution's bias goes the other way, a kernel of its own
  after the cuDNN convolution, as ATen's ``_convolution`` adds it. A head transpose that
  ``bmm`` reads through its batch stride (batch 1) is a view, as in PyTorch
  (``sim.passes.layout``). On a GPU whose spec says its convolution library runs NCHW
  tensor-core convolutions through NHWC kernels (``arch.nchw_conv_transposes``: cuDNN 8),
  each such convolution launches its layout transposes too (``nhwc_convolutions``, same
  module). Attention stays as the graph has it unless the export carries
  the signature of ``scaled_dot_product_attention`` (Q and K^T each scaled by sqrt(scale)):
  a model that called it runs one fused kernel in eager too (pattern ``sdpa``); a tanh GELU
  stays as its ops (HF's ``gelu_new`` is a Python formula); nodes nothing reads are dropped
  (``sim.passes.dce``);
* ``compiled`` (``torch.compile``, Inductor): also the exporter's decomposed attention becomes
  the fused ``Attention`` op (Inductor pattern-matches it onto SDPA / flash attention), then
  ``sim.passes.fusion.fuse``: pointwise chains join their producer, views and the head
  split/merge transposes cost no kernel, sibling projections share one GEMM. Kernels are still
  launched one by one from the host (Inductor's default mode);
* ``tensorrt`` (TensorRT, or ``torch.compile(mode="reduce-overhead")``): the same rewrites and
  fusion, and the whole graph is replayed as one CUDA graph (one launch per step).

``kernel_count`` counts the kernels a graph launches (ops with work that are not views).
"""

from __future__ import annotations

from typing import Any

from sim.errors import GraphError
from sim.graph import Graph

MODES = ("eager", "compiled", "tensorrt")
EAGER_DISPATCH_S = 8e-6  # estimate: host time per eager kernel (docs/engine.md, "How much per op")
_PATTERNS = {"eager": ("sdpa", "gelu_erf", "layernorm", "bias", "fold", "conv_bias"),
             "compiled": ("attention", "gelu", "layernorm", "bias", "fold"),
             "tensorrt": ("attention", "gelu", "layernorm", "bias", "fold")}


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a GraphError naming the choices."""
    if mode not in MODES:
        raise GraphError(f"unknown runtime {mode!r} (choose from {', '.join(MODES)})", where="--runtime")
    return mode


def runtime_graph(graph: Graph, mode: str, dtype: str | None = None, hw: Any = None) -> Graph:
    """``graph`` as runtime ``mode`` executes it (see the module doc) on ``hw`` (a spec; None:
    no spec-dependent rewrite). With ``dtype`` the graph is cast after the pattern rewrites
    (which read the exporter's fp32 constants) and before fusion (so the casts join their
    groups)."""
    from sim.passes.dce import live
    from sim.passes.fusion import fold_dequantise, fuse
    from sim.passes.layout import nhwc_convolutions, strided_transposes
    from sim.passes.patterns import rewrite
    from sim.passes.precision import cast_graph

    g = live(rewrite(graph, _PATTERNS[check_mode(mode)]))
    # a GEMM reads a transposed operand through its flags; eager bmm also through batch strides
    g = strided_transposes(g, batched=mode == "eager")
    if dtype:
        g = cast_graph(g, dtype)
    if mode in ("compiled", "tensorrt"):
        g = fuse(g)
    else:
        if g.meta.get("dtype") == "fp8":
            g = fold_dequantise(g)  # an fp8 GEMM reads its fp8 operands: no dequantise kernels
        if any(getattr(a, "nchw_conv_transposes", False) for a in _gpu_archs(hw)):
            g = nhwc_convolutions(g)
    g.meta["runtime"] = mode
    return g


def engine_options(mode: str, hw: Any = None) -> dict[str, Any]:
    """``dispatch_s`` and ``cuda_graphs`` for ``sim.engine.simulate`` under ``mode``: the
    spec's ``arch.host_dispatch`` when its first device states one, else ``EAGER_DISPATCH_S``."""
    check_mode(mode)
    per_op = EAGER_DISPATCH_S
    stated = [float(getattr(a, "host_dispatch", 0.0) or 0.0) for a in _accelerator_archs(hw)]
    if stated and stated[0] > 0:
        per_op = stated[0]
    return {"dispatch_s": per_op, "cuda_graphs": mode == "tensorrt"}


def _devices(hw: Any) -> list[Any]:
    """The device specs of ``hw`` (a device spec or a system; None: none)."""
    if hw is None:
        return []
    return list(getattr(hw, "devices", {}).values()) or [hw]


def _accelerator_archs(hw: Any) -> list[Any]:
    """The ``arch`` of every non-CPU device of ``hw``."""
    return [d.arch for d in _devices(hw) if d.kind != "cpu"]


def _gpu_archs(hw: Any) -> list[Any]:
    """The ``arch`` of every GPU of ``hw``."""
    return [d.arch for d in _devices(hw) if d.kind == "gpu"]


def prepare(graph: Graph, mode: str, hw: Any = None,
            dtype: str | None = None) -> tuple[Graph, dict[str, Any]]:
    """(the graph as ``mode`` runs it, the engine options for it)."""
    return runtime_graph(graph, mode, dtype, hw), engine_options(mode, hw)


def kernel_count(graph: Graph) -> int:
    """Kernels ``graph`` launches: ops with work that are neither views nor metadata, each
    counted by its ``Work.launches`` (optimizer updates share their multi-tensor launches)."""
    from sim.ops.registry import has_trait

    n = 0.0
    for node in graph.nodes.values():
        if has_trait(node.op, "no_kernel") or "alias_of" in node.meta or node.op == "Constant":
            continue
        w = graph.work(node)
        if not w.empty:
            n += w.launches
    return int(round(n))
