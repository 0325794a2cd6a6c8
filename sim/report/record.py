"""``OpRecord``: one op, transfer or collective as it ran on the simulated machine.

The engine emits one record per op on a device, per hop of a transfer (``op == "Transfer"``)
and per member of a collective; ``Result.ops`` holds them sorted by start time. Every record
has every field (those that do not apply keep their defaults), so the records load into
pandas as one table: ``pandas.DataFrame(result.records())`` or ``pandas.DataFrame(result.ops)``.

>>> r = OpRecord(name="mm", op="MatMul", device="gpu0", unit="tensor", start_s=0.0, end_s=2e-6,
...              flops=2e9, bytes=3e6, bound="compute", energy_j=1e-3, dtype="bf16")
>>> r.duration_s, r.as_dict()["bound"]
(2e-06, 'compute')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class OpRecord:
    """One interval of work on one device (seconds, FLOP, bytes, joules; SI throughout)."""

    name: str  # node name (a transfer: "<tensor>-><destination device>")
    op: str  # op type ("MatMul"), "Transfer" for a copy hop
    device: str  # device instance that ran it (a transfer: the one whose copy engine ran it)
    unit: str  # compute unit, "copy:<link> in|out|-><dst>", "collective", or "memory"
    start_s: float
    end_s: float
    flops: float
    bytes: float  # bytes moved through memory (a transfer or collective: over the link)
    bound: str  # "compute" | "memory" | "launch" | "comm"
    energy_j: float  # dynamic energy (idle power is in ``Result.idle_energy_j``)
    dtype: str = ""  # compute dtype (a transfer: the tensor's dtype)
    layer: str = ""  # the workload layer the node came from, "" if none
    compute_s: float = 0.0  # the cost model's compute time (matrix + vector)
    memory_s: float = 0.0  # the cost model's memory time
    stream: int = 0  # the compute stream (slot) the op ran on
    cached_bytes: float = 0.0  # of ``bytes``, reads served by the reuse cache
    host_wait_s: float = 0.0  # time the stream sat idle waiting for the host to issue this op
    src: str | None = None  # a transfer hop's source (device or host)
    dst: str | None = None  # a transfer hop's destination
    tensor: str | None = None  # the tensor a transfer moves
    group: list[str] | None = None  # a collective's member devices
    steps: int | None = None  # a collective's ring steps
    chunk_bytes: float | None = None  # a collective's bytes per step

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict of JSON-ready values (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)

    # Read access by key, for scripts written against the earlier dict records
    # (``r["start_s"]``, ``r.get("stream", 0)``); new code reads attributes.
    def __getitem__(self, key: str) -> Any:
        if key not in FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in FIELDS else default


FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(OpRecord))
