"""Mixed precision as ``torch.autocast`` runs it on CUDA.

``autocast(graph, "bf16")`` keeps every parameter and graph input in fp32 (master weights)
and gives each op the precision autocast gives it, by the op lists of the PyTorch AMP
documentation ("CUDA Ops that can autocast to float16" and "CUDA Ops that can autocast to
float32", https://pytorch.org/docs/stable/amp.html#cuda-op-specific-behavior):

* ``LOWER`` (matmul, mm, bmm, addmm, linear, conv*, baddbmm, scaled dot-product attention):
  every floating input not already in the low dtype is cast to it; the result is low;
* ``FP32`` (softmax, log_softmax, layer_norm, group_norm, norms, pow, exp, log, reciprocal,
  rsqrt, sum, prod, cumsum, logsumexp, softplus, cross entropy, nll / mse losses): low
  inputs are cast up to fp32; the result is fp32;
* every other op runs in the dtype its inputs have (a ReLU after a convolution stays low; an
  add after a layer norm stays fp32). Where our op needs one dtype and its inputs differ, the
  lower ones are cast to fp32 (PyTorch promotes to the widest type; its elementwise kernels
  convert on load, so these ``promote`` casts are kernels PyTorch does not launch, counted
  in ``meta["promote_casts"]``). Batch normalisation takes a low input with fp32 parameters,
  as cuDNN's does.

Casts of parameters are cached (autocast's weight-cast cache: one cast per weight per step,
however often it is used); casts of activations are made at every use, as autocast casts the
arguments of each call. Graph outputs are cast back to fp32 under their names, so a loss
appended by ``training_graph`` is fp32, and the gradients of the weight casts are cast back to
fp32 (fp32 optimizer updates). ``loss_scale`` as in ``sim.passes.precision.amp``.
"""

from __future__ import annotations

from sim.dtypes import canonical, is_float
from sim.errors import GraphError
from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter
from sim.ops.registry import get_op
from sim.passes.precision import AMP_DTYPES, DEFAULT_LOSS_SCALE

LOWER = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "Attention"})
FP32 = frozenset({
    "Softmax", "LogSoftmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
    "RMSNormalization", "Pow", "Exp", "Log", "Reciprocal", "ReduceSum", "ReduceProd", "ReduceLogSumExp",
    "ReduceL1", "ReduceL2", "ReduceSumSquare", "CumSum", "Softplus", "SoftmaxCrossEntropyLoss", "MSELoss",
})


class _Autocast(Rewriter):
    """Each node re-emitted with autocast's per-op precision; ``env`` maps a source tensor to
    its name in the new graph (a low output of a graph output gets a new name)."""

    def __init__(self, src: Graph, dtype: str) -> None:
        super().__init__(src)
        self.dtype = dtype
        self.g = self.out
        self.weight_casts: dict[tuple[str, str], str] = {}
        self.promotes = 0

    def cast(self, t: str, to: str, why: str, user: str) -> str:
        """``t`` (a name in the new graph) as dtype ``to``: a cached cast for parameters; a
        0-d constant is retyped instead (a Python scalar in PyTorch: no kernel)."""
        if self.g.tensors[t].dtype == to:
            return t
        p = self.g.producer(t)
        if p is not None and p.op == "Constant" and not p.inputs and self.g.tensors[t].rank == 0:
            from sim.ops.generate import constant_value

            name = self.b.unique(f"{t}.{to}")
            self.b.node("Constant", [], [name], {"value": constant_value(p.attrs), "dtype": to}, name=name)
            return name
        key = (t, to)
        if t in self.g.params and key in self.weight_casts:
            return self.weight_casts[key]
        name = self.b.unique(f"{t}.{to}")
        node_name = self.b.unique(f"{t}.to_{to}" if t in self.g.params else f"{user}.cast_{t}")
        self.b.node("Cast", [t], [name], {"to": to}, name=node_name, meta={"cast": why})
        if t in self.g.params:
            self.weight_casts[key] = name
        return name

    def want(self, node: Node, ins: list[str]) -> str | None:
        """The dtype the node's floating inputs must have (None: as they are)."""
        if node.op in LOWER:
            return self.dtype
        if node.op in FP32:
            return "fp32"
        if node.op == "BatchNormalization":
            return None
        # scalars (0-d) do not take part in type promotion, as in PyTorch
        kinds = {self.g.tensors[t].dtype for t in ins
                 if t and is_float(self.g.tensors[t].dtype) and self.g.tensors[t].rank > 0}
        if len(kinds) > 1:
            return "fp32"
        return kinds.pop() if kinds else None

    def visit(self, node: Node) -> None:
        ins = [self.env.get(t, t) if t else "" for t in node.inputs]
        want = self.want(node, ins)
        if want is not None:
            why = "promote" if node.op not in LOWER | FP32 else "autocast"
            before = sum(n.op == "Cast" for n in self.g.nodes.values())
            ins = [self.cast(t, want, why, node.name) if t and is_float(self.g.tensors[t].dtype) else t
                   for t in ins]
            if why == "promote":
                self.promotes += sum(n.op == "Cast" for n in self.g.nodes.values()) - before
        specs = [self.g.tensors[t] if t else None for t in ins]
        outs = get_op(node.op).infer(specs, dict(node.attrs))
        names = []
        for t, spec in zip(node.outputs, outs):
            if t and t in self.src.outputs and spec.dtype != self.src.tensors[t].dtype:
                names.append(self.b.unique(f"{t}.{spec.dtype}"))
            else:
                names.append(t)
        self.emit(node, inputs=ins, outputs=names)

    def finish(self) -> None:
        """Graph outputs cast back to their source dtype under their source names."""
        for t in self.src.outputs:
            have = self.env.get(t, t)
            if have != t:
                to = self.src.tensors[t].dtype
                self.b.node("Cast", [have], [t], {"to": to}, name=self.b.unique(f"{t}.to_{to}"),
                            meta={"cast": "autocast"})
        self.out.set_outputs(self.src.outputs)


def autocast(graph: Graph, dtype: str = "bf16", loss_scale: float | None = None) -> Graph:
    """``graph`` with ``torch.autocast(dtype)``'s per-op precision (see the module doc)."""
    dtype = canonical(dtype, where="autocast dtype")
    if dtype not in AMP_DTYPES:
        raise GraphError(f"autocast dtype must be one of {AMP_DTYPES}, got {dtype!r}", where="autocast")
    scale = DEFAULT_LOSS_SCALE[dtype] if loss_scale is None else float(loss_scale)
    if scale <= 0:
        raise GraphError(f"loss_scale must be > 0, got {scale}", where="autocast")
    rw = _Autocast(graph, dtype)
    g = rw.run()
    g.meta.update({"amp": dtype, "autocast": True, "loss_scale": scale, "promote_casts": rw.promotes})
    return g.verify()
