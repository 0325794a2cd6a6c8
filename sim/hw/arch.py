"""Kind-specific device detail (``DeviceSpec.arch``): one frozen dataclass per device kind.

Each field is declared once, here, with its default and the reader that parses it from YAML
(``sim.hw.schema`` resolves the reader names: ``"int"`` a whole number >= 1, ``"number"`` a
plain number >= 0, ``"positive"`` a number > 0, ``"ratio"`` a fraction in (0, 1],
``"frequency"`` a quantity > 0 and ``"time"`` one >= 0, with units, ``"tiles"``,
``"kernels"``, ``"dtype_numbers"`` the mappings below). A field without a
default is required in a spec of that kind; every other key of an ``arch:`` block is an
error. Adding a field is one line: ``name: type = arch_field(default, "reader", "what it is")``
(then use it in ``sim.cost`` and document it in docs/hardware.md, whose table
``sim.hw.arch.markdown_table`` regenerates).

>>> from sim.hw import load_hardware
>>> a = load_hardware("h100").arch
>>> type(a).__name__, a.sms, a.sfu_per_sm_per_cycle, a.tiles_for("sfu")
('GpuArch', 132, 16.0, ((128, 128),))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TILES: tuple[tuple[int, int], ...] = ((128, 128),)
REQUIRED: Any = dataclasses.MISSING  # ``arch_field(REQUIRED, ...)``: the spec must give it


def arch_field(default: Any, reader: str, doc: str) -> Any:
    """A field of an arch dataclass: its default (``REQUIRED`` for none), YAML reader and doc.

    Mutable defaults (mappings) are copied per instance."""
    meta = {"reader": reader, "doc": doc}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Arch:
    """Detail every kind may give. A bare ``Arch()`` is a spec built in code without detail:
    the cost models then time matrix work on the plain roofline."""

    host_dispatch: float = arch_field(
        0.0, "time", "host CPU time to issue one op (framework + launch call), seconds; 0: not modelled")

    @classmethod
    def spec_fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        """The fields a YAML ``arch:`` block may set, in declaration order."""
        return dataclasses.fields(cls)

    @classmethod
    def required(cls) -> tuple[str, ...]:
        """Names of the fields a spec must give."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


