"""Composed tensor x pipeline x data parallelism: one training step equals the single-device step."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.errors import GraphError
from sim.exec import Executor
from sim.graph import Graph
from sim.passes.retype import retype
from sim.passes.training import training_graph


def gpt(batch: int, vocab: int = 64) -> Graph:
    return retype(sim.load("workloads/gpt2.yaml", batch=batch, seq=8, vocab=vocab, n_ctx=8, d=32, heads=4,
                           n_layer=2), "fp64")


def gpt63(batch: int) -> Graph:  # a vocabulary that tp=2 splits only padded (to 64 rows)
    return gpt(batch, 63)


def llama(batch: int) -> Graph:  # no biases: every gradient is non-zero, so Adam's steps compare
    return retype(sim.load("workloads/llama2-7b.yaml", batch=batch, seq=8, vocab=64, d=32, heads=4,
                           kv_heads=2, n_layer=2, ffn=48), "fp64")


def _full(par: Graph, name: str, value: np.ndarray, tp: int) -> np.ndarray:
    """The slice of a full-model value that parameter/shard ``name`` of ``par`` holds: a ZeRO
    slice ``<x>.zero<r>`` is the r-th of dp flat slices of ``x``, a tensor-parallel shard
    ``<p>.tp<i>`` the i-th of tp slices on its axis."""
    zero = par.meta.get("zero_shards", {})
    if name in zero:
        base, r, dp = zero[name]
        return np.split(_full(par, base, value, tp).reshape(-1), dp)[r]
    if name not in par.meta.get("shards", {}):
        return value
    _, axis, i = par.meta["shards"][name]
    vocab = par.meta["tp_vocab"]
    if vocab["vocab"] and value.shape[axis] == vocab["vocab"]:  # the vocabulary, padded to tp x rows
        value = np.pad(value, [(0, vocab["rows"] * tp - vocab["vocab"]) if a == axis else (0, 0)
                               for a in range(value.ndim)])
    return np.split(value, tp, axis=axis)[i]


def _source(par: Graph, name: str) -> str:
    name = par.meta.get("zero_shards", {}).get(name, (name,))[0]
    return par.meta["shards"][name][0] if name in par.meta.get("shards", {}) else name


# GPT-2's key bias has a zero gradient (softmax ignores a shift), so Adam's normalised step of
# that rounding noise is compared on the bias-free Llama instead
@pytest.mark.parametrize("model, tp, pp, dp, m, zero, optimizer", [
    (gpt, 2, 2, 2, 2, 0, "sgd"), (gpt, 2, 2, 2, 2, 1, "momentum"), (llama, 2, 2, 2, 2, 3, "adam"),
    (gpt63, 2, 2, 2, 2, 1, "momentum"),
    (gpt, 2, 1, 2, 1, 0, "sgd"), (gpt, 1, 2, 2, 2, 3, "momentum"), (gpt, 2, 2, 1, 2, 0, "sgd"),
    (llama, 1, 1, 2, 1, 1, "adam")])
def test_tp_pp_dp_training_step_equals_one_device(model, tp, pp, dp, m, zero, optimizer):
    mbs, lr = 1, 0.1
    batch = dp * m * mbs
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(0, 63, (batch, 8)), rng.integers(0, 63, (batch, 8))
    ids[0, 0] = labels[-1, -1] = 62  # the last row of the vocabulary (on the last tp rank)
    full = training_graph(model(batch), "cross_entropy", optimizer, lr=lr)
    ref = Executor(full, seed=3)
    want = ref.run({"input_ids": ids, "labels": labels}, keep=full.meta["grads"].values()).values

    par = sim.parallelize(training_graph(model(mbs), "cross_entropy", optimizer, lr=lr), tp=tp, pp=pp,
                          dp=dp, microbatches=m, mbs=mbs, zero=zero)
    ops = {nd.op for nd in par.nodes.values() if nd.meta.get("role") == "collective"}
    if zero:  # ZeRO in the graph: gradients reduce-scattered, parameters all-gathered
        assert {"ReduceScatter", "AllGather"} <= ops
        states = [p for p in par.params if ".m.zero" in p or ".velocity.zero" in p]
        assert states and not [p for p in par.params if p.endswith((".m", ".velocity"))]
    if zero == 3:
        assert all(".zero" in p for p in par.params if par.param_info[p].trainable)
    if tp > 1:  # the embedding table is split by vocabulary rows (Megatron's vocabulary parallelism)
        table = "wte.weight" if model in (gpt, gpt63) else "embed_tokens.weight"
        assert {par.meta["shards"][s] for s in par.meta["shards"] if s.startswith(table + ".tp")} == \
            {(table, 0, i) for i in range(tp)}
    n = tp * pp * dp
    # every node on one of the n devices, with its Megatron rank coordinates
    for nd in par.nodes.values():
        r = int(nd.meta["device"][3:])
        assert (nd.meta["rank"], nd.meta["tp_rank"], nd.meta["stage"], nd.meta["dp_rank"]) == \
            (r, r % tp, (r // tp) % pp, r // (tp * pp)) and r < n
    feeds = {}
    for name in par.inputs:  # dp<r>/mb<j>/<tp device>/input: sample r * m + j
        parts = name.split("/")
        r = int(parts[0][2:]) if parts[0].startswith("dp") else 0
        j = next((int(p[2:]) for p in parts if p.startswith("mb")), 0)
        k = r * m + j
        feeds[name] = (ids if parts[-1] == "input_ids" else labels)[k * mbs:(k + 1) * mbs]
    params = {p: _full(par, p, ref.params[_source(par, p)], tp) for p in par.params
              if _source(par, p) in ref.params}
    got = Executor(par, params=params).run(feeds, keep=[t for _, t, _ in par.meta["rank_grads"]]).values
    losses = par.meta.get("losses") or [par.meta["loss"]]
    assert len(losses) == dp * m
    np.testing.assert_allclose(np.mean([got[t] for t in losses]), want[full.meta["loss"]], rtol=1e-6)
    grads = full.meta["grads"]
    assert len(par.meta["rank_grads"]) >= len(grads)
    for p, t, _ in par.meta["rank_grads"]:
        np.testing.assert_allclose(got[t], _full(par, p, want[grads[_source(par, p)]], tp), rtol=1e-6,
                                   atol=1e-12)
    new_of = {p: o for o, p in full.meta["updates"].items()}
    for o, p in par.meta["updates"].items():
        np.testing.assert_allclose(got[o], _full(par, p, want[new_of[_source(par, p)]], tp), rtol=1e-6,
                                   atol=1e-12)


def test_parallelize_refuses_what_it_cannot_build():
    step = training_graph(gpt(1), "cross_entropy", "sgd")
    with pytest.raises(GraphError, match="dp > 1"):
        sim.parallelize(step, tp=2, zero=3)
    with pytest.raises(GraphError, match="mbs=2"):
        sim.parallelize(step, dp=2, mbs=2)
    with pytest.raises(GraphError, match="does not split"):
        sim.parallelize(step, tp=3)
    with pytest.raises(GraphError, match="data-parallel"):
        from sim.passes.parallel import data_parallel, pipeline_parallel

        pipeline_parallel(data_parallel(step, ["gpu0", "gpu1"]), ["gpu2", "gpu3"], 2)
