"""Execute a graph for real and compare each op's measured time with the simulated one.

``measure`` runs the graph through ``sim.exec.Executor`` ``repeat`` times after a warm-up and
keeps, per op, the fastest run (the run least disturbed by other processes); ``compare``
simulates the same graph on a spec and lines the two up per op type and in total.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sim.calib.bench import random_inputs
from sim.graph import Graph


def int_bound(graph: Graph, name: str) -> int:
    """Exclusive upper bound for random values of int input ``name``: the smallest table it
    indexes (a Gather's data rows along its axis), else 2."""
    bounds = []
    for c in graph.consumers(name):
        if c.op == "Gather" and len(c.inputs) > 1 and c.inputs[1] == name:
            data = graph.tensors[c.inputs[0]]
            bounds.append(data.shape[int(c.attrs.get("axis", 0)) % max(data.rank, 1)])
    return min(bounds) if bounds else 2


def measure(graph: Graph, repeat: int = 3, seed: int = 0,
            clock: Callable[[], float] = time.process_time) -> dict[str, float]:
    """Seconds per node: the fastest of ``repeat`` runs (after one warm-up run)."""
    from sim.exec import Executor

    feeds = random_inputs(graph, seed, int_high=lambda n: int_bound(graph, n))
    ex = Executor(graph, seed=seed, clock=clock)
    ex.run(feeds)
    best: dict[str, float] = {}
    for _ in range(max(1, repeat)):
        for name, t in ex.run(feeds).times_s.items():
            best[name] = min(best.get(name, t), t)
    return best


@dataclass(frozen=True)
class Row:
    """One op type: how many nodes, measured and simulated seconds in total."""

    op: str
    count: int
    measured_s: float
    simulated_s: float

    @property
    def error(self) -> float:
        """(simulated - measured) / measured."""
        return self.simulated_s / self.measured_s - 1 if self.measured_s > 0 else float("nan")


def compare(graph: Graph, measured: dict[str, float], hw: object) -> list[Row]:
    """Per op type, measured against simulated seconds (on ``hw``; graph inputs start in
    memory, as they do for the executor), largest measured first; the last row is the total."""
    from sim.engine import simulate

    result = simulate(graph, hw, host_inputs=False)
    simulated = {r["name"]: r["end_s"] - r["start_s"] for r in result.ops if r["name"] in graph.nodes}
    acc: dict[str, list[float]] = {}
    for name, node in graph.nodes.items():
        a = acc.setdefault(node.op, [0, 0.0, 0.0])
        a[0] += 1
        a[1] += measured.get(name, 0.0)
        a[2] += simulated.get(name, 0.0)
    rows = sorted((Row(op, int(a[0]), a[1], a[2]) for op, a in acc.items()), key=lambda r: -r.measured_s)
    total = Row("total", sum(r.count for r in rows), sum(r.measured_s for r in rows),
                sum(r.simulated_s for r in rows))
    return rows + [total]


def format_rows(rows: list[Row]) -> str:
    """The comparison as a table (milliseconds)."""
    lines = [f"{'op':24s} {'n':>5s} {'measured ms':>12s} {'simulated ms':>13s} {'error':>8s}"]
    for r in rows:
        if r is rows[-1]:
            lines.append("-" * len(lines[0]))
        err = f"{r.error:+8.1%}" if r.measured_s > 0 else f"{'':>8s}"
        lines.append(f"{r.op:24s} {r.count:5d} {r.measured_s * 1e3:12.2f} {r.simulated_s * 1e3:13.2f} {err}")
    return "\n".join(lines)
