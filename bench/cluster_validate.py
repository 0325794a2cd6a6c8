"""Simulated per-GPU TFLOP/s and MFU of large-scale GPT training against published runs.

Two groups, never mixed:

* **published runs with their setup** (BLOOM-176B, OPT-175B): model, GPU count, layout and
  batch as the papers state them;
* **independent check**: the weak-scaling table of Narayanan et al. 2021 (Megatron-LM on
  Selene, SC21, Table 1; GPT models 1.7B-1T, 32-3,072 A100 80GB, sequence 2,048,
  vocabulary 51,200, activation recomputation). Nothing in dlsim is fitted to it.

Every run is ``sim.cluster.simulate_training`` on ``dgx-a100-cluster`` with bf16 mixed
precision and Adam, with the workload's and the spec's defaults: the spec's GPUs run attention
with the scores materialised (``attention_kernel: materialized``: all of these runs predate
flash attention), and ``gpt3-175b`` trains with Megatron-LM's dropout (0.1 hidden, 0.1 on the
attention probabilities); a setup that states otherwise overrides it (the ``extra`` column).
The last table repeats the independent check with a FlashAttention-2 stack on the same
hardware, to show what the attention kernel is worth. TFLOP/s per GPU uses the
hardware-FLOP count the papers use (Megatron's
``96 B s l h^2 (1 + s/6h + V/16lh)`` with recomputation). Run:
``.venv/bin/python bench/cluster_validate.py``.
"""

from __future__ import annotations

import sys
import time

import sim
from sim.cluster import simulate_training

# (label, GPUs, n_layer, hidden, heads, vocab, layout, batch, recompute, published TFLOP/s, source, extra)
PUBLISHED: list[tuple[str, int, int, int, int, int, str, int, bool, float, str, dict[str, object]]] = [
    (
        "BLOOM-176B",
        384,
        70,
        14336,
        112,
        250880,
        "tp=4,pp=12,dp=8,mbs=2",
        2048,
        True,
        150.0,
        "Le Scao et al. 2022 (BLOOM), sec. 3.4.4: ~150 TFLOP/s per A100 80GB, 48 nodes, TP4 PP12 DP8",
        {"dropout": 0.0, "attn_dropout": 0.0},  # BLOOM-176B trained without dropout (paper sec. 3.5)
    ),
    (
        "OPT-175B",
        992,
        96,
        12288,
        96,
        50272,
        "tp=8,pp=1,dp=124,mbs=8,zero=3",
        992,
        True,
        147.0,
        "Zhang et al. 2022 (OPT), sec. 2.4: 147 TFLOP/s per A100 80GB on 992 GPUs, FSDP + Megatron TP; "
        "batch ~2M tokens (992 x 2048 here, one microbatch of 8 per replica)",
        {},  # OPT sec. 2.2: dropout 0.1 throughout (none on the embeddings)
    ),
]
# Narayanan et al. 2021, Table 1: (params, heads, hidden, layers, TP, PP, GPUs, batch, TFLOP/s per GPU)
NARAYANAN = [
    ("1.7B", 24, 2304, 24, 1, 1, 32, 512, 137.0),
    ("3.6B", 32, 3072, 30, 2, 1, 64, 512, 138.0),
    ("7.5B", 32, 4096, 36, 4, 1, 128, 512, 142.0),
    ("18.4B", 48, 6144, 40, 8, 1, 256, 1024, 135.0),
    ("39.1B", 64, 8192, 48, 8, 2, 512, 1536, 138.0),
    ("76.1B", 80, 10240, 60, 8, 4, 1024, 1792, 140.0),
    ("145.6B", 96, 12288, 80, 8, 8, 1536, 2304, 148.0),
    ("310.1B", 128, 16384, 96, 8, 16, 1920, 2160, 155.0),
    ("529.6B", 128, 20480, 105, 8, 35, 2520, 2520, 163.0),
    ("1008.0B", 160, 25600, 128, 8, 64, 3072, 3072, 163.0),
]


def run(
    gpus: int,
    layers: int,
    hidden: int,
    heads: int,
    vocab: int,
    layout: str,
    batch: int,
    recompute: bool,
    extra: dict[str, object],
    hw_sets: dict[str, object] | None = None,
) -> tuple[float, float, float]:
    hw = sim.hardware("dgx-a100-cluster", nodes=gpus // 8, **(hw_sets or {}))
    t0 = time.perf_counter()
    r = simulate_training(
        "gpt3-175b",
        hw,
        layout,
        batch=batch,
        recompute=recompute,
        check_memory=False,
        progress=False,
        sets={"n_layer": layers, "d": hidden, "heads": heads, "vocab": vocab, **extra},
    )
    return r.tflops_per_gpu, r.mfu, time.perf_counter() - t0


def main() -> int:
    print("Published runs with their setup (dgx-a100-cluster, bf16 mixed, Adam):")
    print(
        f"{'run':<11} {'GPUs':>5} {'layout':<30} {'sim TFLOP/s':>11} {'MFU':>6} {'published':>9} {'error':>7}"
    )
    for label, gpus, l, h, a, v, lay, b, rc, pub, _src, extra in PUBLISHED:
        tf, mfu, _ = run(gpus, l, h, a, v, lay, b, rc, extra)
        err = (tf / pub - 1) * 100
        print(f"{label:<11} {gpus:5d} {lay:<30} {tf:11.1f} {mfu * 100:5.1f}% {pub:9.1f} {err:+6.1f}%")
    print("\nIndependent check: Narayanan et al. 2021, Table 1 (not fitted):")
    narayanan({})
    print("\nThe same with FlashAttention-2 (--hw-set devices.gpu.arch.attention_kernel=flash2), not as run:")
    narayanan({"devices.gpu.arch.attention_kernel": "flash2"})
    return 0


def narayanan(hw_sets: dict[str, object]) -> None:
    head = ("model", "GPUs", "layout", "sim TFLOP/s", "MFU", "published", "error", "wall s")
    print("{:<8} {:>5} {:<22} {:>11} {:>6} {:>9} {:>7} {:>6}".format(*head))
    errs = []
    for label, a, h, l, tp, pp, gpus, b, pub in NARAYANAN:
        dp = gpus // (tp * pp)
        lay = f"tp={tp},pp={pp},dp={dp},mbs=1"
        tf, mfu, wall = run(gpus, l, h, a, 51200, lay, b, True, {}, hw_sets)
        errs.append(tf / pub - 1)
        print(
            f"{label:<8} {gpus:5d} {lay:<22} {tf:11.1f} {mfu * 100:5.1f}% {pub:9.1f} {errs[-1] * 100:+6.1f}% "
            f"{wall:6.1f}"
        )
    mape = sum(abs(e) for e in errs) / len(errs)
    within = sum(abs(e) <= 0.10 for e in errs)
    print(
        f"mean absolute error {mape * 100:.1f}%, mean signed error {sum(errs) / len(errs) * 100:+.1f}%, "
        f"{within} of {len(errs)} within 10%"
    )


if __name__ == "__main__":
    sys.exit(main())
