"""Precision passes: cast a whole graph to one dtype, and automatic mixed precision.

``cast_graph`` rebuilds a graph with every floating tensor in one storage dtype (inference
or pure low-precision training). ``amp`` keeps fp32 master weights and runs the compute in
bf16 or fp16 with casts at the boundaries and, for fp16, a loss scale.

What each dtype means here:

* ``fp32``, ``fp16``, ``bf16``: every floating input, parameter and intermediate tensor is
  stored (and so moved) in that dtype; kernels compute in fp32 and the executor rounds each
  output to the storage dtype, as tensor cores accumulate in fp32.
* ``fp8``: FP8 (E4M3) GEMMs in a bf16 model, as FP8 inference and training run (Transformer
  Engine's recipe, TensorRT-LLM and vLLM W8A8): every ``MatMul``, ``Gemm``, ``Conv`` or
  ``MoE`` with a weight parameter among its operands (and, in a training graph, its data- and
  weight-gradient GEMMs; ``fp8_gemm_operands``) multiplies fp8 operands on the fp8 tensor-core rate
  (``meta["compute_dtype"] = "fp8"``) and writes a bf16 result; everything else (norms,
  softmax, residual adds, attention between activations) stays bf16. In ONNX's
  quantise/dequantise form: the weight is stored in fp8 (one an optimizer updates is
  quantised once per step; a weight another forward op reads too, such as a head tied to the
  embedding, keeps its GEMM in bf16), each activation operand is
  quantised once (``Cast`` to fp8, ``<tensor>.fp8``), and each GEMM dequantises its operands
  (``Cast`` back to bf16, ``<node>.dequantize<i>``). The executor computes exactly that:
  GEMM inputs rounded to fp8, everything else in bf16 (per-tensor scales are not modelled,
  so values beyond E4M3's 448 saturate). ``fuse`` folds each dequantise into its GEMM (an
  fp8 kernel reads its operands in one byte each) and each quantise into the kernel that
  made the activation, as TensorRT folds Q/DQ pairs.
* ``tf32``: tensors stay fp32; matmul-like nodes (those whose ``Work`` has
  ``matmul_flops > 0``) get ``meta["compute_dtype"] = "tf32"`` so cost models use the TF32
  tensor-core rate. The executor still computes them in fp32.
* ``int8``: W8A8 inference quantisation as a cost model sees it: every floating activation
  and every weight of a matmul-like node is stored in one byte (other parameters, such as
  norm scales and shifts, stay in their float type) and matmul-like nodes compute in int8
  with int32 accumulation (``meta["compute_dtype"] = "int8"``). Quantisation scales are not
  modelled, so an int8 graph is for simulation (time, bytes, memory), not for numerics:
  executing it truncates real-valued weights to integers. Ops that have no int8 form get a
  dequantise/requantise pair of ``Cast`` nodes around them (computed in their original
  dtype), as real int8 deployments do for softmax or normalisation.

Any op whose shape rule rejects the target dtype (or fixes its own output dtype) is wrapped
the same way, so every pass output verifies. Tensor, node and parameter names are kept;
the wrapping casts are named ``<node>.cast_in<i>`` / ``<node>.cast_out<i>``.
"""

from __future__ import annotations

from typing import Any

from sim.dtypes import canonical, is_float
from sim.errors import GraphError
from sim.graph import Graph, Node, TensorSpec
from sim.graph.rewrite import Rewriter
from sim.ops.registry import get_op, has_op, has_trait

CAST_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")
_INFER_ERRORS = (GraphError, ValueError, IndexError, KeyError, TypeError, ZeroDivisionError)


def _storage(dtype: str) -> str:
    return "fp32" if dtype == "tf32" else dtype


def is_matmul_like(graph: Graph, node: Node) -> bool:
    """Whether a node's work has a matrix-unit part (MatMul, Gemm, Conv, attention ...)."""
    return graph.work(node).matmul_flops > 0


def _retype_attrs(node: Node, storage: str) -> dict[str, Any]:
    attrs = dict(node.attrs)
    for key in ("to", "dtype"):
        v = attrs.get(key)
        if isinstance(v, str):
            try:
                if is_float(canonical(v)):
                    attrs[key] = storage
            except GraphError:
                pass
    return attrs


