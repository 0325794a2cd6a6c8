"""System specs: device groups, a host, host links, a switch and ring/mesh/torus topologies."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.errors import SpecError
from sim.hw.schema import Ctx, _fraction, _pos_q, check_version, mapping, read, read_int, read_link, read_str
from sim.hw.spec import ClusterSpec, DeviceSpec, FabricSpec, LinkSpec, SystemSpec, attention_kernel
from sim.hw.units import parse_number, parse_quantity
from sim.limits import check

SPEC_DIR = Path(__file__).resolve().parents[2] / "hwspecs"

_SYSTEM_KEYS = ("version", "name", "kind", "description", "devices", "host", "host_link", "switch",
                "topology", "links", "nics")
_CLUSTER_KEYS = ("version", "name", "kind", "description", "node", "nodes", "fabric")
_FABRIC_KEYS = ("kind", "link", "transport", "transports", "oversubscription", "rail_optimized",
                "switch_radix", "switch_latency", "shape")
_TRANSPORT_KEYS = ("bandwidth", "efficiency", "latency", "energy_per_byte", "note")
FABRIC_KINDS = ("fat-tree", "torus")
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
    nics, nic = 0, None
    if m.get("nics") is not None:
        nctx = ctx.at("nics")
        nm = mapping(m["nics"], nctx, {"count": None, "link": None}, ("count", "link"))
        nics = read_int(nm["count"], nctx.at("count"))
        nic = read_link(nm["link"], nctx.at("link"))
    return SystemSpec(
        name=read(m, "name", read_str, ctx, default_name),
        devices=devices,
        host=host,
        links=tuple(links),
        switch=read(m, "switch", read_link, ctx),
        nics=nics,
        nic=nic,
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


# ----------------------------------------------------------------------------- clusters
def build_cluster(raw: dict[str, Any], file: str, default_name: str = "") -> ClusterSpec:
    """Validate a cluster mapping (``kind: cluster``): a node system, a node count, a fabric."""
    ctx = Ctx(file)
    m = mapping(raw, ctx, {k: None for k in _CLUSTER_KEYS}, ("node", "nodes", "fabric"))
    check_version(m, ctx)
    node = _node_system(m["node"], ctx.at("node"))
    nodes = read_int(m["nodes"], ctx.at("nodes"))
    fabric = _fabric(m["fabric"], ctx.at("fabric"), node, nodes)
    return ClusterSpec(name=str(m.get("name") or default_name), node=node, nodes=nodes, fabric=fabric,
                       source=file, description=str(m.get("description") or ""), raw=copy.deepcopy(raw))


def _node_system(v: Any, ctx: Ctx) -> SystemSpec:
    """The node: a system spec by name (``dgx-a100``), or ``{spec: DEVICE, count: N}``."""
    from sim.hw.loader import load_hardware

    if isinstance(v, dict) and "set" in v and isinstance(v.get("spec"), str):
        try:
            inner = load_hardware(v["spec"])
        except SpecError as e:
            if e.where == v["spec"]:
                raise ctx.at("spec").error(e.message) from None
            raise
        if isinstance(inner, SystemSpec):  # a system node with overrides of its own fields
            from sim.hw.loader import override

            changed = override(inner, mapping(v["set"] or {}, ctx.at("set")))
            assert isinstance(changed, SystemSpec)
            return changed
    if isinstance(v, str):
        try:
            spec = load_hardware(v)
        except SpecError as e:
            if e.where == v:
                raise ctx.error(e.message) from None
            raise
        if not isinstance(spec, SystemSpec):
            raise ctx.error(f"{v!r} is not a system spec (a node is a system, or {{spec: DEVICE, count: N}})")
        return spec
    g = mapping(v, ctx, {k: None for k in GROUP_KEYS}, ("spec",))
    dev = _group_spec(g, ctx)
    count = read(g, "count", read_int, ctx, 1)
    return SystemSpec(f"{dev.name}x{count}", {f"{dev.kind}{i}": dev for i in range(count)}, source=ctx.file)


def _fabric(v: Any, ctx: Ctx, node: SystemSpec, nodes: int) -> FabricSpec:
    f = mapping(v, ctx, {k: None for k in _FABRIC_KEYS}, ("kind",))
    kind = read_str(f["kind"], ctx.at("kind"))
    if kind not in FABRIC_KINDS:
        raise ctx.at("kind").error(f"unknown fabric {kind!r} (known: {', '.join(FABRIC_KINDS)})")
    if f.get("link") is not None:
        base = read_link(f["link"], ctx.at("link"))
    elif node.nic is not None:
        base = node.nic
    else:
        raise ctx.at("link").error("no link given and the node has no nics")
    transport = str(f.get("transport") or "infiniband")
    table = mapping(f.get("transports") or {}, ctx.at("transports"))
    if table and transport not in table:
        raise ctx.at("transport").error(f"unknown transport {transport!r} (known: {', '.join(table)})")
    link = _transport_link(base, table.get(transport), ctx.at("transports").at(transport), transport)
    shape: tuple[int, ...] = ()
    if kind == "torus":
        raw_shape = f.get("shape")
        if not isinstance(raw_shape, list) or not raw_shape:
            raise ctx.at("shape").error("a torus needs shape: a list of axis sizes, e.g. [16, 16, 16]")
        shape = tuple(read_int(s, ctx.at("shape").at(i)) for i, s in enumerate(raw_shape))
        chips = nodes * len(node.accelerators)
        if math.prod(shape) != chips:
            raise ctx.at("shape").error(
                f"shape {list(shape)} holds {math.prod(shape)} chips, nodes x chips per node is {chips}")
    over = float(parse_number(f.get("oversubscription", 1), where=ctx.at("oversubscription").where))
    if over < 1:
        raise ctx.at("oversubscription").error(f"expected a ratio >= 1 (1: non-blocking), got {over:g}")
    rail = f.get("rail_optimized", True)
    if not isinstance(rail, bool):
        raise ctx.at("rail_optimized").error(f"expected true or false, got {rail!r}")
    radix = read(f, "switch_radix", read_int, ctx, 0) if f.get("switch_radix") is not None else 0
    sw_lat = (parse_quantity(f["switch_latency"], "time", where=ctx.at("switch_latency").where)
              if f.get("switch_latency") is not None else 0.0)
    return FabricSpec(kind=kind, link=link, transport=transport, oversubscription=over,
                      rail_optimized=rail, switch_radix=radix, switch_latency_s=sw_lat, shape=shape)


def _transport_link(base: LinkSpec, t: Any, ctx: Ctx, name: str) -> LinkSpec:
    """``base`` with a transport's bandwidth, efficiency and latency (those it gives)."""
    if t is None:
        return base
    t = mapping(t, ctx, {k: None for k in _TRANSPORT_KEYS})
    bw = _pos_q("bandwidth")(t["bandwidth"], ctx.at("bandwidth")) \
        if t.get("bandwidth") is not None else base.bandwidth_Bps
    eff = _fraction(t["efficiency"], ctx.at("efficiency")) \
        if t.get("efficiency") is not None else base.efficiency
    lat = parse_quantity(t["latency"], "time", where=ctx.at("latency").where) \
        if t.get("latency") is not None else base.latency_s
    epb = parse_quantity(t["energy_per_byte"], "energy_per_byte", where=ctx.at("energy_per_byte").where) \
        if t.get("energy_per_byte") is not None else base.energy_per_byte_j
    return LinkSpec(f"{base.name}/{name}", bw, lat, epb, eff)


