"""Hardware specs: YAML files with human units -> frozen ``DeviceSpec`` / ``SystemSpec``.

A device file (``kind: cpu | gpu | tpu | fpga | asic``) lists memory levels outermost first,
compute units with per-dtype dense peaks, links, power and a kind-specific ``arch`` block. A
system file (``kind: system``) names device specs and the links between them. Every key is
checked: an unknown key, a value of the wrong kind of unit or a negative number is a
``SpecError`` whose ``where`` is ``"<file>: <field.path>"``. See docs/hardware.md.

>>> from sim.hw import load_hardware
>>> h = load_hardware("h100")                                   # doctest: +SKIP
>>> load_hardware("h100", **{"memory.hbm.bandwidth": "6.7 TB/s"}).main_memory.bandwidth_Bps
6700000000000.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sim.dtypes import ITEMSIZE
from sim.errors import SpecError
from sim.hw.spec import (
    DEVICE_KINDS,
    ComputeUnit,
    DeviceSpec,
    LinkSpec,
    MemoryLevel,
    PowerSpec,
    SystemSpec,
)
from sim.hw.units import format_quantity, parse_number, parse_quantity

SPEC_DIR = Path(__file__).resolve().parents[2] / "hwspecs"
SUPPORTED_VERSIONS = (1,)
DTYPES = tuple(d for d in ITEMSIZE if d != "bool")

Spec = DeviceSpec | SystemSpec


# ----------------------------------------------------------------------------- field readers
class _Ctx:
    """Where we are: file name and dotted field path, for error messages."""

    def __init__(self, file: str, path: str = "") -> None:
        self.file = file
        self.path = path

    def at(self, key: object) -> _Ctx:
        return _Ctx(self.file, f"{self.path}.{key}" if self.path else str(key))

    @property
    def where(self) -> str:
        return f"{self.file}: {self.path}" if self.path else self.file

    def error(self, message: str) -> SpecError:
        return SpecError(message, where=self.where)


def _mapping(value: Any, ctx: _Ctx, allowed: Mapping[str, Any] | None = None,
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


def _q(kind: str) -> Callable[[Any, _Ctx], float]:
    return lambda v, c: parse_quantity(v, kind, where=c.where)


def _num(v: Any, c: _Ctx) -> float:
    return parse_number(v, where=c.where)


def _ratio(v: Any, c: _Ctx) -> float:
    return parse_number(v, where=c.where, maximum=1.0)


def _int(v: Any, c: _Ctx) -> int:
    n = int(parse_number(v, where=c.where, integer=True))
    if n < 1:
        raise c.error(f"expected a whole number >= 1, got {v!r}")
    return n


def _bool(v: Any, c: _Ctx) -> bool:
    if not isinstance(v, bool):
        raise c.error(f"expected true or false, got {v!r}")
    return v


def _str(v: Any, c: _Ctx) -> str:
    if not isinstance(v, str) or not v.strip():
        raise c.error(f"expected a non-empty string, got {v!r}")
    return v


def _dtype_map(reader: Callable[[Any, _Ctx], float], extra: tuple[str, ...] = ()):
    def read(v: Any, c: _Ctx) -> dict[str, float]:
        m = _mapping(v, c, {d: None for d in DTYPES + extra})
        return {k: reader(x, c.at(k)) for k, x in m.items()}

    return read


def _tiles(v: Any, c: _Ctx) -> dict[str, tuple[tuple[int, int], ...]]:
    m = _mapping(v, c)
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for unit, lst in m.items():
        cu = c.at(unit)
        if not isinstance(lst, list) or not lst:
            raise cu.error("expected a list of [rows, cols] tile shapes")
        shapes = []
        for i, t in enumerate(lst):
            if not isinstance(t, list) or len(t) != 2:
                raise cu.at(i).error(f"expected [rows, cols], got {t!r}")
            shapes.append((_int(t[0], cu.at(i)), _int(t[1], cu.at(i))))
        out[str(unit)] = tuple(shapes)
    return out


_MEMORY = {"name": _str, "capacity": _q("size"), "bandwidth": _q("bandwidth"),
           "efficiency": _ratio, "latency": _q("time"), "energy_per_byte": _q("energy_per_byte")}
_LINK = {"name": _str, "bandwidth": _q("bandwidth"), "efficiency": _ratio, "latency": _q("time"),
         "energy_per_byte": _q("energy_per_byte")}
_UNIT = {"name": _str, "matrix": _bool, "peak": _dtype_map(_q("compute")),
         "per_cycle": _dtype_map(_num), "per": _str,
         "efficiency": _dtype_map(_ratio, ("default",)), "sparse_2_4": _bool, "sparse_density": _ratio}
_POWER = {"idle": _q("power"), "tdp": _q("power"), "energy_per_flop": _dtype_map(_q("energy"))}

_ARCH: dict[str, dict[str, Callable[[Any, _Ctx], Any]]] = {
    "gpu": {"sms": _int, "clock": _q("frequency"), "tiles": _tiles, "split_k_min": _int,
            "sm_load_bytes_per_cycle": _num, "sfu_per_sm_per_cycle": _num,
            "tensor_cores_per_sm": _int},
    "tpu": {"cores": _int, "mxus": _int, "mxu_rows": _int, "mxu_cols": _int,
            "clock": _q("frequency"), "ici_links": _int, "vector_lanes": _int, "row_granule": _int},
    "asic": {"arrays": _int, "rows": _int, "cols": _int, "clock": _q("frequency"), "row_granule": _int},
    "cpu": {"sockets": _int, "cores": _int, "clock": _q("frequency"), "simd_bits": _int,
            "fma_units": _int, "threads_per_core": _int},
    "fpga": {"dsps": _int, "design_clock": _q("frequency"), "macs_per_dsp": _dtype_map(_num),
             "utilisation": _ratio, "luts": _int},
}
_ARCH_REQUIRED = {
    "gpu": ("sms", "clock"),
    "tpu": ("mxus", "mxu_rows", "mxu_cols", "clock"),
    "asic": ("arrays", "rows", "cols", "clock"),
    "cpu": ("cores", "clock"),
    "fpga": ("dsps", "design_clock", "macs_per_dsp", "utilisation"),
}
_DEVICE_KEYS = ("version", "name", "kind", "description", "launch", "memory", "units",
                "host_link", "device_link", "power", "arch")


def _read(m: Mapping[str, Any], key: str, reader: Callable[[Any, _Ctx], Any], ctx: _Ctx,
          default: Any = None) -> Any:
    if key not in m or m[key] is None:
        return default
    return reader(m[key], ctx.at(key))


def _memory(v: Any, ctx: _Ctx, scale: float) -> MemoryLevel:
    m = _mapping(v, ctx, _MEMORY, ("name", "capacity", "bandwidth"))
    name = _str(m["name"], ctx.at("name"))
    c = ctx
    bw = _read(m, "bandwidth", _MEMORY["bandwidth"], c)
    if bw <= 0:
        raise c.at("bandwidth").error("bandwidth must be > 0")
    return MemoryLevel(
        name=name,
        capacity_bytes=_read(m, "capacity", _MEMORY["capacity"], c) * scale,
        bandwidth_Bps=bw * scale,
        latency_s=_read(m, "latency", _MEMORY["latency"], c, 0.0),
        energy_per_byte_j=_read(m, "energy_per_byte", _MEMORY["energy_per_byte"], c, 0.0),
        efficiency=_read(m, "efficiency", _ratio, c, 1.0),
    )


def read_link(v: Any, ctx: _Ctx) -> LinkSpec:
    m = _mapping(v, ctx, _LINK, ("name", "bandwidth"))
    bw = _read(m, "bandwidth", _LINK["bandwidth"], ctx)
    if bw <= 0:
        raise ctx.at("bandwidth").error("bandwidth must be > 0")
    return LinkSpec(
        name=_str(m["name"], ctx.at("name")),
        bandwidth_Bps=bw,
        latency_s=_read(m, "latency", _LINK["latency"], ctx, 0.0),
        energy_per_byte_j=_read(m, "energy_per_byte", _LINK["energy_per_byte"], ctx, 0.0),
        efficiency=_read(m, "efficiency", _ratio, ctx, 1.0),
    )


def _unit(v: Any, ctx: _Ctx, kind: str, arch: dict[str, Any]) -> ComputeUnit:
    m = _mapping(v, ctx, _UNIT, ("name",))
    name = _str(m["name"], ctx.at("name"))
    peak: dict[str, float] = _read(m, "peak", _UNIT["peak"], ctx, {})
    eff: dict[str, float] = dict(_read(m, "efficiency", _UNIT["efficiency"], ctx, {}))
    if "per_cycle" in m:
        if peak:
            raise ctx.at("per_cycle").error("give either peak or per_cycle, not both")
        per_cycle = _read(m, "per_cycle", _UNIT["per_cycle"], ctx)
        count = 1.0
        for key in str(m.get("per", "")).split("*"):
            key = key.strip()
            if not key:
                continue
            if key not in arch:
                raise ctx.at("per").error(f"arch has no {key!r} to multiply by")
            count *= float(arch[key])
        clock = arch.get("clock", arch.get("design_clock"))
        if clock is None:
            raise ctx.at("per_cycle").error("per_cycle needs arch.clock")
        peak = {d: n * count * clock for d, n in per_cycle.items()}
    elif "per" in m:
        raise ctx.at("per").error("per is only meaningful with per_cycle")
    if kind == "fpga" and not peak:
        # DSP-limited: every DSP slice does macs_per_dsp multiply-adds (2 FLOP) per design clock.
        peak = {d: arch["dsps"] * n * 2.0 * arch["design_clock"] for d, n in arch["macs_per_dsp"].items()}
        eff.setdefault("default", arch["utilisation"])
    if not peak:
        raise ctx.at("peak").error("a compute unit needs peak rates (or per_cycle)")
    return ComputeUnit(
        name=name,
        matrix=_read(m, "matrix", _bool, ctx, False),
        peak_flops=peak,
        efficiency=eff,
        sparse_2_4=_read(m, "sparse_2_4", _bool, ctx, False),
        sparse_density=_read(m, "sparse_density", _ratio, ctx, 0.0),
    )


def _check_version(raw: Mapping[str, Any], ctx: _Ctx) -> None:
    if "version" not in raw:
        raise ctx.at("version").error(f"missing version (supported: {SUPPORTED_VERSIONS})")
    if raw["version"] not in SUPPORTED_VERSIONS:
        raise ctx.at("version").error(
            f"unsupported version {raw['version']!r} (supported: {SUPPORTED_VERSIONS})")


def build_device(raw: dict[str, Any], file: str, default_name: str = "") -> DeviceSpec:
    """Validate a device mapping (as read from YAML) and build its ``DeviceSpec``."""
    ctx = _Ctx(file)
    m = _mapping(raw, ctx, {k: None for k in _DEVICE_KEYS}, ("kind", "memory", "units"))
    _check_version(m, ctx)
    kind = m["kind"]
    if kind not in DEVICE_KINDS:
        raise ctx.at("kind").error(f"unknown device kind {kind!r} (known: {', '.join(DEVICE_KINDS)})")
    arch_ctx = ctx.at("arch")
    arch_raw = _mapping(m.get("arch") or {}, arch_ctx, _ARCH[kind], _ARCH_REQUIRED[kind])
    arch = {k: _ARCH[kind][k](v, arch_ctx.at(k)) for k, v in arch_raw.items()}
    if kind == "cpu":
        arch.setdefault("sockets", 1)
    scale = float(arch.get("sockets", 1)) if kind == "cpu" else 1.0  # CPU memory is per socket

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
        units.append(_unit(u, units_ctx.at(name), kind, arch))

    power_raw = _mapping(m.get("power") or {}, ctx.at("power"), _POWER)
    power = PowerSpec(
        idle_w=_read(power_raw, "idle", _POWER["idle"], ctx.at("power"), 0.0),
        tdp_w=_read(power_raw, "tdp", _POWER["tdp"], ctx.at("power"), 0.0),
        energy_per_flop_j=_read(power_raw, "energy_per_flop", _POWER["energy_per_flop"], ctx.at("power"), {}),
    )
    return DeviceSpec(
        name=str(m.get("name") or default_name),
        kind=kind,
        units=tuple(units),
        memory=tuple(memory),
        launch_s=_read(m, "launch", _q("time"), ctx, 0.0),
        host_link=_read(m, "host_link", read_link, ctx),
        device_link=_read(m, "device_link", read_link, ctx),
        power=power,
        arch=arch,
        source=file,
        description=str(m.get("description") or ""),
        raw=copy.deepcopy(raw),
    )


# ----------------------------------------------------------------------------- systems
_SYSTEM_KEYS = ("version", "name", "kind", "description", "devices", "host", "host_link", "switch",
                "topology", "links")
_GROUP_KEYS = ("spec", "count", "set")
_HOST_KEYS = ("name", "spec", "set")
_TOPOLOGY_KEYS = ("kind", "shape", "link", "group")


def _group_spec(g: Mapping[str, Any], ctx: _Ctx) -> DeviceSpec:
    overrides = _mapping(g.get("set") or {}, ctx.at("set"))
    name = _str(g["spec"], ctx.at("spec"))
    if name.endswith((".yaml", ".yml")) and not Path(name).is_absolute():
        for base in (Path(ctx.file).parent, SPEC_DIR.parent / Path(ctx.file).parent):
            if (base / name).exists():  # a device file beside the system file
                name = str(base / name)
                break
    try:
        spec = load_hardware(name)
    except SpecError as e:
        if e.where == name:  # not found: say which system field named it
            raise ctx.at("spec").error(e.message) from None
        raise
    if not isinstance(spec, DeviceSpec):
        raise ctx.at("spec").error(f"{g['spec']!r} is a system, expected a device")
    if overrides:
        changed = override(spec, overrides)
        assert isinstance(changed, DeviceSpec)
        return changed
    return spec


def build_system(raw: dict[str, Any], file: str, default_name: str = "") -> SystemSpec:
    """Validate a system mapping and build its ``SystemSpec`` (device specs loaded by name)."""
    ctx = _Ctx(file)
    m = _mapping(raw, ctx, {k: None for k in _SYSTEM_KEYS}, ("devices",))
    _check_version(m, ctx)
    devices: dict[str, DeviceSpec] = {}
    groups: dict[str, list[str]] = {}
    dctx = ctx.at("devices")
    for gname, g in _mapping(m["devices"], dctx).items():
        gctx = dctx.at(gname)
        g = _mapping(g, gctx, {k: None for k in _GROUP_KEYS}, ("spec",))
        spec = _group_spec(g, gctx)
        count = _read(g, "count", _int, gctx, 1)
        groups[gname] = [f"{gname}{i}" for i in range(count)]
        for inst in groups[gname]:
            devices[inst] = spec
    host = None
    links: list[tuple[str, str, LinkSpec]] = []
    if m.get("host") is not None:
        hctx = ctx.at("host")
        h = _mapping(m["host"], hctx, {k: None for k in _HOST_KEYS}, ("spec",))
        host = str(h.get("name") or "host")
        if host in devices:
            raise hctx.at("name").error(f"host name {host!r} repeats a device name")
        devices[host] = _group_spec(h, hctx)
        hl = _read(m, "host_link", read_link, ctx)
        for inst in [d for d in devices if d != host]:
            link = hl or devices[inst].host_link
            if link is None:
                raise ctx.at("host_link").error(f"no host link for {inst} (give system host_link)")
            links.append((host, inst, link))
    elif m.get("host_link") is not None:
        raise ctx.at("host_link").error("host_link given without a host")
    if m.get("topology") is not None:
        links += _topology(m["topology"], ctx.at("topology"), groups, devices)
    for i, lk in enumerate(m.get("links") or []):
        lctx = ctx.at("links").at(i)
        lk = _mapping(lk, lctx, {"a": None, "b": None, "link": None}, ("a", "b", "link"))
        for end in ("a", "b"):
            if lk[end] not in devices:
                raise lctx.at(end).error(f"unknown device {lk[end]!r} (known: {', '.join(devices)})")
        links.append((lk["a"], lk["b"], read_link(lk["link"], lctx.at("link"))))
    return SystemSpec(
        name=str(m.get("name") or default_name),
        devices=devices,
        host=host,
        links=tuple(links),
        switch=_read(m, "switch", read_link, ctx),
        source=file,
        description=str(m.get("description") or ""),
        raw=copy.deepcopy(raw),
    )


def _topology(v: Any, ctx: _Ctx, groups: dict[str, list[str]],
              devices: dict[str, DeviceSpec]) -> list[tuple[str, str, LinkSpec]]:
    """Links of a ring/mesh/torus over one device group, in row-major instance order."""
    t = _mapping(v, ctx, {k: None for k in _TOPOLOGY_KEYS}, ("kind", "shape"))
    kind = t["kind"]
    if kind not in ("torus", "mesh", "ring"):
        raise ctx.at("kind").error(f"unknown topology {kind!r} (known: torus, mesh, ring)")
    shape = t["shape"]
    if not isinstance(shape, list) or not shape:
        raise ctx.at("shape").error("expected a list of dimension sizes, e.g. [2, 2, 2]")
    dims = [_int(s, ctx.at("shape").at(i)) for i, s in enumerate(shape)]
    gname = t.get("group") or next(iter(groups))
    if gname not in groups:
        raise ctx.at("group").error(f"unknown device group {gname!r}")
    insts = groups[gname]
    if math.prod(dims) != len(insts):
        raise ctx.at("shape").error(
            f"shape {dims} holds {math.prod(dims)} devices, group {gname!r} has {len(insts)}")
    if t.get("link") is not None:
        link = read_link(t["link"], ctx.at("link"))
    else:
        dl = devices[insts[0]].device_link
        if dl is None:
            raise ctx.at("link").error("no link given and the device has no device_link")
        link = dl
    wrap = kind in ("torus", "ring")
    seen: set[tuple[str, str]] = set()
    out = []
    for idx in range(len(insts)):
        coord = []
        r = idx
        for d in reversed(dims):
            coord.append(r % d)
            r //= d
        coord.reverse()
        for axis, d in enumerate(dims):
            if d == 1:
                continue
            nxt = coord[axis] + 1
            if nxt >= d:
                if not wrap or d == 2:
                    continue
                nxt = 0
            c2 = list(coord)
            c2[axis] = nxt
            j = 0
            for a, dd in zip(c2, dims):
                j = j * dd + a
            key = (min(insts[idx], insts[j]), max(insts[idx], insts[j]))
            if key not in seen:
                seen.add(key)
                out.append((insts[idx], insts[j], link))
    return out


# ----------------------------------------------------------------------------- entry points
def _find(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = SPEC_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    if p.exists():
        return p
    known = ", ".join(list_hardware())
    raise SpecError(f"no hardware spec {name_or_path!r} (bundled: {known})", where=str(name_or_path))


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SPEC_DIR.parent))
    except ValueError:
        return str(path)


def build(raw: Any, file: str, default_name: str = "") -> Spec:
    """A ``DeviceSpec`` or ``SystemSpec`` from a mapping read from ``file``."""
    m = _mapping(raw, _Ctx(file))
    if m.get("kind") == "system":
        return build_system(m, file, default_name)
    return build_device(m, file, default_name)


def load_hardware(name_or_path: str, **overrides: Any) -> Spec:
    """Load a bundled spec by name (``"h100"``) or a YAML path, applying dotted overrides.

    >>> load_hardware("h100").kind                                    # doctest: +SKIP
    'gpu'
    """
    path = _find(name_or_path)
    file = _label(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise SpecError(f"not valid YAML: {str(e).splitlines()[0]}", where=f"{file}: {line}") from None
    spec = build(raw, file, path.stem)
    return override(spec, overrides) if overrides else spec


def list_hardware() -> list[str]:
    """Names of the bundled specs (``hwspecs/*.yaml``)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


# ----------------------------------------------------------------------------- overrides
def _set_path(raw: Any, path: str, value: Any, file: str) -> None:
    parts = path.split(".")
    node = raw
    where = f"{file}: {path}"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            named = [x for x in node if isinstance(x, dict) and str(x.get("name")) == part]
            if named:
                node = named[0]
                if last:
                    raise SpecError("cannot replace a whole entry; name one of its fields", where=where)
                continue
            if parts[i - 1] == "memory" and part in _MEMORY and node and isinstance(node[0], dict):
                node = node[0]  # "memory.bandwidth": the outermost level
            else:
                names = [str(x.get("name")) for x in node if isinstance(x, dict)]
                raise SpecError(f"no entry named {part!r} (known: {', '.join(names)})", where=where)
        if not isinstance(node, dict):
            raise SpecError(f"{'.'.join(parts[:i])!s} is not a mapping", where=where)
        if "spec" in node and part not in node and part not in _GROUP_KEYS + _HOST_KEYS:
            node.setdefault("set", {})[".".join(parts[i:])] = value  # into a system's device
            return
        if last:
            node[part] = value
            return
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]


def override(spec: Spec, changes: Mapping[str, Any]) -> Spec:
    """A new spec with dotted fields changed, e.g. ``{"memory.hbm.bandwidth": "6.7 TB/s"}``.

    Values use the YAML's units (strings with units; plain numbers for counts and ratios; a
    plain number for a field with units is taken as SI). An unknown path is a ``SpecError``.
    """
    if not spec.raw:
        raise SpecError("spec has no YAML source to override", where=spec.name)
    raw = copy.deepcopy(spec.raw)
    for path, value in changes.items():
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and _unit_kind(spec, path) is not None):
            value = f"{value!r} {_SI[_unit_kind(spec, path) or '']}"
        _set_path(raw, path, value, spec.source or spec.name)
    return build(raw, spec.source or spec.name, spec.name)


_SI = {"size": "B", "bandwidth": "B/s", "compute": "FLOP/s", "frequency": "Hz", "time": "s",
       "power": "W", "energy": "J", "energy_per_byte": "J/B", "": ""}
_FIELD_KIND = {"capacity": "size", "bandwidth": "bandwidth", "latency": "time", "energy_per_byte":
               "energy_per_byte", "launch": "time", "idle": "power", "tdp": "power", "clock": "frequency",
               "design_clock": "frequency"}


def _unit_kind(spec: Spec, path: str) -> str | None:
    parts = path.split(".")
    if len(parts) >= 2 and parts[-2] == "peak":
        return "compute"
    if len(parts) >= 2 and parts[-2] == "energy_per_flop":
        return "energy"
    return _FIELD_KIND.get(parts[-1])


# ----------------------------------------------------------------------------- describe
def describe(name_or_spec: str | Spec) -> str:
    """A human summary of a spec: units with peaks, memory levels, links, power."""
    spec = load_hardware(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    if isinstance(spec, SystemSpec):
        lines = [f"{spec.name}: system of {len(spec.devices)} devices"
                 + (f" ({spec.description})" if spec.description else "")]
        kinds: dict[str, list[str]] = {}
        for inst, d in spec.devices.items():
            kinds.setdefault(d.name, []).append(inst)
        for dname, insts in kinds.items():
            lines.append(f"  {dname}: {', '.join(insts)}")
        if spec.switch:
            bw = format_quantity(spec.switch.bandwidth_Bps, "bandwidth")
            lines.append(f"  switch {spec.switch.name}: {bw} per device per direction")
        names = sorted({lk.name for _, _, lk in spec.links})
        for n in names:
            sel = [(a, b, lk) for a, b, lk in spec.links if lk.name == n]
            lines.append(f"  {len(sel)} x {n} links: {format_quantity(sel[0][2].bandwidth_Bps, 'bandwidth')}")
        return "\n".join(lines)
    lines = [f"{spec.name} ({spec.kind})" + (f": {spec.description}" if spec.description else "")]
    for u in spec.units:
        rates = ", ".join(f"{d} {format_quantity(v, 'compute')}" for d, v in u.peak_flops.items())
        flags = (" [2:4 sparse]" if u.sparse_2_4 else "") + (
            f" [unstructured sparse at density <= {u.sparse_density:g}]" if u.sparse_density else "")
        lines.append(f"  unit {u.name}{' (matrix)' if u.matrix else ''}: {rates}{flags}")
    for lv in spec.memory:
        lines.append(f"  memory {lv.name}: {format_quantity(lv.capacity_bytes, 'size')}, "
                     f"{format_quantity(lv.bandwidth_Bps, 'bandwidth')}"
                     + (f" (x{lv.efficiency:g} achievable)" if lv.efficiency != 1.0 else ""))
    for label, link in (("host link", spec.host_link), ("device link", spec.device_link)):
        if link:
            lines.append(f"  {label} {link.name}: {format_quantity(link.bandwidth_Bps, 'bandwidth')}")
    lines.append(f"  launch floor {format_quantity(spec.launch_s, 'time')}; power idle "
                 f"{spec.power.idle_w:g} W, TDP {spec.power.tdp_w:g} W")
    return "\n".join(lines)
