"""TensorSpec: the static type of a tensor (shape and dtype), below both the op library and the graph."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.dtypes import itemsize


@dataclass(frozen=True)
class TensorSpec:
    """Shape (concrete ints) and dtype name of a tensor.

    >>> TensorSpec((2, 3), "fp32").nbytes
    24
    """

    shape: tuple[int, ...]
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

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
