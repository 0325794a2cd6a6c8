"""KV-cache prefill/decode graphs: greedy generation with the cache against recomputing the
whole sequence (dense, GQA + rotary, learned positions, MoE), a ragged decode batch against
single sequences, the decode graph's cache traffic, published parameter counts."""

import numpy as np
import pytest

import sim
from sim.exec import Executor
from sim.serve.model import ServeModel, generate_cached, generate_recompute

TINY = {
    "llama2-7b": dict(d=32, heads=4, kv_heads=2, n_layer=2, ffn=48, vocab=61),  # GQA + rotary
    "gpt2": dict(d=32, heads=4, n_layer=2, vocab=61, n_ctx=64),  # learned positions, tied head
    "mixtral-8x7b": dict(d=32, heads=4, kv_heads=2, n_layer=2, ffn=48, vocab=61, experts=4),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_greedy_with_cache_equals_recompute(name):
    m = ServeModel(name, **TINY[name])
    prompt = np.random.default_rng(1).integers(0, 61, (2, 5))
    cached, lc = generate_cached(m, prompt, 7)
    full, lf = generate_recompute(m, prompt, 7)
    assert np.array_equal(cached, full)
    assert len(set(cached.ravel().tolist())) > 3  # not a degenerate constant stream
    for a, b in zip(lc, lf):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_ragged_decode_batch_matches_each_sequence_alone():
    """Two sequences of different cached lengths decode in one step (continuous batching)."""
    m = ServeModel("llama2-7b", **TINY["llama2-7b"])
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 61, (1, 3)), rng.integers(0, 61, (1, 6))]
    cap = 8
    caches: dict[str, list[np.ndarray]] = {}
    nxt = []
    params = None
    for p in prompts:
        g = m.step_graph(1, p.shape[1], cap)
        ex = Executor(g, seed=0)
        params = ex.params
        zeros = {t: np.zeros(g.tensors[t].shape, np.float32) for e in g.meta["kv_cache"] for t in e[::2]}
        out = ex.run({"input_ids": p, "cache_lens": np.zeros(1, np.int64), **zeros}).values
        for past_k, pres_k, past_v, pres_v in g.meta["kv_cache"]:
            caches.setdefault(past_k, []).append(out[pres_k])
            caches.setdefault(past_v, []).append(out[pres_v])
        nxt.append(int(out["logits"][0, -1].argmax()))
    dec = m.step_graph(2, 1, cap)
    feeds = {k: np.concatenate(v) for k, v in caches.items()}
    out = Executor(dec, seed=0, params={k: v for k, v in params.items() if k in dec.params
                                        and dec.params[k].shape == v.shape}).run(
        {"input_ids": np.array([[nxt[0]], [nxt[1]]]), "cache_lens": np.array([3, 6]), **feeds}).values
    for i, p in enumerate(prompts):
        seq = np.concatenate([p, [[nxt[i]]]], axis=1)
        ref = sim.execute(m.full_graph(1, seq.shape[1]), {"input_ids": seq})["logits"][0, -1]
        np.testing.assert_allclose(out["logits"][i, 0], ref, rtol=1e-4, atol=1e-5)


def test_decode_graph_reads_the_cache_and_appends_one_position():
    g = sim.load("llama2-7b", batch=4, seq=1, kv_cache=1024)
    att = [n for n in g.nodes.values() if n.op == "Attention"]
    scat = [n for n in g.nodes.values() if n.op == "TensorScatter"]
    assert len(att) == 32 and len(scat) == 64
    # Attention reads q (4x32x1x128) and the two caches (4x32x1024x128 each) + lengths, fp32
    w = g.work(att[0])
    assert w.bytes_read == 4 * (4 * 32 * 128 + 2 * 4 * 32 * 1024 * 128) + 8 * 4
    # the in-place write moves one new position (4 x 32 x 1 x 128 values) in and out
    assert g.work(scat[0]).bytes_written == 4 * 4 * 32 * 128


def test_published_parameter_counts():
    # Meta-Llama-3-70B and Mixtral-8x7B-v0.1 (Hugging Face model cards / configs)
    assert sim.load("llama3-70b", seq=4).param_count == 70_553_706_496
    assert sim.load("mixtral-8x7b", seq=4).param_count == 46_702_792_704