class _Precision(Rewriter):
    """Re-emit every node with floats in ``storage``; a node whose shape rule rejects that
    dtype computes in its original dtypes between casts. ``env`` maps source tensors to the
    names read in the new graph (a leaf's cast copy, an output's renamed inner tensor)."""

    def __init__(self, src: Graph, storage: str, dtype: str, keep: set[str] | None = None) -> None:
        super().__init__(src)
        self.storage, self.dtype, self.keep = storage, dtype, keep

    def spec_of(self, name: str, spec: TensorSpec) -> TensorSpec:
        if self.keep is None or not is_float(spec.dtype) or name in self.keep:
            return spec
        return spec.with_dtype(self.storage)

    def leaves(self) -> None:
        for name, spec in self.src.inputs.items():
            self.b.input(name, self.spec_of(name, spec))
        for name, spec in self.src.params.items():
            self.b.param(name, self.spec_of(name, spec), self.src.param_info[name],
                         self.src.initializers.get(name))
        for t in [*self.src.inputs, *self.src.params]:
            self.env.setdefault(t, t)

    def visit(self, node: Node) -> None:
        g, src, storage = self.out, self.src, self.storage
        attrs = _retype_attrs(node, storage)
        opdef = get_op(node.op, where=f"node {node.name!r} ({node.op})")
        ins = tuple(self.env.get(t, t) for t in node.inputs)
        outs_named = tuple(self.env.get(t, t) for t in node.outputs)
        in_specs = [g.tensors[t] if t else None for t in ins]
        try:
            outs = opdef.infer(in_specs, attrs)
            ok = all(
                o.dtype == (storage if is_float(src.tensors[t].dtype) else src.tensors[t].dtype)
                for t, o in zip(node.outputs, outs) if t
            )
        except _INFER_ERRORS:
            ok = False
        if ok:
            self.emit(node, inputs=ins, outputs=outs_named, attrs=attrs)
        else:
            self._wrapped(node, ins, outs_named)
        new = g.nodes[node.name]
        if self.dtype in ("tf32", "int8") and is_matmul_like(g, new):
            new.meta["compute_dtype"] = self.dtype

    def _wrapped(self, node: Node, ins_g: tuple[str, ...], outs_g: tuple[str, ...]) -> None:
        """Emit ``node`` computing in its original dtypes, with casts in and out of storage."""
        if not has_op("Cast"):
            raise GraphError(f"op {node.op} has no {self.storage} form and no Cast op is defined",
                             where=f"node {node.name!r} ({node.op})")
        src, b = self.src, self.b
        ins: list[str] = []
        for i, (t, tg) in enumerate(zip(node.inputs, ins_g)):
            orig = src.tensors[t].dtype if t else ""
            if tg and self.out.tensors[tg].dtype != orig:
                ins.append(b.node("Cast", [tg], [b.unique(f"{t}.{orig}")], {"to": orig},
                                  name=b.unique(f"{node.name}.cast_in{i}"),
                                  meta={"cast": "in", "forward": node.name})[0])
            else:
                ins.append(tg)
        outs: list[str] = []
        recast: list[tuple[int, str, str]] = []
        for i, (t, tg) in enumerate(zip(node.outputs, outs_g)):
            if t and is_float(src.tensors[t].dtype) and src.tensors[t].dtype != self.storage:
                inner = b.unique(f"{t}.{src.tensors[t].dtype}")
                outs.append(inner)
                recast.append((i, inner, tg))
            else:
                outs.append(tg)
        self.emit(node, inputs=ins, outputs=outs)
        for t, tg in zip(node.outputs, outs_g):
            if t:
                self.env[t] = tg
        for i, inner, tg in recast:
            b.node("Cast", [inner], [tg], {"to": self.storage}, name=b.unique(f"{node.name}.cast_out{i}"),
                   meta={"cast": "out", "forward": node.name})


