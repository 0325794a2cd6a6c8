"""Composed parallelism: tensor x pipeline x data parallel on one op-by-op graph."""

from __future__ import annotations

from collections.abc import Sequence

from sim.errors import GraphError
from sim.graph import Graph
from sim.passes.data_parallel_placed import data_parallel_placed
from sim.passes.parallel import pipeline_parallel
from sim.passes.tensor_parallel import tensor_parallel


def _check(tp: int, pp: int, dp: int, zero: int, schedule: str, where: str) -> None:
    for key, v in (("tp", tp), ("pp", pp), ("dp", dp)):
        if not isinstance(v, int) or v < 1:
            raise GraphError(f"{key} must be an integer >= 1, got {v!r}", where=where)
    if zero not in (0, 1, 2, 3):
        raise GraphError(f"zero must be 0, 1, 2 or 3, got {zero!r}", where=where)
    if schedule != "gpipe":
        raise GraphError(f"schedule {schedule!r}: only 'gpipe' is built", where=where)


def _place(g: Graph, device: str) -> Graph:
    """A copy of an unplaced step with every node on ``device`` (and its rank gradients)."""
    out = g.copy()
    for node in out.nodes.values():
        node.meta["device"] = device
    out.meta["rank_grads"] = [(p, t, device) for p, t in (g.meta.get("grads") or {}).items()]
    return out


def stamp_ranks(g: Graph, devices: list[str], tp: int, pp: int) -> Graph:
    """Set every node's ``rank``, ``dp_rank``, ``stage`` and ``tp_rank`` from its device
    (Megatron's order: tensor-parallel ranks fastest, then pipeline stages, then replicas)."""
    index = {d: i for i, d in enumerate(devices)}
    for node in g.nodes.values():
        i = index[node.meta["device"]]
        node.meta.update({"rank": i, "dp_rank": i // (tp * pp), "stage": (i // tp) % pp, "tp_rank": i % tp})
    return g


def parallelize(graph: Graph, *, tp: int = 1, pp: int = 1, dp: int = 1, microbatches: int | None = None,
                mbs: int | None = None, zero: int = 0, schedule: str = "gpipe",
                devices: Sequence[str] | None = None) -> Graph:
    """One op-by-op graph of ``graph`` over ``tp * pp * dp`` devices: ``tensor_parallel``
    (by pattern), then ``pipeline_parallel`` (GPipe over ``pp`` stages, ``microbatches``
    microbatches, default ``pp``, gradients accumulated), then data parallelism (``dp``
    replicas, gradients averaged by all-reduce): ``dp(pp(tp(g)))``.

    ``graph`` is one microbatch's forward graph or training step (``dp > 1`` needs a training
    step); ``mbs``, if given, must be its batch. The global batch is ``dp * microbatches *
    mbs``. ``devices`` (default ``gpu0 ...``) are numbered as Megatron ranks: tensor-parallel
    ranks fastest, then stages, then replicas; every node's meta carries ``rank``,
    ``tp_rank``, ``stage`` and ``dp_rank``. ``zero`` (needs ``dp > 1``): 0, 1/2 (optimizer
    states sharded over the replicas, gradients reduce-scattered, updated parameters
    all-gathered) or 3 (parameters sharded too, all-gathered before use); see
    ``sim.passes.data_parallel_placed``. ``schedule``: ``"gpipe"`` only for now.
    """
    where = graph.source or graph.name
    _check(tp, pp, dp, zero, schedule, where)
    n = tp * pp * dp
    devs = [str(d) for d in devices] if devices is not None else [f"gpu{i}" for i in range(n)]
    if len(devs) != n or len(set(devs)) != n:
        raise GraphError(f"tp*pp*dp = {n} needs {n} distinct devices, got {len(devs)}", where=where)
    if mbs is not None:
        from sim.graph.batch import infer_batch

        if infer_batch(graph) != mbs:
            raise GraphError(f"mbs={mbs} but the graph is built at batch {infer_batch(graph)}", where=where)
    m = microbatches or pp
    g = tensor_parallel(graph, devs[:tp]) if tp > 1 else graph
    if pp > 1 or m > 1:
        g = pipeline_parallel(g, [devs[s * tp:(s + 1) * tp] for s in range(pp)], m)
    if dp > 1:
        if not g.meta.get("grads"):
            raise GraphError("dp > 1 needs a training step (training_graph)", where=where)
        if tp == 1 and pp == 1 and m == 1:
            g = _place(g, devs[0])
        maps = [{devs[i]: devs[r * tp * pp + i] for i in range(tp * pp)} for r in range(dp)]
        g = data_parallel_placed(g, maps, zero=zero)
    elif zero:
        raise GraphError(f"zero={zero} shards over data-parallel replicas: it needs dp > 1", where=where)
    if not any("device" in nd.meta for nd in g.nodes.values()):
        for nd in g.nodes.values():
            nd.meta["device"] = devs[0]
    return stamp_ranks(g, devs, tp, pp)
