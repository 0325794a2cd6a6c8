"""YAML frontend: the expression evaluator, the loader (params, overrides, blocks, repeats,
entry order), layer expansions checked against hand NumPy formulas, and bad input."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.errors import GraphError, UnsupportedOpError
from sim.frontends.expr import evaluate, evaluate_int, resolve
from sim.frontends.yaml_loader import load_yaml, load_yaml_text, resolve_params, resolve_workload


def _load(text: str, **overrides):
    return load_yaml_text(textwrap.dedent(text), "t.yaml", **overrides)


def _run(g, feeds, params=None, seed=0):
    return sim.execute(g, {**feeds, **(params or {})}, seed=seed)


# ---------------------------------------------------------------------- expressions
@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("4*d", {"d": 768}, 3072),
        ("d/heads", {"d": 768, "heads": 12}, 64),
        ("(s+1)//2", {"s": 7}, 4),
        ("min(a, b) + max(a, b, 10)", {"a": 3, "b": 5}, 13),
        ("ceil(10/4)", {}, 3),
        ("floor(10/4)", {}, 2),
        ("2**(i % 10)", {"i": 13}, 8),
        ("-x + +3", {"x": 1}, 2),
        ("7 % 3 - 1", {}, 0),
        ("1e-5", {}, 1e-5),
        ("3 / 2", {}, 1.5),
        (12, {}, 12),
    ],
)
def test_expression_values(text, env, want):
    assert evaluate(text, env) == want


def test_whole_quotients_are_ints():
    v = evaluate("768/12", {})
    assert v == 64 and isinstance(v, int)
    assert isinstance(evaluate("3/2", {}), float)


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "unknown function"),
        ("x.real", "not allowed"),
        ("[1, 2][0]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("'abc'", "only numbers"),
        ("1 +", "cannot parse"),
        ("hiden * 2", "unknown param 'hiden'.*did you mean 'hidden'"),
        ("1 / 0", "division by zero"),
        ("2 ** 100000", "too large"),
        ("ceil(1, 2)", "takes one argument"),
        ("x if y else z", "not allowed"),
        ("a < b", "not allowed"),
    ],
)
def test_expression_rejects(text, msg):
    with pytest.raises(GraphError, match=msg):
        evaluate(text, {"hidden": 4, "x": 1, "y": 1, "z": 1, "a": 1, "b": 2})


def test_evaluate_int_and_resolve():
    assert evaluate_int("d/2", {"d": 8}) == 4
    with pytest.raises(GraphError, match="not a whole number"):
        evaluate_int("d/3", {"d": 8})
    # names stay names unless strict; params give their values; lists resolve item by item
    assert resolve(["same", "act", "2*d", True, None], {"act": "gelu", "d": 3}) == \
        ["same", "gelu", 6, True, None]
    with pytest.raises(GraphError, match="unknown param 'same'"):
        resolve("same", {}, strict=True)


def test_params_refer_to_each_other_in_any_order():
    p = resolve_params({"ffn": "4*d", "head": "d/heads", "d": 64, "heads": 4, "dt": "bf16"}, {})
    assert p == {"ffn": 256, "head": 16, "d": 64, "heads": 4, "dt": "bf16"}
    assert resolve_params({"ffn": "4*d", "d": 64}, {"d": 8})["ffn"] == 32
    with pytest.raises(GraphError, match="cycle: a -> b -> a"):
        resolve_params({"a": "b+1", "b": "a+1"}, {})
    with pytest.raises(GraphError, match="override 'dd' names no param.*did you mean 'd'"):
        resolve_params({"d": 1}, {"dd": 2})


# ---------------------------------------------------------------------- loading
GEMM = """
name: gemm
params: {M: 512, N: 768, K: 3072}
inputs:
  a: {shape: [M, K], dtype: bf16}
  b: {shape: [K, N], dtype: bf16}
graph:
  - {op: MatMul, in: [a, b], out: c}
