"""Names `vulture` (make lint) reports as unused that are used, each with the reason.

Read by vulture only (listed in pyproject's [tool.vulture] paths); never imported.
"""
# ruff: noqa: B018

from bench.validate_public import Ref
from sim.cost.fit import Errors, format_errors
from sim.cost.model import OpCost
from sim.exec.executor import ExecResult
from sim.graph.graph import Graph
from sim.hw.arch import CpuArch, FpgaArch, GpuArch, TpuArch

# Descriptive spec fields: checked and kept with the spec (docs/hardware.md marks them), read
# by no model yet.
GpuArch.tensor_cores_per_sm
TpuArch.ici_links
TpuArch.vector_lanes
CpuArch.threads_per_core
FpgaArch.luts

# Public result and graph API for users and notebooks (documented or plain data fields).
OpCost.vector_s  # docs/hardware.md lists it in OpCost's breakdown
ExecResult.total_s  # the executor's measured wall time, summed over ops
Graph.nx_graph  # the underlying networkx.DiGraph, for users' own graph analysis

# Provenance fields of a published measurement: printed by no code, read by people.
Ref.setting
Ref.quote

# sim.cost.fit's reporting API (per-kind error table); no caller in the tree yet.
format_errors
Errors.signed

# The serving model's facts read off its step graph (sim/serve/model.py): the KV-cache size
# per token sizes the paged cache; the context length is recorded from the workload's n_ctx
# with no reader yet.
from sim.serve.model import ModelInfo  # noqa: E402

ModelInfo.kv_bytes_per_token
ModelInfo.max_context

# The graph builder's one way to make a constant (sim/graph/rewrite.py); no caller in the tree
# yet.
from sim.graph.rewrite import GraphBuilder  # noqa: E402

GraphBuilder.constant

# Cluster results: fields and properties that callers and notebooks read off a result (bus
# bandwidth as nccl-tests prints it, engine and wall time of a run, graph sizes, backward
# FLOPs), and the layer-prefix helper of the stage model.
from sim.cluster.collectives import CollectiveTime  # noqa: E402
from sim.cluster.report import ClusterResult  # noqa: E402
from sim.cluster.stage import PartCost, StageModel, block_prefix  # noqa: E402

CollectiveTime.bus_Bps
CollectiveTime.bus_bandwidth_Bps
ClusterResult.engine_s
StageModel.graph_nodes
PartCost.flops_bwd
block_prefix

# Study: a third-party attribute set for its effect (tqdm's monitor thread off before the pool
# forks), and two names documenting the store's columns and the search space's axes.
import tqdm  # noqa: E402

from sim.study import report as study_report  # noqa: E402
from sim.study import search as study_search  # noqa: E402

tqdm.tqdm.monitor_interval
study_report.STORE_COLUMNS
study_search.SEARCH_AXES

# Module hooks Python calls itself: sim.serve loaded on first attribute access
# (sim.__getattr__), and the package made callable by swapping its module class.
import sim  # noqa: E402
import sim.serve  # noqa: E402

sim.__getattr__
sim.serve.__class__
