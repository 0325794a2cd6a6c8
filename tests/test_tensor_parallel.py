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


def _split(value: np.ndarray, tp: Graph, name: str) -> np.ndarray:
    """Shard ``name``'s slice of the full ``value``: the ``i``-th of n on its axis, the vocabulary
    axis first padded with zeros to n x the rows each rank holds."""
    _, axis, i = tp.meta["shards"][name]
    n = len(tp.meta["tp_devices"])
    vocab = tp.meta["tp_vocab"]
    if vocab["vocab"] and value.shape[axis] == vocab["vocab"]:
        pad = [(0, vocab["rows"] * n - value.shape[axis]) if a == axis else (0, 0) for a in range(value.ndim)]
        value = np.pad(value, pad)
    return np.split(value, n, axis=axis)[i]


def shard_values(tp: Graph, full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each parameter of ``tp`` that comes from the model: the original value, or its slice for
    a shard (the pass's own constants keep their values)."""
    out = {}
    for name in tp.params:
        if name in tp.meta["shards"]:
            out[name] = _split(full[tp.meta["shards"][name][0]], tp, name)
        elif name in full:
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
    # the word embedding is vocabulary-parallel (40 rows: 20 per rank); the position table
    # (added, not looked up by token ids) stays whole
    assert "embeddings.word.weight" in split and "embeddings.position.weight" not in split
    assert tp.meta["tp_vocab"]["rows"] == 20
    # the embedding's all-reduce, two per layer, nothing gathered
    ops = [nd.op for nd in tp.nodes.values() if nd.meta.get("role") == "collective"]
    assert ops == ["AllReduce"] * 5
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
    return _split(value, tp, name) if name in tp.meta["shards"] else value


@pytest.mark.parametrize("n", [2, 4])
def test_training_step_under_tp_equals_the_single_device_step(n):
    step = training_graph(tiny_gpt2(), "cross_entropy", "sgd", lr=0.1)
    tp = tensor_parallel(step, names(n))
    # Megatron's communication: one all-reduce per block half forward, one backward (8 for two
    # layers); the vocabulary-parallel embedding's output (1), the cross-entropy's row max, target
    # logit and sum of exponentials (3), the LM head's input gradient (1)
    ars = [nd for nd in tp.nodes.values() if nd.meta.get("role") == "collective"]
    assert [nd.op for nd in ars] == ["AllReduce"] * 13
    assert [nd.attrs["reduction"] for nd in ars].count("max") == 1
    # every node is placed on one tensor-parallel rank
    assert all(nd.meta["device"] in names(n) for nd in tp.nodes.values())
    rng = np.random.default_rng(0)
    _matches(step, tp, rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8)), seed=1)


