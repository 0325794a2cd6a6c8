"""GPU kernel timing: GEMM tiles over SMs, memory-level parallelism, row-wise kernels, attention.

**GEMMs** (plain, batched, a convolution's implicit GEMM, the GEMMs inside fused attention).
A GEMM library runs C = A @ B as a grid of (tm x tn) output tiles, one per SM at a time; the
grid runs in ``ceil(tiles / SMs)`` waves, so a grid of 133 tiles on 132 SMs takes two waves.
One tile costs ``tile_overhead`` cycles (prologue: filling the operand pipeline from memory;
epilogue: converting and storing the output tile) plus its main loop, where each k-step takes
the longest of

* its math at the per-SM rate (peak x efficiency / SMs; tensor cores for TF32/bf16/fp16,
  the CUDA cores for fp32 with TF32 off);
* loading its operands into the SM (``(tm + tn) x bytes`` at ``sm_load_bytes_per_cycle``);
* reading them out of shared memory: a tensor-core warpgroup reads each operand element once
  (``(tm + tn) x bytes``); each thread of a SIMT kernel computes an 8 x 8 micro-tile and reads
  8 + 8 elements per k (CUTLASS sizes its SIMT tiles' warp counts so: 64 threads for 64 x 64 or
  32 x 128, 256 for 128 x 128), which keeps an H100 SM's 128 B/clk of shared memory just ahead
  of its fp32 FMA rate.

When the grid is smaller than the SM count, K may be split across otherwise idle SMs; the
slices' fp32 partial tiles are combined by a serialised fix-up (CUTLASS's serial split-K /
stream-K fix-up): each of the ``s - 1`` later slices waits for the previous one's flag, reads
the running partial, adds its own and writes it back. The library's choice among the spec's
tile shapes and split factors is modelled as the fastest one. A skinny GEMM (below) may cut K
finer, down to ``skinny_split_k_min`` of its unit (absent: ``split_k_min``): on the CUDA cores
down to the SIMT tile's k depth of 8, so the tile overhead and the fix-up alone price the split
(cuBLAS runs fp32 M = 8 against a 768 x 768 weight in 12.3 us, where six 32 x 128 tiles that
keep K whole would take ~25 us with the launch floor: h100_kernels.jsonl). A convolution's K is R x S runs
of C channels; tensor-core kernels pad each run to ``k_align_bytes`` (cuDNN's NHWC kernels
need C a multiple of 8 fp16 values), which is why the 3-channel stem costs more than its FLOPs.

A skinny GEMM (``min(m, n) <= skinny_max``) streams its operands from main memory no faster
than memory-level parallelism allows (Little's law): the library's skinny and GEMV kernels hold
``stream_inflight`` elements in flight per SM, each waiting the HBM latency, in series with the
HBM peak. A matrix-vector product (``min(m, n) <= GEMV_MAX``) may run as a GEMV kernel bound
by exactly that stream. This is why M = 1..128 bf16 layers stream their weights at ~2.2-2.4
TB/s while a copy reaches 3.0 (h100_kernels.jsonl). Wider GEMMs keep whole pipeline stages of
tiles in flight; their HBM traffic is the op's memory term. A GEMV kernel may keep a number of
its own in flight (``gemv_inflight``; absent: ``stream_inflight``) and wait
``gemv_round_trips`` dependent HBM latencies beyond its stream: fp32 M = 1 streams its weights
at ~2.7 TB/s (4096 x 11008: 73 us) and takes ~1.6 us more than that stream at 768 x 768, while
fp32 M = 8..32 tile kernels stream at 1.3-2.0 TB/s; one in-flight figure for both was 33-36%
slow on the large GEMVs.

The in-flight limit belongs to the layout those kernels were measured on: ``a @ b`` with B
``[K, N]``, N-contiguous (cuBLAS "NN"). There a skinny kernel's threads each own output
columns and walk down K, one narrow load per thread per k (a GEMV "N" kernel is an axpy over
the columns of B), so few bytes are in flight per SM. With B K-contiguous (``x @ W^T``:
``F.linear``, Gemm ``transB=1``, ``GemmShape.b_kmajor``) every output is a dot product over
one contiguous weight row: a warp reads the row with 16-byte vector loads, as a copy kernel
reads its source, and the stream reaches the copy's rate (HBM peak x the efficiency fitted
on copies: the op's memory term) with no further limit (nor the GEMV's round trips, fitted on
the "N" kernel). No "TN" kernel is in the calibration
files, so this half of the model is checked only against published ``F.linear`` timings
(docs/validation.md).

**Row-wise kernels** (softmax, layer/RMS norm; ``Work.rows``): one warp or thread block per row
holds a row of up to ``rowwise.onchip_row_bytes`` on chip, so such a row crosses HBM once each
way whatever the op's re-reads (a longer row is re-read from HBM as the op's Work says); the
kernel takes the longest of that stream, its per-element instruction work
(``rowwise.cycles_per_element`` of an SM) and its per-row block work
(``rowwise.cycles_per_row``: a norm's block per row with its two block-wide reductions; a
softmax only once rows exceed ``rowwise.warp_row_max`` elements, below which PyTorch packs
several rows per block, one warp each), plus ``rowwise.round_trips`` dependent HBM latencies.

**Attention**: the GEMMs of a fused attention op run at ``kernel_efficiency`` of the kernel
named by ``arch.attention_kernel`` (which one PyTorch's SDPA dispatches on that GPU:
FlashAttention-2 on Ampere, cuDNN on Hopper with PyTorch >= 2.5). Its softmax (exponentials on
the SFUs, max/sum/scale on the FP32 pipes) and its GEMMs (tensor cores) use different units.
A kernel that issues them from one warp in sequence (FlashAttention-2: each warp waits for its
``mma.sync`` results before the softmax that needs them) pays for both one after the other.
Hopper's warp-specialised kernels hide the shorter behind the longer: FlashAttention-3
(Shah et al., arXiv:2407.08608, section 3.1) "ping-pongs" two warpgroups, so one warpgroup's
softmax runs while the other's asynchronous ``wgmma`` GEMMs run, and pipelines the softmax of
one block under the GEMMs of the next within a warpgroup (section 3.2). ``softmax_overlap``
(``arch.softmax_overlap[kernel]``, 0..1) is the fraction of the shorter part hidden:
``mm + vec - overlap x min(mm, vec)``, less the pipeline's fill (the last key block of every
query block has no next GEMM to hide its softmax under). Every attention kernel also pays one
HBM latency per wave of its thread blocks (``QUERY_BLOCK`` queries of one head each): a block
cannot start its first GEMM before its Q tile and first K/V block arrive from HBM. Each step of
its inner loop (one block of ``KEY_BLOCK`` keys for one block of queries) also costs a fixed
``attention_block_cycles`` beside its GEMMs and softmax: the producer/consumer barriers, the TMA
issue, the row statistics. That cost does not shrink with the head size, so a head size of 64
runs at a lower FLOP rate than 128 (FlashAttention-3 paper, Fig. 5: cuDNN 412 vs 600 TFLOP/s
at S = 8k, FlashAttention-3 496 vs 646).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sim.cost.roofline import achievable, flops_time, vector_unit
from sim.hw.arch import GpuArch
from sim.hw.spec import ComputeUnit, DeviceSpec
from sim.ops.work import GemmShape, Work

GEMV_MAX = 8  # widest skinny side a GEMM library runs as a matrix-vector kernel (spec: arch.gemv_max)
SIMT_MICRO = 8  # a CUDA-core GEMM thread computes an 8 x 8 micro-tile (CUTLASS SIMT configurations)
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


@dataclass(frozen=True)
class GemmModel:
    """What the GEMM model needs of one device, unit and dtype (see the module docstring).

    Rates in FLOP/s, bandwidths in B/s, times in s. ``smem_Bps`` 0: no shared-memory bound;
    ``simt``: the CUDA-core micro-tile operand pattern; ``k_align`` elements a K run is padded to.
    ``stream_s_per_byte`` is a skinny kernel's operand stream with B N-contiguous,
    ``kmajor_s_per_byte`` with B K-contiguous (``GemmShape.b_kmajor``); ``gemv_s_per_byte``
    (0: ``stream_s_per_byte``) and ``gemv_fixed_s`` are a matrix-vector kernel's stream and
    dependent round trips with B N-contiguous; ``skinny_split_k_min`` (0: ``split_k_min``) is
    the smallest K slice a skinny GEMM cuts.
    """

    rate_per_sm: float
    sms: int
    tiles: tuple[tuple[int, int], ...]
    load_Bps: float
    elem_bytes: int
    split_k_min: int
    latency_s: float = 0.0
    fixup_latency_s: float = 0.0
    tile_overhead_s: float = 0.0
    smem_Bps: float = 0.0
    simt: bool = False
    stream_s_per_byte: float = 0.0
    gemv_rate: float = 0.0
    k_align: int = 1
    skinny_max: int = 0
    gemv_max: int = GEMV_MAX
    kmajor_s_per_byte: float = 0.0
    gemv_s_per_byte: float = 0.0
    gemv_fixed_s: float = 0.0
    skinny_split_k_min: int = 0


def padded_k(g: GemmShape, align: int) -> int:
    """K after padding each of the GEMM's ``k_runs`` runs to a multiple of ``align`` elements."""
    if align <= 1 or g.k_runs <= 1 or g.k % g.k_runs:
        return g.k
    run = g.k // g.k_runs
    return g.k_runs * math.ceil(run / align) * align