@dataclass(frozen=True, kw_only=True)
class GpuArch(Arch):
    """A GPU: streaming multiprocessors, GEMM tile shapes, per-SM load and SFU rates."""

    sms: int = arch_field(REQUIRED, "int", "streaming multiprocessors (compute units on AMD)")
    clock: float = arch_field(REQUIRED, "frequency", "SM clock the peaks are quoted at, Hz")
    tiles: dict[str, tuple[tuple[int, int], ...]] = arch_field(
        {}, "tiles", "{unit: [[tm, tn], ...]} output tile shapes the GEMM library picks from "
        "(a unit not named: 128x128)")
    split_k_min: int = arch_field(256, "int", "smallest K slice a split-K GEMM cuts")
    sm_load_bytes_per_cycle: float = arch_field(
        64.0, "positive", "bytes per cycle one SM loads from L2 into shared memory")
    sfu_per_sm_per_cycle: float = arch_field(
        0.0, "number", "transcendentals per SM per cycle (special-function units); 0: not modelled")
    tensor_cores_per_sm: int | None = arch_field(None, "int", "tensor cores per SM (descriptive)")
    kernel_efficiency: dict[str, float] = arch_field(
        {}, "kernels", "{kernel: fraction} of the matrix rate the GEMMs of a fused kernel reach: "
        "attention (any), flash2, flash3, cudnn, mem_efficient (see attention_kernel), conv_simt "
        "(a convolution on the CUDA cores); absent: 1")
    attention_kernel: str | None = arch_field(
        None, "attention_kernel", "the fused attention kernel PyTorch's SDPA dispatches here (flash2, "
        "flash3, cudnn, mem_efficient): its kernel_efficiency rates attention GEMMs; materialized: "
        "the scores are written out (math path, Megatron-LM before flash attention) and workloads "
        "with attention: auto build the unfused core")
    softmax_overlap: dict[str, float] = arch_field(
        {}, "kernels", "{attention kernel: fraction} of the shorter of a fused attention kernel's "
        "GEMMs and softmax hidden under the other (warp-specialised Hopper kernels: FA3, cuDNN); "
        "absent: 0, the two in sequence")
    attention_block_cycles: dict[str, float] = arch_field(
        {}, "number_map", "{attention kernel: cycles} each key-block step (128 queries x 128 keys) of a "
        "fused attention kernel spends besides its GEMMs and softmax (pipeline barriers, TMA issue, "
        "row statistics); absent: 0")
    tile_overhead: dict[str, float] = arch_field(
        {}, "number_map", "{dtype or unit: cycles} per GEMM output tile outside the main loop "
        "(pipeline fill, epilogue); absent: 0")
    k_align_bytes: int | None = arch_field(
        None, "int", "bytes each filter tap's channels pad to in a convolution on the matrix unit "
        "(cuDNN NHWC: 16); none: no padding")
    conv_split_k: bool = arch_field(True, "bool", "whether a convolution's implicit GEMM splits K")
    nchw_conv_transposes: bool = arch_field(
        False, "bool", "whether the convolution library (cuDNN 8) runs a tensor-core convolution of "
        "channels-first (NCHW) tensors by transposing its operands to NHWC and its result back, "
        "kernels of their own (PyTorch eager: sim.passes.layout.nhwc_convolutions); false: it reads "
        "NCHW in place")
    gemv_max: dict[str, float] = arch_field(
        {}, "number_map", "{unit: widest M or N} that runs as a matrix-vector kernel (absent: 8)")
    skinny_max: int | None = arch_field(
        None, "int", "GEMMs with min(M, N) up to this stream operands at the skinny-kernel rate "
        "(stream_inflight); none: never")
    stream_inflight: dict[str, float] = arch_field(
        {}, "number_map", "{dtype: operand elements in flight per SM} of skinny and GEMV kernels "
        "(Little's law with the HBM latency); absent: the HBM peak alone")
    gemv_inflight: dict[str, float] = arch_field(
        {}, "number_map", "{dtype: operand elements in flight per SM} of the matrix-vector kernel "
        "(min(M, N) <= gemv_max, B N-contiguous); absent: stream_inflight's")
    gemv_round_trips: dict[str, float] = arch_field(
        {}, "number_map", "{dtype: dependent HBM round trips} a matrix-vector kernel (B N-contiguous) "
        "adds to its operand stream; absent: 0")
    skinny_split_k_min: dict[str, float] = arch_field(
        {}, "number_map", "{unit: smallest K slice} a skinny GEMM (min(M, N) <= skinny_max) on that "
        "unit cuts when it splits K; absent: split_k_min")
    rowwise: dict[str, float] = arch_field(
        {}, "rowwise", "row-wise kernels (softmax, norms): cycles_per_element, cycles_per_row, "
        "round_trips, warp_row_max, onchip_row_bytes; absent: the plain roofline")
    reduction: dict[str, float] = arch_field(
        {}, "reduction", "PyTorch's generic reduce kernel (sums, means, max over axes): "
        "step_round_trips (HBM latencies per dependent load step of a thread); absent: a second "
        "launch when few outputs")

    def tiles_for(self, unit: str) -> tuple[tuple[int, int], ...]:
        """The tile shapes the GEMM library uses on compute unit ``unit``."""
        return self.tiles.get(unit, DEFAULT_TILES)


@dataclass(frozen=True, kw_only=True)
class TpuArch(Arch):
    """A TPU chip: MXU systolic arrays (``arrays``/``rows``/``cols`` name them as an ASIC's)."""

    mxus: int = arch_field(REQUIRED, "int", "MXU systolic arrays on the chip (all cores)")
    mxu_rows: int = arch_field(REQUIRED, "int", "rows of one MXU (K per weight block)")
    mxu_cols: int = arch_field(REQUIRED, "int", "columns of one MXU (N per weight block)")
    clock: float = arch_field(REQUIRED, "frequency", "core clock, Hz")
    row_granule: int = arch_field(1, "int", "streamed rows pad to a multiple of this (8 sublanes)")
    cores: int | None = arch_field(None, "int", "TensorCores per chip (descriptive)")
    ici_links: int | None = arch_field(None, "int", "inter-chip links (descriptive)")
    vector_lanes: int | None = arch_field(None, "int", "vector unit lanes (descriptive)")

    @property
    def arrays(self) -> int:
        return self.mxus

    @property
    def rows(self) -> int:
        return self.mxu_rows

    @property
    def cols(self) -> int:
        return self.mxu_cols