class _Amp(_Precision):
    """fp32 leaves cast to ``dtype`` before their first use; outputs cast back to fp32."""

    def __init__(self, src: Graph, dtype: str) -> None:
        super().__init__(src, dtype, dtype)
        self.float_leaves = {t for t, s in [*src.inputs.items(), *src.params.items()] if is_float(s.dtype)}

    def leaves(self) -> None:
        super().leaves()
        for t in self.src.outputs:
            if is_float(self.src.tensors[t].dtype) and t not in self.float_leaves:
                self.env[t] = self.b.unique(f"{t}.{self.dtype}")

    def visit(self, node: Node) -> None:
        for t in node.inputs:
            if t in self.float_leaves and self.env[t] == t and self.src.tensors[t].dtype != self.dtype:
                d = self.dtype
                self.env[t] = self.b.node("Cast", [t], [self.b.unique(f"{t}.{d}")], {"to": d},
                                          name=self.b.unique(f"{t}.to_{d}"), meta={"cast": "amp"})[0]
        super().visit(node)

    def finish(self) -> None:
        for t in self.src.outputs:
            if self.env.get(t, t) != t and t not in self.float_leaves:
                to = self.src.tensors[t].dtype
                self.b.node("Cast", [self.env[t]], [t], {"to": to}, name=self.b.unique(f"{t}.to_{to}"),
                            meta={"cast": "amp"})
        self.out.set_outputs(self.src.outputs)


def cast_graph(graph: Graph, dtype: str) -> Graph:
    """A new graph in which every floating input, parameter and tensor has ``dtype``.

    ``dtype`` is one of fp32, tf32, fp16, bf16, fp8, int8 (see the module docstring for what
    tf32 and int8 mean). Names are kept; specs are re-inferred through the op library.

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("t"); _ = g.add_input("x", TensorSpec((2, 4)))
    >>> _ = g.add_param("w", TensorSpec((4, 3))); _ = g.add_node("MatMul", ["x", "w"], ["y"])
    >>> g.set_outputs(["y"])
    >>> h = cast_graph(g, "bf16")
    >>> h.tensors["y"].dtype, h.param_bytes
    ('bf16', 24)
    >>> cast_graph(g, "tf32").nodes["matmul"].meta["compute_dtype"]
    'tf32'
    """
    dtype = canonical(dtype, where="cast dtype")
    if dtype not in CAST_DTYPES:
        raise GraphError(f"cannot cast a graph to {dtype!r} (choose from {', '.join(CAST_DTYPES)})",
                         where="cast dtype")
    if graph.meta.get("dtype") == dtype:
        return graph.copy()  # already cast (e.g. cast, then fused): casting again changes nothing
    storage = _storage(dtype)
    keep: set[str] = set()
    if dtype == "int8":
        # W8A8: weights of matmul-like ops are quantised; other parameters (norm scales and
        # shifts, biases of elementwise adds) stay in their float type, as quantised runtimes
        # keep them, instead of being cast back and forth around every use.
        quantised = {t for n in graph.nodes.values() if is_matmul_like(graph, n) for t in n.inputs}
        keep = {p for p in graph.params if p not in quantised}

    if dtype == "fp8":
        return _fp8_gemms(graph)
    rw = _Precision(graph, storage, dtype, keep)
    rw.out.meta["dtype"] = dtype
    return rw.run().verify()


FP8_ACTIVATIONS = "bf16"  # the dtype of an fp8 graph's tensors outside its GEMMs' operands
# the ops an fp8 graph runs as fp8 GEMMs when a weight parameter is among these operands
# (a Gemm's or Conv's bias and an MoE's router logits and expert biases stay in bf16)
FP8_OPERANDS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1), "MoE": (0, 2, 4, 6)}


def _fp8_slots(graph: Graph, node: Node) -> list[int]:
    """The float operands of ``node`` an fp8 GEMM quantises (a backward GEMM: its two)."""
    return [i for i in FP8_OPERANDS.get(node.op, (0, 1))
            if i < len(node.inputs) and node.inputs[i] and is_float(graph.tensors[node.inputs[i]].dtype)]


def _operand_only(node: Node, t: str) -> bool:
    """Whether ``node`` reads ``t`` only in its op's fp8 operand positions (``FP8_OPERANDS``)."""
    return node.op in FP8_OPERANDS and all(i in FP8_OPERANDS[node.op]
                                           for i, x in enumerate(node.inputs) if x == t)


