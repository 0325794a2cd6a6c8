"""System specs: device groups, a host, host links, a switch and ring/mesh/torus topologies."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.errors import SpecError
from sim.hw.schema import Ctx, check_version, mapping, read, read_int, read_link, read_str
from sim.hw.spec import DeviceSpec, LinkSpec, SystemSpec
from sim.limits import check

SPEC_DIR = Path(__file__).resolve().parents[2] / "hwspecs"

_SYSTEM_KEYS = ("version", "name", "kind", "description", "devices", "host", "host_link", "switch",
                "topology", "links")
GROUP_KEYS = ("spec", "count", "set")
HOST_KEYS = ("name", "spec", "set")
_TOPOLOGY_KEYS = ("kind", "shape", "link", "group")


def _group_spec(g: Mapping[str, Any], ctx: Ctx) -> DeviceSpec:
    overrides = mapping(g.get("set") or {}, ctx.at("set"))
    name = read_str(g["spec"], ctx.at("spec"))
    if name.endswith((".yaml", ".yml")) and not Path(name).is_absolute():
        for base in (Path(ctx.file).parent, SPEC_DIR.parent / Path(ctx.file).parent):
            if (base / name).exists():  # a device file beside the system file
                name = str(base / name)
                break
    from sim.hw.loader import load_hardware, override

    try:
        spec = load_hardware(name)
    except SpecError as e:
        if e.where == name:  # not found: say which system field named it
            raise ctx.at("spec").error(e.message) from None
        raise
    if not isinstance(spec, DeviceSpec):
        raise ctx.at("spec").error(f"{g['spec']!r} is a system, expected a device")
    if overrides:
        changed = override(spec, overrides, label=ctx.at("set").where)
        assert isinstance(changed, DeviceSpec)
        return changed
    return spec


def build_system(raw: dict[str, Any], file: str, default_name: str = "") -> SystemSpec:
    """Validate a system mapping and build its ``SystemSpec`` (device specs loaded by name)."""
    ctx = Ctx(file)
    m = mapping(raw, ctx, {k: None for k in _SYSTEM_KEYS}, ("devices",))
    check_version(m, ctx)
    devices: dict[str, DeviceSpec] = {}
    groups: dict[str, list[str]] = {}
    dctx = ctx.at("devices")
    for gname, g in mapping(m["devices"], dctx).items():
        gctx = dctx.at(gname)
        g = mapping(g, gctx, {k: None for k in GROUP_KEYS}, ("spec",))
        spec = _group_spec(g, gctx)
        count = read(g, "count", read_int, gctx, 1)
        check("devices", len(devices) + count, "devices in the system", gctx.at("count").where, SpecError)
        groups[gname] = [f"{gname}{i}" for i in range(count)]
        for inst in groups[gname]:
            devices[inst] = spec
    host = None
    links: list[tuple[str, str, LinkSpec]] = []
    if m.get("host") is not None:
        hctx = ctx.at("host")
        h = mapping(m["host"], hctx, {k: None for k in HOST_KEYS}, ("spec",))
        host = str(h.get("name") or "host")
        if host in devices:
            raise hctx.at("name").error(f"host name {host!r} repeats a device name")
        devices[host] = _group_spec(h, hctx)
        hl = read(m, "host_link", read_link, ctx)
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
        lk = mapping(lk, lctx, {"a": None, "b": None, "link": None}, ("a", "b", "link"))
        for end in ("a", "b"):
            if lk[end] not in devices:
                raise lctx.at(end).error(f"unknown device {lk[end]!r} (known: {', '.join(devices)})")
        links.append((lk["a"], lk["b"], read_link(lk["link"], lctx.at("link"))))
    return SystemSpec(
        name=read(m, "name", read_str, ctx, default_name),
        devices=devices,
        host=host,
        links=tuple(links),
        switch=read(m, "switch", read_link, ctx),
        source=file,
        description=read(m, "description", read_str, ctx, ""),
        raw=copy.deepcopy(raw),
    )


def _topology(v: Any, ctx: Ctx, groups: dict[str, list[str]],
              devices: dict[str, DeviceSpec]) -> list[tuple[str, str, LinkSpec]]:
    """Links of a ring/mesh/torus over one device group, in row-major instance order."""
    t = mapping(v, ctx, {k: None for k in _TOPOLOGY_KEYS}, ("kind", "shape"))
    kind = t["kind"]
    if kind not in ("torus", "mesh", "ring"):
        raise ctx.at("kind").error(f"unknown topology {kind!r} (known: torus, mesh, ring)")
    shape = t["shape"]
    if not isinstance(shape, list) or not shape:
        raise ctx.at("shape").error("expected a list of dimension sizes, e.g. [2, 2, 2]")
    dims = [read_int(s, ctx.at("shape").at(i)) for i, s in enumerate(shape)]
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
