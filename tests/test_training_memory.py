"""Training steps of BERT-base on the engine: FLOPs, peak memory, activation checkpointing."""

import pytest

import sim
from sim.frontends.yaml_loader import load_yaml_text
from sim.passes.training import training_graph

# BERT-base encoder (12 post-norm blocks, d = 768, 12 heads, FFN 3072) with a tied-size
# MLM head (a [768, 30522] linear); token and position embeddings, embedding LayerNorm.
BERT = """
name: bert-base-mlm
params: {batch: 8, seq: 128, dim: 768, heads: 12, layers: 12, vocab: 30522}
inputs:
  ids: {shape: [batch, seq], dtype: int64}
graph:
  - {layer: embedding, name: tok, in: ids, out: e0, vocab: vocab, dim: dim}
  - {layer: position_embedding, name: pos, in: e0, out: e1, max_len: 512}
  - {layer: layernorm, name: emb_norm, in: e1, out: h0}
  - {block: enc, name: layer, repeat: layers, in: h0, out: hL}
  - {layer: linear, name: head, in: hL, out: logits, out_features: vocab}
outputs: [logits]
blocks:
  enc:
    inputs: [x]
    graph:
      - {layer: transformer_block, name: blk, in: x, out: y, heads: heads, prenorm: false}
    outputs: [y]
"""
B, S, D, L = 8, 128, 768, 12


@pytest.fixture(scope="module")
def bert():
    return load_yaml_text(BERT)


@pytest.mark.slow
def test_bert_training_step_is_about_three_forward_passes(bert):
    t = training_graph(bert, optimizer="adamw")
    # every linear layer's MatMul (2 * tokens * in * out FLOP) has two backward MatMuls of its
    # size (dX = dY W^T, dW = X^T dY); the embeddings are Gathers, not GEMMs. So MatMul FLOPs
    # are exactly 3x the forward's. Fused attention's backward recomputes the scores
    # (flash-attention style: 5 batched GEMMs for the forward's 2), and vector work (softmax,
    # norms, AdamW's 16 FLOP per parameter) is small: the total stays near 3x.
    def mm(g, op):
        return sum(g.work(n).matmul_flops for n in g.nodes.values() if n.op == op)

    assert mm(t, "MatMul") == pytest.approx(3 * mm(bert, "MatMul"), rel=1e-12)
    assert mm(t, "AttentionGrad") >= 2 * mm(bert, "Attention")
    assert 2.9 < t.flops / bert.flops < 3.2


@pytest.mark.slow
def test_bert_adamw_peak_memory_and_checkpointing(bert):
    P = bert.param_count
    assert 130e6 < P < 135e6  # 110M encoder + 23M MLM head
    plain = training_graph(bert, optimizer="adamw")
    ckpt = training_graph(bert, optimizer="adamw", checkpoint=True)
    a = sim.simulate(plain, "h100")
    b = sim.simulate(ckpt, "h100")
    # fp32 AdamW holds param + grad + m + v = 16 bytes per parameter at the update, and the
    # backward pass needs each block's GELU input ([B, S, 4D] fp32) at least.
    gelu_inputs = L * B * S * 4 * D * 4
    assert a.peak_memory_bytes >= 16 * P + gelu_inputs
    # checkpointing keeps only segment boundaries and recomputes the rest: lower peak, more time
    assert b.peak_memory_bytes < a.peak_memory_bytes - 2**28
    assert b.makespan_s > a.makespan_s
    assert ckpt.flops <= plain.flops + bert.flops
