"""``sim run``: load a workload, optionally make it a training step or fuse it, simulate it on
hardware, print the summary and write JSON / trace / plot files."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sim.cli.options import RunOptions
from sim.errors import SimError


def build(opts: RunOptions) -> tuple[Any, Any]:
    """The graph (loaded, trained, fused, parallelised as asked) and the hardware spec."""
    import sim
    from sim.hw import load_hardware
    from sim.hw.spec import attention_kernel

    sets = opts.sets
    hw = load_hardware(opts.hw, **opts.hw_sets)
    target = attention_kernel(hw)

    def load(batch: int | None = None) -> Any:
        return sim.load(opts.workload, target_attention=target,
                        **(sets if batch is None else {**sets, "batch": batch}))

    def prepare(graph: Any) -> Any:
        if opts.amp and opts.train:
            from sim.passes.autocast import autocast

            # mixed precision as torch.autocast runs it: its op lists, fp32 master weights
            graph = autocast(graph, (opts.dtype or "bf16").lower())
        if opts.train:
            graph = sim.training_graph(graph, loss=opts.loss or "cross_entropy",
                                       optimizer=opts.optimizer or "adam",
                                       checkpoint=opts.checkpoint,
                                       **({"impl": opts.optimizer_impl} if opts.optimizer_impl else {}))
        else:  # as training_graph does: a weight transpose feeding a GEMM is its layout flag
            from sim.passes.layout import strided_transposes

            graph = strided_transposes(graph)
        if opts.runtime:
            from sim.passes.runtime import runtime_graph

            return runtime_graph(graph, opts.runtime, opts.dtype, hw)
        if opts.fuse:
            from sim.passes.fusion import fuse
            from sim.passes.precision import cast_graph

            # cast first, so the casts a dtype needs are fused into their groups too
            graph = fuse(cast_graph(graph, opts.dtype) if opts.dtype else graph)
        return graph

    if opts.parallel:
        # rebuilt per device (data parallel) or per microbatch (pipeline): docs/parallel.md
        from sim.engine.topology import as_system
        from sim.passes.parallel import parallel_graph

        return parallel_graph(opts.parallel, load, prepare, as_system(hw).accelerators), hw
    return prepare(load()), hw


def workload_file(name: str) -> str:
    """The file ``sim.load(name)`` reads: ``name`` itself, or a bundled workload's YAML."""
    if os.path.exists(name):
        return name
    from sim.frontends.yaml_loader import resolve_workload

    return resolve_workload(name)


def check_run_args(opts: RunOptions) -> None:
    """Everything about ``sim run``'s options that can be checked before loading anything:
    options that need ``--train``, counts, and the output files (``sim.io.check_outputs``:
    never an input, never each other, folders writable, a plot format matplotlib writes)."""
    from sim.hw.loader import spec_file
    from sim.io import check_outputs
    from sim.limits import check

    if not opts.train:
        for opt in ("optimizer", "loss"):
            if getattr(opts, opt) is not None:
                raise SimError("only applies to a training step: add --train", where=f"--{opt}")
        if opts.checkpoint:
            raise SimError("only applies to a training step: add --train", where="--checkpoint")
        if opts.amp:
            raise SimError("only applies to a training step: add --train", where="--amp")
    else:
        from sim.passes.training import LOSSES, OPTIMIZERS

        for opt, known in (("optimizer", OPTIMIZERS), ("loss", LOSSES)):
            value = getattr(opts, opt)
            if value is not None and value not in known:
                raise SimError(f"unknown {opt} {value!r} (choose from {', '.join(known)})", where=f"--{opt}")
    if opts.dtype:
        from sim.dtypes import canonical

        try:
            canonical(opts.dtype)
        except SimError as err:
            raise SimError(err.message, where="--dtype") from None
    streams = opts.streams
    if streams < 1:
        raise SimError(f"expected a count >= 1, got {streams}", where="--streams")
    check("streams", streams, "streams", "--streams")
    if opts.top < 0:
        raise SimError(f"expected a count >= 0, got {opts.top}", where="--top")
    plot = opts.plot
    if plot:
        check_plot_format(plot)
    inputs = [workload_file(opts.workload)]
    if opts.hw:
        inputs.append(spec_file(opts.hw))
    check_outputs({"--json": opts.json, "--trace": opts.trace,
                   "--plot": plot}, inputs)


