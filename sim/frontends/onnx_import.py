"""ONNX models -> Graph.

``load_onnx("model.onnx", batch=32)`` reads a model (opsets 11-21; older and newer opsets are
mapped where their forms differ), binds symbolic input dims from keyword arguments, turns
initializers into parameters and shape operands that arrive as inputs into attributes, folds
constant shape subgraphs (``Shape -> Gather -> Concat -> Reshape`` chains) with the op
library's own kernels, and returns a verified graph.

Rules:

* Initializers become parameters (``GraphBuilder.param(name, spec, info, array)``); BatchNorm
  running statistics and non-float tensors are not trainable. Initializers used only as
  shape operands become attributes and never appear as parameters.
* Graph inputs that are weights (float, fully static, consumed only in weight slots such as
  Conv/Gemm/MatMul B, norm scales, embedding tables, 1-D biases) of a model exported without
  its weights become parameters with a deterministic initialisation (``weights_as_inputs``).
* Constant values (initializers, ``Constant`` nodes, folded results) used as data by a node
  that is kept become parameters (initializers) or ``Constant`` nodes (everything else).
* External data is read only from the model's folder; a path leaving it is a ``GraphError``.
* An op the library lacks is an ``UnsupportedOpError`` naming the op and the node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sim.dtypes import from_numpy, is_float, to_numpy
from sim.errors import GraphError, UnsupportedOpError
from sim.frontends.onnx_schema import check_node
from sim.graph import Graph, ParamInfo, TensorSpec
from sim.graph.rewrite import GraphBuilder
from sim.io import check_input, read_bytes
from sim.limits import check

# ONNX TensorProto.DataType -> our dtype names.
ONNX_DTYPES: dict[int, str] = {
    1: "fp32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "fp16", 11: "fp64", 16: "bf16", 17: "fp8", 19: "fp8e5m2",
}
_ONNX_DTYPE_NAMES = {
    0: "UNDEFINED", 4: "UINT16", 8: "STRING", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 18: "FLOAT8E4M3FNUZ", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
    23: "FLOAT4E2M1",
}


def onnx_dtype(code: int, *, where: str | None = None) -> str:
    """Our dtype name for an ONNX ``TensorProto.DataType`` code.

    >>> onnx_dtype(1), onnx_dtype(16), onnx_dtype(7)
    ('fp32', 'bf16', 'int64')
    """
    try:
        return ONNX_DTYPES[int(code)]
    except KeyError:
        name = _ONNX_DTYPE_NAMES.get(int(code), str(code))
        raise GraphError(f"unsupported ONNX element type {name}", where=where) from None


# Shape operands: (input index, attribute name, first opset where it is an input).
SHAPE_OPERANDS: dict[str, list[tuple[int, str, int]]] = {
    "Reshape": [(1, "shape", 5)],
    "Expand": [(1, "shape", 8)],
    "Tile": [(1, "repeats", 6)],
    "Slice": [(1, "starts", 10), (2, "ends", 10), (3, "axes", 10), (4, "steps", 10)],
    "Squeeze": [(1, "axes", 13)],
    "Unsqueeze": [(1, "axes", 13)],
    "ReduceSum": [(1, "axes", 13)],
    "Split": [(1, "split", 13)],
    "Pad": [(1, "pads", 11), (2, "constant_value", 11), (3, "axes", 18)],
    "Clip": [(1, "min", 11), (2, "max", 11)],
    "Resize": [(1, "roi", 10), (2, "scales", 10), (3, "sizes", 11)],
    "Upsample": [(1, "scales", 9)],
    "TopK": [(1, "k", 10)],
    "ConstantOfShape": [(0, "shape", 9)],
    "Range": [(0, "start", 11), (1, "limit", 11), (2, "delta", 11)],
    "OneHot": [(1, "depth", 9)],
    "Trilu": [(1, "k", 14)],
    "CenterCropPad": [(1, "shape", 18)],
    "Dropout": [(1, "ratio", 12), (2, "training_mode", 12)],
    "CumSum": [(1, "axis", 11)],
    "Compress": [(1, "condition", 9)],
    "HannWindow": [(0, "size", 17)],
    "HammingWindow": [(0, "size", 17)],
    "BlackmanWindow": [(0, "size", 17)],
}
for _r in ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
    SHAPE_OPERANDS[_r] = [(1, "axes", 18)]
# attributes whose values stay 0-d arrays (their dtype matters)
_KEEP_ARRAY = {("Range", "start"), ("Range", "limit"), ("Range", "delta"),
               ("Compress", "condition")}
# legacy attributes with no meaning in our ops
_DROP_ATTRS = {"consumed_inputs", "is_test", "spatial", "broadcast"}

# Ops evaluated at import time when all their inputs are known constants.
FOLD_OPS = frozenset({
    "Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "ConstantOfShape", "Cast",
    "Slice", "Reshape", "Range", "Identity", "Add", "Sub", "Mul", "Div", "Equal", "Where",
    "ReduceProd", "Expand", "Less", "Greater", "Not", "Neg", "Abs", "Max", "Min", "Floor",
    "Ceil", "Sqrt", "Mod", "Tile", "Transpose", "Flatten", "CastLike",
})
FOLD_MAX_ELEMS = 1 << 16

# (op, input index) slots that hold weights, for models exported with weights as inputs.
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
    "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2),
    "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2),
    "SimplifiedLayerNormalization": (1,), "RMSNormalization": (1,), "Gather": (0,),
    "Add": (0, 1), "Mul": (0, 1), "PRelu": (1,), "LSTM": (1, 2, 3), "GRU": (1, 2, 3),
    "RNN": (1, 2, 3),
}
_ELEMENTWISE_WEIGHT_MAX_RANK = 1  # Add/Mul operands count as weights only when 1-D (biases)
_PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast", "Reshape", "Unsqueeze"})


def _attr_value(attr: Any, where: str) -> Any:
    from onnx import AttributeProto, helper, numpy_helper

    if attr.type == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise UnsupportedOpError(f"attribute {attr.name!r} holds a subgraph (control flow)",
                                 where=where)
    v = helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [b.decode("utf-8", "replace") for b in v]
    return v


def _operand_attr(op: str, name: str, arr: np.ndarray) -> Any:
    """The attribute value for a constant shape operand."""
    if (op, name) in _KEEP_ARRAY:
        return np.asarray(arr).reshape(()) if op == "Range" else np.asarray(arr)
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return arr.item()
    if np.issubdtype(arr.dtype, np.integer):
        return [int(v) for v in arr.reshape(-1)]
    return [float(v) for v in arr.reshape(-1)]


class _Importer:
    def __init__(self, model: Any, source: str | None, dims: Mapping[str, int], fold: bool,
                 base_dir: str | None, weights_as_inputs: bool | Iterable[str] | str,
                 input_values: Mapping[str, np.ndarray] | None) -> None:
        self.model = model
        self.source = source
        self.dims = {k: _dim_value(k, v, source) for k, v in dims.items()}
        self.fold = fold
        self.base_dir = base_dir
        self.weights_as_inputs = weights_as_inputs
        self.input_values = dict(input_values or {})
        self.opset = 21
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = int(imp.version)
        import onnx.defs

        newest = onnx.defs.onnx_opset_version()
        if not 1 <= self.opset <= newest:
            raise GraphError(f"opset {self.opset} is not an ONNX opset (1 to {newest} are)",
                             where=source)
        name = model.graph.name or (os.path.basename(source) if source else "onnx")
        self.g = Graph(name, source=source)
        self.b = GraphBuilder(self.g)
        self.consts: dict[str, np.ndarray] = {}
        self.init_names: set[str] = set()
        self.frozen: set[str] = set()  # initializers that are not trained (BN stats, ints)
        self.used: set[str] = set()
        self.weight_use: dict[str, bool] = {}  # tensor -> every use is a weight slot

    def where(self, what: str) -> str:
        return f"{self.source}: {what}" if self.source else what

    # ------------------------------------------------------------------ tensors
    def _tensor_array(self, t: Any) -> np.ndarray:
        from onnx import numpy_helper

        where = self.where(f"initializer {t.name!r}")
        onnx_dtype(t.data_type, where=where)
        if t.data_location == 1:  # EXTERNAL
            self._load_external(t)
        try:
            return np.asarray(numpy_helper.to_array(t))
        except Exception as err:  # noqa: BLE001 - malformed tensor payload
            raise GraphError(f"cannot read tensor data: {err}", where=where) from None

    def _load_external(self, t: Any) -> None:
        from onnx.external_data_helper import load_external_data_for_tensor

        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        where = self.where(f"initializer {t.name!r}")
        if self.base_dir is None:
            raise GraphError(f"external data {loc!r} but the model has no folder", where=where)
        base = os.path.realpath(self.base_dir)
        path = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([base, path]) != base:
            raise GraphError(f"external data file {loc!r} lies outside the model's folder",
                             where=where)
        if not os.path.isfile(path):
            raise GraphError(f"external data file {loc!r} not found", where=where)
        check_input(path, "onnx_bytes", GraphError)
        try:
            load_external_data_for_tensor(t, base)
        except Exception as err:  # noqa: BLE001 - truncated or unreadable data file
            raise GraphError(f"cannot read external data {loc!r}: {err}", where=where) from None

    def _input_spec(self, vi: Any, unbound: list[str]) -> TensorSpec:
        where = self.where(f"input {vi.name!r}")
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise GraphError("only tensor inputs are supported", where=where)
        dtype = onnx_dtype(tt.elem_type, where=where)
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value < 0:  # 0 is an empty tensor, as ONNX allows
                    raise GraphError(f"dimension {i} is {d.dim_value}; dimensions must be >= 0",
                                     where=where)
                shape.append(int(d.dim_value))
            elif d.dim_param and d.dim_param in self.dims:
                shape.append(self.dims[d.dim_param])
            else:
                unbound.append(d.dim_param or f"{vi.name}[{i}]")
                shape.append(1)
        try:
            return TensorSpec(tuple(shape), dtype)
        except GraphError as err:
            raise GraphError(err.message, where=where) from None

    # ------------------------------------------------------------------ main
    def run(self) -> Graph:
        graph = self.model.graph
        for n in graph.node:
            self.used.update(i for i in n.input if i)
            if n.op_type == "BatchNormalization":
                self.frozen.update(i for i in list(n.input)[3:5] if i)
        self.used.update(o.name for o in graph.output)
        for n in graph.node:
            for j, t in enumerate(n.input):
                slot = j in WEIGHT_SLOTS.get(n.op_type, ()) and n.op_type not in ("Add", "Mul")
                self.weight_use[t] = self.weight_use.get(t, True) and slot
        inits = {t.name: t for t in graph.initializer}
        for name, t in inits.items():
            arr = self._tensor_array(t)
            self.consts[name] = arr
            self.init_names.add(name)
            if not is_float(onnx_dtype(t.data_type)):
                self.frozen.add(name)
        unbound: list[str] = []
        weights = self._weight_inputs(graph, inits)
        for vi in graph.input:
            if vi.name in inits:
                continue
            if vi.name in self.input_values:
                self.consts[vi.name] = np.asarray(self.input_values[vi.name])
                continue
            spec = self._input_spec(vi, unbound)
            if vi.name in weights:
                kw = self._weight_init(vi.name, spec, graph)
                info = ParamInfo(kw.pop("init", "normal"), kw.pop("trainable", True), kw)
                self.b.param(vi.name, spec, info)
                continue
            self.b.input(vi.name, spec)
        if unbound:
            names = ", ".join(dict.fromkeys(unbound))
            named = [u for u in unbound if "[" not in u]
            hint = f" (bind them, e.g. --set {named[0]}=1)" if named else ""
            raise GraphError(f"unbound symbolic dims: {names}{hint}", where=self.source)
        for i, node in enumerate(graph.node):
            self._node(node, i)
        outs = []
        for o in graph.output:
            if o.name not in self.g.tensors:
                self._materialize(o.name)
            outs.append(o.name)
        self.g.set_outputs(outs)
        self._check_value_info(graph)
        self.g.meta.update({"format": "onnx", "opset": self.opset,
                            "producer": self.model.producer_name})
        return self.g.verify()

    def _check_value_info(self, graph: Any) -> None:
        """Shapes the model records (value_info, outputs) must equal the ones our rules derive;
        symbolic dims are bound from ``dims`` or skipped."""
        for vi in list(graph.value_info) + list(graph.output):
            spec = self.g.tensors.get(vi.name)
            if spec is None or not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims: list[int | None] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.dim_param in self.dims:
                    dims.append(self.dims[d.dim_param])
                else:
                    dims.append(None)
            if len(dims) != spec.rank or any(a is not None and a != b for a, b in zip(dims, spec.shape)):
                shown = [d if d is not None else "?" for d in dims]
                raise GraphError(f"tensor {vi.name!r}: the model records shape {shown}, the op "
                                 f"rules give {list(spec.shape)}", where=self.source)

    # ------------------------------------------------------------------ weights as inputs
    def _weight_inputs(self, graph: Any, inits: dict[str, Any]) -> set[str]:
        wai = self.weights_as_inputs
        cands = [vi for vi in graph.input if vi.name not in inits]
        if wai is False or wai is None:
            return set()
        if not isinstance(wai, (str, bool)):
            return set(wai)
        if wai == "auto" and len(graph.node) < 2:
            return set()  # a one-node model tests its op: its inputs are data
        uses: dict[str, list[Any]] = {}
        for n in graph.node:
            for j, t in enumerate(n.input):
                uses.setdefault(t, []).append((n, j))

        def weight_like(t: str, rank: int, depth: int = 0) -> bool:
            u = uses.get(t, [])
            if not u or depth > 4:
                return False
            for n, j in u:
                op = n.op_type
                if op in _PASS_THROUGH and j == 0:
                    if not all(weight_like(o, rank, depth + 1) for o in n.output if o):
                        return False
                elif j not in WEIGHT_SLOTS.get(op, ()):
                    return False
                elif op in ("Add", "Mul") and rank > _ELEMENTWISE_WEIGHT_MAX_RANK:
                    return False
                elif op == "MatMul" and rank != 2:
                    return False
            return True

        out = set()
        for vi in cands:
            tt = vi.type.tensor_type
            if tt.elem_type not in (1, 10, 11, 16):
                continue
            dims = list(tt.shape.dim)
            if any(not d.HasField("dim_value") for d in dims):
                continue
            if weight_like(vi.name, len(dims)):
                out.add(vi.name)
        return out

    def _weight_init(self, name: str, spec: TensorSpec, graph: Any) -> dict[str, Any]:
        for n in graph.node:
            ins = list(n.input)
            if name in ins:
                j = ins.index(name)
                if n.op_type == "BatchNormalization":
                    return {"init": "ones" if j in (1, 4) else "zeros", "trainable": j in (1, 2)}
                if n.op_type.endswith("Normalization") and j == 1:
                    return {"init": "ones"}
                if spec.rank <= 1:
                    return {"init": "zeros"}
                if n.op_type in ("Conv", "ConvTranspose"):
                    return {"init": "he"}
                break
        return {"init": "normal", "std": 0.02}

    # ------------------------------------------------------------------ nodes
    def _materialize(self, name: str) -> None:
        """Give a constant value a tensor in the graph: a parameter or a Constant node."""
        if name in self.g.tensors:
            return
        if name not in self.consts:
            raise GraphError(f"tensor {name!r} is used but never defined", where=self.source)
        arr = self.consts[name]
        dtype = from_numpy(arr.dtype)
        if name in self.init_names:
            self.b.param(name, TensorSpec(arr.shape, dtype),
                         ParamInfo("constant", name not in self.frozen and is_float(dtype)), arr)
        else:
            self.b.node("Constant", [], [name], {"value": arr},
                            name=self.g.unique_name(f"{name}.const"))

    def _node(self, node: Any, index: int) -> None:
        op = node.op_type
        name = node.name or f"{op.lower()}_{index}"
        where = self.where(f"node {name!r} ({op})")
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"unsupported op {node.domain}.{op}", where=where)
        attrs: dict[str, Any] = {}
        for a in node.attribute:
            if a.name in _DROP_ATTRS:
                continue
            attrs[a.name] = _attr_value(a, where)
        inputs = list(node.input)
        outputs = list(node.output)
        check_node(op, inputs, {a.name: None for a in node.attribute}, self.opset, where)
        op, inputs, attrs = self._translate(op, inputs, attrs, where)
        if op == "NonZero":
            if inputs[0] not in self.consts:
                raise UnsupportedOpError("NonZero of a non-constant tensor has a data-dependent "
                                         "shape", where=where)
            self.consts[outputs[0]] = np.array(np.nonzero(self.consts[inputs[0]]), np.int64)
            return
        if op == "Compress":
            op, inputs, attrs = self._compress(inputs, attrs, name)
        if op == "PRelu" and self.opset < 7:
            inputs = self._legacy_prelu(inputs, name)
        if op == "Split" and "split" not in attrs and "num_outputs" not in attrs:
            attrs["num_outputs"] = len(outputs)  # opset < 18: equal parts, one per output
        if op == "Constant":
            from sim.ops.generate import constant_value

            self.consts[outputs[0]] = constant_value(attrs)
            return
        if op == "Identity" and inputs[0] in self.consts and outputs[0] not in self.g.tensors:
            self.consts[outputs[0]] = self.consts[inputs[0]]
            return
        if self.fold and self._try_fold(op, inputs, outputs, attrs, where):
            return
        from sim.ops.registry import has_op

        if op in EXPANSIONS and not has_op(op):
            for t in inputs:
                if t and t not in self.g.tensors:
                    self._materialize(t)
            EXPANSIONS[op](self, name, inputs, outputs, attrs)
            return
        if not has_op(op):
            raise UnsupportedOpError(f"unsupported ONNX op {op!r}", where=where)
        for t in inputs:
            if t and t not in self.g.tensors:
                self._materialize(t)
        # drop trailing outputs nothing uses (Dropout's mask, BatchNorm training outputs)
        while len(outputs) > 1 and (not outputs[-1] or outputs[-1] not in self.used):
            outputs.pop()
        outputs = [o if (o in self.used or k == 0) else "" for k, o in enumerate(outputs)]
        try:
            self.b.node(op, inputs, outputs, attrs, name=self.g.unique_name(name),
                            meta={"onnx_op": node.op_type})
        except GraphError as err:
            if isinstance(err, UnsupportedOpError):
                raise
            raise type(err)(err.message, where=err.where or where) from None

    def _translate(self, op: str, inputs: list[str], attrs: dict[str, Any],
                   where: str) -> tuple[str, list[str], dict[str, Any]]:
        """Older-opset forms and input operands -> our op and attributes."""
        if op == "Cast" and "to" in attrs:
            attrs["to"] = onnx_dtype(attrs["to"], where=where)
        for key in ("dtype", "output_datatype"):
            if key in attrs and isinstance(attrs[key], int):
                attrs[key] = onnx_dtype(attrs[key], where=where)
        if op == "Pad" and "value" in attrs:
            attrs["constant_value"] = attrs.pop("value")
        if op == "Pad" and "paddings" in attrs:
            attrs["pads"] = attrs.pop("paddings")
        if op == "Upsample" or (op == "Resize" and self.opset < 11):
            inputs, attrs = _legacy_resize(inputs, attrs)
        op = RENAMED.get(op, op)
        if op == "CastLike" and len(inputs) > 1:
            t = inputs[1]
            like = self.g.tensors[t].dtype if t in self.g.tensors else (
                from_numpy(self.consts[t].dtype) if t in self.consts else None)
            if like is None:
                raise GraphError(f"CastLike target {t!r} is not defined", where=where)
            op, inputs, attrs = "Cast", inputs[:1], {**attrs, "to": like}
        if op in ("Softmax", "LogSoftmax", "Hardmax") and self.opset < 13:
            attrs.setdefault("axis", 1)
            attrs["_legacy_2d"] = True
        for j, aname, _since in SHAPE_OPERANDS.get(op, ()):
            if j >= len(inputs) or not inputs[j]:
                continue
            t = inputs[j]
            if t not in self.consts:
                raise GraphError(
                    f"operand {j} ({aname}) is not a constant (dynamic shapes are not supported)",
                    where=where,
                )
            arr = self.consts[t]
            if op == "Resize" and arr.size == 0:
                inputs[j] = ""
                continue
            attrs[aname] = _operand_attr(op, aname, arr)
            inputs[j] = ""
        while inputs and not inputs[-1]:
            inputs.pop()
        if op == "ConstantOfShape" and "value" not in attrs:
            attrs["value"] = np.zeros(1, np.float32)
        if attrs.pop("_legacy_2d", False):
            op, inputs, attrs = self._legacy_softmax(op, inputs, attrs, where)
        return op, inputs, attrs

    def _legacy_prelu(self, inputs: list[str], name: str) -> list[str]:
        """Opset < 7 PRelu broadcasts a 1-D slope of length C along axis 1: reshape it to
        [C, 1, ..., 1] for today's (numpy) broadcasting."""
        for t in inputs:
            if t and t not in self.g.tensors:
                self._materialize(t)
        x, slope = self.g.tensors[inputs[0]], self.g.tensors[inputs[1]]
        if slope.rank == 1 and x.rank > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
            (r,) = self.b.node("Reshape", [inputs[1]], None,
                                   {"shape": [slope.shape[0]] + [1] * (x.rank - 2)},
                                   name=self.g.unique_name(f"{name}.slope"))
            return [inputs[0], r]
        return inputs

    def _compress(self, inputs: list[str], attrs: dict[str, Any],
                  name: str) -> tuple[str, list[str], dict[str, Any]]:
        """Compress with a constant condition: a Gather of the kept positions (flattened
        first when there is no axis). The shape is static because the condition is known."""
        cond = np.asarray(attrs.pop("condition"), dtype=bool).reshape(-1)
        x = inputs[0]
        if x not in self.g.tensors:
            self._materialize(x)
        if "axis" not in attrs:
            n = self.g.tensors[x].numel
            (x,) = self.b.node("Reshape", [x], None, {"shape": [n]},
                                   name=self.g.unique_name(f"{name}.flatten"))
            axis = 0
        else:
            axis = int(attrs["axis"])
        size = self.g.tensors[x].shape[axis % self.g.tensors[x].rank]
        keep = np.nonzero(cond[:size])[0].astype(np.int64)
        idx = self.g.unique_name(f"{name}.indices")
        self.b.node("Constant", [], [idx], {"value": keep}, name=idx)
        return "Gather", [x, idx], {"axis": axis}

    def _legacy_softmax(self, op: str, inputs: list[str], attrs: dict[str, Any],
                        where: str) -> tuple[str, list[str], dict[str, Any]]:
        """Opset < 13 Softmax coerces the input to 2-D at ``axis``: same as axis=-1 when
        ``axis`` is the last dim; otherwise emit Flatten -> op(axis=-1) -> Reshape."""
        spec = self.g.tensors.get(inputs[0])
        if spec is None:
            return op, inputs, {"axis": -1}
        ax = int(attrs["axis"]) % max(spec.rank, 1)
        if ax == spec.rank - 1:
            return op, inputs, {"axis": -1}
        (flat,) = self.b.node("Flatten", inputs[:1], None, {"axis": ax},
                                  name=self.g.unique_name(f"{inputs[0]}.flatten"))
        (sm,) = self.b.node(op, [flat], None, {"axis": -1},
                                name=self.g.unique_name(f"{inputs[0]}.{op.lower()}2d"))
        return "Reshape", [sm], {"shape": list(spec.shape)}

    def _try_fold(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any],
                  where: str) -> bool:
        from sim.ops.registry import get_op, has_op

        if op in ("Shape", "Size") and inputs and inputs[0] in self.g.tensors:
            shape = self.g.tensors[inputs[0]].shape
            if op == "Size":
                self.consts[outputs[0]] = np.array(int(np.prod(shape)), np.int64)
            else:
                start = int(attrs.get("start", 0))
                end = attrs.get("end")
                self.consts[outputs[0]] = np.array(shape[start:None if end is None else int(end)],
                                                   np.int64)
            return True
        if op not in FOLD_OPS or not has_op(op):
            return False
        present = [t for t in inputs if t]
        if not all(t in self.consts for t in present):
            return False
        # weights stay weights: never fold float initializers into new constants
        if any(t in self.init_names and is_float(from_numpy(self.consts[t].dtype)) for t in present):
            return False
        opdef = get_op(op, where=where)
        args = [self.consts[t] if t else None for t in inputs]
        specs = [TensorSpec(a.shape, from_numpy(a.dtype)) if a is not None else None for a in args]
        try:
            out_specs = opdef.infer(specs, attrs)
        except (GraphError, ValueError, IndexError, KeyError, TypeError):
            return False
        big = any(s.numel > FOLD_MAX_ELEMS for s in out_specs)
        if big and op != "ConstantOfShape":
            return False
        if op == "ConstantOfShape" and (big or self.weight_use.get(outputs[0])):
            # a large constant fill (synthetic weights): a zero-stride view, kept as a parameter
            from sim.ops.generate import fill_value

            self.consts[outputs[0]] = np.broadcast_to(fill_value(attrs), out_specs[0].shape)
            self.init_names.add(outputs[0])
            if not self.weight_use.get(outputs[0]):
                self.frozen.add(outputs[0])
            return True
        try:
            vals = opdef.kernel(args, attrs)
        except Exception as err:  # noqa: BLE001 - reported with the node
            raise GraphError(f"constant folding failed: {type(err).__name__}: {err}",
                             where=where) from None
        for o, v, s in zip(outputs, vals, out_specs):
            if o:
                self.consts[o] = np.asarray(v).astype(to_numpy(s.dtype))
        return True


