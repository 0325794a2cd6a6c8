"""Typed errors. Each carries what it is about so the CLI can print one line and exit 2."""

from __future__ import annotations


class SimError(Exception):
    """Base of every error dlsim raises on bad input. ``str(err)`` is one line."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class SpecError(SimError):
    """A hardware spec (or a spec override) is malformed: names the file and the field."""


class GraphError(SimError):
    """A graph or workload is malformed: names the file, the node or entry, and the problem."""


class UnsupportedOpError(GraphError):
    """An op type the library does not define (names the op and the node)."""


class OutOfMemoryError(SimError):
    """A graph does not fit a device's memory."""

    def __init__(
        self,
        device: str,
        op: str,
        needed_bytes: float,
        free_bytes: float,
        capacity_bytes: float | None = None,
    ) -> None:
        self.device = device
        self.op = op
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        self.capacity_bytes = capacity_bytes
        cap = f" of {capacity_bytes / 2**30:.2f} GiB" if capacity_bytes is not None else ""
        super().__init__(
            f"out of memory on {device} at op {op!r}: needs {needed_bytes / 2**30:.3f} GiB, "
            f"{free_bytes / 2**30:.3f} GiB free{cap}"
        )
