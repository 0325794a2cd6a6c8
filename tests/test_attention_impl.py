"""Attention as Megatron-LM ran it before flash kernels (materialised scores, softmax, dropout)
and training-mode dropout in the transformer block, against hand counts and a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from sim.cluster import stage
from sim.errors import GraphError
from sim.exec import execute
from sim.frontends import load
from sim.passes.training import training_graph

TINY = {"batch": 2, "seq": 8, "n_ctx": 8, "d": 32, "heads": 4, "vocab": 50, "n_layer": 2}


def _feeds(g):
    ids = np.random.default_rng(0).integers(0, TINY["vocab"], size=(TINY["batch"], TINY["seq"]))
    return {"input_ids": ids.astype(np.int64)}


def test_unfused_attention_equals_fused_without_dropout():
    fused = load("gpt3-175b", **TINY)
    unfused = load("gpt3-175b", **TINY, attention="unfused")
    assert "MatMul" not in {n.op for n in fused.nodes.values() if ".attn." in n.name and "gemm" not in n.name}
    want = execute(fused, _feeds(fused))[fused.outputs[0]]
    got = execute(unfused, _feeds(unfused))[unfused.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unfused_scores_and_dropout_hand_count():
    b, s, d, h, n = TINY["batch"], TINY["seq"], TINY["d"], TINY["heads"], TINY["n_layer"]
    g = load("gpt3-175b", **TINY, attention="unfused", dropout=0.1, attn_dropout=0.1)
    drops = [nd for nd in g.nodes.values() if nd.op == "Dropout"]
    assert len(drops) == 3 * n  # attention probabilities, attention output, MLP output
    assert all(nd.attrs["training_mode"] == 1 and nd.attrs["ratio"] == 0.1 for nd in drops)
    probs = g.tensors["h.0.attn.attn_dropout"]
    assert probs.shape == (b, h, s, s)  # the materialised [batch, heads, seq, seq] probabilities
    scores = g.nodes["h.0.attn.scores"]
    assert g.work(scores).flops == 2 * b * h * s * s * (d // h)
    # a training-mode Dropout reads x and writes y, 4 + 4 bytes per fp32 element, with a compare
    # and a scale each (its backward regenerates the mask from the seed, as Philox kernels do)
    w = g.work(g.nodes["h.0.attn.attn_dropout"])
    assert (w.flops, w.bytes_read + w.bytes_written) == (2 * b * h * s * s, b * h * s * s * (4 + 4))
    with pytest.raises(GraphError, match="attention dropout needs impl: unfused"):
        load("gpt3-175b", **TINY, attn_dropout=0.1)


def test_tensor_parallel_splits_the_unfused_attention_by_heads():
    b, s, d, h = TINY["batch"], TINY["seq"], TINY["d"], TINY["heads"]
    g = load("gpt3-175b", **{**TINY, "n_layer": 1}, attention="unfused", dropout=0.1, attn_dropout=0.1)
    rank = stage.rank_graph(training_graph(g, loss="cross_entropy", optimizer="adam"), 2)
    scores = [nd for nd in rank.nodes.values() if nd.name.endswith("h.0.attn.scores")]
    assert len(scores) == 1 and rank.work(scores[0]).flops == 2 * b * (h // 2) * s * s * (d // h)
    assert sum(nd.op == "AllReduce" for nd in rank.nodes.values()) >= 4  # 2 forward + 2 backward
    assert not any(nd.op == "AllGather" for nd in rank.nodes.values())
