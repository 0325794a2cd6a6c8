"""Attention as Megatron-LM ran it before flash kernels (materialised scores, softmax, dropout)
and training-mode dropout in the transformer block, against hand counts and a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from sim.cluster import stage
from sim.errors import GraphError
from sim.exec import execute
from sim.frontends import load
from sim.passes.training import train_mode, training_graph

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
    # the identity at inference; a training step drops
    assert all(not nd.attrs.get("training_mode") and nd.attrs["ratio"] == 0.1 for nd in drops)
    assert all(g.work(nd).bytes == 0 for nd in drops)
    g, _ = train_mode(g)
    assert all(g.nodes[nd.name].attrs["training_mode"] == 1 for nd in drops)
    probs = g.tensors["h.0.attn.attn_dropout"]
    assert probs.shape == (b, h, s, s)  # the materialised [batch, heads, seq, seq] probabilities
    scores = g.nodes["h.0.attn.scores"]
    assert g.work(scores).flops == 2 * b * h * s * s * (d // h)
    # a training-mode Dropout reads x and writes y, 4 + 4 bytes per fp32 element, with a compare
    # and a scale each (its backward regenerates the mask from the seed, as Philox kernels do)
    w = g.work(g.nodes["h.0.attn.attn_dropout"])
    assert (w.flops, w.bytes_read + w.bytes_written) == (2 * b * h * s * s, b * h * s * s * (4 + 4))
    with pytest.raises(GraphError, match="attention dropout 0.1 needs impl: unfused"):
        load("gpt3-175b", **TINY, attention="fused", attn_dropout=0.1)


def test_tensor_parallel_splits_the_unfused_attention_by_heads():
    b, s, d, h = TINY["batch"], TINY["seq"], TINY["d"], TINY["heads"]
    g = load("gpt3-175b", **{**TINY, "n_layer": 1}, attention="unfused", dropout=0.1, attn_dropout=0.1)
    rank = stage.rank_graph(training_graph(g, loss="cross_entropy", optimizer="adam"), 2)
    scores = [nd for nd in rank.nodes.values() if nd.name.endswith("h.0.attn.scores")]
    assert len(scores) == 1 and rank.work(scores[0]).flops == 2 * b * (h // 2) * s * s * (d // h)
    assert sum(nd.op == "AllReduce" for nd in rank.nodes.values()) >= 4  # 2 forward + 2 backward
    assert not any(nd.op == "AllGather" for nd in rank.nodes.values())


def _attention_ops(g):
    return {nd.op for nd in g.nodes.values() if ".attn." in nd.name and "gemm" not in nd.name}


def test_auto_attention_follows_the_target_gpu_kernel():
    # gpt3-175b declares attention: auto; unresolved (or on a flash/cuDNN GPU) it is the fused op
    assert "Attention" in _attention_ops(load("gpt3-175b", **TINY))
    assert "Attention" in _attention_ops(load("gpt3-175b", **TINY, target_attention="flash2"))
    # on a GPU that materialises the scores: the unfused core (scores MatMul, Softmax, Dropout)
    ops = _attention_ops(load("gpt3-175b", **TINY, target_attention="materialized"))
    assert {"MatMul", "Softmax", "Dropout"} <= ops and "Attention" not in ops
    # an explicit choice wins; a KV-cache step stays fused (decode kernels)
    assert "Attention" in _attention_ops(load("gpt3-175b", **TINY, attention="fused", attn_dropout=0.0,
                                              target_attention="materialized"))
    cached = load("gpt3-175b", **{**TINY, "kv_cache": 8, "dropout": 0.0, "attn_dropout": 0.0},
                  target_attention="materialized")
    assert "Attention" in {nd.op for nd in cached.nodes.values()}


def test_the_a100_cluster_spec_materialises_attention_and_flash2_overrides_it():
    import sim
    from sim.hw.spec import attention_kernel

    assert attention_kernel(sim.hardware("dgx-a100-cluster", nodes=2)) == "materialized"
    flash = sim.hardware("dgx-a100-cluster", nodes=2, **{"devices.gpu.arch.attention_kernel": "flash2"})
    assert attention_kernel(flash) == "flash2"
    assert attention_kernel(sim.hardware("a100")) == "flash2"  # PyTorch SDPA on one A100


def test_default_dropout_is_the_identity_at_inference():
    plain = load("gpt3-175b", **TINY, dropout=0.0, attn_dropout=0.0)
    dflt = load("gpt3-175b", **TINY, target_attention="materialized")  # dropout 0.1 by default
    want = execute(plain, _feeds(plain))[plain.outputs[0]]
    got = execute(dflt, _feeds(dflt))[dflt.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fp32_inputs_run_the_memory_efficient_kernel():
    """PyTorch's flash and cuDNN attention take fp16/bf16 only; fp32 SDPA runs the
    memory-efficient kernel: its efficiency and no softmax overlap. The same op in bf16 keeps
    the spec's kernel; an fp32 op costs what it costs with that kernel named outright."""
    import sim
    from sim.cost.gpu import attention_efficiency, attention_kernel_for, softmax_overlap
    from sim.graph import Graph, TensorSpec

    h100 = sim.hardware("h100")
    arch = h100.arch
    assert attention_kernel_for(arch, "bf16") == "cudnn"
    assert attention_kernel_for(arch, "fp32") == "mem_efficient"
    assert attention_efficiency(arch, "fp32") == arch.kernel_efficiency["mem_efficient"]
    assert softmax_overlap(arch, "fp32") == 0.0 and softmax_overlap(arch, "bf16") == 1.0

    def attention(dtype):
        g = Graph("a")
        for t in ("q", "k", "v"):
            g.add_input(t, TensorSpec((2, 8, 1024, 64), dtype))
        g.add_node("Attention", ["q", "k", "v"], ["y"], {"is_causal": 1}, name="attn")
        g.set_outputs(["y"])
        return g

    named = sim.hardware("h100", **{"arch.attention_kernel": "mem_efficient"})
    t32 = sim.simulate(attention("fp32"), h100, host_inputs=False).makespan_s
    assert t32 == sim.simulate(attention("fp32"), named, host_inputs=False).makespan_s
    t16 = sim.simulate(attention("bf16"), h100, host_inputs=False).makespan_s
    assert t16 < sim.simulate(attention("bf16"), named, host_inputs=False).makespan_s
