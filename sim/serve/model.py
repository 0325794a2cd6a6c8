"""A decoder-only workload as a servable model: its prefill / decode step graphs, the sizes
a server needs (layers, KV heads, head size, weight and KV-cache bytes), and greedy generation
on the NumPy executor, with the KV cache and by recomputing the whole sequence.

A step graph is the workload loaded with ``kv_cache=C`` (see ``docs/inference.md``): ``seq``
new tokens per sequence are appended after ``cache_lens`` cached ones, in caches of ``C``
positions. ``seq=1`` is a decode step; a prefill (or a prefill chunk) is ``seq`` = its tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.dtypes import to_numpy
from sim.errors import GraphError
from sim.exec.executor import Executor
from sim.frontends import load
from sim.graph import Graph, TensorSpec

LOGITS = "logits"


@dataclass(frozen=True)
class ModelInfo:
    """What a server needs to know about a model, read off its (one-layer) step graph."""

    name: str
    n_layer: int
    kv_heads: int
    head_dim: int
    params: int
    hidden: int
    max_context: int

    def kv_bytes_per_token(self, itemsize: float) -> float:
        """Keys and values of one token over all layers."""
        return 2.0 * self.n_layer * self.kv_heads * self.head_dim * itemsize


class ServeModel:
    """A workload (bundled name or YAML path) with the ``kv_cache`` parameter.

    ``overrides`` fix other workload params (``d=64`` for a tiny model)."""

    def __init__(self, workload: str, **overrides: Any) -> None:
        self.workload = workload
        self.overrides = dict(overrides)
        try:
            probe = self.step_graph(1, 1, 2)
        except GraphError as err:
            if "names no param" not in err.message:
                raise
            raise GraphError("not a servable decoder workload: it has no kv_cache param "
                             "(docs/inference.md)", where=workload) from None
        caches = probe.meta.get("kv_cache")
        if not caches:
            raise GraphError("the workload has no KV-cache attention (give its transformer_block "
                             "layers kv_cache: kv_cache)", where=workload)
        params = probe.meta.get("params", {})
        self.params: dict[str, Any] = dict(params)  # the workload's resolved params
        if "n_layer" not in params:
            raise GraphError("a servable workload needs an n_layer param", where=workload)
        _, kvh, _, hd = probe.tensors[caches[0][0]].shape
        att = next(n for n in probe.nodes.values() if n.op == "Attention")
        self._attn_attrs = dict(att.attrs)
        self._q_heads = probe.tensors[att.inputs[0]].shape[1]
        self._float = probe.tensors[att.inputs[0]].dtype
        self.info = ModelInfo(name=probe.name, n_layer=int(params["n_layer"]), kv_heads=kvh,
                              head_dim=hd, params=probe.param_count,
                              hidden=int(params.get("d", 0) or 0),
                              max_context=int(params.get("n_ctx", params.get("max_context", 0)) or 0))

    def step_graph(self, batch: int, seq: int, kv_cache: int, **more: Any) -> Graph:
        """The graph of one step: ``batch`` sequences, ``seq`` new tokens each, caches of
        ``kv_cache`` positions; the present keys/values are graph outputs after the logits."""
        g = load(self.workload, **{**self.overrides, **more, "batch": batch, "seq": seq,
                                   "kv_cache": kv_cache})
        extra = [t for entry in g.meta.get("kv_cache", []) for t in (entry[1], entry[3])]
        g.set_outputs([*g.outputs, *extra])
        return g

    def attention_graph(self, batch: int, seq: int, cache: int) -> Graph:
        """The step graph's ``Attention`` node alone, for ``batch`` sequences of ``seq`` new
        tokens over caches of ``cache`` positions (all valid): inputs Q [batch, q_heads, seq,
        head_dim], the caches [batch, kv_heads, cache, head_dim] and their lengths."""
        i = self.info
        g = Graph(f"{i.name}.attention")
        q = g.add_input("q", TensorSpec((batch, self._q_heads, seq, i.head_dim), self._float))
        kv = TensorSpec((batch, i.kv_heads, cache, i.head_dim), self._float)
        k, v = g.add_input("present_key", kv), g.add_input("present_value", kv)
        lens = g.add_input("total_lens", TensorSpec((batch,), "int64"))
        g.add_node("Attention", [q, k, v, "", "", "", lens], ["y"], self._attn_attrs, name="sdpa")
        g.set_outputs(["y"])
        return g.verify()

    def full_graph(self, batch: int, seq: int) -> Graph:
        """The graph without a cache (every position recomputed)."""
        return load(self.workload, **{**self.overrides, "batch": batch, "seq": seq, "kv_cache": 0})


def _shared(params: Mapping[str, np.ndarray], g: Graph) -> dict[str, np.ndarray]:
    """The trainable parameters of ``params`` that ``g`` has with the same shape."""
    return {k: v for k, v in params.items()
            if k in g.params and g.param_info[k].trainable and g.params[k].shape == v.shape}


def generate_cached(model: ServeModel, prompt: np.ndarray, steps: int, seed: int = 0, *,
                    forced: np.ndarray | None = None, transform: Callable[[Graph], Graph] | None = None,
                    kv_dtype: str = "") -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy generation with the KV cache: one prefill step over the prompt [B, P], then
    ``steps - 1`` decode steps of one token each. Returns the tokens [B, steps] and each step's
    last-position logits [B, vocab]. ``forced`` [B, steps] feeds those tokens instead of the
    argmax (teacher forcing); ``transform`` rewrites both step graphs (a cast, a
    quantisation); ``kv_dtype`` stores the cache in that dtype between steps (fp8)."""
    B, P = prompt.shape
    cap = P + steps
    tf = transform or (lambda g: g)
    pre = tf(model.step_graph(B, P, cap))
    ex = Executor(pre, seed=seed)
    dec = tf(model.step_graph(B, 1, cap))
    ex_dec = Executor(dec, seed=seed, params=_shared(ex.params, dec))
    caches: dict[str, np.ndarray] = {}
    for past_k, _, past_v, _ in pre.meta["kv_cache"]:
        caches[past_k] = np.zeros(pre.tensors[past_k].shape, np.float32)
        caches[past_v] = np.zeros(pre.tensors[past_v].shape, np.float32)
    lens = np.zeros(B, np.int64)
    ids, graph, runner = prompt, pre, ex
    tokens, logits = [], []
    for i in range(steps):
        out = runner.run({"input_ids": ids, "cache_lens": lens, **caches}).values
        last = out[LOGITS][:, -1, :].astype(np.float64)
        logits.append(last)
        tok = last.argmax(axis=-1).astype(np.int64) if forced is None else forced[:, i]
        tokens.append(tok)
        for past_k, pres_k, past_v, pres_v in graph.meta["kv_cache"]:
            caches[past_k], caches[past_v] = out[pres_k], out[pres_v]
        if kv_dtype:
            caches = {k: np.asarray(v).astype(to_numpy(kv_dtype)).astype(np.float32)
                      for k, v in caches.items()}
        lens = lens + ids.shape[1]
        ids, graph, runner = tok[:, None], dec, ex_dec
    return np.stack(tokens, axis=1), logits


def generate_recompute(model: ServeModel, prompt: np.ndarray, steps: int, seed: int = 0,
                       params: Mapping[str, np.ndarray] | None = None
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy generation without a cache: every step runs the whole sequence so far."""
    seq = prompt
    tokens, logits = [], []
    for _ in range(steps):
        g = model.full_graph(seq.shape[0], seq.shape[1])
        ex = Executor(g, seed=seed, params=_shared(params or {}, g))
        last = ex.run({"input_ids": seq}).values[LOGITS][:, -1, :].astype(np.float64)
        logits.append(last)
        tok = last.argmax(axis=-1).astype(np.int64)
        tokens.append(tok)
        seq = np.concatenate([seq, tok[:, None]], axis=1)
    return np.stack(tokens, axis=1), logits
