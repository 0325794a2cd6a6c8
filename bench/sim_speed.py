"""How fast the engine simulates: ops per wall second against a bare SimPy loop, and the wall
time to simulate the GPT-3 175B forward graph.

    .venv/bin/python bench/sim_speed.py [--layers 96] [--repeat 3]

The bare loop is one SimPy process doing as many ``timeout`` events as the graph has records
(ops and transfers), so the ratio is the engine's overhead per op over SimPy's own floor.
GPT-3 175B does not fit one H100, so it runs on a copy of the H100 spec with room for it
(the time per op is unchanged; only the capacity check is lifted).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import simpy  # noqa: E402

import sim  # noqa: E402
from sim.engine import FixedCost  # noqa: E402
from sim.graph import Graph, TensorSpec  # noqa: E402
from sim.hw.spec import DeviceSpec  # noqa: E402
from sim.passes.precision import cast_graph  # noqa: E402


def gpt_forward(layers: int = 96, d: int = 12288, heads: int = 96, seq: int = 2048,
                batch: int = 1, vocab: int = 50257) -> Graph:
    """A GPT-3-style decoder forward graph (GPT-3 175B by default), built op by op."""
    g = Graph(f"gpt-{layers}L-d{d}")
    g.add_input("tokens", TensorSpec((batch, seq), "int64"))
    g.add_param("wte", TensorSpec((vocab, d)))
    g.add_param("wpe", TensorSpec((seq, d)))
    (h,) = g.add_node("Gather", ["wte", "tokens"], ["emb"], {"axis": 0}, name="embed.gather",
                      meta={"layer": "embed"})
    (h,) = g.add_node("Add", [h, "wpe"], ["h0"], name="embed.pos", meta={"layer": "embed"})

    def linear(x: str, name: str, n_in: int, n_out: int, layer: str) -> str:
        g.add_param(f"{name}.w", TensorSpec((n_in, n_out)))
        g.add_param(f"{name}.b", TensorSpec((n_out,)))
        (y,) = g.add_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=f"{name}.mm",
                          meta={"layer": layer})
        (y,) = g.add_node("Add", [y, f"{name}.b"], [f"{name}.out"], name=f"{name}.bias",
                          meta={"layer": layer})
        return y

    def norm(x: str, name: str, layer: str) -> str:
        g.add_param(f"{name}.g", TensorSpec((d,)), "ones")
        g.add_param(f"{name}.b", TensorSpec((d,)), "zeros")
        (y,) = g.add_node("LayerNormalization", [x, f"{name}.g", f"{name}.b"], [f"{name}.out"],
                          {"axis": -1}, name=name, meta={"layer": layer})
        return y

    for i in range(layers):
        L = f"block{i}"
        x = norm(h, f"{L}.ln1", L)
        q = linear(x, f"{L}.q", d, d, L)
        k = linear(x, f"{L}.k", d, d, L)
        v = linear(x, f"{L}.v", d, d, L)
        (a,) = g.add_node("Attention", [q, k, v], [f"{L}.attn"],
                          {"is_causal": 1, "q_num_heads": heads, "kv_num_heads": heads},
                          name=f"{L}.attn", meta={"layer": L})
        o = linear(a, f"{L}.proj", d, d, L)
        (h,) = g.add_node("Add", [h, o], [f"{L}.res1"], name=f"{L}.res1", meta={"layer": L})
        x = norm(h, f"{L}.ln2", L)
        f = linear(x, f"{L}.fc1", d, 4 * d, L)
        (f,) = g.add_node("Gelu", [f], [f"{L}.gelu"], name=f"{L}.gelu", meta={"layer": L})
        f = linear(f, f"{L}.fc2", 4 * d, d, L)
        (h,) = g.add_node("Add", [h, f], [f"{L}.res2"], name=f"{L}.res2", meta={"layer": L})
    x = norm(h, "ln_f", "head")
    g.add_param("lm_head", TensorSpec((d, vocab)))
    (logits,) = g.add_node("MatMul", [x, "lm_head"], ["logits"], name="lm_head",
                           meta={"layer": "head"})
    g.set_outputs([logits])
    g.meta["batch"] = batch
    return g


def bare_simpy(n: int) -> float:
    """Wall seconds for one SimPy process to run ``n`` timeouts."""
    env = simpy.Environment()

    def proc(env: simpy.Environment):  # type: ignore[no-untyped-def]
        for _ in range(n):
            yield env.timeout(1e-6)

    env.process(proc(env))
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    workload = "workloads/gpt3-175b.yaml"
    if args.layers == 96 and os.path.exists(workload):
        graph = sim.load(workload)
        source = workload
    else:
        graph = gpt_forward(layers=args.layers)
        source = f"built in bench/sim_speed.py ({args.layers} layers)"
    build_s = time.perf_counter() - t0
    h100 = sim.hardware("h100")
    assert isinstance(h100, DeviceSpec)
    roomy = dataclasses.replace(h100, memory=(dataclasses.replace(
        h100.main_memory, capacity_bytes=1e15),) + h100.memory[1:])

    def timed(fn):  # type: ignore[no-untyped-def]
        best, out = float("inf"), None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    best, result = timed(lambda: sim.simulate(graph, roomy, args.dtype))
    cast_s, cast = timed(lambda: cast_graph(graph, args.dtype))
    fixed = FixedCost(1e-4)
    sched_s, _ = timed(lambda: sim.simulate(cast, roomy, cost_fn=lambda n, w, d, t: fixed))
    n = len(result.ops)
    bare = min(bare_simpy(n) for _ in range(args.repeat))
    print(f"graph              {graph.name}: {len(graph.nodes)} nodes, "
          f"{graph.param_count / 1e9:.1f}B params ({source}; built in {build_s:.2f} s)")
    print(f"simulate (wall)    {best:.3f} s for {n} records: cast to {args.dtype} {cast_s:.3f} s, "
          f"work + op costs {best - cast_s - sched_s:.3f} s, schedule and result {sched_s:.3f} s")
    print(f"engine             {n / best:,.0f} simulated ops per wall second end to end, "
          f"{n / sched_s:,.0f} in the scheduler alone")
    print(f"bare SimPy loop    {n / bare:,.0f} timeouts per wall second ({n} timeouts)")
    print(f"ratio              scheduler {sched_s / bare:.1f}x the bare loop's wall time "
          f"(end to end {best / bare:.1f}x)")
    print(f"simulated          {result.makespan_s * 1e3:.2f} ms makespan, "
          f"peak {result.peak_memory_bytes / 2**30:.1f} GiB")
    t0 = time.perf_counter()
    try:
        sim.simulate(graph, h100, args.dtype)
        print("one H100          fits (unexpected)")
    except sim.OutOfMemoryError as err:
        print(f"one H100           {err} ({time.perf_counter() - t0:.3f} s to find out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