class _Emitter:
    """Writes one ONNX node as several of our ops (for ops the library spells that way)."""

    def __init__(self, imp: _Importer, name: str, onnx_op: str, dtype: str) -> None:
        self.g, self.name, self.onnx_op, self.dtype = imp.g, name, onnx_op, dtype
        self.b = imp.b

    def __call__(self, op: str, ins: list[str], out: str | None = None, **kw: Any) -> str:
        nm = self.g.unique_name(f"{self.name}.{op.lower()}")
        return self.b.node(op, ins, [out or nm], kw, name=nm,
                               meta={"onnx_op": self.onnx_op})[0]

    def const(self, v: float) -> str:
        nm = self.g.unique_name(f"{self.name}.const")
        return self.b.node("Constant", [], [nm], {"value": np.array(v, to_numpy(self.dtype))},
                               name=nm)[0]


def _expand_lrn(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                attrs: dict[str, Any]) -> None:
    """LRN: y = x / (bias + alpha / size * window_sum(x^2)) ** beta, the channel-window sum
    taken by a 3-D AveragePool (count_include_pad) over [N, 1, C, H, W]."""
    x = inputs[0]
    spec = imp.g.tensors[x]
    e = _Emitter(imp, name, "LRN", spec.dtype)
    size = int(attrs["size"])
    alpha, beta, bias = (float(attrs.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75),
                                                              ("bias", 1.0)))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    rank = spec.rank
    u = e("Unsqueeze", [e("Mul", [x, x])], axes=[1])
    pads = [lo] + [0] * (rank - 2) + [hi] + [0] * (rank - 2)
    avg = e("AveragePool", [u], kernel_shape=[size] + [1] * (rank - 2), pads=pads,
            count_include_pad=1)
    s = e("Squeeze", [avg], axes=[1])
    d = e("Pow", [e("Add", [e("Mul", [s, e.const(alpha)]), e.const(bias)]), e.const(beta)])
    e("Div", [x, d], out=outputs[0])


