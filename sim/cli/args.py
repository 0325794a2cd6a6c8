"""Parsers for command-line values shared by the commands (``--set``, ``--hw-set``, ``--place``,
``--dispatch``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sim.errors import SimError


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``["batch=32", "seq=128"]`` -> ``{"batch": 32, "seq": 128}`` (ints, floats, or strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SimError(f"expects key=value, got {item!r}", where="--set")
        k, v = item.split("=", 1)
        if not k.strip():
            raise SimError(f"expects key=value, got {item!r}", where="--set")
        out[k.strip()] = number_or_text(v.strip(), where=f"--set {k.strip()}")
    return out


def number_or_text(v: str, where: str | None = None) -> Any:
    """``"32"`` -> 32, ``"0.5"`` -> 0.5, anything else unchanged; ``nan``, ``inf`` and numbers
    too large for a float are errors (SimError at ``where``).

    >>> number_or_text("32"), number_or_text("0.5"), number_or_text("gelu")
    (32, 0.5, 'gelu')
    """
    try:
        return int(v)
    except ValueError:
        pass
    try:
        x = float(v)
    except ValueError:
        return v
    if not math.isfinite(x):
        raise SimError(f"{v!r} is not a finite number", where=where)
    return x


def parse_place(items: list[str] | None) -> dict[str, str]:
    """``["embed*=cpu0"]`` -> ``{"embed*": "cpu0"}`` (order kept: first match wins)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SimError(f"expects PATTERN=DEVICE, got {item!r}", where="--place")
        pat, dev = item.rsplit("=", 1)
        if not pat.strip() or not dev.strip():
            raise SimError(f"--place expects PATTERN=DEVICE, got {item!r}", where="--place")
        out[pat.strip()] = dev.strip()
    return out


def parse_hw_sets(items: list[str] | None) -> dict[str, Any]:
    """``--hw-set`` items as spec overrides: quantities stay strings for the spec's unit
    parser; plain numbers, booleans and ``[...]`` lists become values (as in YAML).

    >>> parse_hw_sets(["memory.hbm.bandwidth=6.7 TB/s", "memory.hbm.efficiency=0.9",
    ...                "arch.sms=100", "topology.shape=[2, 2, 4]", "units.tensor.sparse_2_4=false"])
    {'memory.hbm.bandwidth': '6.7 TB/s', 'memory.hbm.efficiency': 0.9, 'arch.sms': 100, \
'topology.shape': [2, 2, 4], 'units.tensor.sparse_2_4': False}
    """
    import yaml

    from sim.io import safe_load

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SimError(f"expects FIELD=VALUE, got {item!r}", where="--hw-set")
        k, v = (p.strip() for p in item.split("=", 1))
        value = number_or_text(v, where=f"--hw-set {k}")
        if isinstance(value, str) and (v.startswith("[") or v.lower() in ("true", "false")):
            try:
                value = safe_load(v)
            except yaml.YAMLError:
                raise SimError(f"{k}: cannot read {v!r} as a value", where="--hw-set") from None
        out[k] = value
    return out


def parse_dispatch(text: str) -> float:
    """``"10 us"`` -> 1e-05 (a time in ``sim.hw.units``' syntax; a bare number is seconds)."""
    from sim.hw.units import parse_quantity

    try:
        t = float(text)
    except ValueError:
        t = parse_quantity(text, "time", where="--dispatch")
    if not math.isfinite(t) or t < 0 or t > 3600:
        raise SimError(f"expected a time between 0 and 1 hour, got {text!r}", where="--dispatch")
    return t
