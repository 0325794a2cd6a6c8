"""``sim train``: train a workload on a bundled dataset with the executor, then optionally
simulate one step of it on hardware."""

from __future__ import annotations

import json
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


def _simulate_step(graph: Graph, hw: str) -> tuple[float, float]:
    """(step time in seconds, peak memory in bytes) of one training step on ``hw``."""
    import sim

    result = sim.simulate(graph, sim.hardware(hw))
    return float(result.makespan_s), float(result.peak_memory_bytes)


def train_command(args: Any) -> int:
    """``sim train WORKLOAD --dataset digits --epochs N ...``: train, evaluate, optionally simulate."""
    from sim.passes import precision, sparsity

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
    model = precision.amp(forward, dtype) if dtype != "fp32" else forward
    trainer = Trainer(model, optimizer=args.optimizer, seed=args.seed, lr=args.lr)
    json_mode = bool(getattr(args, "json", None))

    total = [args.epochs]

    def show(log: EpochLog) -> None:
        print(f"epoch {log.epoch:3d}/{total[0]}  loss {log.loss:.4f}  "
              f"test accuracy {log.test_accuracy:.4f}")

    print(f"training {forward.name} ({forward.param_count:,} params) on {data.name}: "
          f"{len(data.x_train)} train / {len(data.x_test)} test, batch {trainer.batch}, "
          f"{args.optimizer} lr {args.lr:g}, {dtype}")
    t0 = time.perf_counter()
    hist = trainer.fit(data.x_train, data.y_train, args.epochs, data.x_test, data.y_test, on_epoch=show)
    report: dict[str, Any] = {
        "workload": forward.name, "dataset": data.name, "dtype": dtype, "optimizer": args.optimizer,
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
    if args.hw and str(args.hw).lower() != "none":
        step_s, peak = _simulate_step(sim_graph, args.hw)
        report.update({"hw": args.hw, "step_time_s": step_s, "peak_memory_bytes": peak})
        print(f"one training step on {args.hw}: {step_s * 1e6:.1f} us, peak memory {peak / 2**20:.2f} MiB")
    print(f"final test accuracy {report['test_accuracy']:.4f}")
    if json_mode:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0
