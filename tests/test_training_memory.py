"""Training steps of BERT-base on the engine: FLOPs, peak memory, activation checkpointing."""

import pytest

import sim
from sim.passes.training import training_graph

B, S, D, L = 8, 128, 768, 12  # workloads/bert-base.yaml defaults


@pytest.fixture(scope="module")
def bert():
    return sim.load("workloads/bert-base.yaml")


@pytest.mark.slow
def test_bert_training_step_is_about_three_forward_passes(bert):
    t = training_graph(bert, optimizer="adamw")
    # the loss goes on the first output (sequence_output); the pooler feeds only the second
    # output, so its GEMM (2 * B * D * D FLOP) is dead code in the training step (removed,
    # with no backward). Every other linear layer's
    # GEMM (2 * tokens * in * out FLOP; a Gemm with the bias in its epilogue) has two backward
    # GEMMs of its size (dX = dY W^T, dW = X^T dY); the embeddings are Gathers, not GEMMs. So
    # GEMM FLOPs are 3x the forward's less three times the pooler's. Fused attention's
    # backward recomputes the scores (flash-attention style: 5 batched GEMMs for the
    # forward's 2), and vector work (softmax,
    # norms, AdamW's 16 FLOP per parameter) is small: the total stays near 3x.
    def mm(g, *ops):
        return sum(g.work(n).matmul_flops for n in g.nodes.values() if n.op in ops)

    pooler = 2 * B * D * D
    gemms = ("MatMul", "Gemm")
    assert mm(t, *gemms) == pytest.approx(3 * (mm(bert, *gemms) - pooler), rel=1e-12)
    assert mm(t, "AttentionGrad") >= 2 * mm(bert, "Attention")
    assert 2.9 < t.flops / bert.flops < 3.2


@pytest.mark.slow
def test_bert_adamw_peak_memory_and_checkpointing(bert):
    P = bert.param_count
    assert P == 109_482_240
    plain = training_graph(bert, optimizer="adamw")
    ckpt = training_graph(bert, optimizer="adamw", checkpoint=True)
    a = sim.simulate(plain, "h100")
    b = sim.simulate(ckpt, "h100")
    # fp32 AdamW holds param + grad + m + v = 16 bytes per parameter at the update, and the
    # backward pass needs each block's GELU input ([B, S, 4D] fp32) at least.
    gelu_inputs = L * B * S * 4 * D * 4
    assert a.peak_memory_bytes >= 16 * P + gelu_inputs
    # checkpointing keeps only segment boundaries and recomputes the rest (the GELU inputs
    # among them): lower peak, more time; the update still holds all 16 bytes per parameter
    assert b.peak_memory_bytes < a.peak_memory_bytes - gelu_inputs
    assert b.peak_memory_bytes >= 16 * P
    assert b.makespan_s > a.makespan_s
    assert ckpt.flops <= plain.flops + bert.flops
    # an optimizer fused into the backward pass frees each gradient at its update: below 16 B/param
    fused = sim.simulate(training_graph(bert, optimizer="adamw", checkpoint=True, fused_update=True),
                         "h100")
    assert fused.peak_memory_bytes < 16 * P < b.peak_memory_bytes
