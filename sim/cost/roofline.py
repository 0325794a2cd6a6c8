"""The base model shared by every device kind: roofline with achievable rates and a launch floor.

``time = launch + max(compute, memory)``: an op pays its launch/dispatch floor once, then
whichever of math and main-memory traffic takes longer (they overlap inside a kernel). The
floor is added, not maxed, because the H100 calibration says so: a 1M-element fp32 add moves
12.6 MB (4.2 us at the fitted bandwidth) and takes 10.1 us, close to 4.4 us floor + 4.2 us,
far from max(4.4, 4.2) = 4.4 us (see docs/hardware.md).
"""

from __future__ import annotations

import math

from sim.dtypes import ITEMSIZE
from sim.hw.spec import ComputeUnit, DeviceSpec, MemoryLevel

# A dtype a unit has no rate for falls back along this chain (fp8e5m2 runs as fp8, ints as
# their nearest listed width, and anything else on the fp32 pipes).
_FALLBACK = {
    "fp8e5m2": "fp8",
    "uint8": "int8",
    "int64": "int32",
    "int16": "int32",
    "bool": "int32",
    "int32": "fp32",
    "int8": "fp32",
    "fp8": "fp16",
    "fp16": "fp32",
    "bf16": "fp32",
    "tf32": "fp32",
    "fp64": "fp32",
}
# A dtype emulated on a narrower unit runs this much slower (fp64 as double-fp32 arithmetic).
_EMULATION_COST = {("fp64", "fp32"): 4.0}


def storage_bytes(dtype: str) -> int:
    """Bytes per element a compute dtype reads (tf32 is stored as fp32)."""
    return ITEMSIZE.get(dtype, 4)


def rate_key(unit: ComputeUnit, dtype: str, *, follow: bool = True) -> str | None:
    """The dtype key of ``unit.peak_flops`` that serves ``dtype`` (None if none)."""
    d: str | None = dtype
    seen = set()
    while d is not None and d not in seen:
        if unit.peak_flops.get(d, 0.0) > 0:
            return d
        if not follow:
            return None
        seen.add(d)
        d = _FALLBACK.get(d)
    return None


def achievable(unit: ComputeUnit, dtype: str) -> float:
    """Achievable FLOP/s of ``unit`` for ``dtype``, following the fallback chain (0 if none)."""
    key = rate_key(unit, dtype)
    if key is None:
        return 0.0
    peak = unit.peak_flops[key]
    eff = unit.efficiency.get(key, unit.efficiency.get("default", 1.0))
    return peak * eff / _EMULATION_COST.get((dtype, key), 1.0)


# Matrix units take a dtype natively or through these same-storage substitutions only.
_MATRIX_SUBSTITUTE = {"fp8e5m2": "fp8", "uint8": "int8", "tf32": "fp32"}


def matrix_unit(device: DeviceSpec, dtype: str) -> ComputeUnit | None:
    """The fastest matrix unit that runs ``dtype`` (or its same-storage substitute), else None."""
    best = None
    for d in (dtype, _MATRIX_SUBSTITUTE.get(dtype)):
        if d is None:
            continue
        for u in device.units:
            if u.matrix and u.peak_flops.get(d, 0.0) > 0:
                if best is None or achievable(u, dtype) > achievable(best, dtype):
                    best = u
        if best is not None:
            return best
    return None


def vector_unit(device: DeviceSpec, dtype: str) -> ComputeUnit:
    """The unit that runs non-matrix work in ``dtype``: the fastest non-matrix unit with a rate,
    else any unit with a rate (an FPGA's DSP array, a TPU's MXU as a last resort)."""
    plain = [u for u in device.units if not u.matrix and achievable(u, dtype) > 0]
    pool = plain or [u for u in device.units if achievable(u, dtype) > 0] or list(device.units)
    return max(pool, key=lambda u: achievable(u, dtype))


def flops_time(flops: float, rate: float) -> float:
    if flops <= 0:
        return 0.0
    return flops / rate if rate > 0 else math.inf


def stream_time(nbytes: float, level: MemoryLevel) -> float:
    """Seconds to stream ``nbytes`` through ``level`` at its achievable bandwidth."""
    return nbytes / level.achievable_Bps if nbytes > 0 else 0.0


def combine(compute_s: float, memory_s: float, launch_s: float) -> tuple[float, str]:
    """(time, bound): launch floor plus the longer of compute and memory."""
    body = max(compute_s, memory_s)
    if launch_s >= body:
        bound = "launch"
    elif compute_s >= memory_s:
        bound = "compute"
    else:
        bound = "memory"
    return launch_s + body, bound
