"""MoE (com.microsoft.MoE semantics): values against a per-token loop, work against hand counts."""

import numpy as np
import pytest
from helpers import moe_layer, one_op_graph, run_op

from sim.ops.moe import expected_experts


def _moe_ref(x, logits, w1, w2, w3, k):
    """Per token: softmax over its top-k logits, weighted sum of SwiGLU experts."""
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(x.shape[0]):
        top = sorted(range(logits.shape[1]), key=lambda e: -logits[t, e])[:k]
        z = np.exp(logits[t, top] - logits[t, top].max())
        for wgt, e in zip(z / z.sum(), top):
            a = x[t] @ w1[e]
            h = a / (1 + np.exp(-a)) * (x[t] @ w3[e])
            out[t] += wgt * (h @ w2[e])
    return out


def test_moe_top2_values_against_a_per_token_loop():
    rng = np.random.default_rng(3)
    T, d, h, E = 6, 8, 12, 4
    x = rng.standard_normal((T, d)).astype(np.float32)
    lg = rng.standard_normal((T, E)).astype(np.float32)
    w1, w3 = (rng.standard_normal((E, d, h)).astype(np.float32) for _ in range(2))
    w2 = rng.standard_normal((E, h, d)).astype(np.float32)
    (y,) = run_op("MoE", [x, lg, w1, None, w2, None, w3],
                  {"k": 2, "activation_type": "silu", "normalize_routing_weights": 1})
    np.testing.assert_allclose(y, _moe_ref(x, lg, w1, w2, w3, 2), rtol=1e-4, atol=1e-4)


def test_moe_work_hand_count():
    T, d, h, E, k = 1, 8, 12, 4, 2
    arrs = [np.zeros((T, d), np.float32), np.zeros((T, E), np.float32),
            np.zeros((E, d, h), np.float32), None, np.zeros((E, h, d), np.float32), None,
            np.zeros((E, d, h), np.float32)]
    g = one_op_graph("MoE", arrs, {"k": k, "activation_type": "silu"})
    w = g.work("node")
    assert w.matmul_flops == 2 * T * k * d * h * 3
    # one token touches exactly k experts: their three matrices are read, the others are not
    assert w.bytes_read == 4 * (T * d + T * E + k * 3 * d * h)
    assert w.bytes_written == 4 * T * d
    assert expected_experts(10_000, 8, 2) == pytest.approx(8.0)


def test_moe_expert_parallel_shares_sum_to_the_whole_layer():
    """Two ranks of global_experts=4 each hold 2 experts (the op takes its experts as the
    first columns of the router, so rank 1 sees the columns rotated): their partial outputs
    sum to the whole MoE layer."""
    rng = np.random.default_rng(5)
    T, d, h, E = 7, 8, 12, 4
    x = rng.standard_normal((T, d)).astype(np.float32)
    lg = rng.standard_normal((T, E)).astype(np.float32)
    w1, w3 = (rng.standard_normal((E, d, h)).astype(np.float32) for _ in range(2))
    w2 = rng.standard_normal((E, h, d)).astype(np.float32)
    attrs = {"k": 2, "activation_type": "silu", "normalize_routing_weights": 1, "global_experts": 4}
    parts = []
    for local in ([0, 1], [2, 3]):
        order = local + [e for e in range(E) if e not in local]
        (y,) = run_op("MoE", [x, lg[:, order], w1[local], None, w2[local], None, w3[local]], attrs)
        parts.append(y)
    np.testing.assert_allclose(parts[0] + parts[1], _moe_ref(x, lg, w1, w2, w3, 2), rtol=1e-4, atol=1e-4)


def test_moe_expert_parallel_work():
    # one token, 2 of 8 global experts routed; a rank holding 4 expects 4 * (1 - (1 - 2/8)) = 1 hit
    d, h = 8, 12
    arrs = [np.zeros((1, d), np.float32), np.zeros((1, 8), np.float32), np.zeros((4, d, h), np.float32),
            None, np.zeros((4, h, d), np.float32), None, np.zeros((4, d, h), np.float32)]
    w = one_op_graph("MoE", arrs, {"k": 2, "activation_type": "silu", "global_experts": 8}).work("node")
    assert w.matmul_flops == 2 * 1 * (2 * 4 / 8) * d * h * 3  # half the token's pairs land here
    assert w.bytes_read == 4 * (d + 8 + 1 * 3 * d * h)


def test_fused_moe_group_reads_only_the_routed_experts():
    # the MoE kernel with its residual add fused in: the group reads x, the router logits,
    # the k experts one token is routed to and the residual, not all E experts' weights
    from sim.passes.fusion import fuse

    T, d, h, E, k = 1, 8, 12, 4, 2
    f = fuse(moe_layer(T, d, h, E, k, residual=True))
    (node,) = f.nodes.values()
    assert node.meta["fused_ops"] == ["MoE", "Add"]
    w = f.work(node)
    assert w.bytes_read == 4 * (T * d + T * E + k * 3 * d * h)  # x is read once (shared)
    assert w.bytes_written == 4 * T * d
