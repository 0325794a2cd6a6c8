"""Dead-code elimination: ``live(graph)`` drops the nodes nothing reads.

An exporter can leave nodes whose outputs no other node reads and that are no graph output
(``torch.onnx.export`` keeps the head-split ``Transpose`` of K when its
``scaled_dot_product_attention`` symbolic transposes K again from the reshape). A runtime
executes the program, not such leftovers, so the execution modes drop them before timing.
Values of the graph outputs do not change; parameters stay (a weight nothing reads any more
still occupies memory).
"""

from __future__ import annotations

from sim.graph import Graph, Node
from sim.graph.rewrite import Rewriter


def live_nodes(graph: Graph) -> set[str]:
    """Names of the nodes some graph output depends on."""
    live: set[str] = set()
    stack = [p for t in graph.outputs if (p := graph.producer(t)) is not None]
    while stack:
        node = stack.pop()
        if node.name in live:
            continue
        live.add(node.name)
        stack += [p for t in node.inputs if t and (p := graph.producer(t)) is not None]
    return live


class _Live(Rewriter):
    def __init__(self, src: Graph, keep: set[str]) -> None:
        super().__init__(src)
        self.keep = keep

    def visit(self, node: Node) -> None:
        if node.name in self.keep:
            self.emit(node)


def live(graph: Graph) -> Graph:
    """``graph`` without the nodes no graph output depends on; ``meta["dead_nodes"]`` counts
    them. The graph itself when there are none."""
    keep = live_nodes(graph)
    dead = len(graph.nodes) - len(keep)
    if dead == 0:
        return graph
    out = _Live(graph, keep).run()
    out.meta["dead_nodes"] = dead + int(graph.meta.get("dead_nodes", 0))
    return out.verify()
