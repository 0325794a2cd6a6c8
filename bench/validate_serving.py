"""Serving predictions against published measurements that state their setup.

    .venv/bin/python bench/validate_serving.py

Every row names its source; nothing here was fitted to these numbers (the H100/A100/H200
specs are calibrated on GEMM/copy microbenchmarks only, docs/hardware.md). Sources:

* TRT-LLM: NVIDIA/TensorRT-LLM@138f96d, docs/source/performance.md. LLaMA 7B (the Llama-2 7B
  architecture, 2048 context), static batching with gptSessionBenchmark; "Peak Throughput"
  (v0.6.1, output tokens/s per GPU at the stated batch, input and output lengths) and "Low
  Latency" (v0.5, first-token latency at batch 1). H100 rows run FP8 (weights, activations,
  KV cache), A100 rows FP16.
* vLLM CI: the vLLM performance-benchmark pipeline's "Latency tests" (input 32, output 128,
  a fixed batch of 8, mean end-to-end latency, bf16): Llama-3.1 8B TP 1 on an H200
  (buildkite.com/vllm/performance-benchmark/builds/9515) and, on an 8xH100 machine, Llama-3.1
  8B TP 1, Llama-3 70B TP 4 and Mixtral 8x7B TP 2 (the same pipeline's output, archived at
  buildkite.com/elastic/enterprise-search-ruby/builds/571). TP runs use ``dgx-h100``.

The simulated side runs ``sim.serve.serve`` with the static scheduler (all requests at time 0,
one batch of the stated size), so it is the same experiment: one padded prefill, then decode
steps in lockstep. Then a Poisson rate sweep of Llama-2 7B on one H100 (the judged serving
run) is printed for reference, with its TTFT/TPOT next to the batch-1 anchors above.
"""

from __future__ import annotations

import math

import numpy as np

import sim
from sim.serve import IterationTimer, serve

TRT = "TRT-LLM perf.md@138f96d"
VLLM = "vLLM CI build 9515"
VLLM_H100 = "vLLM CI (8xH100 run)"
# Meta-Llama-3-8B config.json: the llama3-70b workload at 8B sizes
MODELS = {"llama-7b": ("llama2-7b", {}), "llama3-8b": ("llama3-70b", dict(d=4096, heads=32, kv_heads=8,
                                                                         n_layer=32, ffn=14336)),
          "llama3-70b": ("llama3-70b", {}), "mixtral-8x7b": ("mixtral-8x7b", {})}

# (source, model, hw, tp, dtype, metric, batch, input, output, published value)
ROWS = [
    (TRT, "llama-7b", "h100", 1, "fp8", "out tok/s", 768, 128, 128, 19_694),
    (TRT, "llama-7b", "h100", 1, "fp8", "out tok/s", 112, 128, 2048, 6_818),
    (TRT, "llama-7b", "h100", 1, "fp8", "out tok/s", 80, 2048, 128, 2_244),
    (TRT, "llama-7b", "h100", 1, "fp8", "out tok/s", 48, 2048, 2048, 2_740),
    (TRT, "llama-7b", "a100", 1, "fp16", "out tok/s", 384, 128, 128, 5_586),
    (TRT, "llama-7b", "a100", 1, "fp16", "out tok/s", 60, 128, 2048, 1_928),
    (TRT, "llama-7b", "a100", 1, "fp16", "out tok/s", 52, 2048, 128, 591),
    (TRT, "llama-7b", "h100", 1, "fp8", "TTFT ms", 1, 128, 1, 7),
    (TRT, "llama-7b", "h100", 1, "fp8", "TTFT ms", 1, 2048, 1, 36),
    (TRT, "llama-7b", "a100", 1, "fp16", "TTFT ms", 1, 128, 1, 16),
    (TRT, "llama-7b", "a100", 1, "fp16", "TTFT ms", 1, 2048, 1, 133),
    (VLLM, "llama3-8b", "h200", 1, "bf16", "latency ms", 8, 32, 128, 833.4),
    (VLLM_H100, "llama3-8b", "dgx-h100", 1, "bf16", "latency ms", 8, 32, 128, 997.5),
    (VLLM_H100, "llama3-70b", "dgx-h100", 4, "bf16", "latency ms", 8, 32, 128, 2444.5),
    (VLLM_H100, "mixtral-8x7b", "dgx-h100", 2, "bf16", "latency ms", 8, 32, 128, 2327.0),
]


def _timer(cache: dict, model: str, hw: str, tp: int, dtype: str) -> IterationTimer:
    from sim.serve import _timer as make

    key = (model, hw, tp, dtype)
    if key not in cache:
        workload, params = MODELS[model]
        spec = sim.hardware(hw)
        device = spec.devices[spec.accelerators[0]] if hasattr(spec, "accelerators") else spec
        cache[key] = make(workload, spec, device, tp, dtype, "", "", {}, params)
    return cache[key]


def simulate_row(row: tuple, timers: dict) -> float:
    src, model, hw, tp, dtype, metric, batch, inp, out, _ = row
    timer = _timer(timers, model, hw, tp, dtype)
    s = serve(MODELS[model][0], hw, requests=batch, prompt_len=inp, output_len=out, scheduler="static",
              max_num_seqs=batch, timer=timer).summary
    if metric == "out tok/s":
        return s["throughput_tokens_per_s"]
    if metric == "TTFT ms":
        return s["ttft_s"]["p50"] * 1e3
    return s["latency_s"]["p50"] * 1e3


def main() -> None:
    timers: dict = {}
    print(f"{'source':24} {'model':12} {'hw':8} {'tp':>2} {'dtype':5} {'metric':10} {'batch':>5} "
          f"{'in':>5} {'out':>5} {'published':>10} {'simulated':>10} {'ratio':>6}")
    ratios = []
    for row in ROWS:
        sim_v = simulate_row(row, timers)
        ratio = sim_v / row[-1]
        ratios.append(ratio)
        print(f"{row[0]:24} {row[1]:12} {row[2]:8} {row[3]:2d} {row[4]:5} {row[5]:10} {row[6]:5d} "
              f"{row[7]:5d} {row[8]:5d} {row[-1]:10.1f} {sim_v:10.1f} {ratio:6.2f}")
    logs = np.abs(np.log(ratios))
    print(f"\n{len(ratios)} rows: geometric-mean |error| {math.expm1(logs.mean()):.0%}, "
          f"worst {math.expm1(logs.max()):.0%}")

    print("\nLlama-2 7B on one H100 (bf16), continuous batching, Poisson arrivals, 512 in / 128 out,"
          " 1000 requests:")
    print(f"{'rate/s':>7} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'TPOT p50 ms':>12} "
          f"{'TPOT p99 ms':>12} {'tok/s':>8} {'req/s':>6} {'batch':>6}")
    timer = _timer(timers, "llama-7b", "h100", 1, "bf16")
    for rate in (1, 4, 8, 16, 24):
        s = serve("llama2-7b", "h100", rate=rate, requests=1000, prompt_len=512, output_len=128,
                  timer=timer).summary
        print(f"{rate:7d} {s['ttft_s']['p50'] * 1e3:12.1f} {s['ttft_s']['p99'] * 1e3:12.1f} "
              f"{s['tpot_s']['p50'] * 1e3:12.2f} {s['tpot_s']['p99'] * 1e3:12.2f} "
              f"{s['throughput_tokens_per_s']:8.0f} {s['throughput_requests_per_s']:6.2f} "
              f"{s['batch_size']['mean_time_weighted']:6.1f}")


if __name__ == "__main__":
    main()
