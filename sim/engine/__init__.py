"""The SimPy engine: schedule an op graph on a described machine.

>>> import sim
>>> r = sim.simulate(sim.load("workloads/mlp-mnist.yaml", batch=8), "h100")  # doctest: +SKIP
"""

from sim.engine.scheduler import FixedCost, compute_dtype, simulate

__all__ = ["FixedCost", "compute_dtype", "simulate"]
