"""The SimPy engine: schedule an op graph on a described machine.

>>> import sim
>>> r = sim.simulate(sim.load("mlp-mnist", batch=8), "h100")
>>> {rec.bound for rec in r.ops} <= {"comm", "compute", "launch", "memory"}
True
"""

from sim.engine.scheduler import FixedCost, compute_dtype, simulate

__all__ = ["FixedCost", "compute_dtype", "simulate"]