def _expand_swish(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                  attrs: dict[str, Any]) -> None:
    """Swish: x * sigmoid(alpha * x)."""
    x = inputs[0]
    e = _Emitter(imp, name, "Swish", imp.g.tensors[x].dtype)
    ax = e("Mul", [x, e.const(float(attrs.get("alpha", 1.0)))])
    e("Mul", [x, e("Sigmoid", [ax])], out=outputs[0])


def _expand_shrink(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                   attrs: dict[str, Any]) -> None:
    """Shrink: x + bias where x < -lambd, x - bias where x > lambd, else 0."""
    x = inputs[0]
    e = _Emitter(imp, name, "Shrink", imp.g.tensors[x].dtype)
    lambd, bias = float(attrs.get("lambd", 0.5)), float(attrs.get("bias", 0.0))
    hi = e("Where", [e("Greater", [x, e.const(lambd)]), e("Sub", [x, e.const(bias)]),
                     e.const(0.0)])
    e("Where", [e("Less", [x, e.const(-lambd)]), e("Add", [x, e.const(bias)]), hi],
      out=outputs[0])


def _expand_mvn(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                attrs: dict[str, Any]) -> None:
    """MeanVarianceNormalization: (x - mean) / (sqrt(var) + 1e-9) over ``axes``."""
    x = inputs[0]
    e = _Emitter(imp, name, "MeanVarianceNormalization", imp.g.tensors[x].dtype)
    axes = list(attrs.get("axes", [0, 2, 3]))
    d = e("Sub", [x, e("ReduceMean", [x], axes=axes, keepdims=1)])
    var = e("ReduceMean", [e("Mul", [d, d])], axes=axes, keepdims=1)
    e("Div", [d, e("Add", [e("Sqrt", [var]), e.const(1e-9)])], out=outputs[0])