def k_step_s(tm: int, tn: int, rows: int, cols: int, gm: GemmModel) -> float:
    """Seconds of one k-step of a (tm x tn) tile: math, operand load, shared-memory reads."""
    math_s = 2.0 * tm * tn / gm.rate_per_sm
    load_s = (rows + cols) * gm.elem_bytes / gm.load_Bps
    smem_s = 0.0
    if gm.smem_Bps > 0:
        if gm.simt:
            # tm x tn / 64 threads, each reading 8 + 8 operands per k-step
            smem_s = (tm * tn / SIMT_MICRO**2) * 2 * SIMT_MICRO * gm.elem_bytes / gm.smem_Bps
        else:
            smem_s = (tm + tn) * gm.elem_bytes / gm.smem_Bps
    return max(math_s, load_s, smem_s)


def operand_bytes(g: GemmShape, k: int, elem_bytes: int) -> float:
    """Bytes of A (m x k), C (m x n) and B (k x n) over the batch; a weight-only quantised B
    (``b_bytes``) streams narrower."""
    b_bytes = g.b_bytes or elem_bytes
    return ((g.m * k + g.m * g.n) * elem_bytes + k * g.n * b_bytes) * g.batch


def gemv_s(g: GemmShape, nbytes: float, stream_s: float, gm: GemmModel) -> float:
    """Seconds of a matrix-vector kernel moving ``nbytes``: its FLOPs at the vector rate or its
    operand stream, whichever is longer; with B N-contiguous the stream is the GEMV kernel's own
    (``gemv_s_per_byte``) plus its dependent round trips (``gemv_fixed_s``)."""
    if g.b_kmajor or stream_s <= 0:
        return max(g.flops / gm.gemv_rate, stream_s)
    per_byte = gm.gemv_s_per_byte or gm.stream_s_per_byte
    return max(g.flops / gm.gemv_rate, nbytes * per_byte) + gm.gemv_fixed_s


