"""Memory bandwidth shared by the ops that run at once on one device (processor sharing).

Each running op needs ``memory_s`` seconds of the device's full memory bandwidth. While ``n`` ops
hold memory work, each gets ``1/n`` of the bandwidth, so a lone op gets its stand-alone time
and two memory-bound ops that start together both take twice as long. An op ends when both its
own time (``time_s``) has elapsed and its memory work is served.
"""

from __future__ import annotations

import simpy


class SharedBandwidth:
    """A fluid processor-sharing server of memory seconds, on top of SimPy events.

    >>> env = simpy.Environment()
    >>> bw = SharedBandwidth(env)
    >>> a, b = bw.serve(1.0), bw.serve(1.0)
    >>> env.run(); env.now
    2.0
    """

    _EPS = 1e-15

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._active: dict[int, list] = {}  # id -> [remaining memory seconds, done event]
        self._last = 0.0
        self._version = 0
        self._next_id = 0

    def _advance(self) -> None:
        now = self.env.now
        n = len(self._active)
        if n and now > self._last:
            share = (now - self._last) / n
            for item in self._active.values():
                item[0] -= share
        self._last = now

    def serve(self, memory_s: float) -> simpy.Event:
        """An event that fires when ``memory_s`` seconds of full-bandwidth service are done."""
        done = self.env.event()
        if memory_s <= 0:
            done.succeed()
            return done
        self._advance()
        self._active[self._next_id] = [memory_s, done]
        self._next_id += 1
        self._reschedule()
        return done

    def _reschedule(self) -> None:
        self._version += 1
        if not self._active:
            return
        n = len(self._active)
        first = min(self._active, key=lambda k: (self._active[k][0], k))
        delay = max(self._active[first][0], 0.0) * n
        version = self._version
        wake = self.env.timeout(delay)
        wake.callbacks.append(lambda _ev: self._wake(version, first))

    def _wake(self, version: int, first: int) -> None:
        if version != self._version:
            return
        self._advance()
        done = [k for k, item in self._active.items() if k == first or item[0] <= self._EPS]
        for k in sorted(done):
            self._active.pop(k)[1].succeed()
        self._reschedule()
