"""Op-graph IR: tensor specs, nodes, graphs."""

from sim.graph.graph import Graph, ParamInfo, param_behind
from sim.graph.node import Node
from sim.tensor import TensorSpec

__all__ = ["Graph", "Node", "ParamInfo", "TensorSpec", "param_behind"]