def gemm_time(g: GemmShape, gm: GemmModel) -> float:
    """Seconds for one (batched) GEMM: the best tile shape and split-K factor in whole waves,
    never faster than streaming its operands (or a GEMV kernel for matrix-vector shapes)."""
    if g.m <= 0 or g.n <= 0 or g.k <= 0 or g.batch <= 0:
        return 0.0
    k = padded_k(g, gm.k_align)
    nbytes = operand_bytes(g, k, gm.elem_bytes)
    skinny = min(g.m, g.n) <= gm.skinny_max
    stream_s = 0.0
    if skinny:
        stream_s = nbytes * (gm.kmajor_s_per_byte if g.b_kmajor else gm.stream_s_per_byte)
    best = math.inf
    if gm.gemv_rate > 0 and min(g.m, g.n) <= gm.gemv_max:
        best = gemv_s(g, nbytes, stream_s, gm)
    split_min = gm.skinny_split_k_min if skinny and gm.skinny_split_k_min > 0 else gm.split_k_min
    for tm, tn in gm.tiles:
        grid = math.ceil(g.m / tm) * math.ceil(g.n / tn) * g.batch
        max_split = 1
        if grid < gm.sms:
            max_split = max(1, min(gm.sms // grid, k // max(split_min, 1)))
        rows, cols = min(tm, g.m), min(tn, g.n)
        step = k_step_s(tm, tn, rows, cols, gm)
        for split in range(1, max_split + 1):
            k_per = math.ceil(k / split)
            fixup_s = split_k_fixup(rows, cols, split, port_Bps=gm.load_Bps, latency_s=gm.fixup_latency_s)
            waves = math.ceil(grid * split / gm.sms)
            t = waves * (k_per * step + gm.tile_overhead_s + fixup_s)
            best = min(best, max(t, stream_s))
    return best + 2.0 * gm.latency_s


def stream_s_per_byte(device: DeviceSpec, arch: GpuArch, elem_bytes: int, dtype: str) -> float:
    """Seconds per byte of a skinny GEMM's operand stream: the HBM peak in series with what
    memory-level parallelism allows (``stream_inflight`` elements of ``dtype`` per SM, each
    waiting the HBM latency)."""
    main = device.main_memory
    per_byte = 1.0 / main.bandwidth_Bps if main.bandwidth_Bps > 0 else 0.0
    inflight = arch.stream_inflight.get(dtype, arch.stream_inflight.get("default", 0.0))
    if inflight > 0 and main.latency_s > 0:
        per_byte += main.latency_s / (arch.sms * inflight * elem_bytes)
    return per_byte


def gemv_s_per_byte(device: DeviceSpec, arch: GpuArch, elem_bytes: int, dtype: str) -> float:
    """Seconds per byte of a matrix-vector kernel's stream (B N-contiguous): the HBM peak in
    series with Little's law on its own ``gemv_inflight`` elements per SM; 0 (the skinny
    kernels' stream) when the spec gives none for ``dtype``."""
    inflight = arch.gemv_inflight.get(dtype, 0.0)
    main = device.main_memory
    if inflight <= 0 or main.latency_s <= 0 or main.bandwidth_Bps <= 0:
        return 0.0
    return 1.0 / main.bandwidth_Bps + main.latency_s / (arch.sms * inflight * elem_bytes)


def kmajor_s_per_byte(device: DeviceSpec) -> float:
    """Seconds per byte of a skinny kernel's stream over a K-contiguous B: a copy's (the HBM
    peak x its fitted efficiency), with no in-flight limit of its own (module docstring)."""
    bw = device.main_memory.achievable_Bps
    return 1.0 / bw if bw > 0 else 0.0


# PyTorch's SDPA backends that take only 16-bit (and fp8) inputs: the flash kernels and cuDNN's
# (torch/csrc/.../transformers/cuda/sdp_utils.cpp, check_tensor_dtype); for fp32 inputs SDPA
# dispatches the memory-efficient kernel, which takes fp32 too
LOW_PRECISION_ONLY = ("flash2", "flash3", "cudnn")


def attention_kernel_for(arch: GpuArch, dtype: str = "") -> str:
    """The fused attention kernel that runs inputs of ``dtype``: ``arch.attention_kernel``,
    except ``mem_efficient`` for fp32 (or tf32) inputs to a kernel that takes only 16-bit ones."""
    name = arch.attention_kernel or "attention"
    if name in LOW_PRECISION_ONLY and dtype in ("fp32", "tf32", "fp64"):
        return "mem_efficient"
    return name


# TF32 products per fp32 product in CUTLASS's OpMultiplyAddFastF32 (big x big + big x small + small x big)
FAST_F32_PASSES = 3


def attention_runs_3xtf32(work: Work, device: DeviceSpec, dtype: str) -> bool:
    """Whether ``work`` is a fused attention op whose fp32 GEMMs run on the tensor cores as
    3xTF32: PyTorch's memory-efficient kernel (what SDPA runs for fp32 inputs, or where the spec
    names it) builds them for compute capability >= 8.0 with CUTLASS's ``OpMultiplyAddFastF32``,
    three TF32 products per fp32 product on the tensor cores (``mem_eff_attention/
    gemm_kernel_utils.h``, ``DefaultGemmType<ArchTag, float>``; older GPUs fall back to FMA on the
    CUDA cores). A spec's tensor unit with a TF32 rate stands for the compute capability."""
    arch = device.arch
    return (dtype in ("fp32", "tf32") and isinstance(arch, GpuArch)
            and attention_kernel_for(arch, dtype) == "mem_efficient"
            and any(g.kernel == "attention" for g in work.gemms)
            and any(u.matrix and u.peak_flops.get("tf32", 0.0) > 0 for u in device.units))


def softmax_overlap(arch: GpuArch, dtype: str = "") -> float:
    """Fraction (0..1) of the shorter of a fused attention kernel's GEMMs and softmax that the
    kernel running ``dtype`` (``attention_kernel_for``) hides under the other (0 when the spec
    says none)."""
    name = attention_kernel_for(arch, dtype)
    return float(arch.softmax_overlap.get(name, arch.softmax_overlap.get("attention", 0.0)))


def overlapped(mm_s: float, vec_s: float, overlap: float) -> float:
    """Seconds of GEMMs and softmax on separate units with ``overlap`` of the shorter hidden.

    >>> overlapped(3.0, 1.0, 0.0), overlapped(3.0, 1.0, 1.0), overlapped(1.0, 3.0, 0.5)
    (4.0, 3.0, 3.5)
    """
    return mm_s + vec_s - min(max(overlap, 0.0), 1.0) * min(mm_s, vec_s)


KEY_BLOCK = 128  # keys per inner-loop step of a fused attention kernel (FA3 on Hopper: 128-176)
QUERY_BLOCK = 128  # query rows per thread block of a fused attention kernel (FA2/FA3 forward: 128)


def attention_pairs_rows(work: Work) -> tuple[float, float]:
    """(attended pairs, query rows) of a fused attention op's Work, over all batches and heads.

    The pairs are the score GEMMs' m x n (the GEMM whose n, the keys, is at least its k, the
    head size); every pair takes one exponential (two with a softcap) and every row one
    reciprocal (``sim.ops.attention``), which gives the rows. (0, 0) for other work."""
    pairs = float(sum(g.m * g.n * g.batch for g in work.gemms if g.kernel == "attention" and g.n >= g.k))
    if pairs <= 0:
        return 0.0, 0.0
    # rows <= pairs (a row attends at least one key): over 2 per pair only with a softcap
    per_pair = 2.0 if work.transcendentals > 2.0 * pairs else 1.0
    return pairs, max(work.transcendentals - per_pair * pairs, 0.0)


def key_blocks_per_row(work: Work) -> float:
    """Mean inner-loop steps (key blocks of ``KEY_BLOCK``) of one query row of a fused attention
    op: attended pairs / query rows (at least 1)."""
    pairs, rows = attention_pairs_rows(work)
    if rows <= 0:
        return 1.0
    return max(1.0, pairs / rows / KEY_BLOCK)


def query_block_waves(work: Work, sms: int) -> int:
    """Waves of a fused attention op's thread blocks (``QUERY_BLOCK`` query rows of one head
    each, one block per SM at a time)."""
    _, rows = attention_pairs_rows(work)
    return math.ceil(rows / QUERY_BLOCK / sms) if rows > 0 else 0


def matrix_and_vector_s(work: Work, device: DeviceSpec, mm_s: float, vec_s: float, dtype: str = "") -> float:
    """Compute seconds of an op's matrix part ``mm_s`` and vector part ``vec_s`` on a GPU: in
    sequence, except in a fused attention kernel that overlaps its softmax with its GEMMs.

    The overlap is a pipeline over each query block's key blocks: the softmax of one block runs
    under the GEMMs of the next, so the last block's softmax of every query block has nothing
    left to hide under. Of ``n`` key blocks, ``(n - 1) / n`` of the softmax can be hidden:
    ``softmax_overlap x (1 - 1 / n)`` (all at S = 8k, 3/4 with four key blocks).

    Each thread block of the attention kernel (one query block of one head) loads its Q tile and
    its first K/V block from HBM before its first GEMM can start: one HBM round trip per wave of
    blocks that its GEMMs cannot hide (nothing of that block is on chip yet). At S = 512 that is
    3 waves in a ~20 us kernel, at S = 8k 16 waves in ~900 us."""
    arch = device.arch
    if isinstance(arch, GpuArch) and any(g.kernel == "attention" for g in work.gemms):
        fill = 1.0 / key_blocks_per_row(work)
        prologue = query_block_waves(work, arch.sms) * device.main_memory.latency_s
        return (overlapped(mm_s, vec_s, softmax_overlap(arch, dtype) * (1.0 - fill)) + prologue
                + block_steps_s(work, arch, dtype))
    return mm_s + vec_s


def block_steps_s(work: Work, arch: GpuArch, dtype: str = "") -> float:
    """Seconds of a fused attention kernel's per-step overhead: ``attention_block_cycles`` of its
    kernel for every key-block step (``QUERY_BLOCK`` queries x ``KEY_BLOCK`` keys), the steps
    spread evenly over the SMs (0 when the spec gives none)."""
    cycles = float(arch.attention_block_cycles.get(attention_kernel_for(arch, dtype), 0.0))
    if cycles <= 0:
        return 0.0
    pairs, _ = attention_pairs_rows(work)
    return cycles * pairs / (QUERY_BLOCK * KEY_BLOCK) / arch.sms / arch.clock


def attention_efficiency(arch: GpuArch, dtype: str = "") -> float:
    """Fraction of the GEMM library's rate the fused attention kernel running ``dtype`` on this
    GPU reaches (``attention_kernel_for``)."""
    eff = arch.kernel_efficiency
    name = attention_kernel_for(arch, dtype)
    return float(eff.get(name, eff.get("attention", 1.0)))


NO_SPLIT = 1 << 62  # a split_k_min no K reaches: the kernel never splits K


def gemm_model(device: DeviceSpec, arch: GpuArch, unit: ComputeUnit, rate: float, elem_bytes: int,
               dtype: str, kernel: str = "") -> GemmModel:
    """The ``GemmModel`` of ``unit`` on ``device`` at achievable ``rate`` for one kind of kernel
    (``GemmShape.kernel``)."""
    main = device.main_memory
    # split-K partials are exchanged through the first on-chip level (L2); a spec that gives it
    # no latency falls back to main memory's
    onchip = device.memory[1] if len(device.memory) > 1 else main
    smem = next((lv for lv in device.memory if lv.name == "smem"), None)
    eff = attention_efficiency(arch, dtype) if kernel == "attention" else 1.0
    if kernel == "conv" and not unit.matrix:  # cuDNN's CUDA-core implicit GEMM (im2col gathers)
        eff = arch.kernel_efficiency.get("conv_simt", 1.0)
    vec_dt = "fp32" if dtype in ("tf32", "") else dtype
    overhead = arch.tile_overhead.get(dtype, arch.tile_overhead.get(unit.name, 0.0))
    attention = kernel == "attention"
    plain = not attention and kernel != "conv"  # a GEMM library's kernel (its skinny and GEMV family)
    return GemmModel(
        rate_per_sm=rate * eff / arch.sms, sms=arch.sms, tiles=arch.tiles_for(unit.name),
        load_Bps=arch.sm_load_bytes_per_cycle * arch.clock,
        elem_bytes=elem_bytes,
        split_k_min=NO_SPLIT if kernel == "conv" and not arch.conv_split_k else arch.split_k_min,
        latency_s=main.latency_s, fixup_latency_s=onchip.latency_s or main.latency_s,
        # a fused attention kernel's GEMM "tiles" are its inner loop over keys: no per-tile
        # prologue or epilogue of their own, and its score tiles never leave the SM (the op's
        # own bytes are its stream)
        tile_overhead_s=0.0 if attention else overhead / arch.clock,
        smem_Bps=smem.bandwidth_Bps / arch.sms if smem is not None else 0.0,
        simt=not unit.matrix,
        # a convolution's A operand is its im2col view, never streamed as such: its HBM
        # traffic is the op's own bytes (the memory term)
        stream_s_per_byte=0.0 if attention or kernel == "conv" else stream_s_per_byte(
            device, arch, elem_bytes, dtype),
        gemv_rate=achievable(vector_unit(device, vec_dt), vec_dt) * eff,
        k_align=max(1, (arch.k_align_bytes or 0) // elem_bytes) if unit.matrix else 1,
        skinny_max=arch.skinny_max or 0,
        gemv_max=int(arch.gemv_max.get(unit.name, GEMV_MAX)),
        kmajor_s_per_byte=0.0 if attention or kernel == "conv" else kmajor_s_per_byte(device),
        gemv_s_per_byte=gemv_s_per_byte(device, arch, elem_bytes, dtype) if plain else 0.0,
        gemv_fixed_s=arch.gemv_round_trips.get(dtype, 0.0) * main.latency_s if plain else 0.0,
        skinny_split_k_min=int(arch.skinny_split_k_min.get(unit.name, 0)) if plain else 0,
    )


def matmul_time(gemms: Sequence[GemmShape], matmul_flops: float, device: DeviceSpec,
                unit: ComputeUnit, rate: float, elem_bytes: int, dtype: str = "") -> float:
    """Seconds of matrix work on ``unit`` at achievable device rate ``rate`` (FLOP/s)."""
    if rate <= 0:
        return math.inf
    arch = device.arch
    if not isinstance(arch, GpuArch):
        return flops_time(matmul_flops, rate)  # a spec without SM detail: the plain roofline
    models: dict[str, GemmModel] = {}
    total = 0.0
    shaped = 0.0
    for g in gemms:
        gm = models.get(g.kernel)
        if gm is None:
            gm = models[g.kernel] = gemm_model(device, arch, unit, rate, elem_bytes, dtype, g.kernel)
        total += gemm_time(g, gm)
        shaped += g.flops
    rest = matmul_flops - shaped
    if rest > 1e-6 * max(matmul_flops, 1.0):
        total += rest / rate  # matrix FLOPs an op did not describe as GEMM shapes
    return total


@dataclass(frozen=True)
class RowWise:
    """A row-wise kernel's HBM bytes (a row crosses once each way), its instruction time (the
    longer of per-element and per-row work) and its dependent-latency floor, in s."""

    hbm_bytes: float
    issue_s: float
    latency_s: float


def rowwise(work: Work, device: DeviceSpec, elem_bytes: int) -> RowWise | None:
    """The row-wise kernel model of ``work`` (see the module docstring), None when the spec has
    no ``rowwise`` section or ``work`` is not row-wise."""
    arch = device.arch
    if not isinstance(arch, GpuArch) or not arch.rowwise or work.rows <= 0 or work.gemms:
        return None
    rw = arch.rowwise
    sms, clock = arch.sms, arch.clock
    elems = work.bytes_written / max(elem_bytes, 1)
    row_len = elems / work.rows
    hbm_bytes = work.bytes  # every pass the op reads streams from HBM, unless the row stays on chip
    if row_len * elem_bytes <= float(rw.get("onchip_row_bytes", math.inf)):
        hbm_bytes = min(work.bytes, work.bytes_written + work.bytes_read / _reads_per_elem(work))
    elem_s = elems * float(rw.get("cycles_per_element", 0.0)) / (sms * clock)
    block_rows = work.kernel != "softmax" or row_len > float(rw.get("warp_row_max", 1024))
    row_s = work.rows * float(rw.get("cycles_per_row", 0.0)) / (sms * clock) if block_rows else 0.0
    return RowWise(hbm_bytes, max(elem_s, row_s),
                   float(rw.get("round_trips", 0.0)) * device.main_memory.latency_s)


def _reads_per_elem(work: Work) -> float:
    """How many times the op's Work reads each output-sized element (a norm's two passes: 2)."""
    if work.bytes_written <= 0:
        return 1.0
    return max(1.0, math.floor(work.bytes_read / work.bytes_written + 1e-9))


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
