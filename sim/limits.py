"""Size limits on everything dlsim reads, so no input can hang the loader or exhaust memory.

Each limit has a default that covers every real network and machine we know of, and can be
raised with an environment variable ``DLSIM_LIMIT_<NAME>`` (``DLSIM_LIMIT_REPEAT=1000000``).
An input past a limit is a one-line ``SimError`` naming the file or option, the field and the
limit's variable. See docs/limits.md.

>>> limit("repeat")
10000
"""

from __future__ import annotations

import os

from sim.errors import SimError

#: name -> (default, what it bounds)
LIMITS: dict[str, tuple[int, str]] = {
    "input_bytes": (2**20, "bytes of a YAML spec or workload file (the largest bundled is 20 KB)"),
    "onnx_bytes": (2**31, "bytes of an ONNX model file (protobuf's own limit is 2 GiB)"),
    "yaml_nodes": (100_000, "YAML nodes, written or reached through aliases"),
    "yaml_depth": (64, "nesting depth of YAML mappings and lists"),
    "repeat": (10_000, "repeat count of a workload layer or block"),
    "graph_nodes": (100_000, "ops in a graph read from a workload file or an ONNX model"),
    "devices": (65_536, "devices in a system spec (sum of the groups' counts)"),
    "grid_points": (100_000, "points of a sweep grid (the product of its axes' lengths)"),
    "streams": (1_024, "concurrent compute streams per device (--streams)"),
    "rank": (32, "dimensions of a tensor"),
    "dim": (2**40, "size of one tensor dimension"),
    "elements": (2**50, "elements of one tensor"),
    "expr_chars": (4_096, "characters of one workload size expression"),
    "expr_bits": (256, "bits of a whole number inside a workload size expression"),
}


def limit(name: str) -> int:
    """The limit ``name``: ``DLSIM_LIMIT_<NAME>`` when set, else its default."""
    default, _ = LIMITS[name]
    var = env_var(name)
    text = os.environ.get(var)
    if text is None or not text.strip():
        return default
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except (ValueError, OverflowError):
        raise SimError(f"expected a whole number, got {text!r}", where=var) from None
    if value < 1:
        raise SimError(f"expected a whole number >= 1, got {text!r}", where=var)
    return value


def env_var(name: str) -> str:
    """The environment variable that overrides limit ``name``."""
    return f"DLSIM_LIMIT_{name.upper()}"


def over(name: str, value: float, what: str) -> str:
    """The message for ``value`` over limit ``name``: says the limit and how to raise it."""
    return (f"{what}: {value:,.0f} is over the limit of {limit(name):,} "
            f"(raise it with {env_var(name)}=N; docs/limits.md)")


def check(name: str, value: float, what: str, where: str | None = None, error: type = SimError) -> None:
    """Raise ``error`` (a SimError subclass) when ``value`` is over limit ``name``."""
    if value > limit(name):
        raise error(over(name, value, what), where=where)
