"""Quantised serving: weight-only int8 / int4 GEMMs, fp8, an fp8 KV cache, and the numeric
change each makes, measured by the executor on a small model.

``quantize_weights(graph, bits)`` replaces every ``MatMul`` whose right operand is a 2-D
trainable weight [K, N] (K a multiple of ``block_size``) by ``MatMulNBits`` (weights packed
``bits`` per value with one scale per ``block_size`` block, dequantised in the GEMM); the
packed weights and scales are computed from the weights' values (the graph's initializers or
the executor's deterministic initialisation) when ``values`` is true, or only declared (for
timing) otherwise. Tied ``Gemm`` heads (GPT-2), embeddings and MoE experts stay in the
graph's float dtype.

``numeric_change`` runs greedy generation in fp32 on the executor, then for each scheme
feeds the same tokens (teacher forcing) through the quantised graphs and reports the top-1
agreement with fp32 and the logits' error relative to their spread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.exec.executor import init_param
from sim.graph import Graph, TensorSpec
from sim.ops.quant import quantize

SCHEMES = ("bf16", "fp8", "int8", "int4", "fp8-kv")


def _weight_value(graph: Graph, name: str, seed: int) -> np.ndarray:
    if name in graph.initializers:
        return np.asarray(graph.initializers[name], dtype=np.float64)
    return init_param(name, graph.params[name], graph.param_info[name], seed).astype(np.float64)


def quantize_weights(graph: Graph, bits: int, block_size: int = 128, *, values: bool = False,
                     seed: int = 0) -> Graph:
    """A new graph with weight-only ``bits``-bit GEMMs (module doc)."""
    if bits not in (4, 8):
        raise GraphError(f"weight-only quantisation takes 4 or 8 bits, got {bits}", where="quant")
    targets: dict[str, str] = {}  # weight -> a MatMul using it
    for node in graph.topo_order():
        if node.op != "MatMul" or len(node.inputs) != 2:
            continue
        w = node.inputs[1]
        spec = graph.tensors[w]
        if (w in graph.params and graph.param_info[w].trainable and spec.rank == 2
                and spec.shape[0] % block_size == 0):
            targets.setdefault(w, node.name)
    g = Graph(graph.name, graph.source)
    g.meta = dict(graph.meta)
    g.meta["quant"] = f"int{bits} weight-only, block {block_size}"
    for name, spec in graph.inputs.items():
        g.add_input(name, spec)
    for name, spec in graph.params.items():
        info = graph.param_info[name]
        if name in targets:
            K, N = spec.shape
            blocks = K // block_size
            q_val = s_val = None
            if values:
                q_val, s_val = quantize(_weight_value(graph, name, seed).T, bits, block_size)
            g.add_param(f"{name}.q{bits}", TensorSpec((N, blocks, block_size * bits // 8), "uint8"),
                        "zeros", trainable=False, value=q_val)
            g.add_param(f"{name}.scales", TensorSpec((N, blocks), spec.dtype), "ones",
                        trainable=False, value=s_val)
            continue
        g.add_param(name, spec, info.init, trainable=info.trainable, **info.options)
        if name in graph.initializers:
            g.initializers[name] = graph.initializers[name]
    for node in graph.topo_order():
        w = node.inputs[1] if node.op == "MatMul" and len(node.inputs) == 2 else ""
        if w in targets:
            K, N = graph.tensors[w].shape
            g.add_node("MatMulNBits", [node.inputs[0], f"{w}.q{bits}", f"{w}.scales"], list(node.outputs),
                       {"K": K, "N": N, "bits": bits, "block_size": block_size}, name=node.name,
                       meta=dict(node.meta))
        else:
            g.add_node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), name=node.name,
                       meta=dict(node.meta))
    g.set_outputs(graph.outputs)
    return g.verify()


def transform_for(scheme: str, *, values: bool = False, seed: int = 0) -> Callable[[Graph], Graph]:
    """The graph transform of a serving scheme for the executor: bf16 (a cast), fp8
    (``cast_graph(g, "fp8")``: W8A8 fp8 GEMMs in a bf16 model, the same graph the timing runs),
    int8 / int4 weight-only quantisation; fp8-kv leaves the graph alone (``generate_cached``
    rounds the cache)."""
    from sim.passes.precision import cast_graph

    if scheme in ("bf16", "fp8"):
        return lambda g: cast_graph(g, scheme)
    if scheme in ("int8", "int4"):
        return lambda g: quantize_weights(g, int(scheme[3:]), values=values, seed=seed)
    if scheme in ("fp8-kv", "fp32"):
        return lambda g: g
    raise GraphError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})", where="quant")


def numeric_change(model: Any, prompt: np.ndarray, steps: int, schemes: tuple[str, ...] = SCHEMES,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """Per scheme: ``top1_agreement`` with fp32 greedy decoding (teacher-forced on fp32's
    tokens, so one early miss does not derail the rest) and ``logit_rel_error`` (RMS of the
    logit difference over the RMS of fp32's logits), over ``steps`` generated positions."""
    from sim.serve.model import generate_cached

    ref_tokens, ref_logits = generate_cached(model, prompt, steps, seed=seed)
    ref = np.stack(ref_logits)
    out: dict[str, dict[str, float]] = {}
    for scheme in schemes:
        kv = "fp8" if scheme == "fp8-kv" else ""
        _, logits = generate_cached(model, prompt, steps, seed=seed, forced=ref_tokens,
                                    transform=transform_for(scheme, values=True, seed=seed),
                                    kv_dtype=kv)
        q = np.stack(logits)
        out[scheme] = {
            "top1_agreement": float((q.argmax(-1) == ref.argmax(-1)).mean()),
            "logit_rel_error": float(np.sqrt(((q - ref) ** 2).mean()) / np.sqrt((ref ** 2).mean())),
        }
    return out
