"""Tensor parallelism found by graph pattern: YAML, ONNX-imported BERT, training steps."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator
from onnx_nets import bert_layers

import sim
from sim.exec import Executor
from sim.frontends.onnx_import import import_model
from sim.graph import Graph
from sim.passes.retype import retype
from sim.passes.tensor_parallel import tensor_parallel
from sim.passes.training import training_graph


def names(n: int) -> list[str]:
    return [f"gpu{i}" for i in range(n)]


def shard_values(tp: Graph, full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each parameter of ``tp``: the original value, or the ``i``-th slice for a shard."""
    n = len(tp.meta["tp_devices"])
    out = {}
    for name in tp.params:
        if name in tp.meta["shards"]:
            p, axis, i = tp.meta["shards"][name]
            out[name] = np.split(full[p], n, axis=axis)[i]
        else:
            out[name] = full[name]
    return out


def test_onnx_bert_splits_by_pattern_and_computes_the_same():
    n = 2
    m = bert_layers(batch=2, seq=6, hidden=16, heads=2, ffn=32, layers=2, vocab=40)
    g = import_model(m)
    tp = tensor_parallel(g, names(n))
    # both layers' attention cores (spelled out: MatMul -> Div -> Softmax -> MatMul) and MLPs
    assert len(tp.meta["tp_plan"]["attention"]) == 2 and len(tp.meta["tp_plan"]["mlp"]) == 2
    split = {tp.meta["shards"][s][0] for s in tp.meta["shards"]}
    for layer in range(2):
        p = f"encoder.layer.{layer}"
        for w in ("attention.query", "attention.key", "attention.value", "intermediate"):
            assert {f"{p}.{w}.weight", f"{p}.{w}.bias"} <= split
        assert {f"{p}.attention.output.weight", f"{p}.output.weight"} <= split
        assert f"{p}.output.bias" not in split  # a row-parallel bias is added once, after the sum
    # two all-reduces per layer, nothing gathered
    ops = [nd.op for nd in tp.nodes.values() if nd.meta.get("role") == "collective"]
    assert ops == ["AllReduce"] * 4
    # the matrix-multiply FLOPs of the split GEMMs divide by n on every rank; the reference is
    # the hand count 2*b*s*(4*h*h + 2*h*ffn) per layer for the projections
    b, s, h, ffn = 2, 6, 16, 32
    split_flops = 2 * (2 * b * s * (4 * h * h + 2 * h * ffn))
    for dev in names(n):
        mm = sum(tp.work(nd).matmul_flops for nd in tp.nodes.values()
                 if nd.meta.get("device") == dev and nd.meta.get("tp") in ("column", "row"))
        assert mm == pytest.approx(split_flops / n, rel=1e-12)
    ids = np.random.default_rng(0).integers(0, 40, (2, 6))
    (want,) = ReferenceEvaluator(m).run(None, {"input_ids": ids})
    ex = Executor(g)
    got = Executor(tp, params=shard_values(tp, ex.params)).run({f"{d}/input_ids": ids for d in names(n)})
    for o in tp.outputs:
        np.testing.assert_allclose(got.values[o], want, rtol=1e-4, atol=1e-5)


def tiny_gpt2(layers: int = 2) -> Graph:
    return retype(sim.load("workloads/gpt2.yaml", batch=2, seq=8, vocab=64, n_ctx=8, d=32, heads=4,
                           n_layer=layers), "fp64")


def _slice(value: np.ndarray, tp: Graph, name: str) -> np.ndarray:
    if name not in tp.meta["shards"]:
        return value
    _, axis, i = tp.meta["shards"][name]
    return np.split(value, len(tp.meta["tp_devices"]), axis=axis)[i]


@pytest.mark.parametrize("n", [2, 4])
def test_training_step_under_tp_equals_the_single_device_step(n):
    step = training_graph(tiny_gpt2(), "cross_entropy", "sgd", lr=0.1)
    tp = tensor_parallel(step, names(n))
    # Megatron's communication: one all-reduce per block half forward, one backward
    ars = [nd for nd in tp.nodes.values() if nd.meta.get("role") == "collective"]
    assert [nd.op for nd in ars] == ["AllReduce"] * 8
    # every node is placed on one tensor-parallel rank
    assert all(nd.meta["device"] in names(n) for nd in tp.nodes.values())
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8))
    ref = Executor(step, seed=1)
    want = ref.run({"input_ids": ids, "labels": labels}, keep=step.meta["grads"].values()).values
    feeds = {f"{d}/{k}": v for d in names(n) for k, v in (("input_ids", ids), ("labels", labels))}
    got = Executor(tp, params=shard_values(tp, ref.params)).run(
        feeds, keep=[t for _, t, _ in tp.meta["rank_grads"]]).values
    np.testing.assert_allclose(got[tp.meta["loss"]], want[step.meta["loss"]], rtol=1e-12)
    for p, t, _ in tp.meta["rank_grads"]:
        src = tp.meta["shards"][p][0] if p in tp.meta["shards"] else p
        np.testing.assert_allclose(got[t], _slice(want[step.meta["grads"][src]], tp, p), rtol=1e-9,
                                   atol=1e-12)
    new_of = {p: o for o, p in step.meta["updates"].items()}
    for o, p in tp.meta["updates"].items():
        src = tp.meta["shards"][p][0] if p in tp.meta["shards"] else p
        np.testing.assert_allclose(got[o], _slice(want[new_of[src]], tp, p), rtol=1e-9, atol=1e-12)


