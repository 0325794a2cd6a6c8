"""``sim serve``: simulate serving a language model on a device (docs/inference.md)."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from sim.cli.args import parse_hw_sets, parse_sets


def add_parser(sub: Any) -> None:
    """Register ``sim serve`` on the CLI's subparsers."""
    p = sub.add_parser("serve", help="simulate LLM serving: TTFT, TPOT, latency, throughput")
    p.add_argument("workload", help="a decoder workload with kv_cache (llama2-7b, gpt2, ...)")
    p.add_argument("--hw", default="h100", help="device spec name or YAML path (default h100)")
    p.add_argument("--rate", type=float, default=math.inf,
                   help="Poisson arrival rate in requests/s (default: all at time 0)")
    p.add_argument("--requests", type=int, default=100, help="number of requests (default 100)")
    p.add_argument("--prompt-len", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("--trace", metavar="FILE",
                   help="requests from a CSV/JSONL trace (arrival_s, prompt_len, output_len)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    p.add_argument("--scheduler", default="continuous", choices=("continuous", "static"))
    p.add_argument("--dtype", default="bf16", help="weights and activations (default bf16)")
    p.add_argument("--kv-dtype", default="", help="KV-cache dtype (default: --dtype; fp8)")
    p.add_argument("--quant", default="", choices=("", "int8", "int4"),
                   help="weight-only quantised GEMMs (weights dequantised in the GEMM)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor parallelism over the first N GPUs of a system spec (--hw dgx-h100)")
    p.add_argument("--ep", type=int, default=1,
                   help="expert parallelism of a MoE model over N GPUs (data-parallel attention)")
    p.add_argument("--ep-dispatcher", default="alltoall", choices=("alltoall", "allgather"),
                   help="EP token dispatch: all-to-all of the routed tokens (default) or all-gather "
                        "of every rank's tokens (an upper bound)")
    p.add_argument("--pp", type=int, default=1,
                   help="pipeline parallelism over N nodes of a cluster spec (--hw dgx-h100-cluster)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-batched-tokens", type=int, default=2048,
                   help="token budget per iteration (chunked prefill)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    p.add_argument("--memory-utilization", type=float, default=0.9,
                   help="share of device memory for weights + KV cache (default 0.9)")
    p.add_argument("--kv-blocks", type=int, help="KV-cache blocks (default: what memory leaves)")
    p.add_argument("--set", action="append", metavar="K=V", help="override a workload param")
    p.add_argument("--hw-set", action="append", metavar="FIELD=VALUE",
                   help="override a spec field, e.g. memory.hbm.bandwidth='6.7 TB/s'")
    p.add_argument("--json", metavar="F", help="write the summary as JSON")
    p.add_argument("--perfetto", metavar="F", help="write a Perfetto trace of iterations and requests")
    p.set_defaults(func=serve_command)


def _fmt(v: Any, scale: float = 1.0) -> str:
    return "-" if v is None else f"{v * scale:10.2f}"


def serve_command(args: argparse.Namespace) -> int:
    """Run the serving simulation, print its summary, write the files asked for."""
    from sim.hw import load_hardware
    from sim.serve import serve

    hw = load_hardware(args.hw, **parse_hw_sets(args.hw_set))
    t0 = time.perf_counter()
    res = serve(args.workload, hw, rate=args.rate, requests=args.requests,
                prompt_len=args.prompt_len, output_len=args.output_len, trace=args.trace,
                scheduler=args.scheduler, dtype=args.dtype, kv_dtype=args.kv_dtype, quant=args.quant,
                tp=args.tp, ep=args.ep, ep_dispatcher=args.ep_dispatcher, pp=args.pp, seed=args.seed,
                max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_batched_tokens,
                block_size=args.block_size, memory_utilization=args.memory_utilization,
                kv_blocks=args.kv_blocks, **parse_sets(args.set))
    wall = time.perf_counter() - t0
    s = res.summary
    quant = f", {s['quant']} weights" if s["quant"] else ""
    quant += f", TP {s['tp']}" if s["tp"] > 1 else ""
    quant += f", EP {s['ep']}" if s["ep"] > 1 else ""
    quant += f", PP {s['pp']}" if s["pp"] > 1 else ""
    print(f"{s['workload']} on {s['hardware']} ({s['dtype']}{quant}, KV {s['kv_dtype']}), "
          f"{s['scheduler']} batching: {s['completed']}/{s['requests']} requests in "
          f"{s['duration_s']:.2f} s simulated ({wall:.1f} s wall, {s['timing']['simulations']} "
          "engine runs)")
    print(f"{'':14s}{'p50':>10s}{'p90':>10s}{'p99':>10s}")
    for key, label in (("ttft_s", "TTFT ms"), ("tpot_s", "TPOT ms"), ("latency_s", "latency s")):
        scale = 1.0 if key == "latency_s" else 1e3
        print(f"{label:14s}" + "".join(_fmt(s[key][q], scale) for q in ("p50", "p90", "p99")))
    kv = s["kv_cache"]
    print(f"throughput: {s['throughput_tokens_per_s']:.1f} output tokens/s, "
          f"{s['throughput_requests_per_s']:.2f} requests/s; mean batch "
          f"{s['batch_size']['mean_time_weighted']:.1f} (max {s['batch_size']['max']}); "
          f"KV cache {kv['capacity_tokens']} tokens, peak {kv['peak_occupancy']:.0%}; "
          f"{s['preemptions']} preemptions")
    if args.json:
        res.write_json(args.json)
    if args.perfetto:
        res.write_trace(args.perfetto)
    return 0
