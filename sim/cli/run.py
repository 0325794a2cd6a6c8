"""``sim run``: load a workload, optionally make it a training step or fuse it, simulate it on
hardware, print the summary and write JSON / trace / plot files."""

from __future__ import annotations

import argparse
from typing import Any

from sim.cli.args import parse_dispatch, parse_hw_sets, parse_place, parse_sets


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The graph (loaded, trained, fused, parallelised as asked) and the hardware spec."""
    import sim
    from sim.hw import load_hardware

    sets = parse_sets(getattr(args, "set", None))

    def load(batch: int | None = None) -> Any:
        return sim.load(args.workload, **(sets if batch is None else {**sets, "batch": batch}))

    def prepare(graph: Any) -> Any:
        if getattr(args, "train", False):
            graph = sim.training_graph(graph, loss=args.loss, optimizer=args.optimizer,
                                       checkpoint=bool(getattr(args, "checkpoint", False)))
        if getattr(args, "runtime", None):
            from sim.passes.runtime import runtime_graph

            return runtime_graph(graph, args.runtime, getattr(args, "dtype", None))
        if getattr(args, "fuse", False):
            from sim.passes.fusion import fuse
            from sim.passes.precision import cast_graph

            # cast first, so the casts a dtype needs are fused into their groups too
            graph = fuse(cast_graph(graph, args.dtype) if getattr(args, "dtype", None) else graph)
        return graph

    hw = load_hardware(args.hw, **parse_hw_sets(getattr(args, "hw_set", None)))
    if getattr(args, "parallel", None):
        # rebuilt per device (data parallel) or per microbatch (pipeline): docs/parallel.md
        from sim.engine.topology import as_system
        from sim.passes.parallel import parallel_graph

        return parallel_graph(args.parallel, load, prepare, as_system(hw).accelerators), hw
    return prepare(load()), hw


def run_command(args: argparse.Namespace) -> int:
    """Run ``sim run`` with parsed ``args``; returns the exit code (errors raise SimError)."""
    from sim.engine import simulate

    dispatch = getattr(args, "dispatch", None)
    dispatch_s = parse_dispatch(dispatch) if dispatch is not None else None
    graph, hw = build(args)
    cuda_graphs = bool(getattr(args, "cuda_graphs", False))
    if getattr(args, "runtime", None):
        from sim.passes.runtime import engine_options

        opts = engine_options(args.runtime, hw)
        dispatch_s = opts["dispatch_s"] if dispatch_s is None else dispatch_s
        cuda_graphs = cuda_graphs or opts["cuda_graphs"]
    result = simulate(graph, hw, args.dtype, placement=parse_place(getattr(args, "place", None)),
                      streams=getattr(args, "streams", 1),
                      host_inputs=not getattr(args, "resident_inputs", False),
                      cache_reuse=not getattr(args, "no_cache_reuse", False),
                      dispatch_s=dispatch_s, cuda_graphs=cuda_graphs)
    print(result.summary(top=getattr(args, "top", 10)))
    outputs = []
    if getattr(args, "json", None):
        result.write_json(args.json)
        outputs.append(("json", args.json))
    if getattr(args, "trace", None):
        result.write_trace(args.trace)
        outputs.append(("trace", args.trace))
    if getattr(args, "plot", None):
        result.plot(args.plot)
        outputs.append(("plot", args.plot))
    for kind, path in outputs:
        print(f"wrote {kind} {path}")
    return 0
