"""Systolic arrays (TPU MXUs, generic ASICs): padding to the array and fill/drain cycles.

Weight-stationary mapping: a (k x n) weight block of ``rows x cols`` is held in the array
while the m rows of A stream through, so K pads to a multiple of ``rows`` and N to a multiple
of ``cols`` (a 129-wide matmul on a 128x128 array costs as much as a 256-wide one). Each block
takes ``m + rows + cols`` cycles: one per streamed row, plus filling and draining the skewed
pipeline. Blocks are spread over the arrays; when there are fewer blocks than arrays, M is
split across them (M itself pads only to ``arch.row_granule``, 8 sublanes on a TPU). Other
dtypes run at ``peak[dtype] / peak-per-MAC`` MACs per PE per cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim.cost.roofline import flops_time
from sim.hw.arch import AsicArch, TpuArch
from sim.hw.spec import ComputeUnit, DeviceSpec
from sim.ops.work import GemmShape


def gemm_cycles(g: GemmShape, arrays: int, rows: int, cols: int, granule: int = 1) -> float:
    """Array cycles for one (batched) GEMM at one MAC per PE per cycle.

    ``granule``: streamed rows come in groups of this many (a TPU vector register holds 8
    sublanes x 128 lanes, so M pads to a multiple of 8).
    """
    if g.m <= 0 or g.n <= 0 or g.k <= 0 or g.batch <= 0:
        return 0.0
    blocks = math.ceil(g.k / rows) * math.ceil(g.n / cols) * g.batch
    chunks = 1
    if blocks < arrays:
        chunks = max(1, min(arrays // blocks, g.m))
    rows_per_chunk = math.ceil(math.ceil(g.m / chunks) / granule) * granule
    waves = math.ceil(blocks * chunks / arrays)
    return waves * (rows_per_chunk + rows + cols)


def matmul_time(gemms: Sequence[GemmShape], matmul_flops: float, device: DeviceSpec,
                unit: ComputeUnit, rate: float, peak: float) -> float:
    """Seconds of matrix work on the arrays; ``rate`` is achievable FLOP/s, ``peak`` the dtype's peak."""
    if rate <= 0:
        return math.inf
    a = device.arch
    if not isinstance(a, (TpuArch, AsicArch)):
        return flops_time(matmul_flops, rate)  # a spec without array detail: the plain roofline
    arrays, rows, cols, clock, granule = a.arrays, a.rows, a.cols, a.clock, a.row_granule
    dense_peak = arrays * rows * cols * 2.0 * clock  # one MAC per PE per cycle
    macs_per_cycle = peak / dense_peak  # 1 for bf16, 2 for int8 on v5e, 1/6 for 6-pass fp32
    eff = rate / peak
    total = 0.0
    shaped = 0.0
    for g in gemms:
        total += gemm_cycles(g, arrays, rows, cols, granule) / (clock * macs_per_cycle * eff)
        shaped += g.flops
    rest = matmul_flops - shaped
    if rest > 1e-6 * max(matmul_flops, 1.0):
        total += rest / rate
    return total
