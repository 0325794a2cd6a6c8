"""Human units in hardware specs -> SI floats, with the kind of quantity checked.

A spec says ``bandwidth: 3.35 TB/s`` or ``capacity: 50 MiB``; the code wants bytes/s and
bytes. ``parse_quantity(text, kind)`` converts once, at load time, and refuses a value of the
wrong kind ("3.35 TB" where a bandwidth is expected), an unknown unit, a negative or a missing
number. Decimal prefixes are powers of ten (GB = 1e9 B); binary prefixes are powers of two
(GiB = 2**30 B). Bits are written ``b``/``bit`` (``Gb/s``, ``Gbps``) and divided by 8.

Kinds: ``size`` (B), ``bandwidth`` (B/s), ``compute`` (FLOP/s or OP/s), ``frequency`` (Hz),
``time`` (s), ``power`` (W), ``energy`` (J, J/FLOP), ``energy_per_byte`` (J/B, J/bit).

>>> parse_quantity("3.35 TB/s", "bandwidth")
3350000000000.0
>>> parse_quantity("50 MiB", "size") == 50 * 2**20
True
>>> parse_quantity("2 us", "time")
2e-06
"""

from __future__ import annotations

import math
import re

from sim.errors import SpecError

KINDS = ("size", "bandwidth", "compute", "frequency", "time", "power", "energy", "energy_per_byte")

_EXAMPLE = {
    "size": "80 GB",
    "bandwidth": "3.35 TB/s",
    "compute": "989.4 TFLOPS",
    "frequency": "1.98 GHz",
    "time": "2 us",
    "power": "700 W",
    "energy": "0.5 pJ",
    "energy_per_byte": "30 pJ/B",
}
_NAME = {
    "size": "a size",
    "bandwidth": "a bandwidth",
    "compute": "a compute rate",
    "frequency": "a frequency",
    "time": "a time",
    "power": "a power",
    "energy": "an energy",
    "energy_per_byte": "an energy per byte",
}

_BIG = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}

# base unit -> (kind, factor, prefixes allowed, case-sensitive base)
_BASES: list[tuple[str, str, float, str, bool]] = [
    ("FLOP/s", "compute", 1.0, "big", False),
    ("FLOPS", "compute", 1.0, "big", False),
    ("OP/s", "compute", 1.0, "big", False),
    ("OPS", "compute", 1.0, "big", False),
    ("byte/s", "bandwidth", 1.0, "bin", False),
    ("bit/s", "bandwidth", 0.125, "big", False),
    ("B/s", "bandwidth", 1.0, "bin", True),
    ("Bps", "bandwidth", 1.0, "bin", True),
    ("b/s", "bandwidth", 0.125, "big", True),
    ("bps", "bandwidth", 0.125, "big", True),
    ("J/FLOP", "energy", 1.0, "small", False),
    ("J/op", "energy", 1.0, "small", False),
    ("J/byte", "energy_per_byte", 1.0, "small", False),
    ("J/bit", "energy_per_byte", 8.0, "small", False),
    ("J/B", "energy_per_byte", 1.0, "small", True),
    ("J/b", "energy_per_byte", 8.0, "small", True),
    ("bytes", "size", 1.0, "bin", False),
    ("byte", "size", 1.0, "bin", False),
    ("bits", "size", 0.125, "big", False),
    ("bit", "size", 0.125, "big", False),
    ("Hz", "frequency", 1.0, "big", False),
    ("sec", "time", 1.0, "small", False),
    ("B", "size", 1.0, "bin", True),
    ("b", "size", 0.125, "big", True),
    ("J", "energy", 1.0, "small", True),
    ("W", "power", 1.0, "both", True),
    ("s", "time", 1.0, "small", True),
]

_MAX_SI = 1e30  # far above any real rate, size or frequency (1e30 FLOP/s, 1e30 B)

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def _prefixes(which: str) -> dict[str, float]:
    if which == "big":
        return _BIG
    if which == "bin":
        return {**_BIG, **_BINARY}
    if which == "small":
        return _SMALL
    return {**_BIG, **_SMALL}


