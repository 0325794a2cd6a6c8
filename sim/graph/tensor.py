"""``TensorSpec`` lives in ``sim.tensor`` (below the op library, which the graph uses); this
name is kept so ``from sim.graph.tensor import TensorSpec`` still works."""

from sim.tensor import TensorSpec

__all__ = ["TensorSpec"]
