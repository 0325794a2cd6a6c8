"""CPU timing: cores x SIMD lanes x FMA units x clock, and cache-aware bandwidth.

The loader builds a CPU unit's peak from ``per_cycle`` FLOP per core per cycle (for AVX-512
with two FMA units: 16 fp32 lanes x 2 FMA x 2 FLOP = 64) times cores, sockets and clock. An
op's working set (bytes read + written) streams from the innermost cache level that holds it
whole (L2 summed over cores, then LLC), else from DRAM: a small op is cache-bound, a big one
DRAM-bound. GPUs and accelerators stream from main memory (their calibration flushes L2).
"""

from __future__ import annotations

from sim.hw.spec import DeviceSpec, MemoryLevel


def streaming_level(device: DeviceSpec, working_set_bytes: float) -> MemoryLevel:
    """The innermost memory level whose capacity holds the working set (else main memory)."""
    for level in reversed(device.memory):
        if working_set_bytes <= level.capacity_bytes:
            return level
    return device.main_memory
