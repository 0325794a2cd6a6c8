"""Bundled workloads: parameter counts against published numbers, FLOPs against independent
formulas, and small variants executed end to end."""

from __future__ import annotations

import time

import numpy as np
import pytest

import sim
from sim.exec import Executor
from sim.frontends.yaml_loader import list_workloads, workloads_dir

BUNDLED = ["bert-base", "gemm", "gpt2", "gpt3-175b", "lenet5", "llama2-7b", "lstm-lm",
           "mlp-mnist", "resnet50", "vgg16", "wavenet"]

# Published trainable-parameter counts (buffers such as BatchNorm running stats excluded).
PUBLISHED = {
    "mlp-mnist": 784 * 128 + 128 + 128 * 10 + 10,  # 101,770
    "lenet5": 61_706,  # classic LeNet-5: 156 + 2,416 + 48,120 + 10,164 + 850
    "resnet50": 25_557_032,  # torchvision resnet50
    "vgg16": 138_357_544,  # torchvision vgg16
    "bert-base": 109_482_240,  # bert-base-uncased with the pooler (the paper's "110M")
    "gpt2": 124_439_808,  # GPT-2 small with the LM head tied to wte
    "gpt3-175b": 175e9,  # Brown et al. 2020, Table 2.1
    "llama2-7b": 6_738_415_616,  # Llama-2-7b-hf
    # Zaremba et al. 2014 medium (~20M); ONNX LSTM keeps both bias vectors (8H per layer)
    "lstm-lm": 10000 * 650 + 2 * (4 * 650 * (650 + 650) + 8 * 650) + 650 * 10000 + 10000,
    # causal conv + 30 x (filter, gate, residual, skip) + two 1x1 output convs
    "wavenet": (256 * 32 * 2 + 32) + 30 * (2 * (32 * 32 * 2 + 32) + (32 * 32 + 32) + (32 * 512 + 512))
    + (512 * 512 + 512) + (512 * 256 + 256),
}


def _matmul_flops(g: sim.Graph) -> float:
    return float(sum(g.work(n).matmul_flops for n in g.nodes.values()))


def test_every_workload_is_bundled_documented_and_batched():
    assert set(BUNDLED) <= set(list_workloads())
    for name in BUNDLED:
        text = (workloads_dir() / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}: no comment citing the architecture's source"
        if name != "gemm":
            g = sim.load(name, batch=3)
            assert g.meta["params"]["batch"] == 3
            assert all(s.shape[0] == 3 for s in g.inputs.values()), name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    g = sim.load(name, batch=1)
    want = PUBLISHED[name]
    assert abs(g.param_count - want) <= 0.01 * want, (name, g.param_count, want)


def test_exact_counts_where_published_exactly():
    for name in ("mlp-mnist", "lenet5", "resnet50", "vgg16", "bert-base", "gpt2", "llama2-7b"):
        assert sim.load(name, batch=1).param_count == PUBLISHED[name], name


def test_gpt3_builds_fast_and_has_its_shape():
    t0 = time.perf_counter()
    g = sim.load("gpt3-175b")
    build_s = time.perf_counter() - t0
    assert build_s < 5.0, build_s
    d, L, V, ctx = 12288, 96, 50257, 2048
    # 12 d^2 + 13 d per layer (q, k, v, o, fc1, fc2 with biases, two LayerNorms)
    want = L * (12 * d * d + 13 * d) + V * d + ctx * d + 2 * d
    assert g.param_count == want
    assert sum(1 for n in g.nodes.values() if n.op == "Attention") == L


def _resnet50_conv_macs(image: int = 224) -> int:
    """MACs of the conv and fc layers of ResNet-50 v1.5, from the architecture table."""
    macs = 0
    h = image // 2  # 7x7/2 stem
    macs += 64 * 3 * 49 * h * h
    h //= 2  # 3x3/2 max pool
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            ho = h // s
            macs += width * cin * h * h  # 1x1 reduce at input resolution
            macs += width * width * 9 * ho * ho  # 3x3 (stride here)
            macs += 4 * width * width * ho * ho  # 1x1 expand
            if b == 0:
                macs += 4 * width * cin * ho * ho  # projection shortcut
            cin, h = 4 * width, ho
    return macs + 2048 * 1000


