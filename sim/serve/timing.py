"""Iteration times of a serving engine, from the simulator timing the model's step graphs.

One iteration of a continuous-batching server runs, through every layer, the token-parallel
ops (projections, MLP or MoE, norms, rotary, cache writes) on all its ``T`` new tokens at
once, attention per sequence against its own cache, and the final norm and LM head only for
the last token of each of its ``N`` sequences (logits of the other prefill tokens are never
computed). So the engine's time for an iteration is taken apart as

    t = dense(T) + head(N) + attn_decode(B, mean context) + sum_j attn_prefill(q_j, past_j)

where each term is read off the per-op records of ``sim.simulate`` running the model's step
graph (``ServeModel.step_graph``, cast to the serving dtype and fused as an inference engine's
kernels are): ``dense`` and ``head`` from a decode step of ``T`` (or ``N``) sequences
(the tokens of an iteration are one flat block of rows to the GEMMs, whatever sequences
they come from; a decode-shaped graph keeps learned position tables in range), the
decode attention from a decode step of ``B`` sequences whose caches hold the mean context
(the attention kernel streams every sequence's cache, so its bytes and FLOPs are linear in the
summed context), and each prefill chunk's attention from a step of ``q`` new tokens after
``past`` cached ones. The attention terms simulate the step graph's ``Attention`` node alone
(``ServeModel.attention_graph``; every layer runs the same one) times the layer count.

``dense`` and ``head`` are simulated for the whole depth from the two-layer step graph: the
ops outside the blocks, the first layer, and ``L - 1`` times the second (layers are
identical, so this equals the full-depth run; ``tests/test_serve.py`` checks it).

Bucketing (the only approximation, documented in docs/inference.md): each size is timed on a
grid -- every integer up to 16, then 8 points per octave (``grid_points``) -- and a value
between two grid points is linearly interpolated (bilinearly for the two-size attention
terms). Simulated points are memoised, so thousands of iterations cost a few hundred
simulations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from sim.dtypes import itemsize
from sim.errors import SimError
from sim.graph import Graph
from sim.serve.model import ServeModel

_BLOCK = re.compile(r"\.\d+(\.|$)")  # a layer name inside a repeated block: "layers.3.attn.q"


def grid_points(v: int, exact_to: int = 16, per_octave: int = 8) -> tuple[int, int]:
    """The grid points below and above ``v`` (equal when ``v`` is one).

    >>> grid_points(12), grid_points(17), grid_points(1000)
    ((12, 12), (16, 17), (939, 1024))
    """
    if v <= exact_to:
        return v, v
    j = per_octave * math.log2(v / exact_to)
    lo = round(exact_to * 2 ** (math.floor(j + 1e-9) / per_octave))
    hi = round(exact_to * 2 ** (math.ceil(j - 1e-9) / per_octave))
    if lo > v:
        lo = round(exact_to * 2 ** ((math.floor(j + 1e-9) - 1) / per_octave))
    if hi < v:
        hi = round(exact_to * 2 ** ((math.ceil(j - 1e-9) + 1) / per_octave))
    return lo, hi


def _lerp(v: float, lo: int, hi: int, f_lo: float, f_hi: float) -> float:
    return f_lo if hi == lo else f_lo + (f_hi - f_lo) * (v - lo) / (hi - lo)


@dataclass(frozen=True)
class StepParts:
    """Simulated seconds of one step graph, split by what they scale with."""

    dense_s: float  # token-parallel ops (per new token)
    head_s: float  # final norm + LM head (per sequence)
    attn_s: float  # attention over the cache (per sequence and context)

    def __add__(self, o: StepParts) -> StepParts:
        return StepParts(self.dense_s + o.dense_s, self.head_s + o.head_s, self.attn_s + o.attn_s)

    def scaled(self, k: float) -> StepParts:
        return StepParts(self.dense_s * k, self.head_s * k, self.attn_s * k)


def _layer_index(node: Any) -> int:
    """The repeat index of the block a node belongs to (-1 outside blocks)."""
    m = _BLOCK.search(str(node.meta.get("layer", "")))
    return int(m.group(0).strip(".")) if m else -1


def _classify(graph: Graph) -> dict[str, str]:
    """Node name -> 'attn' (an Attention), 'head' (after the repeated blocks: final norm, LM
    head) or 'dense' (the rest, embeddings included)."""
    cls: dict[str, str] = {}
    seen_block = False
    for node in graph.topo_order():
        in_block = bool(_BLOCK.search(str(node.meta.get("layer", ""))))
        seen_block = seen_block or in_block
        if node.op == "Attention":
            cls[node.name] = "attn"
        elif seen_block and not in_block:
            cls[node.name] = "head"
        else:
            cls[node.name] = "dense"
    return cls


def _classify_fused(fused: Graph, plain: dict[str, str]) -> dict[str, str]:
    """Classes of a fused graph's nodes from their members': attn if any member is, head if
    all are, dense otherwise."""
    out: dict[str, str] = {}
    for node in fused.nodes.values():
        members = node.meta.get("fused")
        kinds = {plain.get(m, "dense") for m in members} if isinstance(members, list) \
            else {plain.get(node.name, "dense")}
        out[node.name] = "attn" if "attn" in kinds else "head" if kinds == {"head"} else "dense"
    return out


@dataclass
class IterationTimer:
    """Memoised iteration times of ``model`` on ``hw`` in ``dtype``.

    ``engine`` holds extra ``sim.simulate`` options (``cuda_graphs``, ``dispatch_s`` ...);
    ``fuse`` runs the fusion pass on each step graph (on by default: inference engines run
    fused QKV / gate-up GEMMs and fused elementwise epilogues)."""

    model: ServeModel
    hw: Any
    dtype: str = "bf16"
    kv_dtype: str = ""  # the KV cache's dtype ("" = dtype); fp8 times attention as an fp8 kernel
    quant: str = ""  # "int8" / "int4": weight-only quantised GEMMs (sim.serve.quantize)
    tp_group: tuple[str, ...] = ()  # tensor-parallel ranks (devices of ``hw``, a system); model = one rank
    vocab_sharded: bool = False  # the rank's LM head holds vocab / tp rows (logits all-gathered)
    ep_group: tuple[str, ...] = ()  # expert-parallel ranks (MoE; attention data-parallel)
    ep_dispatcher: str = "alltoall"  # token dispatch of expert parallelism ("allgather": upper bound)
    pp: int = 1  # pipeline stages across nodes (the model's layers split evenly)
    p2p_s: Any = None  # bytes -> seconds of one activation send between stages (pp > 1)
    fuse: bool = True
    engine: dict[str, Any] = field(default_factory=dict)
    simulations: int = 0
    _memo: dict[tuple[int, int, int], StepParts] = field(default_factory=dict)
    _attn: dict[tuple[int, int, int], float] = field(default_factory=dict)
    _weights: float | None = None

    def __post_init__(self) -> None:
        self.kv_dtype = self.kv_dtype or self.dtype
        if self.quant not in ("", "int8", "int4"):
            raise SimError(f"unknown weight quantisation {self.quant!r} (int8 or int4)", where="--quant")

    # ---------------------------------------------------------------- one step graph
    def _prepared(self, batch: int, seq: int, kv: int) -> Graph:
        """The two-layer step graph in the serving dtype (and quantisation), unfused."""
        from sim.passes.precision import cast_graph

        g = cast_graph(self.model.step_graph(batch, seq, kv, n_layer=min(self.model.info.n_layer, 2)),
                       self.dtype)
        if self.quant:
            from sim.serve.quantize import transform_for

            g = transform_for(self.quant)(g)
        if len(self.tp_group) > 1:
            from sim.serve.parallel import add_tp_collectives

            g = add_tp_collectives(g, list(self.tp_group), self.vocab_sharded)
        if len(self.ep_group) > 1:
            from sim.serve.parallel import add_ep_collectives

            k = int(self.model.params.get("top_k", 2) or 2)
            g = add_ep_collectives(g, list(self.ep_group), k, self.ep_dispatcher)
        return g

    def weight_bytes(self) -> float:
        """Bytes of the model's weights as served (dtype, quantisation), all layers: those of
        the two-layer graph with the second layer's counted ``L - 1`` times."""
        if self._weights is None:
            g = self._prepared(1, 1, 2)
            L = self.model.info.n_layer
            total = 0.0
            for name, spec in g.params.items():
                quantised = name.endswith((".q4", ".q8", ".scales"))
                if not (g.param_info[name].trainable or quantised):
                    continue  # rotary tables, position constants
                m = _BLOCK.search(name)
                total += ((L - 1) if m and int(m.group(0).strip(".")) == 1 else 1) * spec.nbytes
            self._weights = total
        return self._weights

    def step(self, batch: int, seq: int, kv: int) -> StepParts:
        """Seconds of one full-depth step (``batch`` sequences, ``seq`` new tokens, caches of
        ``kv`` positions). Simulates the two-layer step graph: ops outside the blocks, plus
        the first layer, plus ``L - 1`` times the second (the steady state: layers are
        identical; the first also pays the reuse cache's warm-up). Memoised."""
        key = (batch, seq, kv)
        if key in self._memo:
            return self._memo[key]
        from sim.engine import simulate

        L = self.model.info.n_layer
        g = self._prepared(batch, seq, kv)
        cls = _classify(g)
        if self.fuse:
            from sim.passes.fusion import fuse

            g = fuse(g)
            cls = _classify_fused(g, cls)
        res = simulate(g, self.hw, host_inputs=False, **self.engine)
        self.simulations += 1
        parts = {"dense": 0.0, "head": 0.0, "attn": 0.0}
        group = self.tp_group or self.ep_group
        rank = group[0] if group else None
        for rec in res.ops:
            name = rec["name"]
            if name not in cls or (rank is not None and rec["device"] != rank):
                continue  # collectives have one record per member: count this rank's
            k = L - 1 if _layer_index(g.nodes[name]) == 1 else 1
            parts[cls[name]] += k * (rec["end_s"] - rec["start_s"])
        self._memo[key] = StepParts(parts["dense"], parts["head"], parts["attn"])
        return self._memo[key]

    # ---------------------------------------------------------------- the terms
    def dense_s(self, tokens: int) -> float:
        lo, hi = grid_points(tokens)
        return _lerp(tokens, lo, hi, self.step(lo, 1, 2).dense_s, self.step(hi, 1, 2).dense_s)

    def head_s(self, seqs: int) -> float:
        lo, hi = grid_points(seqs)
        return _lerp(seqs, lo, hi, self.step(lo, 1, 2).head_s, self.step(hi, 1, 2).head_s)

    def attention_s(self, batch: int, seq: int, cache: int) -> float:
        """Seconds of the model's attention over all layers for ``batch`` sequences of ``seq``
        new tokens whose caches hold ``cache`` positions (this step's included): the step
        graph's ``Attention`` node, with these sizes, simulated alone (every layer's is the
        same op), times the layer count. Memoised."""
        key = (-batch, seq, cache)
        if key not in self._attn:
            from sim.engine import simulate
            from sim.passes.precision import store_as

            g = store_as(self.model.attention_graph(batch, seq, cache), self.kv_dtype)
            res = simulate(g, self.hw, host_inputs=False, **self.engine)
            self.simulations += 1
            self._attn[key] = self.model.info.n_layer * sum(
                r["end_s"] - r["start_s"] for r in res.ops if r["op"] == "Attention")
        return self._attn[key]

    def decode_attn_s(self, batch: int, mean_context: float) -> float:
        """Attention of ``batch`` decode sequences whose caches hold ``mean_context`` tokens
        on average (this step's token included), bilinear on the (batch, context) grid."""
        if batch <= 0:
            return 0.0
        b0, b1 = grid_points(batch)
        c = max(1.0, mean_context)
        c0, c1 = grid_points(math.floor(c))
        if c1 < c:
            c1 = grid_points(c0 + 1)[1]

        def f(b: int, cc: int) -> float:
            return self.attention_s(b, 1, cc)

        lo = _lerp(c, c0, c1, f(b0, c0), f(b0, c1))
        hi = _lerp(c, c0, c1, f(b1, c0), f(b1, c1))
        return _lerp(batch, b0, b1, lo, hi)

    def prefill_attn_s(self, tokens: int, past: int) -> float:
        """Attention of one prefill chunk of ``tokens`` new tokens after ``past`` cached ones,
        bilinear on the (tokens, past) grid."""
        if tokens <= 0:
            return 0.0
        p0, p1 = (0, 0) if past == 0 else grid_points(past)
        q0, q1 = grid_points(tokens)

        def f(q: int, p: int) -> float:
            return self.attention_s(1, q, q + p)

        lo = _lerp(past, p0, p1, f(q0, p0), f(q0, p1))
        hi = _lerp(past, p0, p1, f(q1, p0), f(q1, p1))
        return _lerp(tokens, q0, q1, lo, hi)

    def iteration_s(self, decode_contexts_sum: int, n_decode: int,
                    prefills: list[tuple[int, int]]) -> float:
        """Seconds of one iteration: ``n_decode`` decode sequences whose contexts (after this
        step's token) sum to ``decode_contexts_sum``, plus prefill chunks ``(tokens, past)``.
        With ``pp`` stages it is the batch's trip through all of them: every layer once, plus
        ``pp - 1`` activation sends between nodes."""
        tokens = n_decode + sum(q for q, _ in prefills)
        seqs = n_decode + len(prefills)
        if tokens <= 0:
            raise SimError("an iteration with no tokens", where="serve")
        t = self.dense_s(tokens) + self.head_s(seqs)
        if self.pp > 1 and self.p2p_s is not None:
            # the batch's activations cross pp - 1 stage boundaries on the way through
            t += (self.pp - 1) * self.p2p_s(tokens * self.model.info.hidden * itemsize(self.dtype))
        if n_decode:
            t += self.decode_attn_s(n_decode, decode_contexts_sum / n_decode)
        for q, p in prefills:
            t += self.prefill_attn_s(q, p)
        return t
