"""Quantised serving: what fp8, int8/int4 weight-only GEMMs and an fp8 KV cache do to a
model's outputs (measured by the executor on a small model) and to its speed and KV-cache
capacity (simulated on the real model).

    .venv/bin/python examples/quantised_serving.py [--workload llama2-7b] [--hw h100]

Numerics: a small random-weight model of the same architecture generates greedily in fp32;
each scheme then re-runs the same tokens and reports how often its top-1 token agrees with
fp32 and the RMS logit error relative to the logits' RMS. Speed: one decode step of the real
model at batch 1 and at a larger batch, and the KV-cache capacity left beside the weights.
"""

from __future__ import annotations

import argparse

import numpy as np

import sim
from sim.dtypes import itemsize
from sim.serve import IterationTimer, ServeModel
from sim.serve.quantize import numeric_change
from sim.serve.scheduler import kv_capacity_blocks

# (label, dtype, KV dtype, weight quantisation)
SCHEMES = [("bf16", "bf16", "", ""), ("fp8 (W8A8)", "fp8", "fp8", ""),
           ("int8 weight-only", "bf16", "", "int8"), ("int4 weight-only", "bf16", "", "int4"),
           ("bf16 + fp8 KV", "bf16", "fp8", "")]
NUMERIC = {"bf16": "bf16", "fp8 (W8A8)": "fp8", "int8 weight-only": "int8", "int4 weight-only": "int4",
           "bf16 + fp8 KV": "fp8-kv"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama2-7b")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--batch", type=int, default=32, help="the larger decode batch")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=12, help="generated tokens in the numeric check")
    ap.add_argument("--layers", type=int, help="override n_layer of the timed model (quicker)")
    args = ap.parse_args()

    small = ServeModel(args.workload, d=256, heads=4, kv_heads=2, n_layer=2, ffn=512, vocab=512)
    prompt = np.random.default_rng(0).integers(0, 512, (2, 8))
    change = numeric_change(small, prompt, args.steps, tuple(NUMERIC.values()))

    hw = sim.hardware(args.hw)
    model = ServeModel(args.workload, **({"n_layer": args.layers} if args.layers else {}))
    print(f"{args.workload} on {args.hw}: decode step at context {args.context}; numerics on a "
          f"2-layer d=256 model, {args.steps} tokens x 2 sequences")
    print(f"{'scheme':>18} {'top-1 agree':>11} {'logit err':>9} {'step b=1 ms':>11} {'x':>5} "
          f"{f'step b={args.batch} ms':>12} {'x':>5} {'weights GB':>10} {'KV tokens':>10}")
    base1 = baseb = 0.0
    for label, dtype, kv, quant in SCHEMES:
        t = IterationTimer(model, hw, dtype, kv, quant)
        s1 = t.iteration_s(args.context, 1, [])
        sb = t.iteration_s(args.context * args.batch, args.batch, [])
        base1, baseb = base1 or s1, baseb or sb
        kv_tok = model.info.kv_bytes_per_token(itemsize(t.kv_dtype))
        blocks = kv_capacity_blocks(hw.memory[0].capacity_bytes, t.weight_bytes(), kv_tok, 16, 0.9)
        c = change[NUMERIC[label]]
        print(f"{label:>18} {c['top1_agreement']:11.2f} {c['logit_rel_error']:9.4f} {s1 * 1e3:11.2f} "
              f"{base1 / s1:5.2f} {sb * 1e3:12.2f} {baseb / sb:5.2f} {t.weight_bytes() / 1e9:10.2f} "
              f"{blocks * 16:10d}")


if __name__ == "__main__":
    main()
