"""The spine: graph building, verification, executor, autodiff on a few core ops."""

import numpy as np
import pytest
from helpers import check_grad, run_op

from sim.errors import GraphError, UnsupportedOpError
from sim.exec import execute
from sim.graph import Graph, TensorSpec


def test_matmul_forward_and_counts():
    g = Graph("mm")
    g.add_input("a", TensorSpec((3, 4)))
    g.add_input("b", TensorSpec((4, 5)))
    (c,) = g.add_node("MatMul", ["a", "b"], ["c"])
    g.set_outputs([c])
    g.verify()
    # 3*5 outputs, each 4 multiply-adds = 2*3*4*5 FLOP
    assert g.flops == 120
    w = g.work("c" if "c" in g.nodes else next(iter(g.nodes)))
    assert w.bytes_read == (12 + 20) * 4 and w.bytes_written == 15 * 4
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    out = execute(g, {"a": a, "b": b})
    np.testing.assert_allclose(out["c"], a @ b, rtol=1e-6)


def test_relu_and_grad():
    x = np.array([[-1.0, 2.0, 0.5], [3.0, -0.2, -4.0]])
    (y,) = run_op("Relu", [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    check_grad("Relu", [x])


def test_unknown_op_names_node():
    g = Graph("bad", source="w.yaml")
    g.add_input("x", TensorSpec((2,)))
    with pytest.raises(UnsupportedOpError, match=r"w.yaml: node 'n1' \(Rleu\): unknown op 'Rleu'.*Relu"):
        g.add_node("Rleu", ["x"], name="n1")


def test_shape_mismatch_names_node():
    g = Graph("bad", source="w.yaml")
    g.add_input("a", TensorSpec((3, 4)))
    g.add_input("b", TensorSpec((5, 6)))
    with pytest.raises(GraphError, match=r"node 'mm' \(MatMul\): MatMul inner dimensions differ"):
        g.add_node("MatMul", ["a", "b"], name="mm")


def test_missing_tensor():
    g = Graph("bad")
    with pytest.raises(GraphError, match="'nope' is not defined"):
        g.add_node("Relu", ["nope"])


def test_bf16_emulation_rounds_outputs():
    g = Graph("bf")
    g.add_input("x", TensorSpec((1,), "bf16"))
    g.add_input("y", TensorSpec((1,), "bf16"))
    (z,) = g.add_node("Add", ["x", "y"], ["z"])
    g.set_outputs([z])
    out = execute(g, {"x": np.array([1.0]), "y": np.array([2.0**-9])})
    # bf16 has 8 significand bits: 1 + 2^-9 rounds to 1 (round to nearest even)
    assert float(out["z"][0]) == 1.0
    assert out["z"].dtype.name == "bfloat16"


def test_init_rules_follow_their_formulas():
    from sim.exec import init_param
    from sim.graph import ParamInfo

    # scalar parameters (a step counter) initialise without fans
    assert init_param("step", TensorSpec((), "fp32"), ParamInfo("zeros")).shape == ()
    # he: std sqrt(2 / fan_in) with fan_in = in * kh * kw for a conv weight [out, in, kh, kw]
    w = init_param("w", TensorSpec((256, 64, 3, 3), "fp64"), ParamInfo("he"))
    assert abs(w.std() - np.sqrt(2 / (64 * 9))) < 0.02 * np.sqrt(2 / (64 * 9))
    # xavier on a [in, out] matrix: uniform within sqrt(6 / (in + out))
    x = init_param("x", TensorSpec((300, 100), "fp64"), ParamInfo("xavier"))
    assert np.abs(x).max() <= np.sqrt(6 / 400) and np.abs(x).max() > 0.95 * np.sqrt(6 / 400)
    # deterministic per (seed, name), different across names
    a = init_param("a", TensorSpec((4,)), ParamInfo("normal"), seed=1)
    np.testing.assert_array_equal(a, init_param("a", TensorSpec((4,)), ParamInfo("normal"), seed=1))
    assert not np.array_equal(a, init_param("b", TensorSpec((4,)), ParamInfo("normal"), seed=1))