def test_llama_training_step_under_tp():
    g = retype(sim.load("workloads/llama2-7b.yaml", batch=2, seq=8, vocab=64, d=32, heads=4, kv_heads=2,
                        n_layer=1, ffn=48), "fp64")
    step = training_graph(g, "cross_entropy", "adam", lr=0.01)
    tp = tensor_parallel(step, names(2))
    assert tp.meta["tp_plan"] == {"attention": ["layers.0.attn.sdpa"], "mlp": ["layers.0.mlp.down"]}
    rng = np.random.default_rng(1)
    ids, labels = rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8))
    ref = Executor(step, seed=2)
    want = ref.run({"input_ids": ids, "labels": labels}).values
    feeds = {f"{d}/{k}": v for d in names(2) for k, v in (("input_ids", ids), ("labels", labels))}
    got = Executor(tp, params=shard_values(tp, ref.params)).run(feeds).values
    np.testing.assert_allclose(got[tp.meta["loss"]], want[step.meta["loss"]], rtol=1e-12)
    new_of = {p: o for o, p in step.meta["updates"].items()}
    for o, p in tp.meta["updates"].items():
        src = tp.meta["shards"][p][0] if p in tp.meta["shards"] else p
        np.testing.assert_allclose(got[o], _slice(want[new_of[src]], tp, p), rtol=1e-9, atol=1e-12)


def test_tp_then_training_refuses_and_placed_graphs_refuse():
    from sim.errors import GraphError
    from sim.passes.parallel import data_parallel

    step = training_graph(tiny_gpt2(1), "cross_entropy", "sgd")
    with pytest.raises(GraphError, match="not yet placed"):
        tensor_parallel(data_parallel(step, names(2)), names(2))
    with pytest.raises(GraphError, match="placed on devices"):
        training_graph(tensor_parallel(tiny_gpt2(1), names(2)), "cross_entropy", "sgd")


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_sequence_parallel_training_step(model):
    """sp=True: each block's all-reduce becomes a reduce-scatter along the sequence and an
    all-gather before the next column-parallel projection; the step computes the same."""
    if model == "gpt2":
        g = tiny_gpt2()
    else:
        g = retype(sim.load("workloads/llama2-7b.yaml", batch=2, seq=8, vocab=64, d=32, heads=4, kv_heads=2,
                            n_layer=2, ffn=48), "fp64")
    step = training_graph(g, "cross_entropy", "sgd", lr=0.1)
    n = 2
    tp = tensor_parallel(step, names(n), sp=True)
    from sim.passes.training import forward_node_names

    forward = set(forward_node_names(step))
    fwd = [nd for nd in tp.nodes.values() if nd.meta.get("role") == "collective"
           and all(c.meta.get("origin") in forward for c in tp.consumers(nd.outputs[0]))]
    kinds = [nd.op for nd in fwd]
    # per block: 2 reduce-scatters (after the row-parallel projections), 2 all-gathers (before
    # the column-parallel ones, but the first block reads the replicated embeddings); GPT-2's
    # LM head (a Gemm on [batch*seq, d]) gathers the final norm's output, Llama's (a MatMul on
    # [batch, seq, d]) runs on the sequence shard and the loss gathers the logits
    gathers = 4 if model == "gpt2" else 3
    assert kinds.count("ReduceScatter") == 4 and kinds.count("AllGather") == gathers
    assert "AllReduce" not in kinds
    assert all(nd.attrs["axis"] == 1 for nd in fwd)
    # the norms between blocks run on half the sequence
    norm = next(nd for nd in tp.nodes.values() if nd.op in ("LayerNormalization", "RMSNormalization")
                and nd.meta.get("origin", "").endswith("norm2") and nd.meta["tp_rank"] == 1)
    assert tp.tensors[norm.outputs[0]].shape == (2, 8 // n, 32)
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8))
    ref = Executor(step, seed=1)
    want = ref.run({"input_ids": ids, "labels": labels}).values
    feeds = {f"{d}/{k}": v for d in names(n) for k, v in (("input_ids", ids), ("labels", labels))}
    got = Executor(tp, params=shard_values(tp, ref.params)).run(feeds).values
    np.testing.assert_allclose(got[tp.meta["loss"]], want[step.meta["loss"]], rtol=1e-12)
    new_of = {p: o for o, p in step.meta["updates"].items()}
    for o, p in tp.meta["updates"].items():
        src = tp.meta["shards"][p][0] if p in tp.meta["shards"] else p
        np.testing.assert_allclose(got[o], _slice(want[new_of[src]], tp, p), rtol=1e-9, atol=1e-12)
