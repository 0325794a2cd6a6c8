"""Mixed precision and 2:4 sparsity: simulated speed on H100 next to measured accuracy on digits.

Run from the repository root (needs scikit-learn for the digits dataset):

    .venv/bin/python examples/training_tradeoffs.py [--epochs N] [--sim-workload W]

Accuracy is measured for real: ``workloads/mlp-mnist.yaml`` is trained on digits with the
NumPy executor in fp32 and in bf16 AMP (bf16 emulated through ml_dtypes), then the fp32 model
is pruned 2:4 and fine-tuned. Speed is simulated: one AdamW training step of the same
network at the training batch, and of ``--sim-workload`` (default BERT-base, where GEMMs
rather than kernel launches dominate), in fp32, tf32, bf16 AMP and pure bf16; and the bf16
forward pass of ``--sim-workload`` dense and with 2:4 sparse weights.
"""

from __future__ import annotations

import argparse

import sim
from sim.exec import init_param
from sim.passes import precision, sparsity
from sim.passes.training import training_graph
from sim.training import Trainer, load_dataset


def simulate(graph: sim.Graph, hw: str) -> tuple[float, float]:
    r = sim.simulate(graph, hw)
    return r.makespan_s, r.peak_memory_bytes


def step_variants(fwd: sim.Graph) -> dict[str, sim.Graph]:
    """One AdamW training step per precision."""
    return {
        "fp32": training_graph(fwd, optimizer="adamw"),
        "tf32": training_graph(precision.cast_graph(fwd, "tf32"), optimizer="adamw"),
        "bf16 amp": training_graph(precision.amp(fwd, "bf16"), optimizer="adamw"),
        "bf16 pure": training_graph(precision.cast_graph(fwd, "bf16"), optimizer="adamw"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="workloads/mlp-mnist.yaml")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sim-workload", default="workloads/bert-base.yaml")
    ap.add_argument("--sim-set", action="append", default=[], metavar="K=V",
                    help="workload params of --sim-workload, e.g. batch=32")
    ap.add_argument("--hw", default="h100")
    args = ap.parse_args()

    # ---- measured accuracy on digits
    fwd = sim.load(args.workload, batch=args.batch)
    data = load_dataset("digits", fwd.inputs[next(iter(fwd.inputs))].shape)
    print(f"## {fwd.name} on digits: {args.epochs} epochs, AdamW lr {args.lr:g}, batch {args.batch}")
    acc = {}
    trainers = {}
    for dt in ("fp32", "bf16"):
        model = precision.amp(fwd, dt) if dt != "fp32" else fwd
        tr = Trainer(model, optimizer="adamw", lr=args.lr, weight_decay=0.0)
        hist = tr.fit(data.x_train, data.y_train, args.epochs, data.x_test, data.y_test)
        acc[dt] = hist.epochs[-1].test_accuracy or 0.0
        trainers[dt] = tr
        step_s, _ = simulate(tr.graph, args.hw)
        print(f"{dt:5s} test accuracy {acc[dt]:.4f}   simulated step on {args.hw}: {step_s * 1e6:.1f} us")
    print(f"bf16 - fp32 accuracy: {acc['bf16'] - acc['fp32']:+.4f}")
    tr = trainers["fp32"]
    masks, _ = sparsity.prune(fwd, tr.params, "2:4")
    tr.set_masks(masks)
    pruned = tr.accuracy(data.x_test, data.y_test)
    tr.fit(data.x_train, data.y_train, max(1, args.epochs // 2))
    tuned = tr.accuracy(data.x_test, data.y_test)
    print(f"2:4 pruning: {acc['fp32']:.4f} dense -> {pruned:.4f} pruned -> {tuned:.4f} after "
          f"{max(1, args.epochs // 2)} fine-tuning epochs ({tuned - acc['fp32']:+.4f})")

    # ---- simulated speed of a GEMM-heavy training step
    from sim.cli.args import parse_sets

    big = sim.load(args.sim_workload, **parse_sets(args.sim_set))
    print(f"\n## {big.name}: one AdamW training step on {args.hw} (simulated)")
    print(f"{'precision':10s} {'step':>10s} {'speed-up':>9s} {'peak':>10s}")
    base = None
    for name, g in step_variants(big).items():
        s, peak = simulate(g, args.hw)
        base = base or s
        print(f"{name:10s} {s * 1e3:8.2f}ms {base / s:8.2f}x {peak / 2**30:8.2f}GiB")
    f16 = precision.cast_graph(big, "bf16")
    params = {p: init_param(p, big.params[p], big.param_info[p]) for p in sparsity.prunable_params(big)}
    _, marked = sparsity.prune(f16, params, "2:4")
    d_s, _ = simulate(f16, args.hw)
    p_s, _ = simulate(marked, args.hw)
    print(f"bf16 forward: {d_s * 1e3:.3f} ms dense, {p_s * 1e3:.3f} ms with 2:4 weights "
          f"({d_s / p_s:.2f}x)")


if __name__ == "__main__":
    main()
