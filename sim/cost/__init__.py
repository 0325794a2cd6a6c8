"""Per-op cost on one device: work + unit spec -> seconds, and what bound it.

Entry points (the engine uses only these):

* ``op_cost(work, device, dtype, *, sparsity=None, cached_read_bytes=0.0) -> OpCost``
* ``reuse_capacity(device) -> float`` (bytes the engine's reuse LRU holds; ``reuse_level``)
* ``transfer_time(link, nbytes) -> float``
"""

from sim.cost.model import OpCost, op_cost, reuse_capacity, reuse_level, transfer_time

__all__ = ["OpCost", "op_cost", "reuse_capacity", "reuse_level", "transfer_time"]
