"""Composed parallelism: tensor x pipeline x data parallel on one op-by-op graph."""

from __future__ import annotations

from collections.abc import Sequence

from sim.errors import GraphError
from sim.graph import Graph
from sim.passes.parallel import data_parallel, pipeline_parallel
from sim.passes.tensor_parallel import tensor_parallel


def _check(tp: int, pp: int, dp: int, zero: int, schedule: str, where: str) -> None:
    for key, v in (("tp", tp), ("pp", pp), ("dp", dp)):
        if not isinstance(v, int) or v < 1:
            raise GraphError(f"{key} must be an integer >= 1, got {v!r}", where=where)
    if zero != 0:
        raise GraphError(f"zero={zero}: ZeRO sharding is not built yet (only zero=0)", where=where)
    if schedule != "gpipe":
        raise GraphError(f"schedule {schedule!r}: only 'gpipe' is built", where=where)


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
    ``tp_rank``, ``stage`` and ``dp_rank``. ``zero`` and ``schedule`` accept only 0 and
    ``"gpipe"`` for now (anything else is a ``GraphError``).
    """
    where = graph.source or graph.name
    _check(tp, pp, dp, zero, schedule, where)
    n = tp * pp * dp
    devs = [str(d) for d in devices] if devices is not None else [f"gpu{i}" for i in range(n)]
    if len(devs) != n or len(set(devs)) != n:
        raise GraphError(f"tp*pp*dp = {n} needs {n} distinct devices, got {len(devs)}", where=where)
    if mbs is not None:
        from sim.report.result import infer_batch

        if infer_batch(graph) != mbs:
            raise GraphError(f"mbs={mbs} but the graph is built at batch {infer_batch(graph)}", where=where)
    m = microbatches or pp
    g = tensor_parallel(graph, devs[:tp]) if tp > 1 else graph
    if pp > 1 or m > 1:
        g = pipeline_parallel(g, [devs[s * tp:(s + 1) * tp] for s in range(pp)], m)
    if dp > 1:
        if tp == 1 and pp == 1 and m == 1:
            g = data_parallel(g, devs, bucket_bytes=None)
        else:
            maps = [{devs[i]: devs[r * tp * pp + i] for i in range(tp * pp)} for r in range(dp)]
            g = data_parallel(g, maps)
    if not any("device" in nd.meta for nd in g.nodes.values()):
        for nd in g.nodes.values():
            nd.meta["device"] = devs[0]
    return stamp_ranks(g, devs, tp, pp)
