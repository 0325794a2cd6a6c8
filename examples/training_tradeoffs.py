"""Mixed precision and 2:4 sparsity: simulated speed on H100 next to measured accuracy on digits.

Run from the repository root (needs scikit-learn for the digits dataset):

    .venv/bin/python examples/training_tradeoffs.py [WORKLOAD] [--epochs N] [--sim-batch B]

For each precision (fp32, bf16 AMP) it trains WORKLOAD (default ``workloads/mlp-mnist.yaml``)
on digits with the NumPy executor (bf16 emulated through ml_dtypes) and reports the test
accuracy, then simulates one AdamW training step on H100 at the training batch and at
``--sim-batch`` (where GEMMs, not kernel launches, dominate). It then prunes the fp32 model
2:4, fine-tunes, and reports the accuracy cost and the simulated speed-up of the pruned
forward pass (2:4 sparse tensor cores) in bf16.
"""

from __future__ import annotations

import argparse

import sim
from sim.passes import precision, sparsity
from sim.passes.trainer import Trainer, load_dataset
from sim.passes.training import training_graph


def step(graph: sim.Graph, hw: str = "h100") -> tuple[float, float]:
    r = sim.simulate(graph, hw, host_inputs=False)
    return r.makespan_s, r.peak_memory_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", nargs="?", default="workloads/mlp-mnist.yaml")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sim-batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    fwd = sim.load(args.workload, batch=args.batch)
    big = sim.load(args.workload, batch=args.sim_batch)
    data = load_dataset("digits", fwd.inputs[next(iter(fwd.inputs))].shape)
    print(f"{fwd.name}: {fwd.param_count:,} params; {args.epochs} epochs of digits, AdamW lr {args.lr:g}")
    print(f"{'precision':10s} {'test acc':>9s} {'step@' + str(args.batch):>12s} "
          f"{'step@' + str(args.sim_batch):>12s} {'peak@' + str(args.sim_batch):>12s}")
    rows = {}
    trainers = {}
    for dt in ("fp32", "bf16"):
        model = precision.amp(fwd, dt) if dt != "fp32" else fwd
        tr = Trainer(model, optimizer="adamw", lr=args.lr, weight_decay=0.0)
        hist = tr.fit(data.x_train, data.y_train, args.epochs, data.x_test, data.y_test)
        acc = hist.epochs[-1].test_accuracy or 0.0
        big_model = precision.amp(big, dt) if dt != "fp32" else big
        small_s, _ = step(tr.graph)
        big_s, big_peak = step(training_graph(big_model, optimizer="adamw"))
        rows[dt] = (acc, small_s, big_s, big_peak)
        trainers[dt] = tr
        print(f"{dt:10s} {acc:9.4f} {small_s * 1e6:10.1f}us {big_s * 1e3:10.3f}ms "
              f"{big_peak / 2**20:9.1f}MiB")
    (a32, s32, b32, _), (a16, s16, b16, _) = rows["fp32"], rows["bf16"]
    print(f"bf16 vs fp32: accuracy {a16 - a32:+.4f}; simulated step speed-up "
          f"{s32 / s16:.2f}x at batch {args.batch}, {b32 / b16:.2f}x at batch {args.sim_batch}")

    tr = trainers["fp32"]
    dense = tr.accuracy(data.x_test, data.y_test)
    masks, _ = sparsity.prune(fwd, tr.params, "2:4")
    tr.set_masks(masks)
    pruned = tr.accuracy(data.x_test, data.y_test)
    tr.fit(data.x_train, data.y_train, max(1, args.epochs // 2))
    tuned = tr.accuracy(data.x_test, data.y_test)
    fwd16 = precision.cast_graph(big, "bf16")
    marked = sparsity.mark_sparsity(fwd16, masks, sparsity.parse_prune("2:4"))
    d_s, _ = step(fwd16)
    p_s, _ = step(marked)
    print(f"2:4 pruning: accuracy {dense:.4f} -> {pruned:.4f} (pruned) -> {tuned:.4f} (fine-tuned); "
          f"bf16 forward at batch {args.sim_batch}: {d_s * 1e6:.1f}us dense, {p_s * 1e6:.1f}us 2:4 "
          f"({d_s / p_s:.2f}x)")


if __name__ == "__main__":
    main()