outputs: [c]
"""


def test_raw_gemm_example(tmp_path: Path):
    f = tmp_path / "gemm.yaml"
    f.write_text(GEMM)
    g = sim.load(f)
    assert g.tensors["c"].shape == (512, 768) and g.tensors["c"].dtype == "bf16"
    assert g.flops == 2 * 512 * 768 * 3072
    assert g.source == str(f) and g.name == "gemm"
    g2 = sim.load(f, M=8, K=4)
    assert g2.tensors["c"].shape == (8, 768)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 4)), rng.standard_normal((4, 768))
    out = _run(g2, {"a": a, "b": b})["c"]
    np.testing.assert_allclose(out.astype(np.float32), a @ b, rtol=2e-2, atol=2e-2)


def test_bundled_name_resolves():
    assert Path(resolve_workload("gemm")).name == "gemm.yaml"
    g = sim.load("gemm", M=4)
    assert g.tensors["c"].shape == (4, 768)
    with pytest.raises(GraphError, match="gtp2: no such file or bundled workload.*did you mean 'gpt2'"):
        sim.load("gtp2")
    with pytest.raises(GraphError, match="nope.yaml: file not found"):
        sim.load("nope.yaml")


def test_op_attributes_use_params_and_names():
    g = _load("""
        name: t
        params: {n: 6, ax: -1, dt: fp16}
        inputs: {x: {shape: [2, n], dtype: dt}}
        graph:
          - {op: Softmax, in: [x], out: y, axis: ax}
          - {op: Reshape, out: z, shape: [n/2, 2*2]}
          - {op: Cast, out: w, to: fp32}
        outputs: [w]
    """)
    assert g.inputs["x"].dtype == "fp16"
    assert g.nodes["y"].attrs == {"axis": -1}
    assert g.nodes["z"].attrs["shape"] == [3, 4]
    assert g.tensors["w"].dtype == "fp32"
    x = np.arange(12.0).reshape(2, 6)
    e = np.exp(x - x.max(-1, keepdims=True))
    want = (e / e.sum(-1, keepdims=True)).reshape(3, 4)
    np.testing.assert_allclose(_run(g, {"x": x})["w"], want, rtol=2e-3)


def test_implicit_chaining_default_names_and_outputs():
    g = _load("""
        name: t
        inputs: {x: {shape: [3, 4]}}
        graph:
          - {layer: linear, out_features: 5}
          - {layer: relu}
          - {op: Neg}
    """)
    assert set(g.params) == {"linear_0.weight", "linear_0.bias"}
    assert g.outputs == ["neg_2"]
    assert g.nodes["relu_1"].inputs == ("linear_0",)


def test_entries_may_come_out_of_order():
    g = _load("""
        name: t
        inputs: {a: {shape: [4]}}
        graph:
          - {op: Add, in: [b, a], out: c}
          - {op: Relu, in: [a], out: b}
        outputs: [c]
    """)
    assert [n.name for n in g.topo_order()] == ["b", "c"]
    a = np.array([-1.0, 2.0, -3.0, 4.0])
    np.testing.assert_allclose(_run(g, {"a": a})["c"], np.maximum(a, 0) + a)


def test_weights_section_and_if():
    g = _load("""
        name: t
        params: {d: 4, use_bias: 0}
        inputs: {x: {shape: [2, d]}}
        weights:
          w: {shape: [d, 3], init: he}
          b: {shape: [3], init: zeros}
        graph:
          - {op: MatMul, in: [x, w], out: y}
          - {op: Add, in: [y, b], out: z, if: use_bias}
          - {op: Relu, in: [y], out: z, if: 1 - use_bias}
        outputs: [z]
    """)
    assert g.nodes["z"].op == "Relu" and g.param_count == 15
    g2 = _load("""
        name: t
        params: {d: 4, use_bias: 0}
        inputs: {x: {shape: [2, d]}}
        weights: {w: {shape: [d, 3]}, b: {shape: [3], init: zeros}}
        graph:
          - {op: MatMul, in: [x, w], out: y}
          - {op: Add, in: [y, b], out: z, if: use_bias}
          - {op: Relu, in: [y], out: z, if: 1 - use_bias}
        outputs: [z]
    """, use_bias=1)
    assert g2.nodes["z"].op == "Add"


BLOCKS = """
name: t
params: {d: 8, n: 3}
inputs: {x: {shape: [2, d]}}
blocks:
  layer:
    params: {width: 2*d, scale: 1}
    inputs: [x]
    graph:
      - {layer: linear, name: up, in: x, out_features: width*scale}
      - {layer: relu, name: act}
      - {layer: linear, name: down, out_features: d}
      - {op: Add, in: [x, down], out: y}
    outputs: [y]
