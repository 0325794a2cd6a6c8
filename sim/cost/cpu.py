"""CPU timing: cores x SIMD lanes x FMA units x clock, and cache-aware bandwidth.

The loader builds a CPU unit's peak from ``per_cycle`` FLOP per core per cycle (for AVX-512
with two FMA units: 16 fp32 lanes x 2 FMA x 2 FLOP = 64) times cores, sockets and clock. An
op's working set (bytes read + written) streams from the innermost cache level that holds it
whole (L2 summed over cores, then LLC), else from DRAM: a small op is cache-bound, a big one
DRAM-bound. GPUs and accelerators stream from main memory (their calibration flushes L2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sim.cost.roofline import flops_time
from sim.hw.spec import DeviceSpec, MemoryLevel
from sim.ops.work import GemmShape


def streaming_level(device: DeviceSpec, working_set_bytes: float) -> MemoryLevel:
    """The innermost memory level whose capacity holds the working set (else main memory)."""
    for level in reversed(device.memory):
        if working_set_bytes <= level.capacity_bytes:
            return level
    return device.main_memory


def matmul_time(gemms: Sequence[GemmShape], matmul_flops: float, rate: float,
                kernel_efficiency: Mapping[str, float]) -> float:
    """Seconds of matrix work at ``rate`` FLOP/s; the GEMMs of a kernel named in
    ``kernel_efficiency`` (``GemmShape.kernel``, e.g. ``conv``) run at that fraction of it.

    >>> matmul_time([GemmShape(4, 4, 4, kernel="conv")], 128.0, 128.0, {"conv": 0.5})  # 128 FLOP
    2.0
    >>> matmul_time([GemmShape(4, 4, 4, kernel="conv_wgrad")], 128.0, 128.0, {"conv": 0.5})
    2.0
    """
    if not kernel_efficiency:
        return flops_time(matmul_flops, rate)
    total, shaped = 0.0, 0.0
    for g in gemms:
        # a gradient kernel (``conv_wgrad``) takes its family's rate (``conv``) unless named
        eff = kernel_efficiency.get(g.kernel, kernel_efficiency.get(g.kernel.split("_")[0], 1.0))
        total += flops_time(g.flops, rate * float(eff))
        shaped += g.flops
    return total + flops_time(max(matmul_flops - shaped, 0.0), rate)
