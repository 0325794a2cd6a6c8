"""Megatron-LM's hand-written kernels in the cluster stage (``fuse(join=megatron_epilogues)``):
the attention scale and causal mask inside the GEMM / softmax kernels (baddbmm's alpha,
FusedScaleMaskSoftmax) and bias-dropout-add, checked against a hand list of groups, a hand
count of the bytes they save, and the executor (same values)."""

from __future__ import annotations

import numpy as np

from sim.exec import execute
from sim.frontends import load
from sim.passes.fusion import fuse, megatron_epilogues
from sim.passes.training import training_graph

B, S, D, H = 2, 8, 32, 4


def _step():
    fwd = load("gpt3-175b", n_layer=1, d=D, heads=H, vocab=50, seq=S, n_ctx=S, batch=B,
               target_attention="materialized")
    return training_graph(fwd, loss="cross_entropy", optimizer="sgd")


def _layer_bytes(g):
    return sum(g.work(n).bytes for n in g.nodes.values() if not n.name.startswith("optimizer."))


def test_groups_are_the_megatron_kernels():
    f = fuse(_step(), join=megatron_epilogues)
    groups = {tuple(n.meta["fused"]) for n in f.nodes.values()
              if n.op == "Fused" and not n.name.startswith("optimizer.")}
    assert groups == {
        ("h.0.attn.q_heads", "h.0.attn.q_scaled"),  # the scale rides on the kernel before it
        ("h.0.attn.scores", "h.0.attn.masked"),  # the causal mask inside the scores kernel
        ("h.0.attn_out_dropout", "h.0.add1"),  # bias-dropout-add
        ("h.0.mlp_out_dropout", "h.0"),
        ("h.0.attn.scores.grad_11", "h.0.attn.q_scaled.grad"),  # the scale in dQ's epilogue
    }


def test_fused_intermediates_never_reach_memory():
    g = _step()
    # q_heads and dQ ([B, H, S, D/H] = B*S*D each), the scores [B, H, S, S] and the two dropout
    # outputs [B, S, D]: each written once and read once less, 4 bytes an element
    saved = 2 * 4 * (4 * B * S * D + B * H * S * S)
    assert _layer_bytes(g) - _layer_bytes(fuse(g, join=megatron_epilogues)) == saved


def test_fused_step_computes_the_same_values():
    g = _step()
    f = fuse(g, join=megatron_epilogues)
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 50, size=(B, S)).astype(np.int64)}
    targets = {t: v for t, v in feeds.items()}
    for name, spec in g.inputs.items():
        if name not in targets:
            targets[name] = np.random.default_rng(1).integers(0, 50, size=spec.shape).astype(np.int64)
    want, got = execute(g, targets), execute(f, targets)
    for t in g.outputs:
        np.testing.assert_array_equal(got[t], want[t])
