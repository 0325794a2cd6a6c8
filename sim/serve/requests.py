"""Request streams for ``sim serve``: Poisson arrivals (seeded) or a trace file.

A trace is CSV (a header naming the columns) or JSONL (one object per line) with the fields
``arrival_s`` (seconds from the start; ``arrival`` and ``timestamp`` are accepted too),
``prompt_len`` (``prompt``, ``input_len``) and ``output_len`` (``output``), one request each.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import SimError

ALIASES = {
    "arrival_s": ("arrival_s", "arrival", "timestamp"),
    "prompt_len": ("prompt_len", "prompt", "input_len"),
    "output_len": ("output_len", "output"),
}


@dataclass(frozen=True)
class RequestSpec:
    """One request: when it arrives, how many prompt tokens, how many tokens to generate."""

    rid: int
    arrival_s: float
    prompt_len: int
    output_len: int


def poisson(rate: float, n: int, prompt_len: int, output_len: int, seed: int = 0) -> list[RequestSpec]:
    """``n`` requests with exponential inter-arrival gaps of mean ``1/rate`` (the first at
    its gap after 0); ``rate`` inf sends them all at time 0 (an offline batch)."""
    if n < 1:
        raise SimError(f"requests must be >= 1, got {n}", where="--requests")
    if not rate > 0:
        raise SimError(f"rate must be > 0 requests/s, got {rate}", where="--rate")
    for opt, v in (("--prompt-len", prompt_len), ("--output-len", output_len)):
        if v < 1:
            raise SimError(f"must be >= 1, got {v}", where=opt)
    if np.isinf(rate):
        times = np.zeros(n)
    else:
        times = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))
    return [RequestSpec(i, float(t), prompt_len, output_len) for i, t in enumerate(times)]


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
    for name in ALIASES[key]:
        if name in row and row[name] not in (None, ""):
            return row[name]
    raise SimError(f"missing field {key!r} (or {', '.join(ALIASES[key][1:])})", where=where)


def _number(v: Any, key: str, where: str, integer: bool) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise SimError(f"field {key!r} is {v!r}, not a number", where=where) from None
    if not np.isfinite(x) or x < 0 or (integer and (x != int(x) or x < 1)):
        want = "a whole number >= 1" if integer else "a time >= 0"
        raise SimError(f"field {key!r} is {v!r}, expected {want}", where=where)
    return x


def load_trace(path: str | os.PathLike[str]) -> list[RequestSpec]:
    """Requests from a CSV or JSONL trace (sorted by arrival, ids in file order)."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise SimError(f"cannot read: {err.strerror}", where=p) from None
    rows: list[tuple[str, Mapping[str, Any]]] = []
    if p.endswith((".jsonl", ".ndjson", ".json")):
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise SimError(f"invalid JSON: {err.msg}", where=f"{p}:{i}") from None
            if not isinstance(obj, dict):
                raise SimError("each line must be a JSON object", where=f"{p}:{i}")
            rows.append((f"{p}:{i}", obj))
    else:
        reader = csv.DictReader(text.splitlines())
        rows = [(f"{p}:{i}", r) for i, r in enumerate(reader, 2)]
    if not rows:
        raise SimError("the trace has no requests", where=p)
    out = []
    for rid, (where, row) in enumerate(rows):
        t = _number(_field(row, "arrival_s", where), "arrival_s", where, False)
        pl = int(_number(_field(row, "prompt_len", where), "prompt_len", where, True))
        ol = int(_number(_field(row, "output_len", where), "output_len", where, True))
        out.append(RequestSpec(rid, t, pl, ol))
    return sorted(out, key=lambda r: (r.arrival_s, r.rid))
