"""Precision passes: cast_graph (whole-graph dtype) and amp (mixed precision)."""

import numpy as np
import pytest

from sim.errors import GraphError
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.passes.precision import amp, cast_graph, store_as


def _mlp() -> Graph:
    g = Graph("mlp")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_input("idx", TensorSpec((4,), "int64"))
    g.add_param("w1", TensorSpec((8, 16)), "he")
    g.add_param("b1", TensorSpec((16,)), "zeros")
    g.add_node("MatMul", ["x", "w1"], ["h"], name="fc1")
    g.add_node("Add", ["h", "b1"], ["hb"], name="fc1_bias")
    g.add_node("Relu", ["hb"], ["y"], name="act")
    g.set_outputs(["y"])
    return g.verify()


@pytest.mark.parametrize("dtype,size,cast", [("fp16", 2, cast_graph), ("bf16", 2, cast_graph),
                                             ("fp8", 1, store_as), ("fp32", 4, cast_graph)])
def test_cast_graph_retypes_every_float_tensor(dtype, size, cast):
    g = _mlp()
    h = cast(g, dtype)
    assert h is not g and g.tensors["y"].dtype == "fp32"  # input graph untouched
    assert set(h.nodes) == set(g.nodes) and h.outputs == g.outputs
    for t, spec in h.tensors.items():
        want = "int64" if t == "idx" else dtype
        assert spec.dtype == want, t
    # 8*16 + 16 parameters, `size` bytes each
    assert h.param_bytes == (8 * 16 + 16) * size
    assert h.param_info["w1"].init == "he"
    assert h.nodes["fc1"].meta.get("compute_dtype") is None


def test_cast_graph_int8_quantises_matmul_weights_only():
    # W8A8: activations and the MatMul weight become int8; the bias of the elementwise Add
    # stays fp32 and the Add computes in fp32 between casts
    h = cast_graph(_mlp(), "int8")
    assert h.tensors["w1"].dtype == "int8" and h.tensors["b1"].dtype == "fp32"
    assert h.tensors["x"].dtype == h.tensors["h"].dtype == h.tensors["y"].dtype == "int8"
    assert h.param_bytes == 8 * 16 * 1 + 16 * 4
    assert h.nodes["fc1"].meta.get("compute_dtype") == "int8"
    casts = [n for n in h.nodes.values() if n.op == "Cast"]
    assert {n.meta["forward"] for n in casts} == {"fc1_bias"}
    # casting again is a no-op
    assert set(cast_graph(h, "int8").nodes) == set(h.nodes)


def test_cast_graph_tf32_keeps_fp32_and_marks_matmuls():
    h = cast_graph(_mlp(), "tf32")
    assert all(s.dtype in ("fp32", "int64") for s in h.tensors.values())
    assert h.nodes["fc1"].meta["compute_dtype"] == "tf32"
    assert "compute_dtype" not in h.nodes["act"].meta
    assert h.meta["dtype"] == "tf32"


def test_cast_graph_bf16_values_are_rounded_fp32_values():
    g = _mlp()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    feeds = {"x": x, "idx": np.zeros(4, np.int64)}
    ref = execute(g, feeds)["y"]
    low = execute(cast_graph(g, "bf16"), feeds)["y"]
    assert low.dtype.name == "bfloat16"
    # bf16 has an 8-bit significand: relative error of a few 2^-8 after one GEMM + bias
    np.testing.assert_allclose(low.astype(np.float32), ref, rtol=0.05, atol=0.05)


def test_cast_graph_rejects_unknown_dtype():
    with pytest.raises(GraphError, match="cannot cast a graph to 'int32'"):
        cast_graph(_mlp(), "int32")