def fat_tree_levels(endpoints: int, radix: int) -> int:
    """Switch levels of a non-blocking folded-Clos (fat tree) of ``radix``-port switches that
    reaches ``endpoints`` ports: 1 if ``E <= R``, 2 if ``E <= R^2/2``, 3 if ``E <= R^3/4`` ...

    >>> fat_tree_levels(8, 40), fat_tree_levels(800, 40), fat_tree_levels(1536, 40)
    (1, 2, 3)
    """
    if radix < 2 or endpoints <= 1:
        return 1
    levels, reach = 1, radix
    while reach < endpoints:
        levels += 1
        reach = radix * (radix // 2) ** (levels - 1)
    return levels


def bisection_Bps(spec: ClusterSpec) -> float:
    """Bisection bandwidth of the scale-out fabric, per direction (peak link rates).

    Fat tree: half the nodes' NICs, divided by the leaf oversubscription. Torus: cutting the
    longest axis in two crosses ``2 x (chips / longest axis)`` links (wrap-around doubles it).
    """
    f = spec.fabric
    if f.kind == "torus":
        longest = max(f.shape)
        if longest < 2:
            return 0.0
        links = (2 if longest > 2 else 1) * math.prod(f.shape) // longest
        return links * f.link.bandwidth_Bps
    nics = spec.node.nics or spec.per_node
    return (spec.nodes // 2) * nics * f.link.bandwidth_Bps / f.oversubscription


def describe_cluster(spec: ClusterSpec) -> str:
    """Nodes, accelerators, links per level and bisection bandwidth of a cluster."""
    from sim.hw.units import format_quantity as fq

    f = spec.fabric
    node = spec.node
    desc = f" ({spec.description})" if spec.description else ""
    lines = [f"{spec.name}: cluster of {spec.nodes} nodes x {spec.per_node} {spec.device.name} = "
             f"{spec.accelerator_count} accelerators{desc}"]
    kernel = attention_kernel(spec)
    if kernel:
        lines.append(f"  attention kernel: {kernel}" + (
            " (scores materialised; workloads with attention: auto build the unfused core)"
            if kernel == "materialized" else ""))
    if node.switch is not None:
        lines.append(f"  in a node ({node.name}): {node.switch.name} switch, "
                     f"{fq(node.switch.bandwidth_Bps, 'bandwidth')} per GPU per direction "
                     f"(x{node.switch.efficiency:g} achievable), latency "
                     f"{fq(node.switch.latency_s, 'time')}")
    elif node.links:
        lk = node.links[0][2]
        lines.append(f"  in a node: {len(node.links)} x {lk.name} links, {fq(lk.bandwidth_Bps, 'bandwidth')}")
    if f.kind == "torus":
        lines.append(f"  fabric: 3-D torus {'x'.join(map(str, f.shape))} with wrap-around, {f.link.name} "
                     f"{fq(f.link.bandwidth_Bps, 'bandwidth')} per link per direction, "
                     f"{2 * sum(1 for s in f.shape if s > 1)} links per chip, "
                     f"latency {fq(f.link.latency_s, 'time')}")
    else:
        nics = node.nics or spec.per_node
        rails = f"{nics} rails (NIC i of every node on rail i)" if f.rail_optimized else "one shared tree"
        eps = spec.nodes * (1 if f.rail_optimized else nics)
        levels = fat_tree_levels(eps, f.switch_radix) if f.switch_radix else 0
        lines.append(f"  fabric: fat tree, {f.transport}, {nics} x {f.link.name} "
                     f"{fq(f.link.bandwidth_Bps, 'bandwidth')} per NIC per direction (x{f.link.efficiency:g}"
                     f" achievable), latency {fq(f.link.latency_s, 'time')}")
        tiers = f"{levels} switch level(s) of radix {f.switch_radix}; " if levels else ""
        lines.append(f"  {rails}; {tiers}"
                     + f"oversubscription {f.oversubscription:g}:1; {spec.nodes * nics} NIC links")
    lines.append(f"  bisection bandwidth: {fq(bisection_Bps(spec), 'bandwidth')} per direction")
    return "\n".join(lines)
