"""Execution modes (``--runtime eager | compiled | tensorrt``) and the pattern rewrites under
them: exported subgraphs become fused ops with unchanged values (against onnx.reference and
torch), kernel counts match hand counts, and each mode's engine options are as documented."""

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx_nets import _Builder, bert_layers

import sim
from sim.exec import execute
from sim.frontends.onnx_import import import_model
from sim.graph import Graph, TensorSpec
from sim.passes.patterns import rewrite
from sim.passes.runtime import EAGER_DISPATCH_S, engine_options, kernel_count, runtime_graph


def _ops(g):
    return sorted(n.op for n in g.nodes.values() if n.op not in ("Constant", "Reshape"))


def _decomposed_block(batch=2, heads=2, seq=5, dh=4):
    """Decomposed layer norm (ReduceMean/Sub/Pow/.../Add), tanh GELU, and attention scaled by
    a Mul with an additive mask, as exporters write them."""
    b = _Builder(seed=3)
    hidden = heads * dh
    x = "x"
    mean = b.op("ReduceMean", [x], axes=[-1])
    d = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Pow", [d, b.scalar(2.0)])], axes=[-1])
    std = b.op("Sqrt", [b.op("Add", [var, b.scalar(1e-5)])])
    gamma = b.weight("g", (hidden,), value=1 + 0.1 * np.arange(hidden))
    ln = b.op("Add", [b.op("Mul", [b.op("Div", [d, std]), gamma]), b.weight("beta", (hidden,), 0.1)])
    inner = b.op("Add", [ln, b.op("Mul", [b.op("Pow", [ln, b.scalar(3.0)]), b.scalar(0.044715)])])
    t = b.op("Tanh", [b.op("Mul", [inner, b.scalar(float(np.sqrt(2 / np.pi)))])])
    gelu = b.op("Mul", [b.op("Mul", [ln, b.scalar(0.5)]), b.op("Add", [t, b.scalar(1.0)])])
    shape = b.ints([batch, seq, heads, dh])
    q = b.op("Transpose", [b.op("Reshape", [gelu, shape])], perm=[0, 2, 1, 3])
    kt = b.op("Transpose", [b.op("Reshape", [ln, shape])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])
    s = b.op("Mul", [b.op("MatMul", [q, kt]), b.scalar(dh ** -0.5)])
    keep = np.where(np.arange(seq) < seq - 1, 0.0, -1e4)  # the last key is padding
    mask = b.weight("mask", (batch, 1, 1, seq), value=np.broadcast_to(keep, (batch, 1, 1, seq)))
    y = b.op("MatMul", [b.op("Softmax", [b.op("Add", [s, mask])], axis=-1), v])
    xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden])
    return b.model([xin], [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)])


def test_decomposed_layernorm_tanh_gelu_and_masked_attention_become_fused_ops():
    m = _decomposed_block()
    g = import_model(m)
    r = rewrite(g)
    assert _ops(r) == ["Attention", "Gelu", "LayerNormalization", "Transpose", "Transpose", "Transpose"]
    assert r.nodes[next(n for n in r.nodes if r.nodes[n].op == "Gelu")].attrs["approximate"] == "tanh"
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    got = execute(r, {"x": x})[r.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, execute(g, {"x": x})[g.outputs[0]], rtol=1e-5, atol=1e-6)


def test_exported_bert_rewrites_keep_values():
    m = bert_layers(batch=2, seq=6, hidden=16, heads=2, ffn=32, layers=2, vocab=40)
    g = import_model(m)
    r = rewrite(g)
    ops = _ops(r)
    assert ops.count("Attention") == 2 and ops.count("Gelu") == 2 and ops.count("Gemm") == 12
    assert not {"Softmax", "Erf", "MatMul", "Div", "Mul"} & set(ops)
    ids = np.random.default_rng(1).integers(0, 40, (2, 6))
    (want,) = ReferenceEvaluator(m).run(None, {"input_ids": ids})
    np.testing.assert_allclose(execute(r, {"input_ids": ids})[r.outputs[0]], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 17])
