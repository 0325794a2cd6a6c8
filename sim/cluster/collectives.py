"""Collectives on a cluster fabric, in closed form (alpha-beta), with NCCL-like algorithm choice.

A collective over a group of ``n`` ranks, ``k`` of them in each of ``g = n/k`` nodes, costs

* a latency term: steps x per-step latency (``alpha``: the NVLink/NVSwitch latency inside a
  node, the NIC link latency plus switch hops across nodes);
* a bandwidth term: bytes each rank moves / the bottleneck rate.

Rates (per direction, achievable = peak x efficiency):

* ``B_in``: one GPU's NVSwitch port (``SystemSpec.switch``) or device link;
* ``B_node``: the NICs a group can use in one node. With ``c`` groups of the same kind running
  at once through a node (the 8 TP ranks' DP all-reduces), each gets ``nics / c`` adapters,
  at most one per member: ``B_node = B_nic x min(k, nics / c)``. On a rail-optimised fat tree
  rank ``i`` of a node uses NIC ``i``; traffic that leaves a leaf switch (the group spans more
  nodes than a leaf reaches) shares the uplinks, so ``B_node`` is divided by the
  oversubscription.

Algorithms (``S`` bytes per rank; AllGather's ``S`` is the gathered output, ReduceScatter's
the full input):

=================  ===========================================================================
ring AllReduce     ``2(n-1) a + 2(n-1)/n S / min(B_in, B_node)``  (one node: ``B_node`` absent,
                   ``a`` the NVLink latency; across nodes every step waits for the network)
tree AllReduce     ``2(ceil(log2 g) a_net + (k-1) a_in) + 2 S / min(B_in, B_node)`` (NCCL's
                   double binary tree across nodes, a chain inside: Sanders et al. 2009)
hierarchical AR    reduce-scatter in the node, ``k`` parallel ring all-reduces of ``S/k``
                   across nodes (one per rail), all-gather in the node:
                   ``2(k-1) a_in + 2(k-1)/k S/B_in + 2(g-1) a_net + 2(g-1)/g S/B_node``
ring AG / RS       ``(n-1) a + (n-1)/n S / min(B_in, B_node)``
hierarchical AG/RS ``(k-1) a_in + (k-1)/k S/B_in + (g-1) a_net + (g-1)/g S/B_node``
all-to-all         ``a + max((k-1)/n S / B_in, (n-k)/n S k / B_node')``, ``B_node'`` the
                   node's NICs divided by the oversubscription once the group leaves a leaf
p2p                ``a + S / B`` over NVLink in a node, one NIC across nodes
=================  ===========================================================================

``algorithm="auto"`` picks the fastest applicable one for the size and group shape, as NCCL's
tuner does with its own cost model. On a torus (TPU pods) a group laid out along ``d`` axes
runs bidirectional rings on all of them at once: ``B = 2 d B_link``, per-step latency the
link's, and the ring formulas above with ``B`` in place of ``min(B_in, B_node)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.errors import SimError
from sim.hw.spec import ClusterSpec, SystemSpec

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")
ALGORITHMS = ("auto", "ring", "tree", "hierarchical")


@dataclass(frozen=True)
class Fabric:
    """The rates and latencies the collective model reads from a cluster (SI units)."""

    per_node: int
    nodes: int
    intra_Bps: float  # one GPU's achievable NVSwitch/NVLink rate, per direction
    intra_latency_s: float
    nic_Bps: float  # one NIC's achievable rate, per direction
    nics: int  # NICs per node
    net_latency_s: float  # one network step: NIC link latency + switch hops
    oversubscription: float = 1.0
    leaf_nodes: int = 0  # nodes one leaf switch reaches per rail (0: every node)
    torus: tuple[int, ...] = ()  # torus axes (chips), empty for a switched fabric

    @classmethod
    def of(cls, hw: Any) -> Fabric:
        """The fabric of a ``ClusterSpec`` (or of a single node ``SystemSpec``: one node)."""
        if isinstance(hw, ClusterSpec):
            node, nodes, f = hw.node, hw.nodes, hw.fabric
        elif isinstance(hw, SystemSpec):
            node, nodes, f = hw, 1, None
        else:
            raise SimError(f"cluster collectives need a cluster or system spec, got {type(hw).__name__}")
        per_node = len(node.accelerators)
        dev = node.devices[node.accelerators[0]]
        intra = node.switch or dev.device_link
        if f is not None and f.kind == "torus":
            link = f.link
            return cls(
                per_node,
                nodes,
                link.achievable_Bps,
                link.latency_s,
                link.achievable_Bps,
                per_node,
                link.latency_s,
                1.0,
                0,
                f.shape,
            )
        if intra is None:
            raise SimError(f"{node.name}: no NVSwitch or device link between accelerators", where=node.name)
        if f is None:
            nic, nics, lat, over, leaf = node.nic, node.nics, 0.0, 1.0, 0
            nic_Bps = nic.achievable_Bps if nic else 0.0
            lat = nic.latency_s if nic else 0.0
        else:
            nics = node.nics or per_node
            nic_Bps = f.link.achievable_Bps
            hops = _switch_hops(nodes * (1 if f.rail_optimized else nics), f.switch_radix)
            lat = f.link.latency_s + hops * f.switch_latency_s
            over = f.oversubscription
            leaf = f.switch_radix // 2 if f.switch_radix else 0  # a leaf's down ports
            if leaf and not f.rail_optimized:  # every NIC of a node on the same leaf
                leaf = max(1, leaf // nics)
        return cls(per_node, nodes, intra.achievable_Bps, intra.latency_s, nic_Bps, nics, lat, over, leaf)


def _switch_hops(endpoints: int, radix: int) -> int:
    """Switches a packet crosses on the longest path of a fat tree (``2L - 1`` for ``L`` levels)."""
    from sim.hw.system import fat_tree_levels

    return 2 * fat_tree_levels(endpoints, radix) - 1 if radix else 1


@dataclass(frozen=True)
class Group:
    """A communicator: ``size`` ranks, ``per_node`` of them in each node, ``concurrent`` groups
    of the same kind sharing each node's NICs at once; on a torus, ``axes`` it spans."""

    size: int
    per_node: int = 1
    concurrent: int = 1
    axes: int = 1

    @property
    def nodes(self) -> int:
        return max(1, self.size // max(1, self.per_node))


@dataclass(frozen=True)
class CollectiveTime:
    """One collective's time and how it was reached."""

    kind: str
    algorithm: str
    seconds: float
    latency_s: float  # the alpha part
    bytes: float  # S, bytes per rank the collective is of
    bus_Bps: float  # the bottleneck rate used

    @property
    def bus_bandwidth_Bps(self) -> float:
        """nccl-tests' bus bandwidth: ``algbw x factor`` (``2(n-1)/n`` all-reduce, ``(n-1)/n``
        all-gather / reduce-scatter); here from the time, so latency lowers it."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


def node_rate(fab: Fabric, grp: Group) -> float:
    """``B_node``: the NIC rate one group can use in one node (see the module docstring)."""
    share = fab.nics / max(1, grp.concurrent)
    rate = fab.nic_Bps * min(grp.per_node, share)
    if fab.leaf_nodes and grp.nodes > fab.leaf_nodes:
        rate /= fab.oversubscription
    return rate


def _rates(fab: Fabric, grp: Group) -> tuple[float, float, float]:
    """(bottleneck rate, per-step latency, intra-node rate) of a flat ring over ``grp``."""
    if fab.torus:
        return 2 * max(1, grp.axes) * fab.nic_Bps, fab.net_latency_s, fab.intra_Bps
    if grp.nodes <= 1:
        return fab.intra_Bps, fab.intra_latency_s, fab.intra_Bps
    return min(fab.intra_Bps, node_rate(fab, grp)), fab.net_latency_s, fab.intra_Bps


def _ring(kind: str, n: int, nbytes: float, rate: float, alpha: float) -> tuple[float, float]:
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    lat = steps * alpha
    return lat + steps / n * nbytes / rate, lat


def collective_time(
    kind: str, nbytes: float, fab: Fabric, grp: Group, algorithm: str = "auto"
) -> CollectiveTime:
    """Time of one collective of ``nbytes`` per rank over ``grp`` on ``fab``.

    >>> fab = Fabric(8, 1, 100e9, 1e-6, 0.0, 0, 0.0)
    >>> t = collective_time("all_reduce", 8e9, fab, Group(8, 8), "ring")
    >>> round(t.seconds, 9)   # 2*7 steps x 1 us + 2*7/8 x 8 GB / 100 GB/s
    0.140014
    """
    if kind not in KINDS:
        raise SimError(f"unknown collective {kind!r} (known: {', '.join(KINDS)})", where="collective")
    if algorithm not in ALGORITHMS:
        raise SimError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})", where="algorithm")
    n = grp.size
    if n <= 1 or nbytes <= 0:
        return CollectiveTime(kind, "none", 0.0, 0.0, float(nbytes), 0.0)
    rate, alpha, _ = _rates(fab, grp)
    if kind == "p2p":
        return CollectiveTime(kind, "p2p", alpha + nbytes / rate, alpha, nbytes, rate)
    if kind == "all_to_all":
        return _all_to_all(nbytes, fab, grp)
    options: dict[str, tuple[float, float]] = {}
    if algorithm in ("auto", "ring"):
        options["ring"] = _ring(kind, n, nbytes, rate, alpha)
    multi = grp.nodes > 1 and not fab.torus
    if kind == "all_reduce" and algorithm in ("auto", "tree") and multi:
        lat = 2 * (
            math.ceil(math.log2(grp.nodes)) * fab.net_latency_s + (grp.per_node - 1) * fab.intra_latency_s
        )
        options["tree"] = (lat + 2 * nbytes / rate, lat)
    if algorithm in ("auto", "hierarchical") and multi and grp.per_node > 1:
        options["hierarchical"] = _hierarchical(kind, nbytes, fab, grp)
    if not options:  # the asked algorithm does not apply (tree in one node): use the ring
        options["ring"] = _ring(kind, n, nbytes, rate, alpha)
    best = min(options, key=lambda a: (options[a][0], a))
    secs, lat = options[best]
    return CollectiveTime(kind, best, secs, lat, float(nbytes), rate)


def _hierarchical(kind: str, nbytes: float, fab: Fabric, grp: Group) -> tuple[float, float]:
    k, g = grp.per_node, grp.nodes
    b_node = node_rate(fab, grp)
    phases = 2 if kind == "all_reduce" else 1  # RS + AG in the node around the cross-node part
    lat = phases * (k - 1) * fab.intra_latency_s + phases * (g - 1) * fab.net_latency_s
    bw = phases * ((k - 1) / k * nbytes / fab.intra_Bps + (g - 1) / g * nbytes / b_node)
    return lat + bw, lat


def _all_to_all(nbytes: float, fab: Fabric, grp: Group) -> CollectiveTime:
    n, k = grp.size, max(1, grp.per_node)
    if fab.torus:
        rate = 2 * max(1, grp.axes) * fab.nic_Bps
        lat = fab.net_latency_s
        # bisection-bound: half the data crosses the middle of the longest axis
        secs = lat + (n - 1) / n * nbytes / rate
        return CollectiveTime("all_to_all", "pairwise", secs, lat, nbytes, rate)
    if grp.nodes <= 1:
        lat = fab.intra_latency_s
        return CollectiveTime(
            "all_to_all", "pairwise", lat + (n - 1) / n * nbytes / fab.intra_Bps, lat, nbytes, fab.intra_Bps
        )
    b_node = node_rate(fab, grp)
    lat = fab.net_latency_s
    t_in = (k - 1) / n * nbytes / fab.intra_Bps
    t_out = (n - k) / n * nbytes * k / b_node
    return CollectiveTime("all_to_all", "pairwise", lat + max(t_in, t_out), lat, nbytes, b_node / k)


def bus_bandwidth(kind: str, nbytes: float, fab: Fabric, grp: Group, algorithm: str = "auto") -> float:
    """nccl-tests' ``busbw`` of one collective: ``S / t x 2(n-1)/n`` (all-reduce) or
    ``x (n-1)/n`` (all-gather, reduce-scatter) -- comparable across group sizes."""
    t = collective_time(kind, nbytes, fab, grp, algorithm)
    n = grp.size
    factor = 2 * (n - 1) / n if kind == "all_reduce" else (n - 1) / n
    return nbytes / t.seconds * factor if t.seconds > 0 else 0.0