@dataclass(frozen=True, kw_only=True)
class AsicArch(Arch):
    """A generic weight-stationary systolic ASIC."""

    arrays: int = arch_field(REQUIRED, "int", "systolic arrays")
    rows: int = arch_field(REQUIRED, "int", "rows of one array (K per weight block)")
    cols: int = arch_field(REQUIRED, "int", "columns of one array (N per weight block)")
    clock: float = arch_field(REQUIRED, "frequency", "array clock, Hz")
    row_granule: int = arch_field(1, "int", "streamed rows pad to a multiple of this")


@dataclass(frozen=True, kw_only=True)
class CpuArch(Arch):
    """A CPU socket (memory levels and unit peaks are per socket; ``sockets`` multiplies them)."""

    cores: int = arch_field(REQUIRED, "int", "cores per socket")
    clock: float = arch_field(REQUIRED, "frequency", "all-core clock under vector load, Hz")
    sockets: int = arch_field(1, "int", "sockets: memory capacity/bandwidth and peaks scale by it")
    simd_bits: int | None = arch_field(None, "int", "SIMD register width in bits (descriptive)")
    fma_units: int | None = arch_field(None, "int", "FMA pipes per core (descriptive)")
    threads_per_core: int | None = arch_field(None, "int", "hardware threads per core (descriptive)")
    kernel_efficiency: dict[str, float] = arch_field(
        {}, "kernels", "{conv: fraction} of the matrix rate the GEMMs of such kernels reach (an "
        "im2col convolution pays for its column buffer; absent: 1)")


@dataclass(frozen=True, kw_only=True)
class FpgaArch(Arch):
    """An FPGA design: DSP slices at the design clock (the loader derives the unit's peak)."""

    dsps: int = arch_field(REQUIRED, "int", "DSP slices the design uses")
    design_clock: float = arch_field(REQUIRED, "frequency", "clock the placed design closes at, Hz")
    macs_per_dsp: dict[str, float] = arch_field(
        REQUIRED, "dtype_numbers", "{dtype: MACs per DSP per cycle} (2 for packed int8)")
    utilisation: float = arch_field(REQUIRED, "ratio", "achievable fraction of the DSP peak")
    luts: int | None = arch_field(None, "int", "LUTs (descriptive)")


ARCH_CLASSES: dict[str, type[Arch]] = {
    "gpu": GpuArch, "tpu": TpuArch, "asic": AsicArch, "cpu": CpuArch, "fpga": FpgaArch,
}


_VALUE = {"int": "whole number", "number": "number", "positive": "number > 0", "ratio": "fraction",
          "frequency": "frequency",
          "time": "time", "tiles": "mapping", "kernels": "mapping", "dtype_numbers": "mapping",
          "bool": "true/false", "number_map": "mapping", "rowwise": "mapping", "reduction": "mapping",
          "attention_kernel": "name"}


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return "-" if f.default is None else f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    return "**required**"


def markdown_table() -> str:
    """docs/hardware.md's table of arch fields: kind, field, value, default, meaning."""
    lines = ["| kind | field | value | default | meaning |", "| --- | --- | --- | --- | --- |"]
    own = {("every", Arch): Arch.spec_fields()}
    base = {f.name for f in Arch.spec_fields()}
    for kind, cls in ARCH_CLASSES.items():
        own[(kind, cls)] = tuple(f for f in cls.spec_fields() if f.name not in base)
    for (kind, _), fields in own.items():
        for f in fields:
            lines.append(f"| {kind} | `{f.name}` | {_VALUE[f.metadata['reader']]} | {_default_text(f)} "
                         f"| {f.metadata['doc']} |")
    return "\n".join(lines)
