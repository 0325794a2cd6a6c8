"""dlsim: simulate deep-learning hardware on an op graph that also runs for real.

>>> import sim
>>> g = sim.load("mlp-mnist", batch=8)            # a bundled workload, or a path
>>> r = sim.simulate(g, sim.hardware("h100"))
>>> g.param_count, r.makespan_s > 0, r.peak_memory_bytes >= g.param_bytes
(101770, True, True)
"""

from __future__ import annotations

from typing import Any

from sim.errors import GraphError, OutOfMemoryError, SimError, SpecError, UnsupportedOpError
from sim.exec import execute
from sim.frontends import load
from sim.graph import Graph, Node, TensorSpec

__version__ = "0.1.0"


def hardware(name_or_path: str, **overrides: Any) -> Any:
    """A device or system spec by bundled name (``"h100"``) or YAML path.

    ``overrides`` are dotted spec fields with human units, e.g.
    ``hardware("h100", **{"memory.hbm.bandwidth": "6.7 TB/s"})``.
    """
    from sim.hw import load_hardware

    return load_hardware(name_or_path, **overrides)


def simulate(graph: Graph, hw: Any, dtype: str | None = None, runtime: str | None = None,
             **options: Any) -> Any:
    """Schedule ``graph`` on ``hw`` (a spec, or a name/path for ``hardware``); returns a Result.

    ``dtype`` casts the graph first (``sim.passes.precision.cast_graph``: "bf16", "fp16",
    "tf32", "fp8": fp8 GEMMs in a bf16 model, their dequantise casts folded into them);
    ``options`` go to ``sim.engine.simulate`` (placement, streams, cost_fn, ...), which
    schedules the graph as given.
    ``runtime`` (``"eager"``, ``"compiled"``, ``"tensorrt"``) runs the graph as that framework
    would: its rewrites, fusion and host dispatch (``sim.passes.runtime``); ``options`` given
    explicitly (``dispatch_s``, ``cuda_graphs``) win over the runtime's.
    """
    from sim.engine import simulate as _simulate

    if runtime is not None:
        from sim.passes.runtime import prepare

        spec = hardware(hw) if isinstance(hw, str) else hw
        graph, opts = prepare(graph, runtime, spec, dtype)
        return _simulate(graph, spec, **{**opts, **options})
    if dtype:
        from sim.passes.precision import cast_graph

        graph = cast_graph(graph, dtype)
        if graph.meta.get("dtype") == "fp8" and not graph.meta.get("fused"):
            from sim.passes.fusion import fold_dequantise

            graph = fold_dequantise(graph)  # an fp8 GEMM reads its fp8 operands itself
    return _simulate(graph, hw, **options)


def training_graph(graph: Graph, loss: str = "cross_entropy", optimizer: str = "adam",
                   **hyper: Any) -> Graph:
    """Forward graph -> one training step (loss, backward, optimizer update)."""
    from sim.passes.training import training_graph as _tg

    return _tg(graph, loss=loss, optimizer=optimizer, **hyper)


def parallelize(graph: Graph, **layout: Any) -> Graph:
    """Tensor x pipeline x data parallelism (``tp=, pp=, dp=, microbatches=, mbs=, zero=,
    schedule=, devices=``) as one op-by-op graph; see ``sim.passes.compose.parallelize``."""
    from sim.passes.compose import parallelize as _parallelize

    return _parallelize(graph, **layout)


def sweep(workload: str | None = None, hw: str = "h100", grid: Any = None, store: Any = None,
          executor: Any = "local", **kwargs: Any) -> Any:
    """A what-if study: every point of ``grid`` (field -> values) simulated on ``executor`` and kept
    in ``store``; a pandas DataFrame, one row per point (``sim.study.sweep``, docs/tutorial.md)."""
    from sim.study import sweep as _sweep

    return _sweep(workload, hw=hw, grid=grid, store=store, executor=executor, **kwargs)


def load_module(module: Any, example_inputs: Any, **kwargs: Any) -> Graph:
    """Import a ``torch.nn.Module`` through ``torch.export`` (needs the ``torch`` extra)."""
    from sim.frontends.torch_import import load_module as _lm

    return _lm(module, example_inputs, **kwargs)


def __getattr__(name: str) -> Any:
    """``sim.serve``: the LLM serving package (docs/inference.md), imported on first use; it is
    callable, ``sim.serve(workload, hw, rate=..., requests=...)``."""
    if name == "serve":
        import importlib

        return importlib.import_module("sim.serve")
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


__all__ = [
    "Graph", "GraphError", "Node", "OutOfMemoryError", "SimError", "SpecError", "TensorSpec",
    "UnsupportedOpError", "execute", "hardware", "load", "load_module", "parallelize", "simulate",
    "sweep", "training_graph",
]
