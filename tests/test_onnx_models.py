"""Real networks through the ONNX importer: the onnx package's light models, and ResNet-50 /
BERT-base exported with their weights as graph inputs, compared with the native workloads.

The light models (onnx/backend/test/data/light) are the ONNX model zoo's networks with
synthetic weights: every weight tensor larger than a few hundred elements is a
``ConstantOfShape`` fill (one value per tensor; only some small biases and BatchNorm
statistics keep trained values),
and the reference input is ``arange(n) / n`` reshaped to the input shape (as
``onnx.backend.test.runner`` generates it). Their bundled output is therefore uniform (all
logits equal): a weak check of values, so SqueezeNet's logits are also compared with
``onnx.reference`` (ShuffleNet's BatchNorm variances, down to 6e-14, make the reference's
opset-9 BatchNormalization disagree with the spec formula, which dlsim follows).
"""

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import sim
from sim.exec import Executor, execute
from sim.frontends.onnx_import import import_model, load_onnx

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
# name -> published parameter count of the architecture (weights are synthetic, counts are real)
MODELS = {
    "bvlc_alexnet": 60_965_224, "densenet121": 7_978_856, "inception_v1": 6_998_552,
    "inception_v2": 11_196_584, "resnet50": 25_557_032, "shufflenet": 1_393_320,
    "squeezenet": 1_235_496, "vgg19": 143_667_240, "zfnet512": 83_000_000,  # zoo file 333 MB
}
FAST = {"shufflenet", "inception_v1", "inception_v2"}


def _reference_input(spec):
    n = int(np.prod(spec.shape))
    return (np.arange(n).reshape(spec.shape) / n).astype(np.float32)


def test_all_nine_light_models_present():
    found = {os.path.basename(p)[6:-5] for p in glob.glob(os.path.join(LIGHT, "light_*.onnx"))}
    assert found == set(MODELS)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in sorted(MODELS)])
def test_light_model_imports_executes_and_simulates(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    g = load_onnx(path)
    assert g.param_count == pytest.approx(MODELS[name], rel=0.15)
    (inp, spec), = g.inputs.items()
    x = _reference_input(spec)
    logits_name = None
    if name == "squeezenet":
        (sm,) = [n for n in onnx.load(path).graph.node if n.op_type == "Softmax"]
        logits_name = sm.input[0]
    rec = Executor(g).run({inp: x}, keep=[logits_name] if logits_name else [])
    out = rec.values[g.outputs[0]]
    ref = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    # SqueezeNet's logits are ~3e9 from identical channels, so the softmax is only uniform
    # (as in the reference) when every channel rounds alike: fp32 convs accumulate in fp64.
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-7)
    if logits_name:
        _check_logits_with_reference(path, logits_name, inp, x, rec.values[logits_name])
    r = sim.simulate(g, sim.hardware("h100"))
    assert r.makespan_s > 0
    assert r.flops == pytest.approx(g.flops, rel=1e-9)


def _check_logits_with_reference(path, tensor, inp, x, got):
    from onnx.reference import ReferenceEvaluator

    m = onnx.load(path)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(tensor, 0, None))
    (want,) = ReferenceEvaluator(m).run(None, {inp: x})
    np.testing.assert_allclose(got, want, rtol=1e-3)


# ------------------------------------------------------------------- weights as graph inputs
def _native(name):
    path = os.path.join(os.path.dirname(__file__), "..", "workloads", f"{name}.yaml")
    return sim.load(path)


def _export_torch(module, example, path):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        torch.onnx.export(module.eval(), (example,), path, dynamo=False, export_params=False,
                          opset_version=17)


def _flops_on_h100(g):
    return sim.simulate(g, sim.hardware("h100")).flops


@pytest.mark.slow
def test_resnet50_weights_as_inputs_matches_native_flops(tmp_path):
    native = _native("resnet50")
    (spec,) = native.inputs.values()
    batch, image = spec.shape[0], spec.shape[-1]
    path = str(tmp_path / "resnet50.onnx")
    try:
        import torch
        from torch_nets import ResNet50

        _export_torch(ResNet50(), torch.zeros(batch, 3, image, image), path)
    except ImportError:
        from onnx_nets import resnet50

        onnx.save(resnet50(batch, image), path)
    g = load_onnx(path)
    assert len(g.inputs) == 1  # every weight input became a parameter
    assert g.param_count == pytest.approx(25.5e6, rel=0.01)
    assert _flops_on_h100(g) == pytest.approx(_flops_on_h100(native), rel=0.02)


@pytest.mark.slow
def test_bert_base_weights_as_inputs_matches_native_flops(tmp_path):
    native = _native("bert-base")
    ids = [s for s in native.inputs.values() if s.dtype == "int64"]
    batch, seq = (ids[0] if ids else next(iter(native.inputs.values()))).shape[:2]
    path = str(tmp_path / "bert.onnx")
    try:
        import torch
        from torch_nets import Bert

        _export_torch(Bert(), torch.zeros(batch, seq, dtype=torch.long), path)
    except ImportError:
        from onnx_nets import bert_layers

        m = bert_layers(batch, seq, 768, 12, 3072, layers=12, vocab=30522, weights_as_inputs=True)
        onnx.save(m, path)
    g = load_onnx(path)
    assert len(g.inputs) == 1
    assert g.param_count == pytest.approx(108.9e6, rel=0.02)
    assert _flops_on_h100(g) == pytest.approx(_flops_on_h100(native), rel=0.02)


def test_small_bert_executes_like_reference():
    from onnx.reference import ReferenceEvaluator
    from onnx_nets import bert_layers

    m = bert_layers(batch=2, seq=6, hidden=16, heads=2, ffn=32, layers=2, vocab=40)
    g = import_model(m)
    ids = np.random.default_rng(0).integers(0, 40, (2, 6))
    (want,) = ReferenceEvaluator(m).run(None, {"input_ids": ids})
    np.testing.assert_allclose(execute(g, {"input_ids": ids})[g.outputs[0]], want, rtol=1e-4,
                               atol=1e-5)


def test_fused_light_model_executes_the_same():
    from sim.passes.fusion import fuse

    g = load_onnx(os.path.join(LIGHT, "light_inception_v1.onnx"))
    f = fuse(g)
    (inp, spec), = g.inputs.items()
    x = _reference_input(spec)
    a, b = execute(g, {inp: x}), execute(f, {inp: x})
    np.testing.assert_allclose(b[f.outputs[0]], a[g.outputs[0]], rtol=1e-6)
    assert len(f) < len(g) * 0.6 and f.flops == pytest.approx(g.flops, rel=1e-12)
    conv_relu = [n for n in f if n.meta.get("fused_ops", [])[:2] == ["Conv", "Relu"]]
    assert len(conv_relu) >= 50
