"""Node: one op application in a graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """An op applied to named input tensors, producing named output tensors.

    ``inputs`` may contain ``""`` for an omitted optional input (ONNX convention).
    ``attrs`` are the op's attributes (ONNX names). ``meta`` is free-form, filled by frontends
    and passes: ``layer`` (the YAML layer it came from), ``forward`` (for a gradient node, the
    forward node it differentiates), ``compute_dtype`` (set by the precision pass),
    ``sparsity`` (set by the pruning pass), ``device`` (placement).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)

    def copy(self) -> Node:
        return Node(self.name, self.op, self.inputs, self.outputs, dict(self.attrs), dict(self.meta))

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in sorted(self.attrs.items()))
        return (
            f"{','.join(self.outputs)} = {self.op}({', '.join(i or '_' for i in self.inputs)}"
            f"{'; ' + attrs if attrs else ''})  # {self.name}"
        )