def check_plot_format(path: str) -> None:
    """A plot path must end in a format matplotlib writes (.png, .svg, .pdf ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise SimError(f"unknown plot format {('.' + ext) if ext else '(no extension)'}; use one of "
                       f"{', '.join('.' + f for f in sorted(formats))}", where="--plot")


def _cluster_route(opts: RunOptions) -> bool:
    """``--parallel`` asks for the cluster simulator: a schedule/zero/mbs field, both pp and dp,
    tp with ``--train``, or a cluster spec (``sim.cluster``); plain ``dp=N`` / ``pp=S,mb=M``
    and a forward ``tp=N`` stay op by op."""
    spec = opts.parallel
    if not spec:
        return False
    keys = {item.split("=")[0].strip().lower() for item in spec.split(",") if item.strip()}
    if keys & {"mbs", "schedule", "zero", "sp", "order"} or {"pp", "dp"} <= keys:
        return True
    if "tp" in keys and opts.train:
        return True  # a forward-only tp=N stays the op-by-op split
    from sim.hw import load_hardware
    from sim.hw.spec import ClusterSpec

    return isinstance(load_hardware(opts.hw, **opts.hw_sets), ClusterSpec)


def run_cluster(opts: RunOptions) -> int:
    """``sim run WORKLOAD --parallel tp=..,pp=..,dp=.. --set batch=B``: one step on a cluster."""
    from sim.cluster import simulate_training
    from sim.hw import load_hardware

    if not opts.train:
        raise SimError("a tp/pp/dp layout simulates a training step: add --train", where="--parallel")
    sets = dict(opts.sets)
    if "batch" not in sets:
        raise SimError("give the global batch with --set batch=N (microbatches = batch / (dp x mbs))",
                       where="--set batch")
    batch = sets.pop("batch")
    if not isinstance(batch, int) or batch < 1:
        raise SimError(f"batch must be a whole number >= 1, got {batch!r}", where="--set batch")
    hw = load_hardware(opts.hw, **opts.hw_sets)
    dtype = (opts.dtype or "bf16").lower()
    if dtype not in ("fp32", "bf16", "fp16"):
        raise SimError(f"training runs in fp32, bf16 or fp16, got {opts.dtype!r}", where="--dtype")
    # --dtype with --train on a cluster means mixed precision, as Megatron-LM's --bf16/--fp16 do
    amp = dtype != "fp32"
    assert opts.parallel is not None  # the cluster route is only taken with --parallel
    result = simulate_training(opts.workload, hw, opts.parallel, batch=batch, sets=sets,
                               optimizer=opts.optimizer or "adam", dtype=dtype, amp=amp,
                               recompute=opts.checkpoint)
    print(result.summary())
    if not opts.amp and opts.dtype:
        print(f"  (--dtype {dtype} with --train: mixed precision, {dtype} compute with fp32 master weights "
              "and "
              "Adam states; --amp says the same)")
    for kind, path, write in (("json", opts.json, result.write_json),
                              ("trace", opts.trace, result.write_trace),
                              ("plot", opts.plot, result.plot)):
        if path:
            write(path)
            print(f"wrote {kind} {path}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run ``sim run`` with parsed ``args`` (made one typed ``RunOptions`` first); returns the exit
    code (errors raise SimError).

    A step that does not fit a device's memory is a result, not an error: the run stops at the
    op that fails (or, with ``--ignore-oom``, keeps going and reports the would-be peak), the
    summary says how much memory the step needs, and every output asked for is written."""
    from sim import simulate

    opts = RunOptions.from_args(args)
    check_run_args(opts)
    if _cluster_route(opts):
        return run_cluster(opts)

    dispatch_s = opts.dispatch_s
    placement = opts.placement
    graph, hw = build(opts)
    cuda_graphs = opts.cuda_graphs
    if opts.runtime:
        from sim.passes.runtime import engine_options

        mode = engine_options(opts.runtime, hw)
        dispatch_s = mode["dispatch_s"] if dispatch_s is None else dispatch_s
        cuda_graphs = cuda_graphs or mode["cuda_graphs"]
    mixed = opts.amp
    result = simulate(graph, hw, None if mixed else opts.dtype, placement=placement,
                      streams=opts.streams,
                      host_inputs=not opts.resident_inputs,
                      cache_reuse=opts.cache_reuse,
                      dispatch_s=dispatch_s, cuda_graphs=cuda_graphs,
                      oom="ignore" if opts.ignore_oom else "stop")
    say(result.summary(top=opts.top))
    if opts.dtype and opts.dtype.lower() == "fp8" and not mixed:
        print("  precision: fp8 (E4M3) GEMMs in a bf16 model, as Transformer Engine, TensorRT-LLM and vLLM "
              "run them: linear layers, convolutions and MoE experts on fp8 operands, norms, attention "
              "and residuals in bf16" + (" (forward, data- and weight-gradient GEMMs in fp8; weights and "
                                         "optimizer states bf16)" if opts.train else ""))
    elif opts.train and opts.dtype:
        print(f"  precision: {opts.dtype} mixed as torch.autocast runs it (matrix ops {opts.dtype}, "
              "softmax/norms/loss fp32, fp32 master weights and optimizer states, --amp)" if mixed
              else f"  precision: the whole step cast to {opts.dtype}, weights and optimizer states included "
                   "(--amp for mixed precision)")
    if result.meta.get("oom"):
        from sim.report.summary import oom_text

        print(f"sim: warning: {oom_text(result.meta['oom'])}", file=sys.stderr)
    outputs = []
    if opts.json:
        result.write_json(opts.json)
        outputs.append(("json", opts.json))
    if opts.trace:
        result.write_trace(opts.trace)
        outputs.append(("trace", opts.trace))
    if opts.plot:
        result.plot(opts.plot)
        outputs.append(("plot", opts.plot))
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
