"""Sequence parallelism in the cluster simulator: the stage is the real SP rank graph of
``tensor_parallel(..., sp=True)`` with Megatron-LM's once-per-step norm-gradient all-reduce and
backward re-gather of the sharded norm output, checked against hand counts and the ring formula."""

from __future__ import annotations

import pytest

import sim
from sim.cluster import Fabric, Group, collective_time, simulate_training
from sim.cluster.layout import stage_layers
from sim.cluster.stage import stage_model
from sim.cluster.training import step_grad_elems
from sim.cost import transfer_time

B, S, D, T = 2, 256, 256, 2  # microbatch, sequence, hidden, TP ranks
SETS = dict(d=D, heads=8, seq=S, vocab=1024)  # gpt2: ffn = 4d, fused attention, no dropout


@pytest.fixture(scope="module")
def models():
    hw = sim.hardware("dgx-a100")
    return hw, {
        sp: stage_model("gpt2", hw, tp=T, mbs=B, sets=SETS, dtype="bf16", sp=sp) for sp in (False, True)
    }


def test_sp_layer_comm_is_the_all_reduce_ring_time(models):
    """Forward: a reduce-scatter and an all-gather per all-reduce, (t - 1) ring steps of
    bsd/t bf16 bytes each: the two all-reduces' 2 x 2(t - 1) steps. Backward: the same, plus the
    re-gather of both sharded norm outputs for the weight gradients, (t - 1) steps each."""
    hw, m = models
    step = transfer_time(hw.switch, B * S * D * 2 / T)
    ring = 2 * 2 * (T - 1) * step
    plain, seq = m[False].parts["block"], m[True].parts["block"]
    assert plain.fwd_comm_s == pytest.approx(ring, rel=1e-9)
    assert seq.fwd_comm_s == pytest.approx(ring, rel=1e-9)
    assert seq.bwd_comm_s == pytest.approx(ring + 2 * (T - 1) * step, rel=1e-9)
    # the norms' gradients are not reduced per microbatch
    assert plain.bwd_comm_s == pytest.approx(ring, rel=1e-9)


def test_sp_saved_activations_are_a_hand_count(models):
    """Saved per layer, tensor by tensor (elements, bsd = b x s x d): the MLP's GELU input and
    output (2 x 4bsd/t), attention's q, k, v, output and merged heads (5 bsd/t), the two norm
    outputs and the two norm inputs (4 bsd, the norm outputs kept once for the q/k/v GEMMs).
    With SP the norms' inputs and outputs are sequence shards (4 bsd/t): 17 bsd/t in all,
    Korthikanti et al.'s 34 sbh/t bytes in bf16 for this dropout-free layer."""
    _, m = models
    bsd = B * S * D
    assert m[False].parts["block"].saved_bytes == (8 * bsd / T + 5 * bsd / T + 4 * bsd) * 2
    assert m[True].parts["block"].saved_bytes == 17 * bsd / T * 2


def test_sp_norm_gradients_are_reduced_once_per_step(models):
    """Each layer's two norms (weight and bias of d each) and the final norm are partial sums
    per rank: 4d elements a layer, 2d on the last stage, all-reduced in fp32 over the TP group
    once before the update, not per microbatch."""
    _, m = models
    assert m[True].parts["block"].step_grad_elems == 4 * D
    assert m[True].parts["post"].step_grad_elems == 2 * D
    assert m[False].parts["block"].step_grad_elems == 0
    layers, p = 4, 2
    per_vs = stage_layers(layers, p)
    total = sum(step_grad_elems(m[True], per_vs, p, s) for s in range(p))
    assert total * 4 == (2 * 2 * D * layers + 2 * D) * 4


def test_sp_step_charges_the_norm_all_reduce_before_the_update():
    hw = sim.hardware("dgx-a100-cluster", nodes=1)
    sets = {**SETS, "n_layer": 4}
    r = simulate_training("gpt2", hw, "tp=2,pp=1,dp=4,mbs=2,sp", batch=16, sets=sets, check_memory=False)
    nbytes = (4 * D * 4 + 2 * D) * 4  # fp32 gradients (AMP)
    want = collective_time("all_reduce", nbytes, Fabric.of(hw), Group(2, 2, 4)).seconds
    emb = [e.end_s - e.start_s for e in r.schedule.events if e.kind == "emb"]
    assert emb == [pytest.approx(want, rel=1e-12)]
    plain = simulate_training("gpt2", hw, "tp=2,pp=1,dp=4,mbs=2", batch=16, sets=sets, check_memory=False)
    assert not [e for e in plain.schedule.events if e.kind == "emb"]
