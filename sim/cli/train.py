"""``sim train``: train a workload on a bundled dataset with the executor, then optionally
simulate one step of it on hardware."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from sim.cli.args import parse_sets
from sim.errors import GraphError, SimError
from sim.graph import Graph
from sim.training.trainer import EpochLog, Trainer, load_dataset


def _load_workload(args: Any) -> Graph:
    from sim.frontends import load

    sets = parse_sets(getattr(args, "set", None))
    if "batch" in sets:
        return load(args.workload, **sets)
    try:
        return load(args.workload, **sets, batch=args.batch)
    except GraphError as err:
        if "'batch'" not in err.message:
            raise
        return load(args.workload, **sets)  # no batch param: the workload's own batch


def _simulate_step(graph: Graph, hw: Any) -> tuple[float, float, dict[str, Any] | None]:
    """(step time in seconds, peak memory in bytes, out-of-memory point or None) of one training
    step on ``hw``; a step that does not fit is simulated past capacity (its would-be peak)."""
    import sim

    result = sim.simulate(graph, hw, oom="ignore")
    return float(result.makespan_s), float(result.peak_memory_bytes), result.meta.get("oom")


def check_train_args(args: Any) -> Any:
    """Every argument of ``sim train`` checked before the first epoch (no training is thrown
    away over a bad option); returns the hardware spec to simulate on (None for ``--hw none``)."""
    from sim.cli.run import workload_file
    from sim.io import check_outputs
    from sim.passes import sparsity
    from sim.passes.training import OPTIMIZERS

    if args.epochs < 1:
        raise SimError(f"expected a number of epochs >= 1, got {args.epochs}", where="--epochs")
    if args.batch < 1:
        raise SimError(f"expected a batch >= 1, got {args.batch}", where="--batch")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise SimError(f"expected a learning rate > 0, got {args.lr}", where="--lr")
    if args.optimizer not in OPTIMIZERS:
        raise SimError(f"unknown optimizer {args.optimizer!r} (choose from {', '.join(OPTIMIZERS)})",
                       where="--optimizer")
    if args.prune:
        sparsity.parse_prune(args.prune)
    hw = None
    inputs = [workload_file(args.workload)]
    if args.hw and str(args.hw).lower() != "none":
        from sim.hw import load_hardware
        from sim.hw.loader import spec_file

        hw = load_hardware(args.hw)
        inputs.append(spec_file(args.hw))
    check_outputs({"--json": getattr(args, "json", None)}, inputs)
    return hw


def _finite(x: Any) -> Any:
    """``x`` with every non-finite float (a diverged loss) replaced by None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _precision_text(model: Graph, dtype: str) -> str:
    """How the step computes, as printed: fp32, or autocast mixed precision and its loss scale."""
    if dtype == "fp32":
        return "fp32"
    scale = float(model.meta["loss_scale"])
    scaled = f", static loss scale {scale:g}" if scale != 1 else ""
    return (f"{dtype} mixed precision (autocast: {dtype} matrix ops, fp32 softmax/norms/loss, "
            f"fp32 master weights and optimizer states{scaled})")


def train_command(args: Any) -> int:
    """``sim train WORKLOAD --dataset digits --epochs N ...``: train, evaluate, optionally simulate."""
    from sim.passes import sparsity
    from sim.passes.autocast import autocast

    hw_spec = check_train_args(args)
    forward = _load_workload(args)
    in_name = next(iter(forward.inputs))
    data = load_dataset(args.dataset, forward.inputs[in_name].shape, seed=args.seed)
    n_out = forward.tensors[forward.outputs[0]].shape
    if len(n_out) < 2 or n_out[1] < data.n_classes:
        raise GraphError(f"output {forward.outputs[0]!r} of shape {n_out} cannot score "
                         f"{data.n_classes} classes", where=args.workload)
    dtype = (args.dtype or "fp32").lower()
    if dtype not in ("fp32", "bf16", "fp16"):
        raise SimError(f"--dtype must be fp32, bf16 or fp16 for training, got {args.dtype!r}",
                       where="--dtype")
    # mixed precision as torch.autocast runs it: fp32 master weights and optimizer states,
    # matrix ops in ``dtype``, softmax/norms/losses in fp32, fp16 with a static loss scale
    model = autocast(forward, dtype) if dtype != "fp32" else forward
    trainer = Trainer(model, optimizer=args.optimizer, seed=args.seed, lr=args.lr)
    json_mode = bool(getattr(args, "json", None))

    total = [args.epochs]

    def show(log: EpochLog) -> None:
        print(f"epoch {log.epoch:3d}/{total[0]}  loss {log.loss:.4f}  "
              f"test accuracy {log.test_accuracy:.4f}")

    print(f"training {forward.name} ({forward.param_count:,} params) on {data.name}: "
          f"{len(data.x_train)} train / {len(data.x_test)} test, batch {trainer.batch}, "
          f"{args.optimizer} lr {args.lr:g}, {_precision_text(model, dtype)}")
    t0 = time.perf_counter()
    hist = trainer.fit(data.x_train, data.y_train, args.epochs, data.x_test, data.y_test, on_epoch=show)
    report: dict[str, Any] = {
        "workload": forward.name, "dataset": data.name, "dtype": dtype,
        "precision": "fp32" if dtype == "fp32" else "autocast",
        "loss_scale": float(model.meta.get("loss_scale", 1.0)), "optimizer": args.optimizer,
        "lr": args.lr, "epochs": args.epochs, "batch": trainer.batch, "seed": args.seed,
        "losses": hist.losses, "test_accuracy": hist.epochs[-1].test_accuracy if hist.epochs else None,
        "train_seconds": time.perf_counter() - t0,
    }
    sim_graph = trainer.graph
    if args.prune:
        spec = sparsity.parse_prune(args.prune)
        before = report["test_accuracy"]
        masks = sparsity.magnitude_masks(trainer.params, sparsity.prunable_params(model), spec, model)
        trainer.set_masks(masks)
        pruned = trainer.accuracy(data.x_test, data.y_test)
        fine_epochs = max(1, args.epochs // 2)
        total[0] = fine_epochs
        print(f"pruned {spec} ({sparsity.describe(masks)}): test accuracy {before:.4f} -> {pruned:.4f}; "
              f"fine-tuning {fine_epochs} epochs")
        fine = trainer.fit(data.x_train, data.y_train, fine_epochs, data.x_test, data.y_test, on_epoch=show)
        report.update({
            "prune": str(spec), "accuracy_before_prune": before, "accuracy_after_prune": pruned,
            "fine_tune_losses": fine.losses, "test_accuracy": fine.epochs[-1].test_accuracy,
            "density": sparsity.density(masks),
        })
        sim_graph = sparsity.mark_sparsity(trainer.graph, masks, spec)
    report["step_time_s"] = None
    report["peak_memory_bytes"] = None
    if hw_spec is not None:
        step_s, peak, oom = _simulate_step(sim_graph, hw_spec)
        report.update({"hw": args.hw, "step_time_s": step_s, "peak_memory_bytes": peak, "oom": oom})
        print(f"one training step on {args.hw}: {step_s * 1e6:.1f} us, peak memory {peak / 2**20:.2f} MiB")
        if oom:
            from sim.report.summary import oom_text

            print(f"  {oom_text(oom)}")
    print(f"final test accuracy {report['test_accuracy']:.4f}")
    if json_mode:
        from sim.io import atomic_write

        # a diverged run's nan/inf losses are written as null: the file stays strict JSON
        atomic_write(args.json, json.dumps(_finite(report), indent=2, allow_nan=False))
    return 0
