"""GPU reductions as PyTorch's generic reduce kernel launches them.

A sum, mean, max ... over some axes (``Work.reduction``) runs ATen's ``reduce_kernel``
(``aten/src/ATen/native/cuda/Reduce.cuh``). Its launch comes from ``setReduceConfig``, which
this module follows rule by rule (``launch_config``):

* block: up to 512 threads (``ReduceConfig::MAX_NUM_THREADS``, divided by the output vector
  width), ``block_width`` lanes along the contiguous axis (at most a warp, unless the block
  has one row) and ``block_height`` warps;
* a row sum (reduced axis contiguous, one run, at least 128 long) loads 16-byte vectors
  (``input_vec_size``: 4 fp32 or 8 16-bit values, ``ReduceSumProdKernel.cu``), split across
  the lanes; a column sum loads ``vt0 = 4`` rows per step, each a vector of up to 4 outputs;
* the warps of a block split the inputs too when each thread still has at least
  ``min(16 x block_height, 256)`` values; otherwise each warp takes its own outputs;
* when each thread still has 256 or more values and the grid is smaller than the GPU holds
  (SMs x 2048 threads / block size), the inputs are split across ``ctas_per_output`` blocks:
  at least values/256, at most values/16, aiming at a full GPU. Those blocks combine through
  global memory: a memset of the semaphores before the kernel, partial results written,
  an atomic per block, and the last block reads the partials back (a "global reduce").

Time (``reduction_time``): each thread's loop is a chain of dependent steps (one load per
step, a 16-byte vector or ``vt0`` strided values, then the adds that need it), so a kernel
whose threads each have many steps is bound by that chain, ``step_round_trips`` HBM
latencies per step, wave after wave of blocks, however little it moves; otherwise by the HBM
stream. A global reduce costs one more launch floor: ``gpu_reduce_kernel`` clears the
semaphores with ``cudaMemsetAsync`` on the stream before the kernel. ``step_round_trips`` is
fitted on the calibration's full-tensor sums (``bench/calibrate_h100.py``): a 64K-element sum
runs in one block of 512 threads (128 values each: under 256, so no split) and takes 18 us in
fp32 and 12 us in bf16, longer than a 1M-element sum over 128 blocks (12 and 10 us).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.hw.arch import GpuArch
from sim.hw.spec import DeviceSpec
from sim.ops.work import Reduction

MAX_THREADS = 512  # ReduceConfig::MAX_NUM_THREADS
WARP = 32
VT0 = 4  # values a thread loads per step when the input is not vectorised (gpu_reduce_kernel's vt0)
MIN_VALUES_PER_THREAD = 16
MAX_VALUES_PER_THREAD = 256
THREADS_PER_SM = 2048  # maxThreadsPerMultiProcessor on sm_80 and sm_90
BLOCKS_PER_SM = 32  # resident blocks per SM (sm_80, sm_90)
VECTOR_BYTES = 16  # one vectorised input load (ReduceSumProdKernel.cu: input_vec_size 4 fp32, 8 16-bit)
VECTORISE_MIN = 128  # a row must be this long for vectorised input loads (setReduceConfig)


@dataclass(frozen=True)
class ReduceLaunch:
    """``reduce_kernel``'s launch: ``block`` (width, height) threads, ``grid`` (output blocks,
    blocks per output), the input values each thread reduces and how many it loads per step."""

    block: tuple[int, int]
    grid: tuple[int, int]
    values_per_thread: int
    values_per_step: int

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1]

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def global_reduce(self) -> bool:
        return self.grid[1] > 1

    @property
    def steps(self) -> int:
        return math.ceil(self.values_per_thread / self.values_per_step)


def last_pow2(n: int) -> int:
    """The largest power of two <= ``n`` (at least 1)."""
    return 1 << (max(int(n), 1).bit_length() - 1)


def block_dims(dim0: int, dim1: int, max_threads: int) -> tuple[int, int]:
    """``ReduceConfig::set_block_dimension``: (block_width, block_height)."""
    p0 = last_pow2(dim0) if dim0 < max_threads else max_threads
    p1 = last_pow2(dim1) if dim1 < max_threads else max_threads
    width = min(p0, WARP)
    height = min(p1, max_threads // width)
    width = min(p0, max_threads // height)
    return width, height


def output_vector(outputs: int) -> int:
    """Outputs a column sum's thread loads as one vector: 4, 2 or 1, as many as divide them
    (ATen's ``get_output_vec_size`` on an aligned, contiguous output)."""
    return next(v for v in (4, 2, 1) if outputs % v == 0)


def launch_config(red: Reduction, elem_bytes: int, sms: int) -> ReduceLaunch:
    """``setReduceConfig`` for ``red`` on a GPU with ``sms`` SMs (module docstring).

    >>> c = launch_config(Reduction(1, 65536, True), 4, 132)   # x.sum(), 64K fp32
    >>> c.block, c.grid, c.values_per_thread, c.steps
    ((512, 1), (1, 1), 128, 32)
    >>> launch_config(Reduction(1, 1 << 20, True), 4, 132).grid  # 1M: 128 blocks, global reduce
    (1, 128)
    """
    vectorise = red.inner and red.runs == 1 and red.per_output >= VECTORISE_MIN
    in_vec = max(1, VECTOR_BYTES // elem_bytes) if vectorise else 1
    out_vec = 1 if red.inner else output_vector(red.outputs)
    dim0, dim1 = (red.per_output, red.outputs) if red.inner else (red.outputs, red.per_output)
    dim0 = max(1, dim0 // (in_vec if red.inner else out_vec))
    width, height = block_dims(dim0, dim1, MAX_THREADS // out_vec)
    step_in, step_out = (width, 1) if red.inner else (1, width)
    split_warps = math.ceil(red.per_output / step_in) >= min(height * 16, MAX_VALUES_PER_THREAD)
    if split_warps:
        step_in *= height
    else:
        step_out *= height
    grid_x = math.ceil(math.ceil(red.outputs / out_vec) / step_out)
    per_thread = math.ceil(red.per_output / step_in)
    target = sms * (THREADS_PER_SM // (width * height))
    ctas = 1
    if split_warps and per_thread >= MAX_VALUES_PER_THREAD and grid_x <= target:
        ctas = max(min(math.ceil(target / grid_x), math.ceil(per_thread / MIN_VALUES_PER_THREAD)),
                   math.ceil(per_thread / MAX_VALUES_PER_THREAD))
        per_thread = math.ceil(red.per_output / (step_in * ctas))
    per_step = in_vec if vectorise else VT0
    return ReduceLaunch((width, height), (grid_x, ctas), per_thread, per_step)


@dataclass(frozen=True)
class ReductionTime:
    """Seconds of a reduction's dependent load chain, and the launches it takes (2 with a global
    reduce: the semaphores' memset runs on the stream before the kernel)."""

    chain_s: float
    launches: int


def reduction_time(red: Reduction, device: DeviceSpec, elem_bytes: int) -> ReductionTime | None:
    """The load chain and launches of ``red`` on ``device`` (module docstring); None when the
    spec has no ``arch.reduction`` section."""
    arch = device.arch
    if not isinstance(arch, GpuArch) or not arch.reduction:
        return None
    cfg = launch_config(red, elem_bytes, arch.sms)
    latency = device.main_memory.latency_s
    resident = arch.sms * max(1, min(THREADS_PER_SM // cfg.threads, BLOCKS_PER_SM))
    waves = math.ceil(cfg.blocks / resident)
    chain = waves * cfg.steps * float(arch.reduction.get("step_round_trips", 0.0)) * latency
    return ReductionTime(chain, 2 if cfg.global_reduce else 1)