def test_resnet50_flops():
    g = sim.load("resnet50", batch=1)
    conv_fc = _matmul_flops(g)
    # 2 FLOP per multiply-accumulate of convs and the fc layer: ~8.18 GFLOP
    assert conv_fc == 2 * _resnet50_conv_macs()
    assert abs(conv_fc - 8.18e9) < 0.01 * 8.18e9
    # all ops (BN, ReLU, adds, pools, bias) add about 0.5%: ~8.22 GFLOP
    assert 8.18e9 < g.flops < 8.3e9
    g4 = sim.load("resnet50", batch=4)
    assert _matmul_flops(g4) == 4 * conv_fc


def test_vgg16_flops():
    g = sim.load("vgg16", batch=1)
    convs = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
             (256, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28),
             (512, 512, 14), (512, 512, 14), (512, 512, 14)]
    macs = sum(ci * co * 9 * h * h for ci, co, h in convs) + 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    assert _matmul_flops(g) == 2 * macs  # ~15.47 GMAC
    assert abs(macs - 15.47e9) < 0.01 * 15.47e9


def test_gpt2_flops_against_the_2_params_tokens_rule():
    B, S = 2, 1024
    g = sim.load("gpt2", batch=B, seq=S)
    d, L, V = 768, 12, 50257
    T = B * S
    # independent count: weight GEMMs 2*T*(12 d^2 L + d V), causal attention scores and
    # values 2 * 2 * B * L * d * S(S+1)/2 (only attended pairs)
    attn = 2 * 2 * B * L * d * S * (S + 1) // 2
    assert _matmul_flops(g) == 2 * T * (12 * d * d * L + d * V) + attn
    # the usual estimate: 2 * params * tokens (+ attention); the small rest is elementwise work
    rule = 2 * g.param_count * T + attn
    assert abs(g.flops - rule) < 0.03 * rule, (g.flops, rule)


def test_llama_uses_rotary_gqa_free_swiglu():
    g = sim.load("llama2-7b", seq=128)
    ops = [n.op for n in g.nodes.values()]
    assert ops.count("RotaryEmbedding") == 2 * 32 and ops.count("RMSNormalization") == 65
    assert "lm_head.weight" in g.params and g.params["lm_head.weight"].shape == (4096, 32000)
    assert g.params["layers.0.mlp.gate.weight"].shape == (4096, 11008)


def test_gpt2_head_is_tied():
    g = sim.load("gpt2", batch=1, seq=16)
    assert not any(k.startswith("lm_head") for k in g.params)
    head = [n for n in g.nodes.values() if n.meta.get("layer") == "lm_head" and n.op == "Gemm"]
    assert len(head) == 1 and head[0].inputs[1] == "wte.weight" and head[0].attrs["transB"] == 1
    assert g.tensors["logits"].shape == (1, 16, 50257)


def test_wavenet_dilations_cycle():
    g = sim.load("wavenet", seq=64)
    dil = [g.nodes[f"layers.{i}.filter"].attrs["dilations"][0] for i in range(30)]
    assert dil == [2 ** (i % 10) for i in range(30)]
    assert g.nodes["layers.9.gate"].attrs["pads"] == [512, 0]
    assert g.tensors["logits"].shape == (1, 256, 64)


# ---------------------------------------------------------------------- end to end
def _finite(out):
    return all(np.isfinite(v.astype(np.float64)).all() for v in out.values())


