"""Cluster-scale training: 3-D parallel layouts, collectives on a fabric, a pipeline schedule.

>>> from sim.cluster import parse_layout
>>> parse_layout("tp=8,pp=8,dp=24,mbs=1").gpus
1536
"""

from sim.cluster.collectives import Fabric, Group, collective_time
from sim.cluster.layout import Layout, parse_layout
from sim.cluster.report import ClusterResult
from sim.cluster.training import check_training, estimate_memory, simulate_training

__all__ = [
    "ClusterResult",
    "Fabric",
    "Group",
    "Layout",
    "check_training",
    "collective_time",
    "estimate_memory",
    "parse_layout",
    "simulate_training",
]
