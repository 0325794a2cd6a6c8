"""ONNX semantics for node attributes and input counts, checked when a workload or model is read.

An op that ONNX defines takes only the attributes its ONNX schema lists and between the
schema's minimum and maximum number of inputs: a typo (``axs: 1``) or an extra input is a
``GraphError`` at load time instead of being silently ignored. Ops that are not ONNX ops
(the library's fused, optimizer and collective ops) are left to their own shape rules.
Attributes whose name starts with ``_`` are the library's own annotations and always pass.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sim.errors import GraphError

# attributes the library's ops accept beyond their ONNX schema (sizes given as attributes where
# ONNX takes an input tensor), for workload files
LIBRARY_ATTRS: dict[str, frozenset[str]] = {"ConstantOfShape": frozenset({"shape"})}


@functools.lru_cache(maxsize=1)
def _history() -> dict[str, list[Any]]:
    import onnx.defs

    out: dict[str, list[Any]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            out.setdefault(s.name, []).append(s)
    return out


@functools.lru_cache(maxsize=2048)
def _schema(op: str, opset: int | None) -> tuple[frozenset[str], int, int] | None:
    """(attribute names, min inputs, max inputs) of ONNX op ``op`` at ``opset``; None (a
    workload file) takes every opset's version of the op together, plus ``LIBRARY_ATTRS``."""
    import onnx.defs

    if opset is not None:
        try:
            schema = onnx.defs.get_schema(op, opset, "")
        except onnx.defs.SchemaError:
            return None
        return frozenset(schema.attributes), int(schema.min_input), int(schema.max_input)
    versions = _history().get(op)
    if not versions:
        return None
    attrs = frozenset().union(*(frozenset(s.attributes) for s in versions))
    attrs |= LIBRARY_ATTRS.get(op, frozenset())
    return (attrs, min(int(s.min_input) for s in versions), max(int(s.max_input) for s in versions))


def check_node(op: str, inputs: Sequence[str], attrs: Mapping[str, Any], opset: int | None = None,
               where: str | None = None) -> None:
    """Raise ``GraphError`` if ONNX op ``op`` is given an attribute its schema does not list or a
    number of inputs outside the schema's range (trailing omitted inputs, ``""``, not counted)."""
    spec = _schema(op, opset)
    if spec is None:
        return
    allowed, lo, hi = spec
    for k in attrs:
        if str(k).startswith("_") or k in allowed:
            continue
        close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(allowed)) or "none"
        raise GraphError(f"{op} has no attribute {k!r}{hint}; its attributes: {known}", where=where)
    n = len(inputs)
    while n and not inputs[n - 1]:
        n -= 1
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else (f"{lo} or more" if hi > 1000 else f"{lo} to {hi}")
        raise GraphError(f"{op} takes {want} inputs, {n} given", where=where)