graph:
  - {block: layer, name: h, repeat: n, as: i, scale: i + 1}
  - {layer: linear, name: head, out_features: 2, out: logits}
outputs: [logits]
"""


def test_block_repeat_names_loop_variable_and_chaining():
    g = _load(BLOCKS)
    d = 8
    for i in range(3):
        assert g.params[f"h.{i}.up.weight"].shape == (d, 2 * d * (i + 1))
        assert g.params[f"h.{i}.down.weight"].shape == (2 * d * (i + 1), d)
    assert g.nodes["h.1.y"].inputs == ("h.0.y", "h.1.down")
    assert g.nodes["head"].inputs[0] == "h"
    assert g.nodes["h.2.up"].meta == {"layer": "h.2.up", "layer_type": "linear"}
    # the loaded graph computes x + down(relu(up(x))) three times, then the head
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s.shape) * 0.3 for k, s in g.params.items()}
    x = rng.standard_normal((2, d))
    h = x
    for i in range(3):
        p = lambda n, i=i: params[f"h.{i}.{n}"]  # noqa: E731
        u = np.maximum(h @ p("up.weight") + p("up.bias"), 0)
        h = h + u @ p("down.weight") + p("down.bias")
    want = h @ params["head.weight"] + params["head.bias"]
    np.testing.assert_allclose(_run(g, {"x": x}, params)["logits"], want, rtol=1e-5, atol=1e-5)
    # overriding the repeat count and a size
    g2 = _load(BLOCKS, n=1, d=4)
    assert "h.1.up.weight" not in g2.params and g2.params["h.0.up.weight"].shape == (4, 8)


def test_block_argument_errors():
    bad = BLOCKS.replace("scale: i + 1", "scael: i + 1")
    with pytest.raises(GraphError, match=r"t.yaml:\d+: graph\[0\] \(block layer 'h'\): override 'scael' "
                                         r"names no argument of block 'layer' \(did you mean 'scale'\?\)"):
        _load(bad)
    with pytest.raises(GraphError, match="unknown block 'layr'.*did you mean 'layer'"):
        _load(BLOCKS.replace("{block: layer", "{block: layr"))


def test_repeated_layer_and_start():
    g = _load("""
        name: t
        inputs: {x: {shape: [2, 3, 8]}}
        graph:
          - {layer: transformer_block, name: blk, repeat: 2, start: 4, heads: 2, hidden: 16}
    """)
    assert "blk.4.attn.q.weight" in g.params and "blk.5.mlp.fc2.bias" in g.params
    assert "blk.6.attn.q.weight" not in g.params
    assert g.outputs == ["blk"]


def test_block_with_two_inputs_and_ops_in_blocks():
    g = _load("""
        name: t
        inputs: {x: {shape: [4]}, s: {shape: [4]}}
        blocks:
          step:
            inputs: [x, acc]
            graph:
              - {op: Relu, in: [x], out: r}
              - {op: Add, in: [acc, r], out: acc2}
              - {op: Neg, in: [r], out: x2}
            outputs: [x2, acc2]
        graph:
          - {block: step, name: st, repeat: 3, in: [x, s], out: [xo, total]}
        outputs: [xo, total]
    """)
    x = np.array([1.0, -2.0, 3.0, -4.0])
    out = _run(g, {"x": x, "s": np.zeros(4)})
    # relu(x), then relu(-relu(x)) = 0 twice
    np.testing.assert_allclose(out["total"], np.maximum(x, 0))
    np.testing.assert_allclose(out["xo"], np.zeros(4))
    assert g.nodes["st.1.r"].meta["layer"] == "st.1"


# ---------------------------------------------------------------------- layers vs NumPy
def _feeds_params(g, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s.shape) * scale for k, s in g.params.items()
            if g.param_info[k].trainable and not k.startswith("rotary.")}


def test_linear_bias_and_tied_transpose():
    g = _load("""
        name: t
        inputs: {ids: {shape: [2, 3], dtype: int64}}
        graph:
          - {layer: embedding, name: wte, in: ids, vocab: 7, dim: 4}
          - {layer: linear, name: proj, out_features: 4, bias: false}
          - {layer: linear, name: head, weight: wte.weight, transpose: true, bias: false, out: logits}
    """)
    assert set(g.params) == {"wte.weight", "proj.weight"}
    assert g.param_info["wte.weight"].init == "normal"
    assert g.param_info["wte.weight"].options["std"] == 0.02
    assert g.param_info["proj.weight"].init == "he"
    assert g.tensors["logits"].shape == (2, 3, 7)
    p = _feeds_params(g)
    ids = np.array([[0, 3, 6], [1, 1, 2]])
    want = (p["wte.weight"][ids] @ p["proj.weight"]) @ p["wte.weight"].T
    np.testing.assert_allclose(_run(g, {"ids": ids}, p)["logits"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphError, match="tied weight 'wte.weight' has shape"):
        _load("""
            name: t
            inputs: {ids: {shape: [2, 3], dtype: int64}}
            graph:
              - {layer: embedding, name: wte, in: ids, vocab: 7, dim: 4}
              - {layer: linear, name: head, weight: wte.weight, bias: false}
        """)


def _conv1d_ref(x, w, b, dilation, pad_left, pad_right):
    n, c, L = x.shape
    co, ci, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad_left, pad_right)))
    out_len = xp.shape[2] - dilation * (k - 1)
    y = np.zeros((n, co, out_len))
    for t in range(out_len):
        for j in range(k):
            y[:, :, t] += xp[:, :, t + j * dilation] @ w[:, :, j].T
    return y + b[None, :, None]


def test_conv1d_causal_is_causal_and_matches_reference():
    g = _load("""
        name: t
        inputs: {x: {shape: [2, 3, 16]}}
        graph:
          - {layer: conv1d, name: c, out_channels: 4, kernel: 2, dilation: 4, padding: causal}
    """)
    node = g.nodes["c"]
    assert node.attrs["pads"] == [4, 0] and node.attrs["dilations"] == [4]
    assert g.tensors["c"].shape == (2, 4, 16)
    p = _feeds_params(g)
    x = np.random.default_rng(2).standard_normal((2, 3, 16))
    y = _run(g, {"x": x}, p)["c"]
    np.testing.assert_allclose(y, _conv1d_ref(x, p["c.weight"], p["c.bias"], 4, 4, 0), rtol=1e-5, atol=1e-6)
    # changing a future sample does not change earlier outputs
    x2 = x.copy()
    x2[:, :, 10] += 5.0
    y2 = _run(g, {"x": x2}, p)["c"]
    np.testing.assert_array_equal(y2[:, :, :10], y[:, :, :10])
    assert not np.allclose(y2[:, :, 10], y[:, :, 10])


@pytest.mark.parametrize(("size", "k", "s", "d", "pads"), [
    (8, 3, 1, 1, [1, 1]), (8, 4, 1, 1, [1, 2]), (9, 3, 2, 1, [1, 1]), (8, 3, 1, 2, [2, 2]),
])
def test_conv_same_padding_keeps_size(size, k, s, d, pads):
    g = _load(f"""
        name: t
        inputs: {{x: {{shape: [1, 2, {size}, {size}]}}}}
        graph:
          - {{layer: conv2d, name: c, out_channels: 3, kernel: {k}, stride: {s}, dilation: {d},
             padding: same, groups: 1}}
    """)
    assert g.nodes["c"].attrs["pads"] == [pads[0], pads[0], pads[1], pads[1]]
    assert g.tensors["c"].shape == (1, 3, math.ceil(size / s), math.ceil(size / s))


def test_conv_groups_and_batchnorm_params():
    g = _load("""
        name: t
        inputs: {x: {shape: [1, 8, 5, 5]}}
        graph:
          - {layer: conv2d, name: dw, out_channels: 8, kernel: 3, groups: 8, padding: 1, bias: false}
          - {layer: batchnorm, name: bn}
    """)
    assert g.params["dw.weight"].shape == (8, 1, 3, 3)
    assert g.param_info["bn.running_mean"].trainable is False
    assert g.param_info["bn.running_var"].init == "ones"
    assert g.param_info["bn.weight"].init == "ones" and g.param_info["bn.bias"].init == "zeros"
    assert g.param_count == 72 + 16
    with pytest.raises(GraphError, match="groups=3 does not divide"):
        _load("""
            name: t
            inputs: {x: {shape: [1, 8, 5, 5]}}
            graph: [{layer: conv2d, out_channels: 8, kernel: 3, groups: 3}]
        """)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _mha_ref(x, p, pre, heads, kv_heads, causal, bias=True):
    B, S, D = x.shape
    hd = D // heads

    def lin(t, n):
        y = t @ p[f"{pre}.{n}.weight"]
        return y + p[f"{pre}.{n}.bias"] if bias else y

    q = lin(x, "q").reshape(B, S, heads, hd).transpose(0, 2, 1, 3)
    k = lin(x, "k").reshape(B, S, kv_heads, hd).transpose(0, 2, 1, 3)
    v = lin(x, "v").reshape(B, S, kv_heads, hd).transpose(0, 2, 1, 3)
    k = np.repeat(k, heads // kv_heads, axis=1)
    v = np.repeat(v, heads // kv_heads, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    if causal:
        s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    o = (_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, S, heads * hd)
    return lin(o, "o")


@pytest.mark.parametrize(("heads", "kv_heads", "causal"), [(2, 2, False), (4, 2, True), (4, 1, True)])
def test_attention_matches_numpy(heads, kv_heads, causal):
    g = _load(f"""
        name: t
        inputs: {{x: {{shape: [2, 5, 8]}}}}
        graph:
          - {{layer: attention, name: attn, heads: {heads}, kv_heads: {kv_heads},
             causal: {str(causal).lower()}}}
    """)
    hd = 8 // heads
    assert g.params["attn.k.weight"].shape == (8, kv_heads * hd)
    ops = [n.op for n in g.topo_order()]
    assert ops.count("Attention") == 1 and ops.count("Transpose") == 4
    att = next(n for n in g.nodes.values() if n.op == "Attention")
    assert att.attrs["is_causal"] == int(causal)
    p = _feeds_params(g)
    x = np.random.default_rng(3).standard_normal((2, 5, 8))
    want = _mha_ref(x, p, "attn", heads, kv_heads, causal)
    np.testing.assert_allclose(_run(g, {"x": x}, p)["attn"], want, rtol=1e-4, atol=1e-5)


def test_attention_mask_input_and_n_kv_heads_alias():
    g = _load("""
        name: t
        inputs: {x: {shape: [2, 4, 8]}, mask: {shape: [4, 4]}}
        graph:
          - {layer: attention, name: attn, in: [x, mask], heads: 4, n_kv_heads: 2}
    """)
    assert g.params["attn.k.weight"].shape == (8, 4)
    p = _feeds_params(g)
    rng = np.random.default_rng(9)
    x, mask = rng.standard_normal((2, 4, 8)), rng.standard_normal((4, 4))
    B, S, H, KV, hd = 2, 4, 4, 2, 2

    def lin(t, n):
        return t @ p[f"attn.{n}.weight"] + p[f"attn.{n}.bias"]

    q = lin(x, "q").reshape(B, S, H, hd).transpose(0, 2, 1, 3)
    k = np.repeat(lin(x, "k").reshape(B, S, KV, hd).transpose(0, 2, 1, 3), 2, 1)
    v = np.repeat(lin(x, "v").reshape(B, S, KV, hd).transpose(0, 2, 1, 3), 2, 1)
    a = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + mask)
    want = lin((a @ v).transpose(0, 2, 1, 3).reshape(B, S, 8), "o")
    np.testing.assert_allclose(_run(g, {"x": x, "mask": mask}, p)["attn"], want, rtol=1e-4, atol=1e-5)


def _rope_ref(t, base=10000.0):
    # t [B, H, S, hd]; rotate halves (non-interleaved), as in Llama / ONNX interleaved=0
    S, hd = t.shape[2], t.shape[3]
    inv = 1.0 / base ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(S), inv)
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = t[..., : hd // 2], t[..., hd // 2:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def test_llama_style_block_matches_numpy():
    g = _load("""
        name: t
        inputs: {x: {shape: [2, 6, 8]}}
        graph:
          - {layer: transformer_block, name: blk, heads: 2, kv_heads: 1, hidden: 12, act: swiglu,
             norm: rmsnorm, eps: 1e-6, causal: true, rotary: true, bias: false}
    """)
    assert not any(k.endswith(".bias") for k in g.params)
    assert g.param_info["rotary.cos_6x4"].trainable is False
    assert sorted(k for k in g.params if k.startswith("blk.mlp")) == \
        ["blk.mlp.down.weight", "blk.mlp.gate.weight", "blk.mlp.up.weight"]
    p = _feeds_params(g)
    x = np.random.default_rng(4).standard_normal((2, 6, 8))

    def rms(t, w):
        return t / np.sqrt((t * t).mean(-1, keepdims=True) + 1e-6) * w

    h = rms(x, p["blk.norm1.weight"])
    B, S, D, H, hd = 2, 6, 8, 2, 4
    q = (h @ p["blk.attn.q.weight"]).reshape(B, S, H, hd).transpose(0, 2, 1, 3)
    k = (h @ p["blk.attn.k.weight"]).reshape(B, S, 1, hd).transpose(0, 2, 1, 3)
    v = (h @ p["blk.attn.v.weight"]).reshape(B, S, 1, hd).transpose(0, 2, 1, 3)
    q, k = _rope_ref(q), _rope_ref(k)
    s = q @ np.repeat(k, 2, 1).transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    o = (_softmax(s) @ np.repeat(v, 2, 1)).transpose(0, 2, 1, 3).reshape(B, S, D)
    h1 = x + o @ p["blk.attn.o.weight"]
    m = rms(h1, p["blk.norm2.weight"])
    gate = m @ p["blk.mlp.gate.weight"]
    ff = (gate / (1 + np.exp(-gate)) * (m @ p["blk.mlp.up.weight"])) @ p["blk.mlp.down.weight"]
    np.testing.assert_allclose(_run(g, {"x": x}, p)["blk"], h1 + ff, rtol=1e-4, atol=1e-5)


def test_postnorm_block_matches_numpy():
    g = _load("""
        name: t
        inputs: {x: {shape: [1, 4, 8]}}
        graph:
          - {layer: transformer_block, name: b, heads: 2, hidden: 16, act: relu, prenorm: false}
    """)
    p = _feeds_params(g)
    x = np.random.default_rng(5).standard_normal((1, 4, 8))

    def ln(t, pre):
        mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-5) * p[f"{pre}.weight"] + p[f"{pre}.bias"]

    h = ln(x + _mha_ref(x, p, "b.attn", 2, 2, False), "b.norm1")
    f = np.maximum(h @ p["b.mlp.fc1.weight"] + p["b.mlp.fc1.bias"], 0)
    f = f @ p["b.mlp.fc2.weight"] + p["b.mlp.fc2.bias"]
    np.testing.assert_allclose(_run(g, {"x": x}, p)["b"], ln(h + f, "b.norm2"), rtol=1e-4, atol=1e-5)


def test_residual_layer_with_projection_and_identity():
    text = """
        name: t
        params: {proj: 1}
        inputs: {x: {shape: [2, 4]}}
        graph:
          - layer: residual
            name: res
            act: relu
            branch:
              - {layer: linear, name: fc1, out_features: 6}
              - {layer: relu, name: r}
              - {layer: linear, name: fc2, out_features: OUT}
            shortcut:
              - {layer: linear, name: proj, out_features: OUT, bias: false, if: proj}
    """
    g = _load(text.replace("OUT", "3"))
    assert {"res.fc1.weight", "res.fc2.bias", "res.proj.weight"} <= set(g.params)
    assert g.nodes["res.fc1"].meta["layer"] == "res.fc1"
    p = _feeds_params(g)
    x = np.random.default_rng(6).standard_normal((2, 4))
    br = np.maximum(x @ p["res.fc1.weight"] + p["res.fc1.bias"], 0) @ p["res.fc2.weight"] + p["res.fc2.bias"]
    want = np.maximum(br + x @ p["res.proj.weight"], 0)
    np.testing.assert_allclose(_run(g, {"x": x}, p)["res"], want, rtol=1e-5, atol=1e-6)
    gi = _load(text.replace("OUT", "4"), proj=0)  # every shortcut entry skipped: identity
    assert "res.proj.weight" not in gi.params
    pi = _feeds_params(gi)
    br = np.maximum(x @ pi["res.fc1.weight"] + pi["res.fc1.bias"], 0) @ pi["res.fc2.weight"]
    br = br + pi["res.fc2.bias"]
    np.testing.assert_allclose(_run(gi, {"x": x}, pi)["res"], np.maximum(br + x, 0), rtol=1e-5, atol=1e-6)


def test_pools_flatten_dropout_activations():
    g = _load("""
        name: t
        inputs: {x: {shape: [1, 2, 6, 6]}}
        graph:
          - {layer: maxpool, name: mp, kernel: 3, stride: 2, padding: 1}
          - {layer: avgpool, name: ap, kernel: 3}
          - {layer: global_avgpool, name: gap}
          - {layer: flatten, name: fl}
          - {layer: dropout, name: dr, rate: 0.3}
          - {layer: gelu, name: ge}
          - {layer: sigmoid, name: sg}
          - {layer: tanh, name: th}
          - {layer: softmax, name: sm}
    """)
    assert g.tensors["mp"].shape == (1, 2, 3, 3) and g.tensors["ap"].shape == (1, 2, 1, 1)
    x = np.random.default_rng(7).standard_normal((1, 2, 6, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    mp = np.array([[[[xp[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(3)]
                     for i in range(3)] for c in range(2)]])
    v = mp.mean(axis=(2, 3)).reshape(1, 2)
    v = 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    v = np.tanh(1 / (1 + np.exp(-v)))
    np.testing.assert_allclose(_run(g, {"x": x})["sm"], _softmax(v), rtol=1e-5)


def test_lstm_layer_matches_torch():
    torch = pytest.importorskip("torch")
    g = _load("""
        name: t
        inputs: {x: {shape: [2, 5, 3]}}
        graph:
          - {layer: lstm, name: rnn, hidden: 4, layers: 2}
    """)
    assert g.params["rnn.W_l1"].shape == (1, 16, 4) and g.params["rnn.B_l0"].shape == (1, 32)
    assert g.param_count == 2 * 4 * 4 + 16 * 3 + 16 * 4 + 32 + 16 * 4 + 16 * 4 + 32 - 32
    ref = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    p = {}

    def iofc(t):  # torch gate order i, f, g, o -> ONNX i, o, f, c
        i, f, gg, o = t.detach().numpy().reshape(4, 4, *t.shape[1:])
        return np.concatenate([i, o, f, gg])

    for layer in range(2):
        p[f"rnn.W_l{layer}"] = iofc(getattr(ref, f"weight_ih_l{layer}"))[None]
        p[f"rnn.R_l{layer}"] = iofc(getattr(ref, f"weight_hh_l{layer}"))[None]
        p[f"rnn.B_l{layer}"] = np.concatenate([iofc(getattr(ref, f"bias_ih_l{layer}")),
                                               iofc(getattr(ref, f"bias_hh_l{layer}"))])[None]
    x = np.random.default_rng(8).standard_normal((2, 5, 3))
    want = ref(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(_run(g, {"x": x}, p)["rnn"], want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- bad input
BAD = {
    "typo_op": ("""
        name: t
        inputs: {a: {shape: [2, 3]}, b: {shape: [3, 4]}}
        graph:
          - {op: MatMull, in: [a, b], out: c}
        """, UnsupportedOpError,
        r"^bad.yaml:5: graph\[0\] \(op MatMull -> c\): unknown op 'MatMull' \(did you mean 'MatMul'\?\)$"),
    "shape": ("""
        name: t
        inputs: {a: {shape: [2, 3]}, b: {shape: [2, 4]}}
        graph:
          - {op: Relu, in: [a], out: r}
          - {op: MatMul, in: [r, b], out: c}
        """, GraphError, r"^bad.yaml:6: graph\[1\] \(op MatMul -> c\): .*MatMul inner dimensions differ"),
    "unknown_param": ("""
        name: t
        params: {hidden: 4}
        inputs: {a: {shape: [2, hiden]}}
        graph: [{op: Relu, in: [a]}]
        """, GraphError,
        r"^bad.yaml:4: input 'a': unknown param 'hiden' in expression 'hiden' \(did you mean 'hidden'\?\)$"),
    "unknown_param_in_arg": ("""
        name: t
        params: {hidden: 4}
        inputs: {a: {shape: [2, 4]}}
        graph:
          - {layer: linear, name: fc, out_features: 2*hiden}
        """, GraphError,
        r"^bad.yaml:6: graph\[0\] \(layer linear 'fc'\): argument 'out_features': unknown param 'hiden'"),
    "cycle": ("""
        name: t
        inputs: {a: {shape: [4]}}
        graph:
          - {op: Add, in: [a, c], out: b}
          - {op: Relu, in: [b], out: c}
        """, GraphError,
        r"^bad.yaml:5: graph\[0\]: entries form a cycle: graph\[0\]"
        r" \(b\) -> graph\[1\] \(c\)"),
    "missing": ("""
        name: t
        inputs: {a: {shape: [4]}}
        graph:
          - {op: Relu, in: [aa], out: c}
        """, GraphError,
        r"^bad.yaml:5: graph\[0\] \(op Relu -> c\): tensor 'aa' is"
        r" not defined \(did you mean 'a'\?\)$"),
    "missing_output": ("""
        name: t
        inputs: {a: {shape: [4]}}
        graph: [{op: Relu, in: [a], out: c}]
        outputs: [d]
        """, GraphError, r"^bad.yaml:5: outputs: tensor 'd' is not defined"),
    "layer": ("""
        name: t
        inputs: {a: {shape: [2, 4]}}
        graph:
          - {layer: liner, out_features: 3}
        """, GraphError,
        r"^bad.yaml:5: graph\[0\] \(layer liner 'liner_0'\): unknown"
        r" layer 'liner' \(did you mean 'linear'\?\)"),
    "layer_arg": ("""
        name: t
        inputs: {a: {shape: [1, 1, 8, 8]}}
        graph:
          - {layer: conv2d, name: c, out_channels: 2, kernel: 3, strid: 2}
        """, GraphError,
        r"graph\[0\] \(layer conv2d 'c'\): unknown argument 'strid'"
        r" for layer conv2d \(did you mean 'stride'\?\)"),
    "yaml_syntax": ("""
        name: t
        inputs:
          a: {shape: [2, 4]
        graph: []
        """, GraphError, r"^bad.yaml:5: invalid YAML: .*expected ',' or '}'"),
    "top_key": ("""
        name: t
        input: {a: {shape: [2]}}
        graph: []
        """, GraphError,
        r"^bad.yaml:3: top level: unknown top-level key 'input' \(did"
        r" you mean 'inputs'\?\)"),
    "entry_kind": ("""
        name: t
        inputs: {a: {shape: [2]}}
        graph: [{opp: Relu}]
        """, GraphError,
        r"^bad.yaml:4: graph\[0\]: an entry needs exactly one of op,"
        r" layer, block \(did you mean 'op'\?\)"),
    "dtype": ("""
        name: t
        inputs: {a: {shape: [2], dtype: fp33}}
        graph: [{op: Relu}]
        """, GraphError, r"^bad.yaml:3: input 'a': unknown dtype 'fp33'"),
    "twice": ("""
        name: t
        inputs: {a: {shape: [2]}}
        graph:
          - {op: Relu, in: [a], out: b}
          - {op: Neg, in: [a], out: b}
        """, GraphError, r"^bad.yaml:6: graph\[1\]: tensor 'b' is produced by entries 0 and 1"),
    "block_error_names_instance": ("""
        name: t
        inputs: {x: {shape: [2, 4]}}
        blocks:
          blk:
            params: {w: 4}
            inputs: [x]
            graph:
              - {op: MatMul, in: [x, x], out: y}
            outputs: [y]
        graph:
          - {block: blk, name: h, repeat: 2}
        """, GraphError, r"^bad.yaml:9: blocks.blk.graph\[0\] in 'h.0' \(op MatMul -> y\): MatMul inner"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_graph_error(case):
    text, kind, pattern = BAD[case]
    with pytest.raises(kind, match=pattern) as info:
        load_yaml_text(textwrap.dedent(text), "bad.yaml")
    assert "\n" not in str(info.value)


def test_override_naming_no_param(tmp_path: Path):
    f = tmp_path / "w.yaml"
    f.write_text(GEMM)
    with pytest.raises(GraphError, match=r"w.yaml: override 'm' names no param \(did you mean 'M'\?\)"):
        load_yaml(f, m=3)


def test_unsafe_yaml_tags_are_rejected():
    with pytest.raises(GraphError, match="invalid YAML"):
        load_yaml_text("name: !!python/object/apply:os.system ['true']\ngraph: []\n", "evil.yaml")


def test_cli_bad_file_one_line_exit_2(tmp_path: Path, capsys):
    from sim.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(textwrap.dedent(BAD["typo_op"][0]))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "bad.yaml:5: graph[0] (op MatMull -> c): unknown op 'MatMull'" in err
    assert main(["run", "mlp-mnist", "--set", "btach=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "override 'btach' names no param (did you mean 'batch'?)" in err
