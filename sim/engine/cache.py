"""Per-device reuse cache: an LRU of resident tensors, by bytes (docs/engine.md, "Cache reuse").

A device's reuse level (``sim.cost.reuse_level``: H100's L2, TPU v4's CMEM) keeps the tensors
ops touched most recently, up to ``capacity`` bytes. Entries are ``DeviceMemory`` *buffers*, so
a view or an in-place output is resident exactly when the buffer it shares is. Touching a
buffer makes it most recent; one larger than the capacity never enters and pushes everything
out (it streams through the whole cache); a freed buffer leaves.

>>> c = ReuseCache(100.0)
>>> c.touch("a", 60.0); c.touch("b", 30.0); c.touch("a", 60.0); c.touch("c", 20.0)
>>> c.resident(), c.used
(['a', 'c'], 80.0)
>>> c.touch("big", 101.0); c.resident()
[]
"""

from __future__ import annotations

from collections import OrderedDict


class ReuseCache:
    """LRU of buffers (least recent first) holding at most ``capacity`` bytes."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.used = 0.0
        self._lru: OrderedDict[str, float] = OrderedDict()  # buffer -> bytes

    def has(self, buf: str) -> bool:
        return buf in self._lru

    def resident(self) -> list[str]:
        """Resident buffers, least recently used first."""
        return list(self._lru)

    def touch(self, buf: str, nbytes: float) -> None:
        """``buf`` was just read or written: make it most recent (enter if absent)."""
        if buf in self._lru:
            self._lru.move_to_end(buf)
            return
        if nbytes <= 0:
            return
        if nbytes > self.capacity:
            self._lru.clear()
            self.used = 0.0
            return
        while self._lru and self.used + nbytes > self.capacity:
            self.used -= self._lru.popitem(last=False)[1]
        self._lru[buf] = nbytes
        self.used += nbytes

    def release(self, buf: str) -> None:
        """``buf`` is freed: it leaves."""
        n = self._lru.pop(buf, None)
        if n is not None:
            self.used -= n
