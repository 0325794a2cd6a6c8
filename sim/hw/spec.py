"""Hardware spec dataclasses: what the engine and the cost models read.

Loaded from ``hwspecs/*.yaml`` by ``sim.hw.loader`` (human units converted once, here SI:
seconds, bytes, bytes/s, FLOP/s, hertz, watts, joules). Frozen: a what-if builds a new spec
via ``sim.hw.loader.override``.

The engine relies on these fields only: ``DeviceSpec.name, kind, memory, launch_s, host_link,
device_link, power, units``, ``arch.host_dispatch``; ``SystemSpec.devices, host, links``.
Kind-specific detail (SM count and tile sizes, systolic array dimensions, DSP counts, SIMD
widths...) lives in ``DeviceSpec.arch``, one typed dataclass per kind (``sim.hw.arch``, where
each field's default and meaning are declared), and is read by ``sim.cost``.

Bandwidths (``MemoryLevel.bandwidth_Bps``, ``LinkSpec.bandwidth_Bps``) are the datasheet peaks;
``efficiency`` is the fitted achievable fraction and ``achievable_Bps`` their product, which is
what ``sim.cost`` uses for time (and what a bandwidth-sharing model should share).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.errors import SpecError
from sim.hw.arch import ARCH_CLASSES, Arch

DEVICE_KINDS = ("cpu", "gpu", "tpu", "fpga", "asic")


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy (outermost first in ``DeviceSpec.memory``)."""

    name: str  # "hbm", "dram", "l2", "smem", "vmem", "bram", "uram", "llc" ...
    capacity_bytes: float
    bandwidth_Bps: float
    latency_s: float = 0.0
    energy_per_byte_j: float = 0.0
    efficiency: float = 1.0  # achievable fraction of ``bandwidth_Bps`` on streaming work
    # fraction of ``capacity_bytes`` that keeps tensors between ops (cache reuse); None: not
    # stated (``sim.cost.reuse_level`` picks the level and a default), 0: never serves reuse
    reuse: float | None = None

    @property
    def achievable_Bps(self) -> float:
        """Bandwidth a streaming kernel reaches: peak x efficiency."""
        return self.bandwidth_Bps * self.efficiency


@dataclass(frozen=True)
class LinkSpec:
    """A point-to-point link (per direction): PCIe, NVLink, ICI, Ethernet."""

    name: str
    bandwidth_Bps: float
    latency_s: float = 0.0
    energy_per_byte_j: float = 0.0
    efficiency: float = 1.0  # achievable fraction of ``bandwidth_Bps`` for large transfers

    @property
    def achievable_Bps(self) -> float:
        """Bandwidth a large transfer reaches: peak x efficiency."""
        return self.bandwidth_Bps * self.efficiency


@dataclass(frozen=True)
class ComputeUnit:
    """A kind of compute engine on the device and its per-dtype rates.

    ``peak_flops`` maps dtype -> dense peak FLOP/s for the whole device (all SMs / cores /
    MXUs together). ``efficiency`` maps dtype (or "default") -> achievable fraction of peak
    on large, well-shaped work (fitted from measurements where we have them).
    ``matrix`` says whether the unit runs matmul-like work (tensor cores, MXUs, DSP arrays).
    ``sparse_2_4`` says whether it doubles math on 2:4 structured-sparse weights.
    ``sparse_density`` is the density at or below which the unit skips the zeros of
    unstructured-sparse weights (0: never; it then runs them dense).
    """

    name: str  # "tensor", "vector", "mxu", "simd", "dsp"
    matrix: bool
    peak_flops: dict[str, float]
    efficiency: dict[str, float] = field(default_factory=dict)
    sparse_2_4: bool = False
    sparse_density: float = 0.0

    def rate(self, dtype: str) -> float:
        """Achievable FLOP/s for ``dtype`` (0 when the unit has no rate for it)."""
        peak = self.peak_flops.get(dtype, 0.0)
        eff = self.efficiency.get(dtype, self.efficiency.get("default", 1.0))
        return peak * eff


