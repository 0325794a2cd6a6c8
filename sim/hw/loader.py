"""Hardware specs: YAML files with human units -> frozen ``DeviceSpec`` / ``SystemSpec``.

A device file (``kind: cpu | gpu | tpu | fpga | asic``) lists memory levels outermost first,
compute units with per-dtype dense peaks, links, power and a kind-specific ``arch`` block. A
system file (``kind: system``) names device specs and the links between them. Every key is
checked: an unknown key, a value of the wrong kind of unit or a negative number is a
``SpecError`` whose ``where`` is ``"<file>: <field.path>"``. See docs/hardware.md.

>>> from sim.hw import load_hardware
>>> load_hardware("h100").kind
'gpu'
>>> load_hardware("h100", **{"memory.hbm.bandwidth": "6.7 TB/s"}).main_memory.bandwidth_Bps
6700000000000.0
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sim.errors import SpecError
from sim.hw.arch import ARCH_CLASSES
from sim.hw.schema import MEMORY_FIELDS, Ctx, build_device, mapping
from sim.hw.spec import ClusterSpec, DeviceSpec, SystemSpec
from sim.hw.system import GROUP_KEYS, HOST_KEYS, SPEC_DIR, build_cluster, build_system
from sim.hw.units import format_quantity
from sim.io import read_text, safe_load

Spec = DeviceSpec | SystemSpec | ClusterSpec


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


def spec_file(name_or_path: str) -> str:
    """The YAML file ``load_hardware(name_or_path)`` reads (SpecError if there is none)."""
    return str(_find(str(name_or_path)))


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SPEC_DIR.parent))
    except ValueError:
        return str(path)


def build(raw: Any, file: str, default_name: str = "") -> Spec:
    """A ``DeviceSpec`` or ``SystemSpec`` from a mapping read from ``file``."""
    m = mapping(raw, Ctx(file))
    if m.get("kind") == "system":
        return build_system(m, file, default_name)
    if m.get("kind") == "cluster":
        return build_cluster(m, file, default_name)
    return build_device(m, file, default_name)


def load_hardware(name_or_path: str, **overrides: Any) -> Spec:
    """Load a bundled spec by name (``"h100"``) or a YAML path, applying dotted overrides.

    >>> load_hardware("h100").main_memory.bandwidth_Bps
    3350000000000.0
    """
    path = _find(str(name_or_path))
    file = _label(path)
    key = str(path.resolve())
    if key in _LOADING:
        raise SpecError(f"the spec names itself as a device, through "
                        f"{' -> '.join(Path(k).name for k in [*_LOADING[_LOADING.index(key):], key])}",
                        where=file)
    text = read_text(path, error=SpecError)
    try:
        raw = safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"not valid YAML: {problem}", where=f"{file}: {line}") from None
    _LOADING.append(key)
    try:
        spec = build(raw, file, path.stem)
    finally:
        _LOADING.pop()
    return override(spec, overrides) if overrides else spec


_LOADING: list[str] = []  # resolved paths of the specs being built (a system loads its devices)


def list_hardware() -> list[str]:
    """Names of the bundled specs (``hwspecs/*.yaml``)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


# ----------------------------------------------------------------------------- overrides
def _at(label: str, path: str) -> str:
    """Where an override is named: ``--hw-set memory.hbm.bandwidth`` or a spec field."""
    return f"{label} {path}" if label.startswith("--") else f"{label}.{path}"


def _set_path(raw: Any, path: str, value: Any, label: str) -> None:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise SpecError("expected a dotted field path such as memory.hbm.bandwidth", where=_at(label, path))
    node = raw
    where = _at(label, path)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            named = [x for x in node if isinstance(x, dict) and str(x.get("name")) == part]
            if named:
                node = named[0]
                if last:
                    raise SpecError("cannot replace a whole entry; name one of its fields", where=where)
                continue
            if parts[i - 1] == "memory" and part in MEMORY_FIELDS and node and isinstance(node[0], dict):
                node = node[0]  # "memory.bandwidth": the outermost level
            else:
                names = [str(x.get("name")) for x in node if isinstance(x, dict)]
                raise SpecError(f"no entry named {part!r} (known: {', '.join(names)})", where=where)
        if not isinstance(node, dict):
            raise SpecError(f"{'.'.join(parts[:i])!s} is not a mapping", where=where)
        if "spec" in node and part not in node and part not in GROUP_KEYS + HOST_KEYS:
            node.setdefault("set", {})[".".join(parts[i:])] = value  # into a system's device
            return
        if last:
            node[part] = value
            return
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]


def override(spec: Spec, changes: Mapping[str, Any], label: str = "--hw-set") -> Spec:
    """A new spec with dotted fields changed, e.g. ``{"memory.hbm.bandwidth": "6.7 TB/s"}``.

    Values use the YAML's units (strings with units; plain numbers for counts and ratios; a
    plain number for a field with units is taken as SI). An unknown path or a bad value is a
    ``SpecError`` naming ``label`` (the option or field that gave the change) and the path,
    not the spec file the change was applied to.
    """
    if not spec.raw:
        raise SpecError("spec has no YAML source to override", where=spec.name)
    raw = copy.deepcopy(spec.raw)
    if isinstance(spec, ClusterSpec):
        return _override_cluster(spec, raw, changes)
    for path, value in changes.items():
        path = str(path)
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and _unit_kind(spec, path) is not None):
            value = f"{value!r} {_SI[_unit_kind(spec, path) or '']}"
        _set_path(raw, path, value, label)
    file = spec.source or spec.name
    try:
        return build(raw, file, spec.name)
    except SpecError as err:
        field = (err.where or "")[len(file) + 2:] if (err.where or "").startswith(f"{file}: ") else ""
        # a change to a system's device went into that group's ``set``: match it without
        fields = {field, field.replace(".set.", ".")} if field else set()
        for path in changes:
            path = str(path)
            if any(f == path or f.startswith(f"{path}.") or path.startswith(f"{f}.") for f in fields):
                raise SpecError(err.message, where=_at(label, path)) from None
        raise


_CLUSTER_FIELDS = ("nodes", "fabric", "name", "description")


def _override_cluster(spec: ClusterSpec, raw: dict[str, Any], changes: Mapping[str, Any]) -> Spec:
    """A cluster's own fields (``nodes``, ``fabric.*``) change in its YAML; any other path is a
    field of its node system (``switch.bandwidth``, ``devices.gpu.memory.hbm.bandwidth``)."""
    node_sets: dict[str, Any] = {}
    for path, value in changes.items():
        head = path.split(".")[0]
        if head in _CLUSTER_FIELDS:
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and _unit_kind(spec, path) is not None):
                value = f"{value!r} {_SI[_unit_kind(spec, path) or '']}"
            _set_path(raw, path, value, spec.source or spec.name)
        else:
            node_sets[path[5:] if head == "node" else path] = value
    if node_sets:
        node = raw.get("node")
        if isinstance(node, str):
            raw["node"] = {"spec": node, "set": node_sets}
        elif isinstance(node, dict):
            node.setdefault("set", {}).update(node_sets)
    return build(raw, spec.source or spec.name, spec.name)


_SI = {"size": "B", "bandwidth": "B/s", "compute": "FLOP/s", "frequency": "Hz", "time": "s",
       "power": "W", "energy": "J", "energy_per_byte": "J/B", "": ""}
_FIELD_KIND = {"capacity": "size", "bandwidth": "bandwidth", "latency": "time", "energy_per_byte":
               "energy_per_byte", "launch": "time", "idle": "power", "tdp": "power"}
# arch fields with units (clock, design_clock, host_dispatch...), from their declared readers
_FIELD_KIND.update({f.name: f.metadata["reader"] for cls in ARCH_CLASSES.values() for f in cls.spec_fields()
                    if f.metadata["reader"] in ("frequency", "time")})


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
    if isinstance(spec, ClusterSpec):
        from sim.hw.system import describe_cluster

        return describe_cluster(spec)
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
        if spec.nic is not None:
            lines.append(f"  {spec.nics} x {spec.nic.name} NICs: "
                         f"{format_quantity(spec.nic.bandwidth_Bps, 'bandwidth')} each per direction")
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