def _expand_lp_norm(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                    attrs: dict[str, Any]) -> None:
    """LpNormalization: x / ||x||_p along ``axis`` (0 where the norm is 0)."""
    x = inputs[0]
    e = _Emitter(imp, name, "LpNormalization", imp.g.tensors[x].dtype)
    p = int(attrs.get("p", 2))
    if p not in (1, 2):
        raise GraphError(f"LpNormalization p={p} (only 1 and 2 exist)", where=imp.where(name))
    norm = e("ReduceL2" if p == 2 else "ReduceL1", [x], axes=[int(attrs.get("axis", -1))],
             keepdims=1)
    zero = e.const(0.0)
    e("Where", [e("Equal", [norm, zero]), zero, e("Div", [x, norm])], out=outputs[0])


def _expand_center_crop_pad(imp: _Importer, name: str, inputs: list[str], outputs: list[str],
                            attrs: dict[str, Any]) -> None:
    """CenterCropPad: a centred Slice where the input is larger (start rounded down), then a
    zero Pad where it is smaller (the odd pixel after)."""
    x = inputs[0]
    spec = imp.g.tensors[x]
    e = _Emitter(imp, name, "CenterCropPad", spec.dtype)
    rank = spec.rank
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    target = [int(v) for v in attrs["shape"]]
    starts, ends, cut = [], [], []
    pads = [0] * (2 * rank)
    for a, want in zip(axes, target):
        dim = spec.shape[a]
        if want < dim:
            lo = (dim - want) // 2
            starts.append(lo)
            ends.append(lo + want)
            cut.append(a)
        elif want > dim:
            pads[a] = (want - dim) // 2
            pads[rank + a] = want - dim - pads[a]
    y = e("Slice", [x], starts=starts, ends=ends, axes=cut) if cut else x
    if any(pads):
        e("Pad", [y], out=outputs[0], pads=pads, mode="constant", constant_value=0.0)
    else:
        e("Identity", [y], out=outputs[0])