@dataclass(frozen=True)
class PowerSpec:
    idle_w: float = 0.0
    tdp_w: float = 0.0
    energy_per_flop_j: dict[str, float] = field(default_factory=dict)  # by dtype


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: str  # one of DEVICE_KINDS
    units: tuple[ComputeUnit, ...]
    memory: tuple[MemoryLevel, ...]  # outermost (HBM/DRAM) first
    launch_s: float = 0.0  # per-op floor: kernel launch / dispatch / pipeline setup
    host_link: LinkSpec | None = None
    device_link: LinkSpec | None = None
    power: PowerSpec = field(default_factory=PowerSpec)
    arch: Arch = field(default_factory=Arch)  # kind-specific detail (``sim.hw.arch``) for sim.cost
    source: str = ""  # file it was loaded from
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the YAML, for overrides

    def __post_init__(self) -> None:
        expected = ARCH_CLASSES.get(self.kind)
        if type(self.arch) is not Arch and expected is not None and not isinstance(self.arch, expected):
            raise SpecError(f"a {self.kind} device takes {expected.__name__} detail, got "
                            f"{type(self.arch).__name__}", where=f"{self.source or self.name}: arch")

    @property
    def main_memory(self) -> MemoryLevel:
        """The outermost level: where tensors live (HBM, DRAM, board DDR)."""
        return self.memory[0]

    def unit(self, name: str) -> ComputeUnit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)


@dataclass(frozen=True)
class SystemSpec:
    """Devices joined by links. A single device is a system of one (plus an optional host)."""

    name: str
    devices: dict[str, DeviceSpec]  # instance name ("gpu0") -> spec
    host: str | None = None  # instance name of the host CPU, if modelled
    links: tuple[tuple[str, str, LinkSpec], ...] = ()  # (a, b, link), both directions
    switch: LinkSpec | None = None  # a non-blocking switch (NVSwitch): every pair at this rate
    nics: int = 0  # scale-out network adapters (one per GPU on DGX nodes), for cluster fabrics
    nic: LinkSpec | None = None  # one adapter's link, per direction
    source: str = ""
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the YAML, for overrides

    @property
    def accelerators(self) -> list[str]:
        return [n for n in self.devices if n != self.host]


@dataclass(frozen=True)
class FabricSpec:
    """The scale-out network that joins a cluster's nodes.

    ``kind`` is ``"fat-tree"`` (switched: every node's NICs reach every other node's; rails
    when ``rail_optimized``: NIC ``i`` of every node on the same leaf switches) or ``"torus"``
    (chips joined directly by ``link`` along the axes of ``shape``, wrap-around in every axis).
    ``link`` is the per-direction rate of one NIC (fat tree) or one torus link, after the chosen
    ``transport`` (InfiniBand, RoCE, TCP) has set its efficiency and latency.
    ``oversubscription`` is the leaf-to-spine taper (1: non-blocking; 2: half the uplinks).
    """

    kind: str
    link: LinkSpec
    transport: str = "infiniband"
    oversubscription: float = 1.0
    rail_optimized: bool = True
    switch_radix: int = 0  # ports per switch (fat tree)
    switch_latency_s: float = 0.0  # per switch hop
    shape: tuple[int, ...] = ()  # torus: chips along each axis


@dataclass(frozen=True)
class ClusterSpec:
    """``nodes`` copies of a node system joined by a scale-out ``fabric``.

    ``node`` is a ``SystemSpec`` (a DGX: 8 GPUs on NVSwitch with their NICs, or a TPU host's
    chips). The engine simulates within one node; ``sim.cluster`` times the whole cluster.
    """

    name: str
    node: SystemSpec
    nodes: int
    fabric: FabricSpec
    source: str = ""
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def per_node(self) -> int:
        """Accelerators per node."""
        return len(self.node.accelerators)

    @property
    def accelerator_count(self) -> int:
        return self.per_node * self.nodes

    @property
    def device(self) -> DeviceSpec:
        """The accelerator spec (every accelerator of a cluster is the same part)."""
        return self.node.devices[self.node.accelerators[0]]


def accelerator(hw: Any) -> Any:
    """The accelerator spec of ``hw``: a cluster's device, a system's first accelerator, or a
    device spec itself (None for a system without accelerators)."""
    if isinstance(hw, ClusterSpec):
        return hw.device
    if isinstance(hw, SystemSpec):
        return hw.devices[hw.accelerators[0]] if hw.accelerators else None
    return hw


def attention_kernel(hw: Any) -> str | None:
    """The attention kernel (``arch.attention_kernel``) of ``hw``'s accelerators (None when it
    names none)."""
    return getattr(getattr(accelerator(hw), "arch", None), "attention_kernel", None)
