"""The batch size a graph was built for (for throughput and for splitting a batch)."""

from __future__ import annotations

from sim.graph.graph import Graph


def infer_batch(graph: Graph) -> int | None:
    """``graph.meta["batch"]`` (or ``meta["params"]["batch"]``), else the leading dimension the
    graph inputs share, else None.

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("g"); _ = g.add_input("x", TensorSpec((8, 3))); _ = g.add_input("y", TensorSpec((8,)))
    >>> infer_batch(g)
    8
    """
    for src in (graph.meta, graph.meta.get("params") or {}):
        b = src.get("batch") if isinstance(src, dict) else None
        if isinstance(b, int) and b > 0:
            return b
    lead = {s.shape[0] for s in graph.inputs.values() if s.rank >= 1}
    return lead.pop() if len(lead) == 1 else None
