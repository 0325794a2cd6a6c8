"""The op registry: one ``OpDef`` per op type, holding everything the rest of dlsim needs.

An op definition is small and complete (see docs/ops.md):

* ``infer(in_specs, attrs) -> list[TensorSpec]``: output shapes and dtypes (ONNX semantics);
  ``in_specs`` holds ``None`` for omitted optional inputs.
* ``work(in_specs, out_specs, attrs) -> Work``: FLOPs by kind, bytes, GEMM shapes.
* ``kernel(inputs, attrs) -> list[np.ndarray]``: the NumPy implementation. Inputs arrive in the
  compute dtype (low-precision floats as fp32; the executor rounds outputs back).
* ``grad(gb, node, dys) -> list[str | None]``: the gradient rule. It emits backward nodes
  through ``gb`` (a ``sim.passes.autodiff.GradBuilder``) and returns the name of the gradient
  tensor for each input (``None`` where there is none). ``dys`` holds the output gradients
  (``None`` for outputs nothing depends on). Ops with no gradient give ``no_grad`` instead:
  the reason, e.g. "integer output" or "backward op".
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.errors import UnsupportedOpError
from sim.ops.work import Work
from sim.tensor import TensorSpec

if TYPE_CHECKING:
    from sim.graph.node import Node

Specs = list[TensorSpec | None]
InferFn = Callable[[Specs, dict[str, Any]], list[TensorSpec]]
WorkFn = Callable[[Specs, list[TensorSpec], dict[str, Any]], Work]
KernelFn = Callable[[list[Any], dict[str, Any]], list[np.ndarray]]
GradFn = Callable[[Any, "Node", list[str | None]], list[str | None]]

# Family modules, imported on first use so that every op is registered.
FAMILIES = (
    "linalg", "conv", "pool", "elementwise", "logical", "reduce", "norm", "shape",
    "index", "generate", "attention", "rnn", "loss", "optim", "resize",
    "collective", "moe", "fused", "quant",
)


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: InferFn
    work: WorkFn
    kernel: KernelFn
    grad: GradFn | None = None
    no_grad: str | None = None  # why there is no gradient rule
    family: str = ""
    doc: str = ""
    traits: frozenset[str] = frozenset()  # see TRAITS; given by add_traits next to the definition


# The op groups passes and the engine ask about (tinygrad's op groups), one trait each.
TRAITS = {
    "view": "metadata only: the output aliases input 0's storage (Reshape, Squeeze, Flatten, ...)",
    "no_kernel": "launches no kernel on a device (views, Depend)",
    "elementwise": "each output element from the same-index elements of the broadcast inputs "
                   "(a gradient op's extra outputs may be reduced to its inputs' shapes)",
    "strided_operands": "reads operands through strides: a Transpose feeding it needs no copy",
    "collective": "communication over the devices of attrs['group']",
    "optimizer": "a parameter update: elementwise over the parameter, its gradient and states",
}


DTYPES_ATTR = "_dtypes"


def dtype_aware(fn: KernelFn) -> KernelFn:
    """Mark a kernel as wanting ``attrs[DTYPES_ATTR]``: the storage dtype name of each input
    ('' for an omitted one), so that it can round intermediates to that dtype as a reference
    implementation does (the executor passes them; other kernels never see the key)."""
    fn.wants_dtypes = True  # type: ignore[attr-defined]
    return fn


_REGISTRY: dict[str, OpDef] = {}
_loaded = False


def register(opdef: OpDef) -> OpDef:
    """Add an op definition. Names are unique."""
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    if opdef.grad is None and not opdef.no_grad:
        raise ValueError(f"op {opdef.name} needs a gradient rule or a no_grad reason")
    _REGISTRY[opdef.name] = opdef
    return opdef


def defop(
    name: str,
    *,
    infer: InferFn,
    work: WorkFn,
    kernel: KernelFn,
    grad: GradFn | None = None,
    no_grad: str | None = None,
    doc: str = "",
) -> OpDef:
    """Register an op from its parts; the family is the calling module's name.

    The caller's module is read from its frame's globals (as ``collections.namedtuple`` does):
    one attribute lookup, where ``inspect.stack()`` read every frame's source lines.
    """
    family = sys._getframe(1).f_globals.get("__name__", "").rsplit(".", 1)[-1]
    return register(OpDef(name, infer, work, kernel, grad, no_grad, family, doc))


def add_traits(trait: str, *names: str) -> None:
    """Give the named (registered) ops ``trait`` (one of ``TRAITS``)."""
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}")
    for name in names:
        d = _REGISTRY[name]
        _REGISTRY[name] = replace(d, traits=d.traits | {trait})


def registered_count() -> int:
    """How many ops are registered so far (a mark for ``registered_since``)."""
    return len(_REGISTRY)


def registered_since(mark: int) -> list[str]:
    """The ops registered after ``mark = registered_count()`` (a family module's own ops)."""
    return list(_REGISTRY)[mark:]


def has_trait(op: str, trait: str) -> bool:
    """Whether op ``op`` has ``trait`` (a dictionary lookup once the ops are loaded)."""
    d = _REGISTRY.get(op)
    return trait in (d if d is not None else get_op(op)).traits


def load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for fam in FAMILIES:
            importlib.import_module(f"sim.ops.{fam}")


def get_op(name: str, *, where: str | None = None) -> OpDef:
    """The definition of op ``name``; ``UnsupportedOpError`` naming it if unknown."""
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnsupportedOpError(f"unknown op {name!r}{hint}", where=where) from None


def has_op(name: str) -> bool:
    load_all()
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    """Every registered op, by name."""
    load_all()
    return dict(_REGISTRY)
