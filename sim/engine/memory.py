"""Per-device memory: allocation by tensor lifetimes, peak, a memory-over-time series, OOM.

Tensors live in *buffers*. A tensor normally owns a buffer of its own size; an in-place op
(``node.meta["inplace"] = {out_idx: in_idx}``) or a view (a zero-work op such as Reshape with one
input of the same size) makes its output share the input's buffer, so it allocates nothing.
A buffer is freed when the last tensor that aliases it dies; parameter buffers are pinned.
"""

from __future__ import annotations

from sim.errors import OutOfMemoryError


class DeviceMemory:
    """Bytes in use on one device, with the peak and a ``(time_s, bytes)`` step series.

    >>> m = DeviceMemory("gpu0", 100.0)
    >>> m.alloc("a", 60.0, 0.0, "op1"); m.alloc("b", 30.0, 1.0, "op2"); m.release("a", 2.0)
    'a'
    >>> m.in_use, m.peak, m.timeline
    (30.0, 90.0, [(0.0, 60.0), (1.0, 90.0), (2.0, 30.0)])
    """

    def __init__(self, device: str, capacity_bytes: float | None, strict: bool = True) -> None:
        self.device = device
        self.capacity = capacity_bytes
        # strict: an allocation past capacity raises; otherwise the first one is recorded in
        # ``oom`` and allocation goes on, so ``peak`` is what the run would need
        self.strict = strict
        self.oom: dict[str, float | str] | None = None
        self.in_use = 0.0
        self.peak = 0.0
        self.timeline: list[tuple[float, float]] = []
        self._size: dict[str, float] = {}  # buffer -> bytes
        self._refs: dict[str, int] = {}  # buffer -> live tensors aliasing it
        self._buffer: dict[str, str] = {}  # tensor -> buffer
        self._pinned: set[str] = set()

    def _record(self, now: float) -> None:
        tl = self.timeline
        if tl and tl[-1][0] == now:
            tl[-1] = (now, self.in_use)
        else:
            tl.append((now, self.in_use))

    def alloc(self, tensor: str, nbytes: float, now: float, op: str, *, pinned: bool = False) -> None:
        """Give ``tensor`` a new buffer of ``nbytes``; raise ``OutOfMemoryError`` if it does not fit."""
        if tensor in self._buffer:
            return
        if self.capacity is not None and self.in_use + nbytes > self.capacity:
            if self.strict:
                raise OutOfMemoryError(self.device, op, nbytes, self.capacity - self.in_use, self.capacity)
            if self.oom is None:
                self.oom = {"device": self.device, "op": op, "tensor": tensor, "time_s": float(now),
                            "alloc_bytes": float(nbytes), "in_use_bytes": float(self.in_use),
                            "capacity_bytes": float(self.capacity)}
        self._buffer[tensor] = tensor
        self._size[tensor] = nbytes
        self._refs[tensor] = 1
        if pinned:
            self._pinned.add(tensor)
        self.in_use += nbytes
        if self.in_use > self.peak:
            self.peak = self.in_use
        self._record(now)

    def alias(self, tensor: str, of: str) -> None:
        """``tensor`` shares the buffer of the live tensor ``of`` (in-place update or view)."""
        if tensor in self._buffer:
            return
        buf = self._buffer[of]
        self._buffer[tensor] = buf
        self._refs[buf] += 1

    def has(self, tensor: str) -> bool:
        return tensor in self._buffer

    def buffer_of(self, tensor: str) -> str | None:
        """The buffer ``tensor`` lives in (its own name, or the one it aliases); None if dead."""
        return self._buffer.get(tensor)

    def size_of(self, buf: str) -> float:
        """Bytes of buffer ``buf``."""
        return self._size.get(buf, 0.0)

    def release(self, tensor: str, now: float) -> str | None:
        """``tensor`` is dead here; free its buffer when no other tensor aliases it.

        Returns the buffer freed, or None when none was."""
        buf = self._buffer.pop(tensor, None)
        if buf is None:
            return None
        self._refs[buf] -= 1
        if self._refs[buf] == 0 and buf not in self._pinned:
            del self._refs[buf]
            self.in_use -= self._size.pop(buf)
            self._record(now)
            return buf
        return None
