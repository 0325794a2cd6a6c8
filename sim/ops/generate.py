"""Ops that make tensors from attributes or from another tensor's shape: Constant,
ConstantOfShape, Range, EyeLike, Shape, Size, and the Hann/Hamming/Blackman windows.

Shape operands are attributes here (``ConstantOfShape`` ``shape``, ``Range``
``start/limit/delta``), so every output shape is known when the graph is built. The ONNX
importer turns constant inputs into these attributes. Their outputs do not depend on the
values of any input: ConstantOfShape, EyeLike, Shape and Size (which may take a tensor input)
have a gradient rule giving no gradient to any input, so that autodiff treats their outputs
as constants; the others take no tensor inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.dtypes import canonical, from_numpy, to_numpy
from sim.errors import GraphError
from sim.ops.common import free_work, need
from sim.ops.registry import defop
from sim.ops.work import Work
from sim.tensor import TensorSpec


def no_value_dependence(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    """Gradient rule of ops whose output does not depend on input values: ``None`` for every
    input (the output is a constant as far as autodiff is concerned)."""
    return [None] * len(node.inputs)


def _write_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """Ops that fill a new tensor: write it once, read nothing."""
    return Work(bytes_written=sum(o.nbytes for o in outs))


# ---------------------------------------------------------------------------------- Constant
_CONST_KEYS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def constant_value(attrs: dict[str, Any]) -> np.ndarray:
    """The array a Constant node holds (``value`` array, or a ``value_*`` scalar/list)."""
    present = [k for k in _CONST_KEYS if k in attrs]
    if len(present) != 1:
        raise GraphError(f"Constant needs exactly one of {', '.join(_CONST_KEYS)}, got {present}")
    key = present[0]
    v = attrs[key]
    if key in ("value_float", "value_floats"):
        arr = np.asarray(v, dtype=np.float32)
    elif key in ("value_int", "value_ints"):
        arr = np.asarray(v, dtype=np.int64)
    else:
        arr = np.asarray(v)
        if arr.dtype == np.float64 and "dtype" not in attrs and not isinstance(v, np.ndarray):
            arr = arr.astype(np.float32)  # a Python float list means fp32, as in ONNX
    if "dtype" in attrs:
        arr = arr.astype(to_numpy(canonical(attrs["dtype"])))
    return arr


def _constant_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    arr = constant_value(attrs)
    return [TensorSpec(arr.shape, from_numpy(arr.dtype))]


defop(
    "Constant",
    infer=_constant_infer,
    work=free_work,
    kernel=lambda xs, attrs: [np.array(constant_value(attrs))],
    no_grad="no inputs",
    doc="A tensor held in the graph: one of value (array), value_float(s), value_int(s); "
        "optional dtype.",
)


# ---------------------------------------------------------------------------- ConstantOfShape
def fill_value(attrs: dict[str, Any]) -> np.ndarray:
    v = attrs.get("value", np.zeros(1, np.float32))
    arr = np.asarray(v)
    if arr.dtype == np.float64 and not isinstance(v, np.ndarray):
        arr = arr.astype(np.float32)
    if "dtype" in attrs:
        arr = arr.astype(to_numpy(canonical(attrs["dtype"])))
    if arr.size != 1:
        raise GraphError(f"ConstantOfShape value must hold one element, got {arr.shape}")
    return arr.reshape(())


def _cos_shape(attrs: dict[str, Any]) -> tuple[int, ...]:
    if "shape" not in attrs:
        raise GraphError("ConstantOfShape needs the attribute shape")
    shape = tuple(int(d) for d in np.asarray(attrs["shape"]).reshape(-1))
    if any(d < 0 for d in shape):
        raise GraphError(f"ConstantOfShape shape {shape} has a negative dimension")
    return shape


defop(
    "ConstantOfShape",
    infer=lambda specs, attrs: [TensorSpec(_cos_shape(attrs), from_numpy(fill_value(attrs).dtype))],
    work=_write_work,
    kernel=lambda xs, attrs: [np.full(_cos_shape(attrs), fill_value(attrs))],
    grad=no_value_dependence,  # output does not depend on input values
    doc="A tensor of shape `shape` filled with `value` (one element; default fp32 0).",
)


# ---------------------------------------------------------------------------------- Range
def _range_parts(attrs: dict[str, Any]) -> tuple[Any, Any, Any, str]:
    try:
        vals = [np.asarray(attrs[k]).reshape(()) for k in ("start", "limit", "delta")]
    except KeyError as err:
        raise GraphError(f"Range needs the attribute {err.args[0]}") from None
    if "dtype" in attrs:
        dtype = canonical(attrs["dtype"])
    elif all(v.dtype == vals[0].dtype for v in vals) and vals[0].dtype != np.float64:
        dtype = from_numpy(vals[0].dtype)
    elif all(np.issubdtype(v.dtype, np.integer) for v in vals):
        dtype = from_numpy(np.result_type(*vals))
    else:
        dtype = from_numpy(np.result_type(*vals, np.float32))
    npdt = to_numpy(dtype)
    start, limit, delta = (v.astype(npdt) for v in vals)
    if delta == 0:
        raise GraphError("Range delta is 0")
    return start, limit, delta, dtype


def _range_len(attrs: dict[str, Any]) -> int:
    start, limit, delta, _ = _range_parts(attrs)
    return max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    start, _, delta, dtype = _range_parts(attrs)
    n = _range_len(attrs)
    # ONNX defines element i as start + i * delta (computed in the output type)
    return [(start + np.arange(n).astype(to_numpy(dtype)) * delta).astype(to_numpy(dtype))]


def _range_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """start + i * delta: a multiply-add (2 FLOP) per element written, nothing read."""
    return Work(flops=2 * outs[0].numel, bytes_written=outs[0].nbytes)


defop(
    "Range",
    infer=lambda specs, attrs: [TensorSpec((_range_len(attrs),), _range_parts(attrs)[3])],
    work=_range_work,
    kernel=_range_kernel,
    no_grad="no float inputs",
    doc="start + i * delta for i < ceil((limit - start) / delta); start/limit/delta are "
        "attributes (dtype from them, or the dtype attribute).",
)


# ---------------------------------------------------------------------------------- EyeLike
def _eyelike_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "EyeLike")
    if x.rank != 2:
        raise GraphError(f"EyeLike input must be 2-D, got {x.shape}")
    dt = canonical(attrs["dtype"]) if "dtype" in attrs else x.dtype
    return [TensorSpec(x.shape, dt)]


def _eyelike_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    dt = to_numpy(canonical(attrs["dtype"])) if "dtype" in attrs else x.dtype
    return [np.eye(x.shape[0], x.shape[1], k=int(attrs.get("k", 0)), dtype=dt)]


defop(
    "EyeLike",
    infer=_eyelike_infer,
    work=_write_work,
    kernel=_eyelike_kernel,
    grad=no_value_dependence,  # output does not depend on input values
    doc="Ones on diagonal k of a 2-D tensor shaped like the input; dtype attr or the input's.",
)


# ---------------------------------------------------------------------------------- Shape, Size
def _shape_slice(rank: int, attrs: dict[str, Any]) -> slice:
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    return slice(start, None if end is None else int(end))


def _shape_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Shape")
    n = len(x.shape[_shape_slice(x.rank, attrs)])
    return [TensorSpec((n,), "int64")]


defop(
    "Shape",
    infer=_shape_infer,
    work=free_work,
    kernel=lambda xs, attrs: [
        np.array(xs[0].shape[_shape_slice(xs[0].ndim, attrs)], dtype=np.int64)
    ],
    grad=no_value_dependence,  # output does not depend on input values
    doc="The input's shape as int64 (dims start:end, negative counting from the end).",
)

defop(
    "Size",
    infer=lambda specs, attrs: [TensorSpec((), "int64") if need(specs, 1, "Size") else None],  # type: ignore[list-item]
    work=free_work,
    kernel=lambda xs, attrs: [np.array(xs[0].size, dtype=np.int64)],
    grad=no_value_dependence,  # output does not depend on input values
    doc="The input's element count as an int64 scalar.",
)


# ---------------------------------------------------------------------------------- windows
# y[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N); N = size (periodic) or size - 1
_WINDOWS = {
    "HannWindow": (0.5, 0.5, 0.0),
    "HammingWindow": (25.0 / 46.0, 21.0 / 46.0, 0.0),
    "BlackmanWindow": (0.42, 0.5, 0.08),
}


def _window_size(attrs: dict[str, Any]) -> int:
    if "size" not in attrs:
        raise GraphError("window ops need the attribute size (a constant size input becomes it)")
    size = int(np.asarray(attrs["size"]).reshape(-1)[0])
    if size < 0:
        raise GraphError(f"window size {size} is negative")
    return size


def _window_dtype(attrs: dict[str, Any]) -> str:
    return canonical(attrs.get("output_datatype", "fp32"))


def _window(op: str) -> Any:
    a0, a1, a2 = _WINDOWS[op]

    def kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        size = _window_size(attrs)
        denom = size if int(attrs.get("periodic", 1)) else size - 1
        n = np.arange(size, dtype=np.float64)
        t = 2.0 * np.pi * n / denom if denom else np.zeros(size)
        y = a0 - a1 * np.cos(t) + a2 * np.cos(2.0 * t)
        return [y.astype(to_numpy(_window_dtype(attrs)))]

    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        n = outs[0].numel
        cosines = 2 if a2 else 1
        return Work(flops=(4 + 2 * cosines) * n, transcendentals=cosines * n,
                    bytes_written=outs[0].nbytes)

    return kernel, work


for _op in _WINDOWS:
    _k, _w = _window(_op)
    defop(
        _op,
        infer=lambda specs, attrs: [TensorSpec((_window_size(attrs),), _window_dtype(attrs))],
        work=_w,
        kernel=_k,
        no_grad="no float inputs",
        doc="ONNX window generator with size as an attribute; periodic=1, output_datatype.",
    )