def parse_unit(unit: str) -> tuple[str, float]:
    """(kind, factor to SI) of a unit string such as ``"TB/s"``; KeyError if unknown.

    >>> parse_unit("GiB")
    ('size', 1073741824.0)
    """
    for base, kind, factor, which, case in _BASES:
        n = len(base)
        if len(unit) < n:
            continue
        tail = unit[-n:]
        if (tail != base) if case else (tail.lower() != base.lower()):
            continue
        prefix = unit[:-n]
        table = _prefixes(which)
        if prefix in table:
            return kind, table[prefix] * factor
    raise KeyError(unit)


def parse_quantity(value: object, kind: str, *, where: str | None = None) -> float:
    """Convert ``value`` (a string with a unit) to SI for a field of ``kind``.

    Raises ``SpecError`` (with ``where``) for a missing or negative value, an unknown unit,
    or a unit of another kind (``"3.35 TB"`` given for a bandwidth).

    >>> parse_quantity("989.4 TFLOP/s", "compute")
    989400000000000.0
    >>> parse_quantity("64 GB/s", "bandwidth")
    64000000000.0
    """
    if kind not in KINDS:
        raise ValueError(f"unknown quantity kind {kind!r}")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SpecError(f"missing value: expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'", where=where)
    if isinstance(value, bool) or not isinstance(value, str):
        raise SpecError(
            f"{value!r} has no unit: expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'", where=where
        )
    m = _NUMBER.match(value)
    if not m:
        raise SpecError(
            f"cannot read {value!r}: expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'", where=where
        )
    number = float(m.group(1))
    unit = m.group(2)
    if not math.isfinite(number):
        raise SpecError(f"{value!r} is not a finite number", where=where)
    if number < 0:
        raise SpecError(f"{value!r} is negative: expected {_NAME[kind]} >= 0", where=where)
    if not unit:
        raise SpecError(
            f"{value!r} has no unit: expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'", where=where
        )
    try:
        got, factor = parse_unit(unit)
    except KeyError:
        raise SpecError(
            f"unknown unit {unit!r} in {value!r}: expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'",
            where=where,
        ) from None
    if got != kind:
        raise SpecError(
            f"{value!r} is {_NAME[got]}, expected {_NAME[kind]} such as '{_EXAMPLE[kind]}'", where=where
        )
    si = number * factor
    if not math.isfinite(si) or si > _MAX_SI:
        raise SpecError(f"{value!r} is too large to be {_NAME[kind]}", where=where)
    return si


def parse_number(value: object, *, where: str | None = None, integer: bool = False,
                 maximum: float | None = None) -> float:
    """A plain, non-negative number (a count or a ratio); SpecError otherwise.

    >>> parse_number(0.9, maximum=1.0)
    0.9
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"expected a number, got {value!r}", where=where)
    try:
        v = float(value)
    except OverflowError:
        raise SpecError(f"expected a number >= 0, got a number too large: {value}", where=where) from None
    if not math.isfinite(v) or v < 0 or v > _MAX_SI:
        raise SpecError(f"expected a number >= 0, got {value!r}", where=where)
    if integer and v != int(v):
        raise SpecError(f"expected a whole number, got {value!r}", where=where)
    if maximum is not None and v > maximum:
        raise SpecError(f"expected a number <= {maximum:g}, got {value!r}", where=where)
    return v


def format_quantity(value: float, kind: str) -> str:
    """Human string for an SI value (decimal prefixes), e.g. ``3.35 TB/s``.

    >>> format_quantity(3.35e12, "bandwidth")
    '3.35 TB/s'
    """
    unit = {"size": "B", "bandwidth": "B/s", "compute": "FLOP/s", "frequency": "Hz", "time": "s",
            "power": "W", "energy": "J", "energy_per_byte": "J/B"}[kind]
    if value == 0:
        return f"0 {unit}"
    table = (
        [("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)]
        if kind not in ("time", "energy", "energy_per_byte")
        else [("", 1.0), ("m", 1e-3), ("u", 1e-6), ("n", 1e-9), ("p", 1e-12), ("f", 1e-15)]
    )
    for prefix, f in table:
        if abs(value) >= f * 0.9995:
            return f"{value / f:.4g} {prefix}{unit}"
    prefix, f = table[-1]
    return f"{value / f:.4g} {prefix}{unit}"
