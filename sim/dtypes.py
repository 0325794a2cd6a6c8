"""Data types: the names used in graphs and specs, their sizes, and their NumPy equivalents.

Names are short and fixed: ``fp64 fp32 tf32 fp16 bf16 fp8 fp8e5m2 int64 int32 int8 uint8 bool``.
``fp8`` is E4M3 (the usual forward/inference format); ``fp8e5m2`` is the gradient format.
``tf32`` is a *compute* type only: tensors that compute in TF32 are stored as fp32.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from sim.errors import GraphError

ITEMSIZE: dict[str, int] = {
    "fp64": 8,
    "fp32": 4,
    "tf32": 4,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "fp8e5m2": 1,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}

FLOAT_DTYPES = frozenset({"fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "fp8e5m2"})

@cache
def _numpy_table() -> dict[str, np.dtype]:
    """Name -> NumPy storage dtype. ``ml_dtypes`` (bf16, fp8) is imported here, on first use:
    importing it costs more than the rest of ``import sim``, and simulating never needs it."""
    import ml_dtypes

    return {
        "fp64": np.dtype(np.float64),
        "fp32": np.dtype(np.float32),
        "tf32": np.dtype(np.float32),
        "fp16": np.dtype(np.float16),
        "bf16": np.dtype(ml_dtypes.bfloat16),
        "fp8": np.dtype(ml_dtypes.float8_e4m3fn),
        "fp8e5m2": np.dtype(ml_dtypes.float8_e5m2),
        "int64": np.dtype(np.int64),
        "int32": np.dtype(np.int32),
        "int16": np.dtype(np.int16),
        "int8": np.dtype(np.int8),
        "uint8": np.dtype(np.uint8),
        "bool": np.dtype(np.bool_),
    }


ALIASES: dict[str, str] = {
    "float64": "fp64",
    "double": "fp64",
    "float32": "fp32",
    "float": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8",
    "fp8e4m3": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8e5m2",
    "long": "int64",
    "int": "int32",
    "bool_": "bool",
}


def canonical(name: str, *, where: str | None = None) -> str:
    """Return the canonical dtype name for ``name`` (accepts aliases like ``float32``).

    >>> canonical("bfloat16")
    'bf16'
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in ITEMSIZE:
        known = ", ".join(sorted(ITEMSIZE))
        raise GraphError(f"unknown dtype {name!r} (known: {known})", where=where)
    return key


def itemsize(dtype: str) -> int:
    """Bytes per element of ``dtype``."""
    return ITEMSIZE[dtype]


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def to_numpy(dtype: str) -> np.dtype:
    """The NumPy dtype that stores ``dtype`` (bf16 and fp8 through ml_dtypes)."""
    return _numpy_table()[dtype]


def from_numpy(dt: np.dtype | type) -> str:
    """The dtype name of a NumPy dtype."""
    dt = np.dtype(dt)
    for name, npdt in _numpy_table().items():
        if npdt == dt and name != "tf32":
            return name
    raise GraphError(f"unsupported NumPy dtype {dt}")


def compute_numpy(dtype: str) -> np.dtype:
    """The dtype kernels compute in: low-precision floats compute in fp32 (as tensor cores
    accumulate in fp32) and are rounded back to their storage type afterwards."""
    if dtype in ("fp16", "bf16", "fp8", "fp8e5m2", "tf32"):
        return np.dtype(np.float32)
    return _numpy_table()[dtype]
