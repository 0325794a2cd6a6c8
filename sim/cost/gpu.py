"""GPU matmul timing: output tiles over SMs, wave quantization, split-K for small grids.

A GEMM library runs C = A @ B as a grid of (tm x tn) output tiles, one per SM at a time; the
grid runs in ``ceil(tiles / SMs)`` waves, so a grid of 133 tiles on 132 SMs takes two waves.
When the grid is smaller than the SM count, K may be split across otherwise idle SMs. Each tile
takes the longer of its math at the per-SM rate (peak x efficiency / SMs) and loading its
operands into the SM (``(tm + tn) x k x bytes`` at ``sm_load_bytes_per_cycle x clock``); the
pipeline pays main-memory latency twice, once to fill (first operands) and once to drain
(last output tile), since a persistent kernel overlaps everything in between.

Split-K is not free: the ``s`` slices of a tile each hold an fp32 partial tile, and they are
combined by a serialised fix-up (CUTLASS's serial split-K / stream-K fix-up): each of the
``s - 1`` later slices waits for the previous one's flag, reads the running partial, adds its
own and writes it back, i.e. two on-chip (L2) round trips plus ``2 x tm x tn x 4`` bytes
through the SM's port per hand-off. The library's choice among the spec's tile shapes and
split factors (1 up to the idle-SM / ``split_k_min`` limit) is modelled as the fastest one.
Matrix-vector shapes (``min(m, n) <= GEMV_MAX``) may instead run as a GEMV kernel on the vector
unit: no padding, the long operand streamed once through all SMs. Either way a 1x768x768 GEMM
costs microseconds of latency and launch, not the nanoseconds 2*768*768 FLOP would take at peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim.cost.roofline import achievable, flops_time, vector_unit
from sim.hw.arch import GpuArch
from sim.hw.spec import ComputeUnit, DeviceSpec
from sim.ops.work import GemmShape

GEMV_MAX = 8  # widest skinny side that a GEMM library dispatches to a matrix-vector kernel


ACCUM_BYTES = 4  # a split-K partial tile is kept in fp32, the tensor cores' accumulator format


def split_k_fixup(tm: int, tn: int, split: int, *, port_Bps: float, latency_s: float) -> float:
    """Seconds of the serialised fix-up that combines ``split`` fp32 partial tiles of (tm x tn).

    Each of the ``split - 1`` hand-offs waits for the previous slice's flag and reads its partial
    (two round trips of ``latency_s``), then the partial tile is read and written back through
    the SM's port: ``2 x tm x tn x ACCUM_BYTES / port_Bps``.
    """
    if split <= 1:
        return 0.0
    return (split - 1) * (2.0 * latency_s + 2.0 * tm * tn * ACCUM_BYTES / port_Bps)


def gemm_time(g: GemmShape, *, rate_per_sm: float, sms: int, tiles: Sequence[tuple[int, int]],
              load_Bps: float, elem_bytes: int, split_k_min: int, latency_s: float = 0.0,
              gemv_rate: float = 0.0, fixup_latency_s: float = 0.0) -> float:
    """Seconds for one (batched) GEMM on ``sms`` SMs: best tile shape and split-K factor, whole
    waves (or a GEMV kernel at ``gemv_rate`` FLOP/s for matrix-vector shapes).

    ``fixup_latency_s`` is the round trip a split-K hand-off pays (the L2 hit latency)."""
    if g.m <= 0 or g.n <= 0 or g.k <= 0 or g.batch <= 0:
        return 0.0
    best = math.inf
    if gemv_rate > 0 and min(g.m, g.n) <= GEMV_MAX:
        operand_bytes = (g.m * g.k + g.k * g.n) * g.batch * elem_bytes
        best = max(g.flops / gemv_rate, operand_bytes / (load_Bps * sms))
    for tm, tn in tiles:
        grid = math.ceil(g.m / tm) * math.ceil(g.n / tn) * g.batch
        max_split = 1
        if grid < sms:
            max_split = max(1, min(sms // grid, g.k // max(split_k_min, 1)))
        rows, cols = min(tm, g.m), min(tn, g.n)
        for split in range(1, max_split + 1):
            k_per = math.ceil(g.k / split)
            math_s = 2.0 * tm * tn * k_per / rate_per_sm
            load_s = (rows + cols) * k_per * elem_bytes / load_Bps
            fixup_s = split_k_fixup(rows, cols, split, port_Bps=load_Bps, latency_s=fixup_latency_s)
            waves = math.ceil(grid * split / sms)
            best = min(best, waves * (max(math_s, load_s) + fixup_s))
    return best + 2.0 * latency_s


def matmul_time(gemms: Sequence[GemmShape], matmul_flops: float, device: DeviceSpec,
                unit: ComputeUnit, rate: float, elem_bytes: int, dtype: str = "") -> float:
    """Seconds of matrix work on ``unit`` at achievable device rate ``rate`` (FLOP/s)."""
    if rate <= 0:
        return math.inf
    arch = device.arch
    if not isinstance(arch, GpuArch):
        return flops_time(matmul_flops, rate)  # a spec without SM detail: the plain roofline
    sms = arch.sms
    load_Bps = arch.sm_load_bytes_per_cycle * arch.clock
    tiles = arch.tiles_for(unit.name)
    split_k_min = arch.split_k_min
    vec_dt = "fp32" if dtype in ("tf32", "") else dtype
    gemv_rate = achievable(vector_unit(device, vec_dt), vec_dt)
    main = device.main_memory
    # split-K partials are exchanged through the first on-chip level (L2); a spec that gives it
    # no latency falls back to main memory's
    onchip = device.memory[1] if len(device.memory) > 1 else main
    fixup_latency_s = onchip.latency_s or main.latency_s
    kernel_eff = arch.kernel_efficiency
    total = 0.0
    shaped = 0.0
    for g in gemms:
        # the GEMMs inside a fused kernel (attention) reach their own fraction of the rate
        eff = kernel_eff.get(g.kernel, 1.0) if g.kernel else 1.0
        total += gemm_time(g, rate_per_sm=rate * eff / sms, sms=sms, tiles=tiles, load_Bps=load_Bps,
                           elem_bytes=elem_bytes, split_k_min=split_k_min,
                           latency_s=main.latency_s, gemv_rate=gemv_rate * eff,
                           fixup_latency_s=fixup_latency_s)
        shaped += g.flops
    rest = matmul_flops - shaped
    if rest > 1e-6 * max(matmul_flops, 1.0):
        total += rest / rate  # matrix FLOPs an op did not describe as GEMM shapes
    return total


REDUCTION_TILE = 4096  # elements one thread block reduces on its own (CUB's single-tile path)


def cross_sm_passes(work_bytes_read: float, work_bytes_written: float, elem_bytes: int,
                    sms: int, has_gemms: bool) -> int:
    """Extra kernel passes a reduction needs to combine per-SM partial results.

    An op whose output has fewer elements than there are SMs, but whose input spans more than
    one block's tile, cannot keep each output in one SM: blocks write partial results and a
    second kernel combines them (CUB's two-pass DeviceReduce; torch's sum over a whole tensor).
    """
    if has_gemms or work_bytes_written <= 0 or elem_bytes <= 0:
        return 0
    outputs = work_bytes_written / elem_bytes
    inputs = work_bytes_read / elem_bytes
    if outputs < sms and inputs > REDUCTION_TILE * max(outputs, 1.0):
        return 1
    return 0


def sfu_rate(device: DeviceSpec) -> float:
    """Transcendentals per second (special-function units), 0 if the spec does not say."""
    arch = device.arch
    if not isinstance(arch, GpuArch):
        return 0.0
    return arch.sfu_per_sm_per_cycle * arch.sms * arch.clock
