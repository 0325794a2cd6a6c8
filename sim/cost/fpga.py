"""FPGA timing: a DSP-slice MAC array at the design clock, times achievable utilisation.

The spec gives the DSP count, the design clock (what a placed-and-routed kernel closes
timing at, well under the DSP's fmax) and MACs per DSP per cycle for each dtype (2 for
packed int8, fractions for floating point, which takes several DSPs per MAC). The loader
turns that into the unit's peak (``dsps x macs x 2 x clock``) with ``utilisation`` as its
efficiency, so the DSP-bound rate is ``dsps x macs x 2 x clock x utilisation``.

Unstructured sparsity: a custom datapath can skip zero weights, but indexing costs logic
and bandwidth, so it only pays below the density the spec gives (``sparse_density``);
``sim.cost.model`` scales the math by the density there and runs it dense above.
"""

from __future__ import annotations

import math


def matmul_time(matmul_flops: float, rate: float) -> float:
    """Seconds of MAC-array work at achievable ``rate`` (the array is fully pipelined)."""
    if matmul_flops <= 0:
        return 0.0
    return matmul_flops / rate if rate > 0 else math.inf
