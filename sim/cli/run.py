"""``sim run``: load a workload, optionally make it a training step or fuse it, simulate it on
hardware, print the summary and write JSON / trace / plot files."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sim.cli.args import parse_dispatch, parse_hw_sets, parse_place, parse_sets
from sim.errors import SimError


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The graph (loaded, trained, fused, parallelised as asked) and the hardware spec."""
    import sim
    from sim.hw import load_hardware

    sets = parse_sets(getattr(args, "set", None))

    def load(batch: int | None = None) -> Any:
        return sim.load(args.workload, **(sets if batch is None else {**sets, "batch": batch}))

    def prepare(graph: Any) -> Any:
        if getattr(args, "amp", False) and getattr(args, "train", False):
            from sim.passes.precision import amp

            graph = amp(graph, (getattr(args, "dtype", None) or "bf16").lower())  # fp32 master weights
        if getattr(args, "train", False):
            graph = sim.training_graph(graph, loss=getattr(args, "loss", None) or "cross_entropy",
                                       optimizer=getattr(args, "optimizer", None) or "adam",
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


def workload_file(name: str) -> str:
    """The file ``sim.load(name)`` reads: ``name`` itself, or a bundled workload's YAML."""
    if os.path.exists(name):
        return name
    from sim.frontends.yaml_loader import resolve_workload

    return resolve_workload(name)


def check_run_args(args: argparse.Namespace) -> None:
    """Everything about ``sim run``'s options that can be checked before loading anything:
    options that need ``--train``, counts, and the output files (``sim.io.check_outputs``:
    never an input, never each other, folders writable, a plot format matplotlib writes)."""
    from sim.hw.loader import spec_file
    from sim.io import check_outputs
    from sim.limits import check

    if not getattr(args, "train", False):
        for opt in ("optimizer", "loss"):
            if getattr(args, opt, None) is not None:
                raise SimError("only applies to a training step: add --train", where=f"--{opt}")
        if getattr(args, "checkpoint", False):
            raise SimError("only applies to a training step: add --train", where="--checkpoint")
        if getattr(args, "amp", False):
            raise SimError("only applies to a training step: add --train", where="--amp")
    else:
        from sim.passes.training import LOSSES, OPTIMIZERS

        for opt, known in (("optimizer", OPTIMIZERS), ("loss", LOSSES)):
            value = getattr(args, opt, None)
            if value is not None and value not in known:
                raise SimError(f"unknown {opt} {value!r} (choose from {', '.join(known)})", where=f"--{opt}")
    if getattr(args, "dtype", None):
        from sim.dtypes import canonical

        try:
            canonical(args.dtype)
        except SimError as err:
            raise SimError(err.message, where="--dtype") from None
    streams = getattr(args, "streams", 1)
    if streams < 1:
        raise SimError(f"expected a count >= 1, got {streams}", where="--streams")
    check("streams", streams, "streams", "--streams")
    if getattr(args, "top", 10) < 0:
        raise SimError(f"expected a count >= 0, got {args.top}", where="--top")
    plot = getattr(args, "plot", None)
    if plot:
        check_plot_format(plot)
    inputs = [workload_file(args.workload)]
    if getattr(args, "hw", None):
        inputs.append(spec_file(args.hw))
    check_outputs({"--json": getattr(args, "json", None), "--trace": getattr(args, "trace", None),
                   "--plot": plot}, inputs)


def check_plot_format(path: str) -> None:
    """A plot path must end in a format matplotlib writes (.png, .svg, .pdf ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise SimError(f"unknown plot format {('.' + ext) if ext else '(no extension)'}; use one of "
                       f"{', '.join('.' + f for f in sorted(formats))}", where="--plot")


def _cluster_route(args: argparse.Namespace) -> bool:
    """``--parallel`` asks for the cluster simulator: a schedule/zero/mbs field, both pp and dp,
    tp with ``--train``, or a cluster spec (``sim.cluster``); plain ``dp=N`` / ``pp=S,mb=M``
    and a forward ``tp=N`` stay op by op."""
    spec = getattr(args, "parallel", None)
    if not spec:
        return False
    keys = {item.split("=")[0].strip().lower() for item in spec.split(",") if item.strip()}
    if keys & {"mbs", "schedule", "zero", "sp", "order"} or {"pp", "dp"} <= keys:
        return True
    if "tp" in keys and getattr(args, "train", False):
        return True  # a forward-only tp=N stays the op-by-op split
    from sim.hw import load_hardware
    from sim.hw.spec import ClusterSpec

    return isinstance(load_hardware(args.hw, **parse_hw_sets(getattr(args, "hw_set", None))), ClusterSpec)


def run_cluster(args: argparse.Namespace) -> int:
    """``sim run WORKLOAD --parallel tp=..,pp=..,dp=.. --set batch=B``: one step on a cluster."""
    from sim.cluster import simulate_training
    from sim.errors import SimError
    from sim.hw import load_hardware

    if not getattr(args, "train", False):
        raise SimError("a tp/pp/dp layout simulates a training step: add --train", where="--parallel")
    sets = parse_sets(getattr(args, "set", None))
    if "batch" not in sets:
        raise SimError("give the global batch with --set batch=N (microbatches = batch / (dp x mbs))",
                       where="--set batch")
    batch = sets.pop("batch")
    if not isinstance(batch, int) or batch < 1:
        raise SimError(f"batch must be a whole number >= 1, got {batch!r}", where="--set batch")
    hw = load_hardware(args.hw, **parse_hw_sets(getattr(args, "hw_set", None)))
    dtype = (args.dtype or "bf16").lower()
    if dtype not in ("fp32", "bf16", "fp16"):
        raise SimError(f"training runs in fp32, bf16 or fp16, got {args.dtype!r}", where="--dtype")
    # --dtype with --train on a cluster means mixed precision, as Megatron-LM's --bf16/--fp16 do
    amp = dtype != "fp32"
    result = simulate_training(args.workload, hw, args.parallel, batch=batch, sets=sets,
                               optimizer=args.optimizer or "adam", dtype=dtype, amp=amp,
                               recompute=bool(getattr(args, "checkpoint", False)))
    print(result.summary())
    if not getattr(args, "amp", False) and args.dtype:
        print(f"  (--dtype {dtype} with --train: mixed precision, {dtype} compute with fp32 master weights "
              "and "
              "Adam states; --amp says the same)")
    for kind, path, write in (("json", getattr(args, "json", None), result.write_json),
                              ("trace", getattr(args, "trace", None), result.write_trace),
                              ("plot", getattr(args, "plot", None), result.plot)):
        if path:
            write(path)
            print(f"wrote {kind} {path}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run ``sim run`` with parsed ``args``; returns the exit code (errors raise SimError).

    A step that does not fit a device's memory is a result, not an error: the run stops at the
    op that fails (or, with ``--ignore-oom``, keeps going and reports the would-be peak), the
    summary says how much memory the step needs, and every output asked for is written."""
    from sim import simulate

    check_run_args(args)
    if _cluster_route(args):
        return run_cluster(args)

    dispatch = getattr(args, "dispatch", None)
    dispatch_s = parse_dispatch(dispatch) if dispatch is not None else None
    placement = parse_place(getattr(args, "place", None))
    graph, hw = build(args)
    cuda_graphs = bool(getattr(args, "cuda_graphs", False))
    if getattr(args, "runtime", None):
        from sim.passes.runtime import engine_options

        opts = engine_options(args.runtime, hw)
        dispatch_s = opts["dispatch_s"] if dispatch_s is None else dispatch_s
        cuda_graphs = cuda_graphs or opts["cuda_graphs"]
    mixed = bool(getattr(args, "amp", False))
    result = simulate(graph, hw, None if mixed else args.dtype, placement=placement,
                      streams=getattr(args, "streams", 1),
                      host_inputs=not getattr(args, "resident_inputs", False),
                      cache_reuse=not getattr(args, "no_cache_reuse", False),
                      dispatch_s=dispatch_s, cuda_graphs=cuda_graphs,
                      oom="ignore" if getattr(args, "ignore_oom", False) else "stop")
    say(result.summary(top=getattr(args, "top", 10)))
    if getattr(args, "train", False) and args.dtype:
        print(f"  precision: {args.dtype} mixed (fp32 master weights and optimizer states, --amp)" if mixed
              else f"  precision: the whole step cast to {args.dtype}, weights and optimizer states included "
                   "(--amp for mixed precision)")
    if result.meta.get("oom"):
        from sim.report.summary import oom_text

        print(f"sim: warning: {oom_text(result.meta['oom'])}", file=sys.stderr)
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
        say(f"wrote {kind} {path}")
    return 0


def say(text: str) -> None:
    """Print to stdout; if the reader has gone (``sim run ... | head``), keep going quietly so
    the outputs asked for are still written."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