def test_llama_training_step_under_tp():
    g = retype(sim.load("workloads/llama2-7b.yaml", batch=2, seq=8, vocab=64, d=32, heads=4, kv_heads=2,
                        n_layer=1, ffn=48), "fp64")
    step = training_graph(g, "cross_entropy", "adam", lr=0.01)
    tp = tensor_parallel(step, names(2))
    assert tp.meta["tp_plan"] == {"attention": ["layers.0.attn.sdpa"], "mlp": ["layers.0.mlp.down"]}
    rng = np.random.default_rng(1)
    _matches(step, tp, rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8)), seed=2)


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
    # the forward collectives (no "forward" meta): the vocabulary-parallel embedding's output
    # reduce-scattered along the sequence; per block an all-gather before the column-parallel
    # projections and a reduce-scatter after the row-parallel one, twice; an all-gather of the
    # final norm's output before the LM head; the cross-entropy's three all-reduces of one
    # value per row (max, target logit, sum of exponentials)
    fwd = [nd for nd in tp.nodes.values() if nd.meta.get("role") == "collective" and "forward" not in nd.meta]
    seq = [(nd.op, nd.attrs["axis"], tp.tensors[nd.inputs[0]].shape) for nd in fwd if nd.op != "AllReduce"]
    assert seq == [("ReduceScatter", 1, (2, 8, 32))] + [("AllGather", 1, (2, 4, 32)),
                                                         ("ReduceScatter", 1, (2, 8, 32))] * 4 \
        + [("AllGather", 1, (2, 4, 32))]
    assert [(nd.attrs["reduction"], tp.tensors[nd.inputs[0]].shape) for nd in fwd if nd.op == "AllReduce"] \
        == [("max", (16, 1)), ("sum", (16, 1)), ("sum", (16, 1))]
    # the norms between blocks run on half the sequence
    norm = next(nd for nd in tp.nodes.values() if nd.op in ("LayerNormalization", "RMSNormalization")
                and nd.meta.get("origin", "").endswith("norm2") and nd.meta["tp_rank"] == 1)
    assert tp.tensors[norm.outputs[0]].shape == (2, 8 // n, 32)
    rng = np.random.default_rng(0)
    _matches(step, tp, rng.integers(0, 64, (2, 8)), rng.integers(0, 64, (2, 8)), seed=1)


def _step_matches(step: Graph, tp: Graph, seed: int, vocab: int, batch: int = 2) -> None:
    """``_matches`` on random tokens that include the vocabulary's last rows (the padded rank's)."""
    rng = np.random.default_rng(seed)
    ids, labels = rng.integers(0, vocab, (batch, 8)), rng.integers(0, vocab, (batch, 8))
    ids[0, :2], labels[0, :2] = vocab - 1, vocab - 1  # the last rows: on the padded rank
    _matches(step, tp, ids, labels, seed)


def _matches(step: Graph, tp: Graph, ids: np.ndarray, labels: np.ndarray, seed: int) -> None:
    """Fed ``ids`` and ``labels``, the tensor-parallel step's loss, every rank's gradients and
    updated parameters equal the single-device step's (the shards' slices of them)."""
    n = len(tp.meta["tp_devices"])
    ref = Executor(step, seed=seed)
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


@pytest.mark.parametrize("model, vocab, n", [("gpt2", 64, 2), ("gpt2", 63, 2), ("gpt2", 61, 4),
                                             ("llama", 61, 2)])
def test_vocab_parallel_embedding_lm_head_and_cross_entropy(model, vocab, n):
    """The embedding table and the LM head split by vocabulary rows (tied for GPT-2, separate
    for Llama), padded when V does not divide; the step computes the single device's."""
    if model == "gpt2":
        g = retype(sim.load("workloads/gpt2.yaml", batch=2, seq=8, vocab=vocab, n_ctx=8, d=32, heads=4,
                            n_layer=1), "fp64")
        tables = {"wte.weight"}
    else:
        g = retype(sim.load("workloads/llama2-7b.yaml", batch=2, seq=8, vocab=vocab, d=32, heads=4,
                            kv_heads=2, n_layer=1, ffn=48), "fp64")
        tables = {"embed_tokens.weight", "lm_head.weight"}
    step = training_graph(g, "cross_entropy", "adam" if model == "llama" else "sgd", lr=0.01)
    tp = tensor_parallel(step, names(n))
    rows = -(-vocab // n)  # V padded up to a multiple of n, over n
    assert tp.meta["tp_vocab"]["rows"] == rows
    d, tokens = 32, 2 * 8
    for k, dev in enumerate(names(n)):
        # parameter bytes: each table's shard holds rows x d float64 (1/n of the padded table)
        shard = [s for s, (p, axis, i) in tp.meta["shards"].items() if p in tables and i == k]
        assert sorted(tp.meta["shards"][s][0] for s in shard) == sorted(tables)
        assert all(tp.params[s].nbytes == rows * d * 8 for s in shard)
        # the LM head's GEMMs (forward, input and weight gradients): 3 x 2 x tokens x d x rows
        head = [nd for nd in tp.nodes.values() if nd.meta["device"] == dev and nd.op in ("Gemm", "MatMul")
                and (nd.meta.get("origin") in tp.meta["tp_vocab"]["lm_head"]
                     or str(nd.meta.get("forward", "")).split("/")[-1] in tp.meta["tp_vocab"]["lm_head"])]
        assert len(head) == 3
        assert sum(tp.work(nd).matmul_flops for nd in head) == 3 * 2 * tokens * d * rows
        # the embedding's gradient: a scatter-add of every token's d-vector (masked to zero on
        # the ranks that do not own its row) into the rank's rows
        (scatter,) = [nd for nd in tp.nodes.values() if nd.meta["device"] == dev and nd.op == "GatherGrad"]
        assert tp.work(scatter).flops == tokens * d and tp.tensors[scatter.outputs[0]].shape == (rows, d)
    _step_matches(step, tp, 3, vocab)


def test_vocab_parallel_forward_gathers_the_unpadded_logits():
    g = retype(sim.load("workloads/gpt2.yaml", batch=2, seq=8, vocab=61, n_ctx=8, d=32, heads=4, n_layer=1),
               "fp64")
    tp = tensor_parallel(g, names(4))
    ids = np.random.default_rng(0).integers(0, 61, (2, 8))
    ref = Executor(g, seed=0)
    want = ref.run({"input_ids": ids}).values[g.outputs[0]]
    got = Executor(tp, params=shard_values(tp, ref.params)).run({f"{d}/input_ids": ids for d in names(4)})
    assert len(tp.outputs) == 4
    for o in tp.outputs:
        assert tp.tensors[o].shape == (2, 8, 61)
        np.testing.assert_allclose(got.values[o], want, rtol=1e-12)


@pytest.mark.parametrize("n", [2, 4])
def test_sequence_parallel_collectives_take_the_all_reduce_time(n):
    """One GPT-2-small block forward on dgx-h100 in bf16: with sp=True each all-reduce of a
    [b, s, d] activation becomes a reduce-scatter and an all-gather, each (n - 1) ring steps of
    S/n bytes, together the all-reduce's 2 (n - 1) steps (the ring formula, run alone)."""
    from sim.cost import transfer_time
    from sim.hw import load_hardware

    b, s, d = 8, 1024, 768
    g = sim.load("workloads/gpt2.yaml", batch=b, seq=s, vocab=512, n_ctx=s, d=d, heads=12, n_layer=1)
    switch = load_hardware("dgx-h100").switch
    chunk = b * s * d * 2 / n  # bf16 activations, S/n per ring step
    step = transfer_time(switch, chunk)

    def collectives(sp):
        r = sim.simulate(tensor_parallel(g, names(n), sp=sp), "dgx-h100", "bf16", host_inputs=False)
        kinds = ("AllReduce", "AllGather", "ReduceScatter")
        return r, [o for o in r.ops if o.device == "gpu0" and o.op in kinds and o.chunk_bytes == chunk]

    plain, ars = collectives(False)
    seq, rsag = collectives(True)
    # the embedding's and the two row-parallel outputs' all-reduces; with sp the embedding's and
    # each row-parallel output's reduce-scatter, the all-gathers before both norms' consumers
    # and before the LM head
    assert [o.op for o in ars] == ["AllReduce"] * 3
    assert [o.op for o in rsag] == ["ReduceScatter", "AllGather"] * 3
    for o in ars:
        assert o.steps == 2 * (n - 1) and o.end_s - o.start_s == pytest.approx(2 * (n - 1) * step, rel=1e-9)
    for o in rsag:
        assert o.steps == n - 1 and o.end_s - o.start_s == pytest.approx((n - 1) * step, rel=1e-9)
    assert sum(o.end_s - o.start_s for o in rsag) == pytest.approx(sum(o.end_s - o.start_s for o in ars),
                                                                   rel=1e-9)
    # the norms and residual adds on S/n rows: the step is shorter
    assert seq.makespan_s < plain.makespan_s


def test_sequence_parallel_at_batch_one_gathers_each_norm_output_once():
    """At batch 1 the [1, S/N, d] norm output flattened to [S/N, d] rows could stay sharded,
    but each projection (q, k, v) flattens it on its own: it is all-gathered whole once, before
    the flattening, as at batch > 1 and in Megatron-LM (one all-gather per column-parallel
    group)."""
    g = retype(sim.load("workloads/gpt2.yaml", batch=1, seq=8, vocab=64, n_ctx=8, d=32, heads=4, n_layer=2),
               "fp64")
    step = training_graph(g, "cross_entropy", "sgd", lr=0.1)
    tp = tensor_parallel(step, names(2), sp=True)
    fwd = [nd for nd in tp.nodes.values() if nd.meta.get("role") == "collective" and "forward" not in nd.meta]
    assert [(nd.op, tp.tensors[nd.inputs[0]].shape) for nd in fwd if nd.op != "AllReduce"] == \
        [("ReduceScatter", (1, 8, 32))] + [("AllGather", (1, 4, 32)), ("ReduceScatter", (1, 8, 32))] * 4 \
        + [("AllGather", (1, 4, 32))]
    _step_matches(step, tp, 5, 64, batch=1)


def test_a_model_without_blocks_is_refused_even_with_a_vocabulary():
    """An LSTM language model has an embedding table and a vocabulary-wide decoder but no
    attention or MLP block: tensor parallelism refuses it rather than split the vocabulary alone."""
    from sim.errors import GraphError

    with pytest.raises(GraphError, match="no attention or mlp block"):
        tensor_parallel(sim.load("workloads/lstm-lm.yaml", batch=2), names(2))
