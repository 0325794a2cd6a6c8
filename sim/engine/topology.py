"""Hardware as the engine sees it: a system of named devices, op placement, transfer routes.

A single ``DeviceSpec`` becomes a system of one device named ``<kind>0`` (``gpu0``). Graph
inputs start on the host: the system's ``host`` device when it models one, otherwise an
unmodelled host (``"host"``) reached over each device's ``host_link``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from sim.errors import SpecError
from sim.graph import Node
from sim.hw.spec import DeviceSpec, LinkSpec, SystemSpec

HOST = "host"  # the unmodelled host, source of graph inputs when a system has no host device

# A hop: the resource key that serialises transfers on it, and the link it runs over.
Hop = tuple[tuple[str, ...], LinkSpec]


def as_system(hw: Any) -> SystemSpec:
    """A ``SystemSpec`` from a system, a device, or a name/path for ``sim.hw.load_hardware``."""
    if isinstance(hw, (str, os.PathLike)):
        from sim.hw import load_hardware

        hw = load_hardware(os.fspath(hw))
    if isinstance(hw, SystemSpec):
        if not hw.devices:
            raise SpecError("system has no devices", where=hw.source or hw.name)
        return hw
    if isinstance(hw, DeviceSpec):
        return SystemSpec(hw.name, {f"{hw.kind}0": hw}, source=hw.source)
    raise SpecError(f"expected a DeviceSpec, SystemSpec or hardware name, got {type(hw).__name__}")


def default_device(system: SystemSpec) -> str:
    """Where unplaced ops run: the first non-CPU accelerator, else the first device."""
    acc = system.accelerators
    for d in acc:
        if system.devices[d].kind != "cpu":
            return d
    return acc[0] if acc else next(iter(system.devices))


def place(nodes: list[Node], system: SystemSpec, placement: Mapping[str, str] | None) -> list[str]:
    """The device instance of each node.

    A node goes to ``node.meta["device"]`` if set, else to the first ``placement`` entry whose
    key equals or fnmatch-matches the node name or its layer (``node.meta["layer"]``), else to
    the default device.
    """
    rules = list((placement or {}).items())
    for _, target in rules:
        if target not in system.devices:
            raise SpecError(
                f"unknown device {target!r} (devices: {', '.join(system.devices)})", where="placement"
            )
    default = default_device(system)
    out = []
    for node in nodes:
        dev: str | None = node.meta.get("device")
        if dev is None:
            layer = node.meta.get("layer") or ""
            dev = default
            for pat, target in rules:
                if (pat == node.name or pat == layer or fnmatchcase(node.name, pat)
                        or (layer and fnmatchcase(layer, pat))):
                    dev = target
                    break
        elif dev not in system.devices:
            raise SpecError(f"unknown device {dev!r}", where=f"node {node.name!r} meta.device")
        out.append(str(dev))
    return out


class Router:
    """Routes between devices, as lists of hops over the system's links."""

    def __init__(self, system: SystemSpec) -> None:
        self.system = system
        self.links: dict[tuple[str, str], LinkSpec] = {}
        for a, b, link in system.links:
            self.links.setdefault((a, b), link)
            self.links.setdefault((b, a), link)
        self._cache: dict[tuple[str, str], list[Hop]] = {}

    def _host_link(self, dev: str) -> LinkSpec | None:
        return self.system.devices[dev].host_link

    def route(self, src: str, dst: str) -> list[Hop]:
        """Hops from ``src`` to ``dst`` (device instance names, or ``HOST``).

        Order of preference: a direct link in ``system.links``; the device's host link when
        one end is the host; the system's switch; the devices' own ``device_link``; through
        the host over both host links. Each direction of each link is its own resource.
        """
        key = (src, dst)
        if key not in self._cache:
            self._cache[key] = self._route(src, dst)
        return self._cache[key]

    def _route(self, src: str, dst: str) -> list[Hop]:
        host = self.system.host
        if (src, dst) in self.links:
            return [(("link", src, dst), self.links[(src, dst)])]
        if src in (HOST, host) and dst not in (HOST, host):
            link = self._host_link(dst)
            if link is not None:
                return [(("h2d", dst), link)]
        if dst in (HOST, host) and src not in (HOST, host):
            link = self._host_link(src)
            if link is not None:
                return [(("d2h", src), link)]
        if src not in (HOST, host) and dst not in (HOST, host):
            if self.system.switch is not None:
                return [(("switch", src), self.system.switch)]
            la = self.system.devices[src].device_link
            if la is not None and self.system.devices[dst].device_link is not None:
                return [(("dlink", src, dst), la)]
            ha, hb = self._host_link(src), self._host_link(dst)
            if ha is not None and hb is not None:
                return [(("d2h", src), ha), (("h2d", dst), hb)]
        raise SpecError(f"no link from {src} to {dst}", where=self.system.source or self.system.name)
