"""TensorSpec: the static type of a tensor (shape and dtype), below both the op library and the graph."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from sim.dtypes import itemsize
from sim.errors import GraphError
from sim.limits import check, limit, over

_CHECK_ABOVE = 2**31  # dimensions and element counts below this need no limit check


def _dim(d: Any) -> int:
    """A dimension as an int: a whole number >= 0 (``2.5``, ``-3``, ``True`` are errors)."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        if isinstance(d, numbers.Real) and float(d).is_integer():
            d = int(float(d))
        else:
            raise GraphError(f"dimension {d!r} is not a whole number")
    n = int(d)
    if n < 0:
        raise GraphError(f"dimension {n} is negative")
    return n


@dataclass(frozen=True)
class TensorSpec:
    """Shape (concrete ints) and dtype name of a tensor.

    >>> TensorSpec((2, 3), "fp32").nbytes
    24
    """

    shape: tuple[int, ...]
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        shape = tuple(_dim(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) > 8 and len(shape) > limit("rank"):
            raise GraphError(over("rank", len(shape), f"rank of shape {list(shape)}"))
        if any(d > _CHECK_ABOVE for d in shape):
            for d in shape:
                check("dim", d, "dimension", None, GraphError)
            check("elements", math.prod(shape), f"elements of shape {list(shape)}", None, GraphError)
        elif len(shape) > 2 and math.prod(shape) > _CHECK_ABOVE:
            check("elements", math.prod(shape), f"elements of shape {list(shape)}", None, GraphError)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)

    def with_dtype(self, dtype: str) -> TensorSpec:
        return TensorSpec(self.shape, dtype)

    def with_shape(self, shape: tuple[int, ...] | list[int]) -> TensorSpec:
        return TensorSpec(tuple(shape), self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"