def _legacy_resize(inputs: list[str], attrs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Upsample (opsets 1-9) and Resize-10 as today's Resize: inputs (X, scales) with scales
    moved to Resize's slot 2, asymmetric coordinates, nearest rounding down, ``bilinear`` as
    ``linear`` and opset-1 ``height_scale``/``width_scale`` as scales."""
    inputs = [inputs[0], "", inputs[1]] if len(inputs) > 1 else inputs
    if "height_scale" in attrs or "width_scale" in attrs:
        attrs["scales"] = [1.0, 1.0, float(attrs.pop("height_scale", 1.0)),
                           float(attrs.pop("width_scale", 1.0))]
    mode = str(attrs.get("mode", "nearest")).lower()
    attrs["mode"] = "linear" if mode in ("bilinear", "trilinear") else mode
    attrs.setdefault("coordinate_transformation_mode", "asymmetric")
    attrs.setdefault("nearest_mode", "floor")
    return inputs, attrs


EXPANSIONS: dict[str, Any] = {
    "LRN": _expand_lrn, "Swish": _expand_swish, "Shrink": _expand_shrink,
    "MeanVarianceNormalization": _expand_mvn, "LpNormalization": _expand_lp_norm,
    "CenterCropPad": _expand_center_crop_pad,
}
# ONNX op types that are another op of ours under a different name
RENAMED = {"Upsample": "Resize", "Scatter": "ScatterElements"}


def _dim_value(name: str, value: Any, source: str | None) -> int:
    """A symbolic dimension's binding (``batch=32``): a whole number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise GraphError(f"dimension {name}={value!r} must be a whole number > 0", where=source)
    return int(value)


def import_model(
    model: Any,
    *,
    source: str | None = None,
    base_dir: str | None = None,
    fold: bool = True,
    weights_as_inputs: bool | Iterable[str] | str = "auto",
    input_values: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | None = None,
) -> Graph:
    """Build a graph from an in-memory ``onnx.ModelProto``.

    ``input_values`` binds graph inputs to constant values (so that shape operands fed as
    inputs can become attributes). ``fold=False`` keeps every node (no import-time
    evaluation); shape operands must then be constants already.
    """
    if not model.HasField("graph"):
        raise GraphError("model has no graph", where=source)
    check("graph_nodes", len(model.graph.node), "nodes in the model", source, GraphError)
    return _Importer(model, source, dims or {}, fold, base_dir, weights_as_inputs, input_values).run()


def load_onnx(
    path: str | os.PathLike[str],
    *,
    fold: bool = True,
    weights_as_inputs: bool | Iterable[str] | str = "auto",
    **dims: int,
) -> Graph:
    """Load an ``.onnx`` file as a verified graph; keyword arguments bind symbolic dims.

    Usage: ``g = load_onnx("resnet50.onnx", batch=32)``.
    """
    import onnx

    p = os.fspath(path)
    data = read_bytes(p, "onnx_bytes", GraphError)  # a regular file, within the size limit
    try:
        model = onnx.load_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises several kinds
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GraphError(f"not a readable ONNX model ({msg})", where=p) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise GraphError("not a readable ONNX model (no graph; truncated or not ONNX?)", where=p)
    return import_model(model, source=p, base_dir=os.path.dirname(os.path.abspath(p)), fold=fold,
                        weights_as_inputs=weights_as_inputs, dims=dims)