def fp8_gemm_operands(graph: Graph) -> dict[str, list[int]]:
    """The nodes an fp8 graph runs as fp8 GEMMs -> the operand positions quantised.

    Forward: those of ``FP8_OPERANDS`` with a weight parameter among those operands (a linear
    layer, convolution or MoE experts, not the product of two activations such as
    attention's), unless another forward op reads that weight too (a head tied to the
    embedding keeps its GEMM in the activation dtype, as FP8 serving and Megatron-LM's FP8
    recipe leave it). Backward: the data- and weight-gradient GEMMs of such a layer
    (``meta["forward"]``), as Transformer Engine runs all three GEMMs of a linear layer in fp8."""
    def tied(p: str) -> bool:
        return p in graph.outputs or any(
            not c.meta.get("forward") and c.meta.get("role") != "optimizer" and not _operand_only(c, p)
            for c in graph.consumers(p))

    out: dict[str, list[int]] = {}
    for n in graph.nodes.values():
        if n.op in FP8_OPERANDS and not n.meta.get("forward"):
            slots = _fp8_slots(graph, n)
            weights = [n.inputs[i] for i in slots if n.inputs[i] in graph.params]
            if weights and not any(tied(w) for w in weights):
                out[n.name] = slots
    for n in graph.nodes.values():
        if n.meta.get("forward") in out and graph.work(n).matmul_flops > 0:
            out[n.name] = _fp8_slots(graph, n)
    return out


class _Fp8(Rewriter):
    """A bf16 graph's fp8 GEMMs given quantise/dequantise casts (see the module doc)."""

    def __init__(self, src: Graph) -> None:
        super().__init__(src)
        self.gemms = fp8_gemm_operands(src)
        # weights nothing but these GEMMs read are stored in fp8 (no cast at run time); one an
        # optimizer updates is quantised once per step (Transformer Engine's weight cast)
        weights = {src.nodes[n].inputs[i] for n, slots in self.gemms.items() for i in slots} & set(src.params)
        self.stored = {w for w in weights if all(self.quantises(c, w) for c in src.consumers(w))}
        self.quantised: dict[str, str] = {}  # source tensor -> its fp8 copy in the new graph
        # views whose output only fp8 GEMM operands (or such views) read: made on the fp8 side
        self.lazy: set[str] = set()
        for node in reversed(src.topo_order()):
            out = node.outputs[0] if len(node.outputs) == 1 else ""
            if out and has_trait(node.op, "view") and out not in src.outputs:
                users = src.consumers(out)
                if users and all(c.name in self.lazy or self.quantises(c, out) for c in users):
                    self.lazy.add(node.name)

    def quantises(self, node: Node, t: str) -> bool:
        """Whether ``node`` reads ``t`` only as an operand this graph's fp8 GEMMs quantise."""
        slots = self.gemms.get(node.name, [])
        return all(i in slots for i, x in enumerate(node.inputs) if x == t)

    def leaves(self) -> None:
        for name, spec in self.src.inputs.items():
            self.b.input(name, spec)
        for name, spec in self.src.params.items():
            if name in self.stored:
                spec = spec.with_dtype("fp8")
            self.b.param(name, spec, self.src.param_info[name], self.src.initializers.get(name))
        for t in [*self.src.inputs, *self.src.params]:
            self.env[t] = t

    def fp8(self, t: str, meta: dict[str, Any]) -> str:
        """Source tensor ``t`` in fp8 in the new graph: a stored fp8 weight as it is, a view
        that only fp8 GEMMs read as the same view of its input's fp8 copy (projections that
        each reshape one activation share one quantise), else one quantising cast (``meta``:
        the layer and pass of the first GEMM that reads it)."""
        if t in self.quantised:
            return self.quantised[t]
        p = self.src.producer(t)
        if p is not None and p.name in self.lazy:
            base = self.fp8(p.inputs[0], meta)
            q = self.b.node(p.op, [base, *(self.map(x) for x in p.inputs[1:])], [self.b.unique(f"{t}.fp8")],
                            dict(p.attrs), name=self.b.unique(f"{p.name}.fp8"), meta=dict(p.meta))[0]
        elif self.out.tensors[self.map(t)].dtype == "fp8":
            q = self.map(t)
        else:
            q = self.b.node("Cast", [self.map(t)], [self.b.unique(f"{t}.fp8")], {"to": "fp8"},
                            name=self.b.unique(f"{t}.quantize"), meta=meta)[0]
        self.quantised[t] = q
        return q

    def visit(self, node: Node) -> None:
        if node.name in self.lazy:
            return  # emitted on the fp8 side, when a GEMM asks for it
        if node.name not in self.gemms:
            self.emit(node)
            return
        quantised = self.gemms[node.name]
        # the casts belong to the GEMM's layer and pass (forward or backward)
        meta = {"cast": "fp8", **{k: v for k, v in node.meta.items() if k in ("layer", "forward")}}
        ins = [self.map(t) if i not in quantised else "" for i, t in enumerate(node.inputs)]
        for i in quantised:
            q = self.fp8(node.inputs[i], meta)
            ins[i] = self.b.node("Cast", [q], [self.b.unique(f"{q}.{FP8_ACTIVATIONS}")],
                                 {"to": FP8_ACTIVATIONS}, name=self.b.unique(f"{node.name}.dequantize{i}"),
                                 meta=dict(meta))[0]
        self.emit(node, inputs=ins, meta={**node.meta, "compute_dtype": "fp8"})