# ----------------------------------------------------------------- wrapping ops without a low form
def test_cast_graph_wraps_ops_without_an_int8_form():
    g = _mlp()
    g2 = g.copy()
    g2.add_input("labels", TensorSpec((4,), "int64"))
    g2.add_node("SoftmaxCrossEntropyLoss", ["y", "labels"], ["loss"], name="loss")
    g2.set_outputs(["loss"])
    h = cast_graph(g2, "int8")
    # the loss has no int8 form: it computes in fp32 between a dequantise and a requantise cast
    assert h.nodes["loss"].op == "SoftmaxCrossEntropyLoss"
    assert h.tensors[h.nodes["loss"].inputs[0]].dtype == "fp32"
    assert h.nodes["loss.cast_in0"].op == "Cast" and h.nodes["loss.cast_out0"].attrs["to"] == "int8"
    assert h.tensors["loss"].dtype == "int8" and h.outputs == ["loss"]


# ----------------------------------------------------------------- amp
def test_amp_structure_master_weights_and_fp32_outputs():
    g = _mlp()
    h = amp(g, "bf16")
    assert h.meta["loss_scale"] == 1.0 and h.meta["amp"] == "bf16"
    assert h.params["w1"].dtype == "fp32" and h.inputs["x"].dtype == "fp32"  # master copies
    assert h.nodes["w1.to_bf16"].op == "Cast" and h.nodes["w1.to_bf16"].attrs["to"] == "bf16"
    assert h.tensors[h.nodes["fc1"].outputs[0]].dtype == "bf16"  # compute in bf16
    assert h.nodes["fc1"].inputs == ("x.bf16", "w1.bf16")
    assert h.outputs == ["y"] and h.tensors["y"].dtype == "fp32"
    assert amp(g, "fp16").meta["loss_scale"] == 1024.0
    with pytest.raises(GraphError, match="amp dtype"):
        amp(g, "fp8")


def test_amp_forward_close_to_fp32():
    g = _mlp()
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((4, 8)).astype(np.float32), "idx": np.zeros(4, np.int64)}
    ref = execute(g, feeds)["y"]
    for dt in ("bf16", "fp16"):
        out = execute(amp(g, dt), feeds)["y"]
        assert out.dtype == np.float32
        tol = 2e-2 if dt == "bf16" else 2e-3  # 8- vs 11-bit significands
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_amp_training_step_keeps_fp32_grads_and_unscales_fp16():
    from sim.exec import Executor
    from sim.passes.training import training_graph

    g = _mlp()
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((4, 8)).astype(np.float32), "idx": np.zeros(4, np.int64),
             "labels": rng.integers(0, 16, 4).astype(np.int64)}
    ref = Executor(training_graph(g, optimizer="sgd", lr=0.5), seed=0).run(feeds).values
    for dt in ("bf16", "fp16"):
        t = training_graph(amp(g, dt), optimizer="sgd", lr=0.5)
        upd = t.nodes["w1.update"]
        assert t.tensors[upd.inputs[1]].dtype == "fp32"  # gradient of the master weight
        assert upd.attrs.get("grad_scale", 1.0) == (1 / 1024 if dt == "fp16" else 1.0)
        out = Executor(t, seed=0).run(feeds).values
        assert out["w1.new"].dtype == np.float32
        # loss scaling is undone: the fp16 step moves the weights as the fp32 step does
        step_ref = ref["w1.new"] - Executor(g, seed=0).params["w1"]
        step = out["w1.new"] - Executor(g, seed=0).params["w1"]
        assert np.linalg.norm(step - step_ref) < 0.05 * np.linalg.norm(step_ref)


def test_training_graph_of_a_tf32_graph_runs_its_backward_matmuls_in_tf32():
    from sim.passes.training import training_graph

    t = training_graph(cast_graph(_mlp(), "tf32"), optimizer="sgd", lr=0.1)
    mms = [n for n in t.nodes.values() if n.op == "MatMul"]
    assert len(mms) == 2  # fc1's forward and its dW (x needs no gradient)
    assert all(n.meta["compute_dtype"] == "tf32" for n in mms)
