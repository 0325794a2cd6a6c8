"""Per-op cost on one device: work + unit spec -> seconds, and what bound it.

Entry points (the engine uses only these):

* ``op_cost(work, device, dtype, *, sparsity=None) -> OpCost``
* ``transfer_time(link, nbytes) -> float``
"""

from sim.cost.model import OpCost, op_cost, transfer_time

__all__ = ["OpCost", "op_cost", "transfer_time"]
