"""Study axes: what a ``--grid FIELD=V1,V2,...`` names, how its values parse, and how the axes
expand into points (a product or a zip).

A field is one of

* ``hw`` (another hardware spec), ``workload``, ``dtype``, ``parallel`` (``dp=8``, ``pp=4,mb=8``);
* a runtime option: ``train``, ``fuse``, ``checkpoint``, ``loss``, ``optimizer``, ``streams``,
  ``dispatch``, ``cuda_graphs``, ``resident_inputs``, ``cache_reuse``;
* a workload parameter (``batch``, ``seq``: any name the workload's ``params`` declare, or
  ``param.NAME`` to say so explicitly);
* a spec field, dotted as in ``--hw-set`` (``memory.hbm.bandwidth``, ``launch``; or
  ``spec.FIELD`` explicitly).

>>> split_values("2 TB/s,3.35 TB/s,6.7 TB/s")
['2 TB/s', '3.35 TB/s', '6.7 TB/s']
>>> split_values("pp=4,mb=8,pp=2,mb=16,dp=8", field="parallel")
['pp=4,mb=8', 'pp=2,mb=16', 'dp=8']
>>> split_values("[2, 2, 4],[4, 4, 1]")
['[2, 2, 4]', '[4, 4, 1]']
>>> [parse_value(v) for v in split_values("1,8,32")]
[1, 8, 32]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from sim.errors import SimError
from sim.io import safe_load
from sim.limits import check

# option name -> the type its values take
OPTIONS: dict[str, type] = {
    "train": bool, "fuse": bool, "checkpoint": bool, "loss": str, "optimizer": str, "streams": int,
    "dispatch": str, "cuda_graphs": bool, "resident_inputs": bool, "cache_reuse": bool,
}
SPECIAL = ("hw", "workload", "dtype", "parallel")
KINDS = ("special", "option", "param", "spec")


@dataclass(frozen=True)
class Field:
    """A named axis: ``kind`` is special/option/param/spec, ``key`` the name within that kind."""

    name: str
    kind: str
    key: str


def split_values(text: str, field: str = "") -> list[str]:
    """Split a value list on commas outside brackets and quotes; ``;`` separates instead when the
    text has one (for values with commas of their own). For ``parallel`` a ``mb=M`` piece belongs
    to the layout before it."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]") and not text.startswith("[["):
        # a YAML flow list of values ("[1, 8, 32]") unless it is a list of lists
        try:
            parsed = safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, list) and not any(isinstance(x, list) for x in parsed):
            return [str(x) for x in parsed]
    if ";" in text:
        return [p.strip() for p in text.split(";") if p.strip()]
    parts: list[str] = []
    depth, quote = 0, ""
    cur: list[str] = []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    if field == "parallel":
        merged: list[str] = []
        for p in parts:
            if p.startswith("mb=") and merged:
                merged[-1] += f",{p}"
            else:
                merged.append(p)
        parts = merged
    if any(not p for p in parts):
        raise SimError(f"empty value in {text!r}", where=f"--grid {field}" if field else "--grid")
    return [p.strip("'\"") for p in parts]


def parse_value(text: str) -> Any:
    """A value as YAML would read it: ints, floats, booleans, lists; anything else (quantities
    with units, names) stays text for the spec's unit parser."""
    t = text.strip()
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            continue
    if t.lower() in ("true", "false", "yes", "no", "on", "off") or t.startswith(("[", "{")):
        try:
            return safe_load(t)
        except yaml.YAMLError:
            raise SimError(f"cannot read {t!r} as a value", where="--grid") from None
    return t


def parse_grid(items: Sequence[str] | None) -> dict[str, list[Any]]:
    """``["batch=1,8", "dtype=bf16,fp8"]`` -> ``{"batch": [1, 8], "dtype": ["bf16", "fp8"]}``.

    >>> parse_grid(["memory.hbm.bandwidth=2 TB/s,3.35 TB/s", "batch=[1, 8]"])
    {'memory.hbm.bandwidth': ['2 TB/s', '3.35 TB/s'], 'batch': [1, 8]}
    """
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise SimError(f"expected FIELD=V1,V2,..., got {item!r}", where="--grid")
        if name in grid:
            raise SimError(f"{name!r} is given twice", where="--grid")
        grid[name] = [parse_value(v) for v in split_values(values, name)]
    return grid


def classify(name: str, params: Sequence[str]) -> Field:
    """What ``name`` refers to, given the workload's declared ``params``."""
    if name in SPECIAL:
        return Field(name, "special", name)
    if name in OPTIONS:
        return Field(name, "option", name)
    for prefix, kind in (("param.", "param"), ("set.", "param"), ("spec.", "spec"), ("hw.", "spec")):
        if name.startswith(prefix) and len(name) > len(prefix):
            return Field(name, kind, name[len(prefix):])
    if name in params or name == "batch":
        return Field(name, "param", name)
    return Field(name, "spec", name)


def coerce_option(name: str, value: Any) -> Any:
    """An option's value in its type (``"true"`` -> True for flags); SimError if it cannot be."""
    want = OPTIONS[name]
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif want is str:
        return str(value)
    raise SimError(f"{name} takes {want.__name__} values, got {value!r}", where=name)


def expand(grid: Mapping[str, Sequence[Any]], mode: str = "product") -> list[dict[str, Any]]:
    """The points of a grid: every combination (``product``, the first axis slowest) or the
    axes side by side (``zip``, all of one length).

    >>> expand({"a": [1, 2], "b": ["x", "y"]})
    [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
    >>> expand({"a": [1, 2], "b": ["x", "y"]}, "zip")
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]
    """
    names = list(grid)
    for n in names:
        if not isinstance(grid[n], (list, tuple)) or not grid[n]:
            raise SimError(f"{n}: an axis needs a non-empty list of values", where="grid")
    if mode == "product":
        check("grid_points", math.prod(len(grid[n]) for n in names), "points in the grid", "grid")
        return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    if mode == "zip":
        lengths = {len(grid[n]) for n in names}
        if len(lengths) > 1:
            raise SimError(f"zip needs axes of one length, got {sorted(lengths)}", where="grid")
        return [dict(zip(names, combo)) for combo in zip(*(grid[n] for n in names))]
    raise SimError(f"mode must be 'product' or 'zip', got {mode!r}", where="mode")
