"""``op_cost``: one op's time, bound and dynamic energy on one device.

Dispatch by device kind for the matrix part (GPU tiles and waves, systolic padding and
fill/drain, FPGA DSP array, CPU SIMD/AMX), then the shared roofline: vector FLOPs on the
vector unit, transcendentals on special-function units where the spec has them, bytes through
main memory (CPU: the cache level that holds the working set), and
``time = launch + max(compute, memory)`` (see ``sim.cost.roofline``). Reads the engine knows
to be resident in the device's reuse cache (``cached_read_bytes``, see ``reuse_level``) stream
from that cache instead of main memory.

>>> from sim.hw import load_hardware
>>> from sim.ops.work import Work, GemmShape
>>> h100 = load_hardware("h100")
>>> c = op_cost(Work(flops=1e8, bytes_read=8e8, bytes_written=4e8), h100, "fp32")
>>> c.bound
'memory'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.cost import cpu, fpga, gpu, systolic
from sim.cost.reduction import reduction_time
from sim.cost.roofline import (
    achievable,
    combine,
    flops_time,
    matrix_unit,
    rate_key,
    storage_bytes,
    stream_time,
    vector_unit,
)
from sim.dtypes import canonical
from sim.errors import SpecError
from sim.hw.arch import GpuArch
from sim.hw.spec import ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel
from sim.ops.work import Work

# Device kinds whose first level after main memory serves reuse when the spec states none.
# CPUs are left out: ``cpu.streaming_level`` already streams any op whose working set fits a
# cache from that cache, cold or not. FPGAs are left out: whether a design keeps a layer's
# output in URAM/BRAM for the next layer is a property of the bitstream, not a cache, and
# their second level may be off-chip (the U280's DDR); a spec opts in with ``reuse``.
_REUSE_KINDS = ("gpu", "tpu", "asic")
DEFAULT_REUSE = 1.0  # fraction of the level's capacity when a spec gives no ``reuse``


def reuse_level(device: DeviceSpec) -> tuple[MemoryLevel, float] | None:
    """(level, usable fraction of its capacity) that serves reads of tensors kept between ops.

    The first level after main memory with ``reuse > 0`` in the spec; else, when no level
    states ``reuse``, the second level (the one after main memory: a GPU's L2, MI300X's
    Infinity Cache, TPU v4's CMEM, TPU v5e's VMEM, an ASIC's SRAM) of GPUs, TPUs and ASICs
    at ``DEFAULT_REUSE``; else None (no reuse: CPUs, FPGAs, single-level specs).

    >>> from sim.hw import load_hardware
    >>> lv, frac = reuse_level(load_hardware("h100"))
    >>> lv.name, frac
    ('l2', 0.5)
    >>> reuse_level(load_hardware("xeon-8480")) is None
    True
    """
    inner = device.memory[1:]
    stated = [lv for lv in inner if lv.reuse is not None]
    if stated:
        for lv in stated:
            if lv.reuse is not None and lv.reuse > 0:
                return lv, lv.reuse
        return None
    if device.kind in _REUSE_KINDS and inner:
        return inner[0], DEFAULT_REUSE
    return None


def reuse_capacity(device: DeviceSpec) -> float:
    """Bytes of tensors the reuse level keeps between ops (0 when the device has none)."""
    r = reuse_level(device)
    return r[0].capacity_bytes * r[1] if r is not None else 0.0


@dataclass(frozen=True)
class OpCost:
    """What one op costs on one device (seconds, FLOP, bytes, joules)."""

    time_s: float
    unit: str  # ComputeUnit used, or "memory" for pure data movement
    bound: str  # "compute" | "memory" | "launch"
    compute_s: float
    memory_s: float
    flops: float
    bytes: float
    energy_j: float  # dynamic energy only (idle power over time is the engine's)
    launch_s: float = 0.0
    matmul_s: float = 0.0
    vector_s: float = 0.0
    memory_level: str = ""
    cached_bytes: float = 0.0  # of ``bytes``, read from the reuse level (``reuse_level``)

    @property
    def achieved_flops(self) -> float:
        """FLOP/s over the op's whole time."""
        return self.flops / self.time_s if self.time_s > 0 else 0.0


def _sparsity_scale(unit: ComputeUnit, sparsity: dict[str, Any] | None) -> float:
    """Factor by which ``unit`` speeds up matrix math on sparse weights (1: no help)."""
    if not sparsity:
        return 1.0
    kind = str(sparsity.get("kind", ""))
    if kind == "2:4":
        return 2.0 if unit.sparse_2_4 else 1.0
    if kind == "unstructured":
        density = float(sparsity.get("density", 1.0))
        if 0 < density <= unit.sparse_density:
            return 1.0 / density
        return 1.0
    return 1.0


def _matmul(work: Work, device: DeviceSpec, dtype: str, sparsity: dict[str, Any] | None
            ) -> tuple[float, ComputeUnit | None, float]:
    """(seconds, unit, FLOPs executed) of the matrix part of ``work``."""
    if work.matmul_flops <= 0:
        return 0.0, None, 0.0
    if device.kind == "gpu" and gpu.attention_runs_3xtf32(work, device, dtype):
        tensor = matrix_unit(device, "tf32")
        assert tensor is not None
        rate = achievable(tensor, "tf32") / gpu.FAST_F32_PASSES
        t = gpu.matmul_time(work.gemms, work.matmul_flops, device, tensor, rate, storage_bytes(dtype), "tf32")
        return t, tensor, work.matmul_flops
    unit = matrix_unit(device, dtype)
    on_matrix = unit is not None
    if unit is None:
        unit = vector_unit(device, dtype)
    scale = _sparsity_scale(unit, sparsity)
    rate = achievable(unit, dtype) * scale
    executed = work.matmul_flops / scale
    if rate <= 0:
        return math.inf, unit, executed
    kind = device.kind
    if kind == "gpu":
        t = gpu.matmul_time(work.gemms, work.matmul_flops, device, unit, rate, storage_bytes(dtype), dtype)
    elif kind in ("tpu", "asic") and on_matrix:
        key = rate_key(unit, dtype) or dtype
        peak = unit.peak_flops[key] * scale
        t = systolic.matmul_time(work.gemms, work.matmul_flops, device, unit, rate, peak)
    elif kind == "cpu":
        t = cpu.matmul_time(work.gemms, work.matmul_flops, rate,
                            getattr(device.arch, "kernel_efficiency", {}))
    elif kind == "fpga":
        t = fpga.matmul_time(work.matmul_flops, rate)
    else:
        t = flops_time(work.matmul_flops, rate)
    return t, unit, executed


def op_cost(work: Work, device: DeviceSpec, dtype: str, *,
            sparsity: dict[str, Any] | None = None, cached_read_bytes: float = 0.0) -> OpCost:
    """Time, bound and dynamic energy of ``work`` on ``device`` computing in ``dtype``.

    ``dtype`` is the compute dtype ("tf32": fp32 storage with TF32 matrix math).
    ``sparsity`` is ``node.meta["sparsity"]``: ``{"kind": "2:4"}`` doubles matrix math on units
    with ``sparse_2_4``; ``{"kind": "unstructured", "density": d}`` scales it by ``d`` on units
    whose ``sparse_density`` is >= d.
    ``cached_read_bytes`` of ``work.bytes_read`` (clamped to it) are resident in the reuse
    level (``reuse_level``) and stream from it at its achievable bandwidth; the rest, and all
    writes (write-back: dirty lines reach main memory eventually), stream from main memory.
    No effect on a device without a reuse level.
    ``work.serial`` steps (a recurrence) are timed one by one (``serial_cost``).
    """
    if work.serial:
        return serial_cost(work, device, dtype, sparsity=sparsity, cached_read_bytes=cached_read_bytes)
    dt = "tf32" if dtype == "tf32" else canonical(dtype)
    mm_s, mm_unit, mm_flops = _matmul(work, device, dt, sparsity)

    vec_flops = max(work.flops - work.matmul_flops, 0.0)
    vec_s = 0.0
    vec_unit = None
    if vec_flops > 0 or work.transcendentals > 0:
        vec_dt = "fp32" if dt == "tf32" else dt
        vec_unit = vector_unit(device, vec_dt)
        vec_s = flops_time(vec_flops, achievable(vec_unit, vec_dt))
        sfu = gpu.sfu_rate(device) if device.kind == "gpu" else 0.0
        if sfu > 0:
            vec_s = max(vec_s, work.transcendentals / sfu)
    compute_s = (gpu.matrix_and_vector_s(work, device, mm_s, vec_s, dt) if device.kind == "gpu"
                 else mm_s + vec_s)

    if device.kind == "cpu":
        level = cpu.streaming_level(device, work.bytes)
    else:
        level = device.main_memory
    rows = gpu.rowwise(work, device, storage_bytes(dt)) if device.kind == "gpu" else None
    moved = rows.hbm_bytes if rows is not None else work.bytes
    reuse = reuse_level(device) if cached_read_bytes > 0 and device.kind != "cpu" else None
    cached = min(float(cached_read_bytes), work.bytes_read, moved) if reuse is not None else 0.0
    if cached > 0 and reuse is not None:
        memory_s = stream_time(moved - cached, level) + stream_time(cached, reuse[0])
        bytes_energy = (moved - cached) * level.energy_per_byte_j + cached * reuse[0].energy_per_byte_j
    else:
        memory_s = stream_time(moved, level)
        bytes_energy = moved * level.energy_per_byte_j
    if rows is not None:  # a row-wise kernel: instruction-bound or memory-bound, plus its latencies
        memory_s = max(memory_s, rows.issue_s) + rows.latency_s
    red = (reduction_time(work.reduction, device, storage_bytes(dt))
           if work.reduction is not None and device.kind == "gpu" else None)
    if red is not None:  # the reduce kernel's dependent load chain
        memory_s = max(memory_s, red.chain_s)

    if work.empty:
        return OpCost(0.0, "memory", "launch", 0.0, 0.0, 0.0, 0.0, 0.0, memory_level=level.name)
    launch_s = device.launch_s * work.launches * (red.launches if red is not None else 1)
    if isinstance(device.arch, GpuArch) and work.flops > 0 and red is None:
        passes = gpu.cross_sm_passes(work.bytes_read, work.bytes_written, storage_bytes(dt),
                                     device.arch.sms, bool(work.gemms))
        launch_s *= 1 + passes
    time_s, bound = combine(compute_s, memory_s, launch_s)
    if mm_unit is not None and mm_s >= vec_s:
        unit_name = mm_unit.name
    elif vec_unit is not None:
        unit_name = vec_unit.name
    else:
        unit_name = "memory"

    e_flop = device.power.energy_per_flop_j
    def per_flop(d: str) -> float:
        return e_flop.get(d, e_flop.get("fp32", 0.0))
    energy = (mm_flops * per_flop(dt) + vec_flops * per_flop("fp32" if dt == "tf32" else dt)
              + bytes_energy)
    return OpCost(
        time_s=time_s, unit=unit_name, bound=bound, compute_s=compute_s, memory_s=memory_s,
        flops=work.flops, bytes=work.bytes, energy_j=energy, launch_s=launch_s,
        matmul_s=mm_s, vector_s=vec_s, memory_level=level.name, cached_bytes=cached,
    )


def serial_cost(work: Work, device: DeviceSpec, dtype: str, *,
                sparsity: dict[str, Any] | None = None, cached_read_bytes: float = 0.0) -> OpCost:
    """``op_cost`` of work with dependent steps (``Work.serial``): the parallel part as one
    kernel, then each step's kernels one after another, ``count`` times, each paying its launch.

    The first step reads from main memory; later steps find what a step reads (the recurrent
    weights, the state the previous step wrote) in the reuse level (a GPU's L2) when one step's
    bytes fit in it, as a recurrent layer's weights stay on chip across its steps.
    """
    parts = [op_cost(work.parallel_part(), device, dtype, sparsity=sparsity,
                     cached_read_bytes=cached_read_bytes)]
    weights = [1.0]
    for s in work.serial:
        step_bytes = sum(k.bytes for k in s.kernels)
        warm = s.count > 1 and 0 < step_bytes <= reuse_capacity(device)
        for k in s.kernels:
            parts.append(op_cost(k, device, dtype, sparsity=sparsity))
            weights.append(1.0)
            later = op_cost(k, device, dtype, sparsity=sparsity,
                            cached_read_bytes=k.bytes_read if warm else 0.0)
            parts.append(later)
            weights.append(float(s.count - 1))

    def total(field: str) -> float:
        return sum(w * getattr(c, field) for c, w in zip(parts, weights))

    main = max(zip(parts, weights), key=lambda cw: cw[0].time_s * cw[1])[0]
    return OpCost(
        time_s=total("time_s"), unit=main.unit, bound=main.bound, compute_s=total("compute_s"),
        memory_s=total("memory_s"), flops=work.flops, bytes=work.bytes, energy_j=total("energy_j"),
        launch_s=total("launch_s"), matmul_s=total("matmul_s"), vector_s=total("vector_s"),
        memory_level=parts[0].memory_level, cached_bytes=total("cached_bytes"),
    )


def transfer_time(link: LinkSpec, nbytes: float) -> float:
    """Seconds to move ``nbytes`` over ``link``: latency + bytes / (bandwidth x efficiency).

    >>> transfer_time(LinkSpec("pcie", 64e9, latency_s=1e-6), 64e9)
    1.000001
    """
    if nbytes < 0:
        raise SpecError(f"negative transfer size {nbytes}", where=link.name)
    if nbytes == 0:
        return 0.0
    return link.latency_s + nbytes / link.achievable_Bps