def test_torch_export_of_bert_is_recognised(opset, tmp_path):
    """torch.onnx.export's own spelling (opset 13 decomposes layer norm; Pow(d, 0.5) scales)."""
    torch = pytest.importorskip("torch")
    from torch_nets import Bert

    torch.manual_seed(0)
    model = Bert(vocab=50, d=32, layers=2, heads=4, ffn=64, max_pos=16).eval()
    ids = torch.randint(0, 50, (2, 8))
    path = str(tmp_path / "bert.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (ids,), path, dynamo=False, opset_version=opset)
        want = model(ids).numpy()
    r = rewrite(sim.load(path))
    ops = _ops(r)
    assert (ops.count("Attention"), ops.count("Gelu"), ops.count("LayerNormalization")) == (2, 2, 5)
    assert not {"Softmax", "Erf", "ReduceMean", "Pow", "Sqrt"} & set(ops)
    (inp,) = r.inputs
    np.testing.assert_allclose(execute(r, {inp: ids.numpy()})[r.outputs[0]], want, rtol=1e-4, atol=1e-5)


def test_kernel_counts_per_mode_by_hand():
    """Two post-LN layers with embeddings. Eager, per layer: 6 linear (bias in the GEMM),
    4 head transposes, QK^T, scale, softmax, PV, 2 residual adds, 2 layer norms, GELU = 19;
    plus gather, position add, layer norm = 3: 41. Compiled, per layer: the Q/K/V GEMM,
    attention, out-projection + residual, layer norm, FFN-up + GELU, FFN-down + residual,
    layer norm = 7; plus gather + add, layer norm: 16."""
    g = import_model(bert_layers(batch=2, seq=6, hidden=16, heads=2, ffn=32, layers=2, vocab=40))
    assert kernel_count(runtime_graph(g, "eager")) == 41
    assert kernel_count(runtime_graph(g, "compiled")) == 16
    assert kernel_count(runtime_graph(g, "tensorrt")) == 16


def test_mode_engine_options_and_host_time():
    h100 = sim.hardware("h100")
    assert engine_options("eager", h100) == {"dispatch_s": EAGER_DISPATCH_S, "cuda_graphs": False}
    assert engine_options("tensorrt", h100)["cuda_graphs"] is True
    stated = sim.hardware("h100", **{"arch.host_dispatch": "3 us"})
    assert engine_options("compiled", stated)["dispatch_s"] == pytest.approx(3e-6)
    g = import_model(bert_layers(batch=1, seq=8, hidden=32, heads=2, ffn=64, layers=2, vocab=40))
    eager = sim.simulate(g, h100, runtime="eager")
    # a small model is host bound: the host issues 41 kernels at 8 us each before the last runs
    assert eager.makespan_s >= kernel_count(runtime_graph(g, "eager")) * EAGER_DISPATCH_S
    trt = sim.simulate(g, h100, runtime="tensorrt")
    assert trt.makespan_s < sim.simulate(g, h100, runtime="compiled").makespan_s < eager.makespan_s
    with pytest.raises(sim.GraphError, match="unknown runtime"):
        sim.simulate(g, h100, runtime="jit")


def test_cli_runtime(capsys):
    from sim.cli import main

    assert main(["run", "bert-base", "--set", "batch=1", "--set", "n_layer=2", "--runtime", "tensorrt",
                 "--dtype", "bf16"]) == 0
    assert "makespan" in capsys.readouterr().out


def test_eager_conv_bias_is_its_own_kernel_as_aten_runs_it(tmp_path):
    """An eval-mode export folds each BatchNorm into its convolution's bias; PyTorch eager on
    CUDA runs the convolution and then adds the bias in a second kernel (at::_convolution,
    cuDNN path). So eager on the export launches what eager PyTorch launches for the model:
    per bottleneck 3 or 4 convolutions, as many batch norms (here bias adds), 3 ReLUs and the
    residual add; 16 bottlenecks (4 with a projection) make 52 + 52 + 48 + 16; the stem's
    convolution, batch norm and ReLU, the max pool, the average pool and the classifier: 174."""
    torch = pytest.importorskip("torch")
    from torch_nets import ResNet50, aten_ops

    torch.manual_seed(0)
    model = ResNet50(classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    path = str(tmp_path / "resnet50.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17)
        want = model(x).numpy()
    g = sim.load(path)
    assert sum(n.op == "Conv" and len(n.inputs) == 3 for n in g.nodes.values()) == 53
    eager = runtime_graph(g, "eager")
    assert kernel_count(eager) == 174 == aten_ops(model, x)[0]
    assert kernel_count(runtime_graph(g, "compiled")) == 56  # bias, ReLU and residual in the conv epilogue
    assert sum(n.op == "Conv" and len(n.inputs) == 3 for n in eager.nodes.values()) == 0
    (inp,) = eager.inputs
    np.testing.assert_allclose(execute(eager, {inp: x.numpy()})[eager.outputs[0]], want, rtol=1e-4, atol=1e-4)


def test_kernel_time_is_the_device_s_ops_without_host_waits_or_copies():
    """Host-bound eager run: the makespan is at least the host's issue time, while the kernel
    time equals the makespan of the same graph run back to back with its inputs resident (a
    chain, so that makespan is the sum of the kernels)."""
    g = import_model(bert_layers(batch=1, seq=8, hidden=32, heads=2, ffn=64, layers=2, vocab=40))
    h100 = sim.hardware("h100")
    eager = sim.simulate(g, h100, runtime="eager")
    back_to_back = sim.simulate(g, h100, runtime="eager", dispatch_s=0.0, host_inputs=False)
    assert eager.host_bound_s > 0 and back_to_back.host_bound_s == 0
    assert eager.kernel_time_s == pytest.approx(back_to_back.makespan_s, rel=1e-9)
    assert eager.makespan_s > eager.kernel_time_s + 0.9 * eager.host_bound_s
    d = eager.to_dict()
    assert d["kernel_time_by_device"] == {"gpu0": pytest.approx(eager.kernel_time_s)}


@pytest.mark.parametrize("batch", [1, 2])
def test_eager_export_launches_what_pytorch_eager_dispatches(batch, tmp_path):
    """The ATen operators one eager forward of the torch model dispatches (counted with a
    TorchDispatchMode, views left out), against the eager kernels of its ONNX export, op by
    op. At batch 1 the Q/K/V head transposes are views bmm reads through its batch stride; at
    batch 2 torch.matmul's reshape copies each (clone), and so do the exported Transposes."""
    torch = pytest.importorskip("torch")
    from torch_nets import Bert, aten_ops

    torch.manual_seed(0)
    model = Bert(vocab=50, d=32, layers=2, heads=4, ffn=64, max_pos=16).eval()
    ids = torch.randint(0, 50, (batch, 8))
    path = str(tmp_path / "bert.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (ids,), path, dynamo=False, opset_version=17)
    eager = runtime_graph(sim.load(path), "eager")
    total, per_op = aten_ops(model, ids)
    launched = [n.op for n in eager.nodes.values() if n.op != "Constant" and "alias_of" not in n.meta
                and (eager.work(n).flops > 0 or eager.work(n).bytes > 0)]
    aten = {"Gemm": "addmm", "Add": "add", "LayerNormalization": "native_layer_norm", "MatMul": "bmm",
            "Gather": "embedding", "Div": "div", "Softmax": "_softmax", "Transpose": "clone", "Gelu": "gelu"}
    assert kernel_count(eager) == len(launched) == total
    assert {aten[op]: launched.count(op) for op in set(launched)} == per_op
    (inp,) = eager.inputs
    with torch.no_grad():
        np.testing.assert_allclose(execute(eager, {inp: ids.numpy()})[eager.outputs[0]], model(ids).numpy(),
                                   rtol=1e-4, atol=1e-5)


def _export_gpt2(torch, tmp_path, attn, batch=2):
    from torch_nets import GPT2

    torch.manual_seed(0)
    model = GPT2(attn=attn).eval()
    ids = torch.randint(0, 50, (batch, 8))
    path = str(tmp_path / f"gpt2-{attn}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (ids,), path, dynamo=False, opset_version=17)
        want = model(ids).numpy()
    return model, ids, sim.load(path), want


def _launched(g):
    return sorted(n.op for n in g.nodes.values() if n.op != "Constant" and "alias_of" not in n.meta
                  and (g.work(n).flops > 0 or g.work(n).bytes > 0))


def _check_values(g, ids, want):
    (inp,) = g.inputs
    np.testing.assert_allclose(execute(g, {inp: ids.numpy()})[g.outputs[0]], want, rtol=1e-4, atol=1e-5)


def test_gpt2_hand_written_attention_and_gelu_new(tmp_path):
    """HF GPT-2's own attention (matmul, divide, where(causal, w, finfo.min), softmax, matmul)
    and its Python tanh GELU. Eager keeps both as their ops, as torch dispatches them (per
    layer: 2 bmm, 1 where, 1 softmax, 4 mul, 1 pow, 1 tanh); compiled recognises a causal
    Attention (the where's constant mask is exactly causal) and one GELU."""
    torch = pytest.importorskip("torch")
    from torch_nets import aten_ops

    model, ids, g, want = _export_gpt2(torch, tmp_path, "eager")
    eager = runtime_graph(g, "eager")
    ops, (_, aten) = _launched(eager), aten_ops(model, ids)
    assert (ops.count("MatMul"), ops.count("Where"), ops.count("Softmax")) == (aten["bmm"], aten["where"], 2)
    assert (ops.count("Mul"), ops.count("Pow"), ops.count("Tanh")) == (aten["mul"], aten["pow"], aten["tanh"])
    # batch 2: torch.matmul's reshape copies q, k and v, and the merge before c_proj is a clone
    assert ops.count("Transpose") == aten["clone"]
    _check_values(eager, ids, want)
    compiled = rewrite(g)
    attn = [n for n in compiled.nodes.values() if n.op == "Attention"]
    assert len(attn) == 2 and all(n.attrs.get("is_causal") == 1 and len(n.inputs) == 3 for n in attn)
    assert sum(n.op == "Gelu" for n in compiled.nodes.values()) == 2
    _check_values(runtime_graph(g, "compiled"), ids, want)


def test_sdpa_export_is_one_kernel_in_eager(tmp_path):
    """A model calling scaled_dot_product_attention(is_causal=True) exports Q and K^T each
    scaled by sqrt(scale) and an additive causal mask: eager rewrites that signature (torch
    dispatches one attention op), with is_causal; the transpose merging its heads is a view
    (the kernels write [b, s, h, d]). Left: the q/k/v Split, a view in torch, a copy here."""
    torch = pytest.importorskip("torch")
    from torch_nets import aten_ops

    model, ids, g, want = _export_gpt2(torch, tmp_path, "sdpa")
    eager = runtime_graph(g, "eager")
    attn = [n for n in eager.nodes.values() if n.op == "Attention"]
    assert len(attn) == 2 and all(n.attrs["is_causal"] == 1 for n in attn)
    assert attn[0].attrs["scale"] == pytest.approx(8 ** -0.5, rel=1e-6)
    total, aten = aten_ops(model, ids)
    assert sum(k.startswith("_scaled_dot_product") for k in aten for _ in range(aten[k])) == 2
    assert kernel_count(eager) == total + _launched(eager).count("Split") == total + 2
    _check_values(eager, ids, want)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_signature_only_in_eager_patterns(causal):
    """The manual attention of _decomposed_block is not rewritten by "sdpa"; an
    SDPA-signature graph built by hand is, and a float mask that is not causal stays a mask."""
    r = rewrite(import_model(_decomposed_block()), ("sdpa",))
    assert not any(n.op == "Attention" for n in r.nodes.values())
    b = _Builder(seed=4)
    q, kt = b.op("Mul", ["q", b.scalar(0.5)]), b.op("Mul", [b.op("Transpose", ["k"], perm=[0, 1, 3, 2]),
                                                            b.scalar(0.5)])
    keep = np.tril(np.ones((5, 5), bool)) if causal else np.arange(5)[None, :] < 4
    mask = b.weight("mask", (1, 1, 5, 5), value=np.broadcast_to(np.where(keep, 0.0, -np.inf), (1, 1, 5, 5)))
    y = b.op("MatMul", [b.op("Softmax", [b.op("Add", [b.op("MatMul", [q, kt]), mask])], axis=-1), "v"])
    spec = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [2, 3, 5, 4]) for t in ("q", "k", "v")]
    m = b.model(spec, [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)])
    g = import_model(m)
    r = rewrite(g, ("sdpa",))
    (attn,) = [n for n in r.nodes.values() if n.op == "Attention"]
    assert attn.attrs["scale"] == pytest.approx(0.25)
    assert (attn.attrs.get("is_causal") == 1) == causal and (len(attn.inputs) == 3) == causal
    rng = np.random.default_rng(5)
    feeds = {t: rng.standard_normal((2, 3, 5, 4)).astype(np.float32) for t in ("q", "k", "v")}
    (want,) = ReferenceEvaluator(m).run(None, feeds)
    np.testing.assert_allclose(execute(r, feeds)[r.outputs[0]], want, rtol=1e-5, atol=1e-6)


def test_dead_nodes_are_dropped():
    from sim.passes.dce import live

    g = Graph("d")
    g.add_input("x", TensorSpec((4,)))
    g.add_node("Relu", ["x"], ["a"], name="used")
    g.add_node("Exp", ["x"], ["b"], name="dead")
    g.add_node("Neg", ["b"], ["c"], name="dead_too")
    g.set_outputs(["a"])
    out = live(g)
    assert sorted(out.nodes) == ["used"] and out.meta["dead_nodes"] == 2
    assert live(out) is out