def test_mlp_mnist_runs_and_matches_numpy():
    g = sim.load("mlp-mnist", batch=4)
    ex = Executor(g, seed=0)
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    out = ex.run({"x": x}).values["logits"]
    p = ex.params
    want = np.maximum(x @ p["fc1.weight"] + p["fc1.bias"], 0) @ p["fc2.weight"] + p["fc2.bias"]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # he init: std sqrt(2 / fan_in)
    assert abs(p["fc1.weight"].std() - np.sqrt(2 / 784)) < 0.1 * np.sqrt(2 / 784)


def test_lenet5_runs():
    g = sim.load("lenet5", batch=2)
    out = sim.execute(g, {"x": np.random.default_rng(1).random((2, 1, 32, 32)).astype(np.float32)})
    assert out["logits"].shape == (2, 10) and _finite(out)
    assert g.tensors["s4"].shape == (2, 16, 5, 5)


TINY = {
    "gpt2": dict(batch=2, seq=8, n_ctx=16, vocab=50, d=32, heads=2, n_layer=1),
    "gpt3-175b": dict(batch=2, seq=8, n_ctx=16, vocab=50, d=32, heads=2, n_layer=1),
    "llama2-7b": dict(batch=2, seq=8, vocab=50, d=32, heads=4, kv_heads=2, ffn=48, n_layer=2),
    "bert-base": dict(batch=2, seq=8, max_pos=16, vocab=50, d=32, heads=2, n_layer=1),
    "lstm-lm": dict(batch=2, seq=6, vocab=50, hidden=16),
    "wavenet": dict(batch=1, seq=32, layers=4, res_ch=8, dil_ch=8, skip_ch=16),
    "resnet50": dict(batch=1, image=32, classes=5),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_variants_execute(name):
    g = sim.load(name, **TINY[name])
    rng = np.random.default_rng(2)
    feeds = {}
    for k, s in g.inputs.items():
        if s.dtype == "int64":
            feeds[k] = rng.integers(0, 2 if "type" in k else 50, size=s.shape)
        else:
            feeds[k] = rng.random(s.shape).astype(np.float32)
    out = sim.execute(g, feeds)
    assert _finite(out), name
    for k, v in out.items():
        assert v.shape == g.tensors[k].shape
    if name in ("gpt2", "gpt3-175b", "llama2-7b"):
        assert out["logits"].shape == (2, 8, 50)
        # causal: the logits of position 0 do not depend on later tokens
        feeds2 = {"input_ids": feeds["input_ids"].copy()}
        feeds2["input_ids"][:, 4:] = (feeds2["input_ids"][:, 4:] + 1) % 50
        out2 = sim.execute(g, feeds2)
        np.testing.assert_allclose(out2["logits"][:, :4], out["logits"][:, :4], rtol=1e-5, atol=1e-6)
        assert not np.allclose(out2["logits"][:, 4:], out["logits"][:, 4:])


@pytest.mark.parametrize("name", ["gpt2", "llama2-7b", "llama3-70b", "mixtral-8x7b", "gpt3-175b"])
def test_last_logits_is_the_last_row_of_the_full_logits(name):
    # an inference engine's prefill applies the LM head to the last position only: the same
    # values as the last row of every position's logits, at 1/seq of the head's FLOPs
    small = {"n_layer": 1, "seq": 6, "batch": 2, "d": 64, "heads": 4, "ffn": 128, "vocab": 97}
    if name != "gpt2" and name != "gpt3-175b":
        small["kv_heads"] = 2
    full, last = sim.load(name, **small), sim.load(name, **small, last_logits=1)
    assert last.tensors["logits"].shape == (2, 1, 97)
    ids = np.random.default_rng(0).integers(0, 97, (2, 6))
    want = Executor(full, seed=3).run({"input_ids": ids}).values["logits"][:, -1:, :]
    got = Executor(last, seed=3).run({"input_ids": ids}).values["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    head = 2 * 2 * 64 * 97  # batch x d x vocab multiply-adds of the last position's head
    assert _matmul_flops(full) - _matmul_flops(last) == pytest.approx(5 * head)
