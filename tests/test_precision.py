"""Precision passes: cast_graph (whole-graph dtype) and amp (mixed precision)."""

import numpy as np
import pytest

from sim.errors import GraphError
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.passes.precision import cast_graph


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


@pytest.mark.parametrize("dtype,size", [("fp16", 2), ("bf16", 2), ("fp8", 1), ("int8", 1), ("fp32", 4)])
def test_cast_graph_retypes_every_float_tensor(dtype, size):
    g = _mlp()
    h = cast_graph(g, dtype)
    assert h is not g and g.tensors["y"].dtype == "fp32"  # input graph untouched
    assert set(h.nodes) == set(g.nodes) and h.outputs == g.outputs
    for t, spec in h.tensors.items():
        want = "int64" if t == "idx" else dtype
        assert spec.dtype == want, t
    # 8*16 + 16 parameters, `size` bytes each
    assert h.param_bytes == (8 * 16 + 16) * size
    assert h.param_info["w1"].init == "he"
    expect_compute = "int8" if dtype == "int8" else None
    assert h.nodes["fc1"].meta.get("compute_dtype") == expect_compute


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
