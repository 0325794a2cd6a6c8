"""The device-spec schema: field readers with units, checked keys, and ``build_device``.

Every reader takes the value and a ``Ctx`` (file + dotted field path) and raises a one-line
``SpecError`` whose ``where`` is ``"<file>: <field.path>"``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from sim.dtypes import ITEMSIZE
from sim.errors import SpecError
from sim.hw.arch import ARCH_CLASSES, Arch, CpuArch, FpgaArch
from sim.hw.spec import DEVICE_KINDS, ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel, PowerSpec
from sim.hw.units import parse_number, parse_quantity

SUPPORTED_VERSIONS = (1,)
DTYPES = tuple(d for d in ITEMSIZE if d != "bool")


class Ctx:
    """Where we are: file name and dotted field path, for error messages."""

    def __init__(self, file: str, path: str = "") -> None:
        self.file = file
        self.path = path

    def at(self, key: object) -> Ctx:
        return Ctx(self.file, f"{self.path}.{key}" if self.path else str(key))

    @property
    def where(self) -> str:
        return f"{self.file}: {self.path}" if self.path else self.file

    def error(self, message: str) -> SpecError:
        return SpecError(message, where=self.where)


def mapping(value: Any, ctx: Ctx, allowed: Mapping[str, Any] | None = None,
             required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(f"expected a mapping, got {type(value).__name__}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise ctx.at(key).error(f"unknown key {key!r} (known: {known})")
    for key in required:
        if key not in value or value[key] is None:
            raise ctx.at(key).error("missing required field")
    return value


def _q(kind: str) -> Callable[[Any, Ctx], float]:
    return lambda v, c: parse_quantity(v, kind, where=c.where)


_RATE_UNIT = {"bandwidth": "B/s", "compute": "FLOP/s", "frequency": "Hz"}


def _pos_q(kind: str) -> Callable[[Any, Ctx], float]:
    """A quantity that must be > 0 (a rate, a bandwidth, a clock, a capacity)."""

    def read_positive(v: Any, c: Ctx) -> float:
        x = parse_quantity(v, kind, where=c.where)
        if x <= 0:
            raise c.error(f"expected a {kind} > 0, got {v!r}")
        if kind in _RATE_UNIT and x < 1.0:  # below 1 B/s, 1 FLOP/s or 1 Hz: no real device
            raise c.error(f"{v!r} is below 1 {_RATE_UNIT[kind]}: not a real {kind}")
        return x

    return read_positive


def _num(v: Any, c: Ctx) -> float:
    return parse_number(v, where=c.where)


def _pos_num(v: Any, c: Ctx) -> float:
    """A plain number that must be > 0 (a per-cycle rate)."""
    x = parse_number(v, where=c.where)
    if x <= 0:
        raise c.error(f"expected a number > 0, got {v!r}")
    return x


def _ratio(v: Any, c: Ctx) -> float:
    return parse_number(v, where=c.where, maximum=1.0)


def _fraction(v: Any, c: Ctx) -> float:
    """An efficiency or utilisation: a fraction in (0, 1] (0 would make every time infinite)."""
    x = parse_number(v, where=c.where, maximum=1.0)
    if x <= 0:
        raise c.error(f"expected a fraction in (0, 1], got {v!r}")
    return x


def read_int(v: Any, c: Ctx) -> int:
    n = int(parse_number(v, where=c.where, integer=True))
    if n < 1:
        raise c.error(f"expected a whole number >= 1, got {v!r}")
    return n


def _bool(v: Any, c: Ctx) -> bool:
    if not isinstance(v, bool):
        raise c.error(f"expected true or false, got {v!r}")
    return v


def read_str(v: Any, c: Ctx) -> str:
    if not isinstance(v, str) or not v.strip():
        raise c.error(f"expected a non-empty string, got {v!r}")
    return v


def _dtype_map(reader: Callable[[Any, Ctx], float], extra: tuple[str, ...] = ()):
    def read(v: Any, c: Ctx) -> dict[str, float]:
        m = mapping(v, c, {d: None for d in DTYPES + extra})
        return {k: reader(x, c.at(k)) for k, x in m.items()}

    return read


def _tiles(v: Any, c: Ctx) -> dict[str, tuple[tuple[int, int], ...]]:
    m = mapping(v, c)
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for unit, lst in m.items():
        cu = c.at(unit)
        if not isinstance(lst, list) or not lst:
            raise cu.error("expected a list of [rows, cols] tile shapes")
        shapes = []
        for i, t in enumerate(lst):
            if not isinstance(t, list) or len(t) != 2:
                raise cu.at(i).error(f"expected [rows, cols], got {t!r}")
            shapes.append((read_int(t[0], cu.at(i)), read_int(t[1], cu.at(i))))
        out[str(unit)] = tuple(shapes)
    return out


# Fused kernels whose GEMMs a GPU spec may rate apart from the GEMM library's
# (``GemmShape.kernel``): arch.kernel_efficiency maps each to a fraction of the matrix unit's
# achievable rate. "attention" rates every fused attention kernel alike; the named attention
# kernels (FlashAttention-2/3, cuDNN, xFormers' memory-efficient) are picked by
# ``arch.attention_kernel``; ``materialized`` (scores written out and a softmax kernel: PyTorch's
# math path, Megatron-LM before flash attention) makes workloads with ``attention: auto`` build
# the unfused core, whose GEMMs are the GEMM library's; "conv" rates every convolution GEMM
# (forward, data and weight gradients: ``conv``, ``conv_dgrad``, ``conv_wgrad``), "conv_simt"
# a convolution's implicit GEMM on a GPU's CUDA cores.
ATTENTION_KERNELS = ("flash2", "flash3", "cudnn", "mem_efficient", "materialized")
KERNELS = ("attention", *ATTENTION_KERNELS, "conv", "conv_simt")


def _attention_kernel(v: Any, c: Ctx) -> str:
    name = read_str(v, c)
    if name not in ATTENTION_KERNELS:
        raise c.error(f"unknown attention kernel {name!r} (known: {', '.join(ATTENTION_KERNELS)})")
    return name


def _number_map(v: Any, c: Ctx) -> dict[str, float]:
    """A mapping of names to non-negative numbers (per-unit cycle counts)."""
    out = {}
    for k, x in mapping(v, c).items():
        f = _num(x, c.at(k))
        if f < 0:
            raise c.at(k).error(f"expected a number >= 0, got {x!r}")
        out[str(k)] = f
    return out


def _named_numbers(fields: tuple[str, ...]) -> Callable[[Any, Ctx], dict[str, float]]:
    """A reader of a mapping of numbers whose keys must be among ``fields``."""
    def read(v: Any, c: Ctx) -> dict[str, float]:
        mapping(v, c, {k: None for k in fields})
        return _number_map(v, c)
    return read


_rowwise = _named_numbers(("cycles_per_element", "cycles_per_row", "round_trips", "warp_row_max",
                           "onchip_row_bytes"))
_reduction = _named_numbers(("step_round_trips",))


def _kernel_map(v: Any, c: Ctx) -> dict[str, float]:
    m = mapping(v, c, {k: None for k in KERNELS})
    out = {}
    for k, x in m.items():
        out[k] = _fraction(x, c.at(k))
    return out


MEMORY_FIELDS = {"name": read_str, "capacity": _pos_q("size"), "bandwidth": _pos_q("bandwidth"),
           "efficiency": _fraction, "latency": _q("time"), "energy_per_byte": _q("energy_per_byte"),
           "reuse": _ratio}
_LINK = {"name": read_str, "bandwidth": _pos_q("bandwidth"), "efficiency": _fraction, "latency": _q("time"),
         "energy_per_byte": _q("energy_per_byte")}
_UNIT = {"name": read_str, "matrix": _bool, "peak": _dtype_map(_pos_q("compute")),
         "per_cycle": _dtype_map(_pos_num), "per": read_str,
         "efficiency": _dtype_map(_fraction, ("default",)), "sparse_2_4": _bool, "sparse_density": _ratio}
_POWER = {"idle": _q("power"), "tdp": _q("power"), "energy_per_flop": _dtype_map(_q("energy"))}

# Reader names used by ``sim.hw.arch.arch_field`` -> the reader that parses such a field.
# Clocks and per-cycle rates must be > 0 and a "ratio" (an achievable fraction) in (0, 1]:
# a zero would make every time infinite.
ARCH_READERS: dict[str, Callable[[Any, Ctx], Any]] = {
    "int": read_int, "number": _num, "positive": _pos_num, "ratio": _fraction,
    "frequency": _pos_q("frequency"), "time": _q("time"),
    "tiles": _tiles, "kernels": _kernel_map, "dtype_numbers": _dtype_map(_pos_num),
    "bool": _bool, "number_map": _number_map, "rowwise": _rowwise, "reduction": _reduction,
    "attention_kernel": _attention_kernel,
}
# kind -> {arch key: reader}; a field naming an unknown reader fails here, at import
_ARCH: dict[str, dict[str, Callable[[Any, Ctx], Any]]] = {
    kind: {f.name: ARCH_READERS[f.metadata["reader"]] for f in cls.spec_fields()}
    for kind, cls in ARCH_CLASSES.items()
}
_DEVICE_KEYS = ("version", "name", "kind", "description", "launch", "memory", "units",
                "host_link", "device_link", "power", "arch")


def read(m: Mapping[str, Any], key: str, reader: Callable[[Any, Ctx], Any], ctx: Ctx,
          default: Any = None) -> Any:
    if key not in m or m[key] is None:
        return default
    return reader(m[key], ctx.at(key))


def _memory(v: Any, ctx: Ctx, scale: float) -> MemoryLevel:
    m = mapping(v, ctx, MEMORY_FIELDS, ("name", "capacity", "bandwidth"))
    name = read_str(m["name"], ctx.at("name"))
    c = ctx
    bw = read(m, "bandwidth", MEMORY_FIELDS["bandwidth"], c)
    if bw <= 0:
        raise c.at("bandwidth").error("bandwidth must be > 0")
    return MemoryLevel(
        name=name,
        capacity_bytes=read(m, "capacity", MEMORY_FIELDS["capacity"], c) * scale,
        bandwidth_Bps=bw * scale,
        latency_s=read(m, "latency", MEMORY_FIELDS["latency"], c, 0.0),
        energy_per_byte_j=read(m, "energy_per_byte", MEMORY_FIELDS["energy_per_byte"], c, 0.0),
        efficiency=read(m, "efficiency", _fraction, c, 1.0),
        reuse=read(m, "reuse", _ratio, c),
    )


def read_link(v: Any, ctx: Ctx) -> LinkSpec:
    m = mapping(v, ctx, _LINK, ("name", "bandwidth"))
    bw = read(m, "bandwidth", _LINK["bandwidth"], ctx)
    if bw <= 0:
        raise ctx.at("bandwidth").error("bandwidth must be > 0")
    return LinkSpec(
        name=read_str(m["name"], ctx.at("name")),
        bandwidth_Bps=bw,
        latency_s=read(m, "latency", _LINK["latency"], ctx, 0.0),
        energy_per_byte_j=read(m, "energy_per_byte", _LINK["energy_per_byte"], ctx, 0.0),
        efficiency=read(m, "efficiency", _fraction, ctx, 1.0),
    )


def _arch_count(arch: Arch, key: str, ctx: Ctx) -> float:
    """The arch field ``key`` as a multiplier for ``per``, an error naming ``ctx`` if absent."""
    value = getattr(arch, key, None) if key in {f.name for f in arch.spec_fields()} else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(f"arch has no {key!r} to multiply by")
    return float(value)


def _unit(v: Any, ctx: Ctx, arch: Arch) -> ComputeUnit:
    m = mapping(v, ctx, _UNIT, ("name",))
    name = read_str(m["name"], ctx.at("name"))
    peak: dict[str, float] = read(m, "peak", _UNIT["peak"], ctx, {})
    eff: dict[str, float] = dict(read(m, "efficiency", _UNIT["efficiency"], ctx, {}))
    if "per_cycle" in m:
        if peak:
            raise ctx.at("per_cycle").error("give either peak or per_cycle, not both")
        per_cycle = read(m, "per_cycle", _UNIT["per_cycle"], ctx)
        count = 1.0
        for key in str(m.get("per", "")).split("*"):
            key = key.strip()
            if key:
                count *= _arch_count(arch, key, ctx.at("per"))
        clock = getattr(arch, "clock", getattr(arch, "design_clock", None))
        if clock is None:
            raise ctx.at("per_cycle").error("per_cycle needs arch.clock")
        peak = {d: n * count * clock for d, n in per_cycle.items()}
    elif "per" in m:
        raise ctx.at("per").error("per is only meaningful with per_cycle")
    if isinstance(arch, FpgaArch) and not peak:
        # DSP-limited: every DSP slice does macs_per_dsp multiply-adds (2 FLOP) per design clock.
        peak = {d: arch.dsps * n * 2.0 * arch.design_clock for d, n in arch.macs_per_dsp.items()}
        eff.setdefault("default", arch.utilisation)
    if not peak:
        raise ctx.at("peak").error("a compute unit needs peak rates (or per_cycle)")
    return ComputeUnit(
        name=name,
        matrix=read(m, "matrix", _bool, ctx, False),
        peak_flops=peak,
        efficiency=eff,
        sparse_2_4=read(m, "sparse_2_4", _bool, ctx, False),
        sparse_density=read(m, "sparse_density", _ratio, ctx, 0.0),
    )


def read_arch(raw: Any, kind: str, ctx: Ctx) -> Arch:
    """The ``arch:`` block of a ``kind`` device as its dataclass (``sim.hw.arch``): unknown keys
    and missing required fields are errors; absent optional fields take the class defaults."""
    readers = _ARCH[kind]
    cls = ARCH_CLASSES[kind]
    m = mapping(raw, ctx, readers, cls.required())
    return cls(**{k: readers[k](v, ctx.at(k)) for k, v in m.items() if v is not None})


def check_version(raw: Mapping[str, Any], ctx: Ctx) -> None:
    if "version" not in raw:
        raise ctx.at("version").error(f"missing version (supported: {SUPPORTED_VERSIONS})")
    if raw["version"] not in SUPPORTED_VERSIONS:
        raise ctx.at("version").error(
            f"unsupported version {raw['version']!r} (supported: {SUPPORTED_VERSIONS})")


def build_device(raw: dict[str, Any], file: str, default_name: str = "") -> DeviceSpec:
    """Validate a device mapping (as read from YAML) and build its ``DeviceSpec``."""
    ctx = Ctx(file)
    m = mapping(raw, ctx, {k: None for k in _DEVICE_KEYS}, ("kind", "memory", "units"))
    check_version(m, ctx)
    kind = m["kind"]
    if kind not in DEVICE_KINDS:
        raise ctx.at("kind").error(f"unknown device kind {kind!r} (known: {', '.join(DEVICE_KINDS)})")
    arch_ctx = ctx.at("arch")
    arch = read_arch(m.get("arch") or {}, kind, arch_ctx)
    scale = float(arch.sockets) if isinstance(arch, CpuArch) else 1.0  # CPU memory is per socket

    mem_ctx = ctx.at("memory")
    if not isinstance(m["memory"], list) or not m["memory"]:
        raise mem_ctx.error("expected a non-empty list of memory levels, outermost first")
    memory = []
    for i, lv in enumerate(m["memory"]):
        name = lv.get("name", i) if isinstance(lv, dict) else i
        memory.append(_memory(lv, mem_ctx.at(name), scale))
    names = [lv.name for lv in memory]
    if len(set(names)) != len(names):
        raise mem_ctx.error(f"memory level names repeat: {names}")

    units_ctx = ctx.at("units")
    if not isinstance(m["units"], list) or not m["units"]:
        raise units_ctx.error("expected a non-empty list of compute units")
    units = []
    for i, u in enumerate(m["units"]):
        name = u.get("name", i) if isinstance(u, dict) else i
        units.append(_unit(u, units_ctx.at(name), arch))
    unit_names = [u.name for u in units]
    if len(set(unit_names)) != len(unit_names):
        raise units_ctx.error(f"compute unit names repeat: {unit_names}")
    for tiled in getattr(arch, "tiles", {}):
        if tiled not in unit_names:
            known = ", ".join(unit_names)
            raise arch_ctx.at("tiles").at(tiled).error(f"no compute unit {tiled!r} (units: {known})")

    power_raw = mapping(m.get("power") or {}, ctx.at("power"), _POWER)
    power = PowerSpec(
        idle_w=read(power_raw, "idle", _POWER["idle"], ctx.at("power"), 0.0),
        tdp_w=read(power_raw, "tdp", _POWER["tdp"], ctx.at("power"), 0.0),
        energy_per_flop_j=read(power_raw, "energy_per_flop", _POWER["energy_per_flop"], ctx.at("power"), {}),
    )
    return DeviceSpec(
        name=read(m, "name", read_str, ctx, default_name),
        kind=kind,
        units=tuple(units),
        memory=tuple(memory),
        launch_s=read(m, "launch", _q("time"), ctx, 0.0),
        host_link=read(m, "host_link", read_link, ctx),
        device_link=read(m, "device_link", read_link, ctx),
        power=power,
        arch=arch,
        source=file,
        description=read(m, "description", read_str, ctx, ""),
        raw=copy.deepcopy(raw),
    )
