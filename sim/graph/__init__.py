"""Op-graph IR: tensor specs, nodes, graphs."""

from sim.graph.tensor import TensorSpec  # noqa: I001  (import order matters: no cycles)
from sim.graph.node import Node
from sim.graph.graph import Graph, ParamInfo

__all__ = ["Graph", "Node", "ParamInfo", "TensorSpec"]