def store_as(graph: Graph, dtype: str) -> Graph:
    """Every floating tensor stored in ``dtype`` with nothing else changed (as ``cast_graph``
    does for fp16 and bf16): for fp8, an all-fp8 graph, such as an attention kernel reading
    an fp8 KV cache on the fp8 tensor-core rate (``sim.serve``), rather than ``cast_graph``'s
    fp8 GEMMs in a bf16 model."""
    dtype = canonical(dtype, where="storage dtype")
    rw = _Precision(graph, _storage(dtype), dtype, set())
    rw.out.meta["dtype"] = dtype
    return rw.run().verify()


def _fp8_gemms(graph: Graph) -> Graph:
    fused = [n.name for n in graph.nodes.values() if n.op == "Fused" and graph.work(n).matmul_flops > 0]
    if fused:
        raise GraphError(f"fp8 places quantise/dequantise casts around each GEMM, so cast before fusing "
                         f"(node {fused[0]!r} is already a fused group)", where="cast dtype")
    out = _Fp8(cast_graph(graph, FP8_ACTIVATIONS)).run()
    out.meta["dtype"] = "fp8"
    return out.verify()


AMP_DTYPES = ("bf16", "fp16")
DEFAULT_LOSS_SCALE = {"bf16": 1.0, "fp16": 1024.0}


def amp(graph: Graph, dtype: str = "bf16", loss_scale: float | None = None) -> Graph:
    """Automatic mixed precision: fp32 master weights, ``dtype`` compute, fp32 outputs.

    Every floating graph input and parameter keeps its fp32 spec and name; a ``Cast`` node
    (``<name>.to_<dtype>``, output ``<name>.<dtype>``) makes its low-precision copy just before
    its first use, and every node then computes in ``dtype`` (ops without a low-precision form
    are wrapped in casts, as in ``cast_graph``). Graph outputs are cast back to fp32 under
    their original names, so a loss appended by ``training_graph`` is computed in fp32.
    The gradient of each parameter cast is cast back to fp32, so optimizer updates and
    states stay in fp32 (master weights).

    ``loss_scale`` (default 1024 for fp16, 1 for bf16, whose exponent range equals fp32's)
    is stored in ``meta["loss_scale"]``: ``training_graph`` seeds the backward pass with it and
    the optimizer update divides it out. The scale is static (no overflow skipping).
    """
    dtype = canonical(dtype, where="amp dtype")
    if dtype not in AMP_DTYPES:
        raise GraphError(f"amp dtype must be one of {AMP_DTYPES}, got {dtype!r}", where="amp dtype")
    if not has_op("Cast"):
        raise GraphError("amp needs the Cast op", where="amp")
    scale = DEFAULT_LOSS_SCALE[dtype] if loss_scale is None else float(loss_scale)
    if scale <= 0:
        raise GraphError(f"loss_scale must be > 0, got {scale}", where="amp")
    rw = _Amp(graph, dtype)
    rw.out.meta.update({"amp": dtype, "loss_scale": scale})
    return rw.run().verify()
