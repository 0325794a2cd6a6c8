"""ONNX importer: shape operands, folding, initializers, dims, errors; values vs onnx.reference."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from sim.errors import GraphError, UnsupportedOpError
from sim.exec import execute
from sim.frontends import load
from sim.frontends.onnx_import import import_model, load_onnx, onnx_dtype

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def _ref(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def _save(tmp_path, model, name="m.onnx"):
    p = tmp_path / name
    onnx.save(model, str(p))
    return str(p)


def test_dtype_enum():
    assert [onnx_dtype(c) for c in (1, 10, 11, 16, 7, 6, 9, 3, 2, 17, 19)] == [
        "fp32", "fp16", "fp64", "bf16", "int64", "int32", "bool", "int8", "uint8", "fp8", "fp8e5m2"]
    with pytest.raises(GraphError, match="UINT16"):
        onnx_dtype(4)


def test_shape_subgraph_folds_away_and_matches_reference():
    W = RNG.standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
        helper.make_node("Concat", ["b1", "m1"], ["newshape"], axis=0),
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("Reshape", ["y", "newshape"], ["z"]),
        helper.make_node("Cast", ["z"], ["zc"], to=TensorProto.DOUBLE),
    ]
    m = _model(nodes, [_vi("x", ["batch", 2, 4])], [_vi("zc", None, TensorProto.DOUBLE)],
               [numpy_helper.from_array(W, "W"),
                numpy_helper.from_array(np.array([0], np.int64), "ax0")])
    g = import_model(m, dims={"batch": 5})
    # Shape/Gather/Unsqueeze/Concat/Constant vanish; Reshape gets shape=[5, -1]
    assert sorted(n.op for n in g) == ["Cast", "MatMul", "Reshape"]
    (reshape,) = [n for n in g if n.op == "Reshape"]
    assert list(reshape.attrs["shape"]) == [5, -1] and reshape.inputs == ("y",)
    assert list(g.params) == ["W"] and "ax0" not in g.tensors  # shape-only initializer
    assert g.tensors["zc"].dtype == "fp64"
    x = RNG.standard_normal((5, 2, 4)).astype(np.float32)
    (ref,) = _ref(m, {"x": x})
    np.testing.assert_allclose(execute(g, {"x": x})["zc"], ref, rtol=1e-6)


def test_initializers_become_params_bn_stats_frozen():
    c = 3
    vals = {k: RNG.uniform(0.5, 1.5, c).astype(np.float32) for k in ("s", "b", "mean", "var")}
    w = RNG.standard_normal((c, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "mean", "var"], ["y"])]
    inits = [numpy_helper.from_array(w, "w")] + [numpy_helper.from_array(v, k) for k, v in vals.items()]
    m = _model(nodes, [_vi("x", [1, 2, 5, 5])], [_vi("y", None)], inits)
    g = import_model(m)
    assert set(g.params) == {"w", "s", "b", "mean", "var"}
    assert not g.param_info["mean"].trainable and not g.param_info["var"].trainable
    assert g.param_info["w"].trainable and g.param_info["s"].trainable
    assert g.param_count == w.size + 2 * c
    np.testing.assert_array_equal(g.initializers["w"], w)
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    (ref,) = _ref(m, {"x": x})
    np.testing.assert_allclose(execute(g, {"x": x})["y"], ref, rtol=1e-4, atol=1e-5)


def test_symbolic_dims_bound_and_unbound(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", "seq", 4])],
               [_vi("y", None)])
    p = _save(tmp_path, m)
    g = load(p, batch=2, seq=7)  # sim.load dispatches .onnx here
    assert g.tensors["y"].shape == (2, 7, 4)
    with pytest.raises(GraphError, match=r"unbound symbolic dims: batch, seq") as e:
        load_onnx(p)
    assert str(e.value).startswith(p) and "\n" not in str(e.value)


def test_weights_as_inputs_become_params():
    nodes = [helper.make_node("MatMul", ["x", "fc.weight"], ["h"]),
             helper.make_node("Add", ["h", "fc.bias"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["y"])]
    m = _model(nodes, [_vi("x", ["batch", 8]), _vi("fc.weight", [8, 4]), _vi("fc.bias", [4])],
               [_vi("y", None)])
    g = import_model(m, dims={"batch": 3})
    assert list(g.inputs) == ["x"] and set(g.params) == {"fc.weight", "fc.bias"}
    assert g.param_count == 36
    out = execute(g, {"x": np.ones((3, 8), np.float32)})["y"]
    assert out.shape == (3, 4)
    g2 = import_model(m, dims={"batch": 3}, weights_as_inputs=False)
    assert set(g2.inputs) == {"x", "fc.weight", "fc.bias"}


def test_external_data_inside_folder_and_escape(tmp_path):
    W = RNG.standard_normal((64, 32)).astype(np.float32)
    m = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", [2, 64])], [_vi("y", None)],
               [numpy_helper.from_array(W, "W")])
    d = tmp_path / "model"
    d.mkdir()
    p = str(d / "m.onnx")
    onnx.save(m, p, save_as_external_data=True, location="weights.bin", size_threshold=0)
    g = load_onnx(p)
    np.testing.assert_array_equal(g.initializers["W"], W)
    # a location that climbs out of the model's folder is refused, naming file and tensor
    m2 = onnx.load(p, load_external_data=False)
    for e in m2.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    p2 = str(d / "escape.onnx")
    onnx.save(m2, p2)
    with pytest.raises(GraphError, match=r"escape\.onnx: initializer 'W': external data file "
                                         r"'\.\./secret\.bin' lies outside"):
        load_onnx(p2)


def test_malformed_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff\xff")
    with pytest.raises(GraphError, match="bad.onnx") as e:
        load_onnx(str(bad))
    assert "\n" not in str(e.value)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", None)],
               [numpy_helper.from_array(np.zeros(1000, np.float32), "unused")])
    data = m.SerializeToString()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphError, match="cut.onnx") as e:
        load_onnx(str(cut))
    assert "\n" not in str(e.value)
    with pytest.raises(GraphError, match="not found"):
        load_onnx(str(tmp_path / "missing.onnx"))


def test_unknown_op_names_op_and_node():
    m = _model([helper.make_node("Relu", ["x"], ["h"]),
                helper.make_node("FancyOp", ["h"], ["y"], name="mystery")],
               [_vi("x", [2])], [_vi("y", None)])
    with pytest.raises(UnsupportedOpError, match=r"node 'mystery' \(FancyOp\).*FancyOp"):
        import_model(m)
    m2 = _model([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="g")],
                [_vi("x", [2])], [_vi("y", None)])
    with pytest.raises(UnsupportedOpError, match=r"com\.microsoft\.Gelu"):
        import_model(m2)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_older_opset_forms(opset):
    """Squeeze/Unsqueeze/ReduceSum axes, Split sizes, Pad pads, Clip bounds, TopK k: attributes
    in old opsets, inputs in newer ones; both land on the same attributes."""
    inits = []
    def operand(name, arr):
        inits.append(numpy_helper.from_array(np.array(arr), name))
        return name

    nodes = []
    if opset >= 13:
        nodes.append(helper.make_node("Unsqueeze", ["x", operand("ua", np.array([0], np.int64))], ["u"]))
        nodes.append(helper.make_node("Squeeze", ["u", operand("sa", np.array([0], np.int64))], ["q"]))
        nodes.append(helper.make_node("Split", ["q", operand("sp", np.array([1, 3], np.int64))],
                                      ["p1", "p2"], axis=1))
    else:
        nodes.append(helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]))
        nodes.append(helper.make_node("Squeeze", ["u"], ["q"], axes=[0]))
        nodes.append(helper.make_node("Split", ["q"], ["p1", "p2"], axis=1, split=[1, 3]))
    if opset >= 18:
        nodes.append(helper.make_node("ReduceMax", ["p2", operand("ra", np.array([1], np.int64))],
                                      ["r"], keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMax", ["p2"], ["r"], axes=[1], keepdims=1))
    nodes += [
        helper.make_node("Pad", ["r", operand("pads", np.array([0, 1, 0, 2], np.int64)),
                                 operand("pv", np.array(0.5, np.float32))], ["pd"]),
        helper.make_node("Clip", ["pd", operand("lo", np.array(-0.3, np.float32)),
                                  operand("hi", np.array(0.7, np.float32))], ["c"]),
        helper.make_node("TopK", ["c", operand("k", np.array([2], np.int64))], ["tv", "ti"], axis=1),
    ]
    m = _model(nodes, [_vi("x", [3, 4])], [_vi("tv", None), _vi("ti", None, TensorProto.INT64),
                                            _vi("p1", None)], inits, opset=opset)
    g = import_model(m)
    assert not g.params  # every initializer was a shape operand
    assert {n.op for n in g} >= {"Pad", "Clip", "TopK"}
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    got = execute(g, {"x": x})
    for name, ref in zip(["tv", "ti", "p1"], _ref(m, {"x": x})):
        np.testing.assert_allclose(got[name], ref, rtol=1e-6)


def test_legacy_softmax_flattens():
    """Opset < 13 Softmax(axis=1) on a 3-D input normalises over the flattened trailing dims."""
    m = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [_vi("x", [2, 3, 4])],
               [_vi("y", None)], opset=11)
    g = import_model(m)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    e = np.exp(x.reshape(2, 12) - x.reshape(2, 12).max(1, keepdims=True))
    want = (e / e.sum(1, keepdims=True)).reshape(2, 3, 4)
    np.testing.assert_allclose(execute(g, {"x": x})["y"], want, rtol=1e-5)


def test_fold_can_be_disabled():
    m = _model([helper.make_node("Shape", ["x"], ["s"])], [_vi("x", [2, 3])],
               [_vi("s", None, TensorProto.INT64)])
    assert [n.op for n in import_model(m, fold=False)] == ["Shape"]
    g = import_model(m)
    assert [n.op for n in g] == ["Constant"]  # folded value still reaches the output
    np.testing.assert_array_equal(execute(g, {"x": np.zeros((2, 3), np.float32)})["s"], [2, 3])


def test_dynamic_shape_operand_is_an_error():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", [2, 3]), _vi("shape", [2], TensorProto.INT64)], [_vi("y", None)])
    with pytest.raises(GraphError, match="not a constant"):
        import_model(m, weights_as_inputs=False)


def test_graph_verified_and_meta(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", None)])
    p = _save(tmp_path, m)
    g = load_onnx(p)
    assert g.source == p and g.meta["opset"] == 17 and g.meta["format"] == "onnx"
    assert os.path.basename(p) in repr(g.source)


@pytest.mark.parametrize("op,attrs", [
    ("LRN", {"size": 3, "alpha": 0.002, "beta": 0.6, "bias": 1.5}),
    ("LRN", {"size": 4}),
    ("Swish", {"alpha": 0.7}),
    ("Shrink", {"lambd": 0.3, "bias": 0.1}),
    ("MeanVarianceNormalization", {}),
    ("LpNormalization", {"axis": 1, "p": 1}),
    ("LpNormalization", {}),
])
def test_expanded_ops_match_reference(op, attrs):
    m = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", [2, 5, 3, 3])],
               [_vi("y", None)], opset=22 if op == "Swish" else 17)
    g = import_model(m)
    assert op not in {n.op for n in g} and all(n.meta.get("onnx_op") == op for n in g
                                                   if n.op != "Constant")
    x = RNG.standard_normal((2, 5, 3, 3)).astype(np.float32)
    # onnx.reference's LRN loops over the batch instead of the channels: use the spec formula
    if op == "LRN":
        (ref,) = _lrn(x, **attrs)
    elif op == "LpNormalization":  # onnx.reference sums x**p, not |x|**p
        ref = x / np.linalg.norm(x, ord=attrs.get("p", 2), axis=attrs.get("axis", -1), keepdims=True)
    else:
        (ref,) = _ref(m, {"x": x})
    np.testing.assert_allclose(execute(g, {"x": x})["y"], ref, rtol=1e-5, atol=1e-6)


def _lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """ONNX LRN: square_sum[c] = sum of x^2 over channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2)."""
    c = x.shape[1]
    sq = np.zeros_like(x, dtype=np.float64)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + -(-(size - 1) // 2))
        sq[:, i] = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(axis=1)
    return [x / (bias + alpha / size * sq) ** beta]


def test_castlike_and_scatter_renamed():
    m = _model([helper.make_node("CastLike", ["x", "like"], ["y"])],
               [_vi("x", [3]), _vi("like", [1], TensorProto.DOUBLE)],
               [_vi("y", None, TensorProto.DOUBLE)])
    g = import_model(m, weights_as_inputs=False)
    assert [n.op for n in g] == ["Cast"] and g.tensors["y"].dtype == "fp64"


def test_recorded_shapes_are_checked():
    m = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [_vi("x", ["n", 3])],
               [_vi("y", [3, "n"])])
    assert import_model(m, dims={"n": 2}).tensors["y"].shape == (3, 2)
    bad = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [_vi("x", [2, 3])],
                 [_vi("y", [2, 3])])
    with pytest.raises(GraphError, match=r"'y': the model records shape \[2, 3\], the op rules give"):
        import_model(bad)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_compress_with_constant_condition(axis):
    cond = np.array([True, False, True], bool)
    attrs = {} if axis is None else {"axis": axis}
    m = _model([helper.make_node("Compress", ["x", "c"], ["y"], **attrs)], [_vi("x", [3, 3])],
               [_vi("y", None)], [numpy_helper.from_array(cond, "c")])
    g = import_model(m)
    assert "Gather" in {n.op for n in g}
    x = RNG.standard_normal((3, 3)).astype(np.float32)
    (ref,) = _ref(m, {"x": x})
    np.testing.assert_array_equal(execute(g, {"x": x})["y"], ref)


def test_nonzero_only_of_constants():
    c = np.array([[1, 0], [0, 3]], np.int64)
    m = _model([helper.make_node("NonZero", ["c"], ["nz"]),
                helper.make_node("Cast", ["nz"], ["y"], to=TensorProto.FLOAT)],
               [], [_vi("y", None)], [numpy_helper.from_array(c, "c")])
    g = import_model(m)
    np.testing.assert_array_equal(execute(g)["y"], np.array(np.nonzero(c), np.float32))
    m2 = _model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [_vi("x", [3])],
                [_vi("y", None, TensorProto.INT64)])
    with pytest.raises(UnsupportedOpError, match=r"node 'nz' \(NonZero\): .*data-dependent"):
        import_model(m2)


def test_bf16_initializer_is_a_trainable_float_param():
    w = helper.make_tensor("w", TensorProto.BFLOAT16, [2, 2], [0.5, 1.0, 1.5, 2.0])
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [1, 2], TensorProto.BFLOAT16)],
               [_vi("y", None, TensorProto.BFLOAT16)], [w])
    g = import_model(m)
    assert g.params["w"].dtype == "bf16" and g.param_info["w"].trainable
    y = execute(g, {"x": np.array([[1.0, 2.0]], np.float32)})["y"]
    np.testing.assert_array_equal(y.astype(np.float32), [[3.5, 5.0]])


@pytest.mark.parametrize("shape,axes", [([2, 7, 2, 5], None), ([4, 1], [1, -1]), ([3], [2])])
def test_center_crop_pad_matches_reference(shape, axes):
    attrs = {} if axes is None else {"axes": axes}
    m = _model([helper.make_node("CenterCropPad", ["x", "s"], ["y"], **attrs)], [_vi("x", [2, 5, 3, 3])],
               [_vi("y", None)], [numpy_helper.from_array(np.array(shape, np.int64), "s")], opset=18)
    g = import_model(m)
    x = RNG.standard_normal((2, 5, 3, 3)).astype(np.float32)
    (ref,) = _ref(m, {"x": x})
    got = execute(g, {"x": x})["y"]
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
