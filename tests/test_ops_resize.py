"""Resize against onnx.reference and hand values; ResizeGrad by finite differences; work counts;
the ONNX importer's Resize / Upsample mapping."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 2, 5, 7)).astype(np.float32)


def _ref(x, attrs, scales=None, sizes=None, roi=None):
    ins = [x, None if roi is None else np.asarray(roi, np.float32),
           None if scales is None else np.asarray(scales, np.float32),
           None if sizes is None else np.asarray(sizes, np.int64)]
    while ins[-1] is None:
        ins.pop()
    return onnx_ref("Resize", ins, attrs, opset=19)[0]


def _ours(x, attrs, scales=None, sizes=None, roi=None):
    a = dict(attrs)
    if scales is not None:  # the importer hands over the float32 operand's exact values
        a["scales"] = [float(v) for v in np.asarray(scales, np.float32)]
    if sizes is not None:
        a["sizes"] = list(sizes)
    if roi is not None:
        a["roi"] = [float(v) for v in np.asarray(roi, np.float32)]
    return run_op("Resize", [x], a)[0]


def _same(x, attrs, **operands):
    ref = _ref(x, attrs, **operands)
    got = _ours(x, attrs, **operands)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


SHAPES = [
    {"scales": [1, 1, 2.3, 0.6]},   # up one axis, down the other (non-integer sizes)
    {"scales": [1, 1, 0.4, 3.0]},
    {"sizes": [1, 2, 3, 11]},
]
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric"]


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
@pytest.mark.parametrize("coord", COORDS)
def test_nearest_matches_onnx(nearest_mode, coord):
    for operands in SHAPES:
        _same(X, {"mode": "nearest", "nearest_mode": nearest_mode,
                  "coordinate_transformation_mode": coord}, **operands)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coord", COORDS)
def test_linear_cubic_match_onnx(mode, coord):
    for operands in SHAPES:
        _same(X, {"mode": mode, "coordinate_transformation_mode": coord}, **operands)


@pytest.mark.parametrize("a,exclude", [(-0.5, 1), (-0.75, 1), (-0.5, 0)])
def test_cubic_coefficient_and_exclude_outside(a, exclude):
    for operands in SHAPES:
        _same(X, {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude}, **operands)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias_matches_onnx(mode):
    for operands in ({"scales": [1, 1, 0.4, 0.3]}, {"sizes": [1, 2, 2, 3]},
                     {"scales": [1, 1, 0.6, 1.5]}):
        _same(X, {"mode": mode, "antialias": 1}, **operands)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_tf_crop_and_resize_matches_onnx(mode):
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": 2.5}
    roi = [0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3]  # the last axis reaches outside: extrapolated
    _same(X, attrs, sizes=[1, 2, 4, 6], roi=roi)
    _same(X, attrs, scales=[1, 1, 1.6, 0.8], roi=roi)
    _same(X, {**attrs, "axes": [2, 3]}, sizes=[4, 6], roi=[0.2, -0.1, 0.9, 1.3])


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 2], [-1, -2]])
def test_axes_and_aspect_policy_match_onnx(policy, axes):
    attrs = {"mode": "linear", "axes": axes, "keep_aspect_ratio_policy": policy}
    ref_attrs = {**attrs, "axes": [a % 4 for a in axes]}
    ref = _ref(X, ref_attrs, sizes=[9, 4])
    got = _ours(X, attrs, sizes=[9, 4])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    _same(X, {"mode": "nearest", "axes": [a % 4 for a in axes]}, scales=[2.0, 0.5])


def test_integer_input_rounds_and_saturates_like_onnx():
    x = RNG.integers(0, 256, (1, 1, 4, 5)).astype(np.uint8)
    for mode in ("nearest", "linear", "cubic"):
        _same(x, {"mode": mode}, scales=[1, 1, 1.5, 2.2])


def test_by_hand():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    # nearest with integer scales and asymmetric/floor coordinates repeats every element
    (y,) = run_op("Resize", [x], {"scales": [1, 1, 2, 3], "mode": "nearest",
                                  "coordinate_transformation_mode": "asymmetric",
                                  "nearest_mode": "floor"})
    np.testing.assert_array_equal(y, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
    # align_corners linear from 3 to 5 samples: the midpoints are averages
    (y,) = run_op("Resize", [np.array([0.0, 2.0, 10.0], np.float32)],
                  {"sizes": [5], "mode": "linear", "coordinate_transformation_mode": "align_corners"})
    np.testing.assert_allclose(y, [0, 1, 2, 6, 10])
    # half_pixel linear 2 -> 4: coordinates -0.25, 0.25, 0.75, 1.25 (the ends clamp)
    (y,) = run_op("Resize", [np.array([0.0, 4.0], np.float32)], {"sizes": [4], "mode": "linear"})
    np.testing.assert_allclose(y, [0, 1, 3, 4])


def test_shape_and_errors():
    g = one_op_graph("Resize", [X], {"scales": [1, 1, 2.3, 0.6], "mode": "linear"})
    assert g.tensors[g.outputs[0]].shape == (1, 2, 11, 4)  # floor(5 * 2.3), floor(7 * 0.6)
    with pytest.raises(GraphError, match="exactly one"):
        one_op_graph("Resize", [X], {"scales": [1, 1, 2, 2], "sizes": [1, 2, 10, 14]})
    with pytest.raises(GraphError, match="exactly one"):
        one_op_graph("Resize", [X], {})
    with pytest.raises(GraphError, match="3 scales for 4 axes"):
        one_op_graph("Resize", [X], {"scales": [1, 2, 2]})
    with pytest.raises(GraphError, match="mode 'bicubic'"):
        one_op_graph("Resize", [X], {"scales": [1, 1, 2, 2], "mode": "bicubic"})
    with pytest.raises(GraphError, match="coordinate_transformation_mode"):
        one_op_graph("Resize", [X], {"scales": [1, 1, 2, 2], "coordinate_transformation_mode": "x"})
    with pytest.raises(GraphError, match="roi"):
        one_op_graph("Resize", [X], {"scales": [1, 1, 2, 2], "roi": [0, 1],
                                     "coordinate_transformation_mode": "tf_crop_and_resize"})


X64 = np.random.default_rng(1).standard_normal((1, 2, 4, 5))


@pytest.mark.parametrize("mode,coord,extra", [
    ("nearest", "half_pixel", {}),
    ("nearest", "asymmetric", {"nearest_mode": "floor"}),
    ("linear", "half_pixel", {}),
    ("linear", "align_corners", {}),
    ("linear", "half_pixel", {"antialias": 1}),
    ("cubic", "half_pixel", {}),
    ("cubic", "asymmetric", {"exclude_outside": 1, "cubic_coeff_a": -0.5}),
    ("cubic", "half_pixel", {"antialias": 1}),
])
def test_gradient(mode, coord, extra):
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, **extra}
    check_grad("Resize", [X64], {**attrs, "scales": [1, 1, 1.7, 0.6]})
    check_grad("Resize", [X64], {**attrs, "sizes": [3, 9], "axes": [3, 2]})


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_gradient_tf_crop_and_resize(mode):
    # extrapolated positions take a constant: no gradient reaches the input from them
    check_grad("Resize", [X64], {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
                                 "axes": [2, 3], "sizes": [6, 4], "roi": [0.1, -0.2, 0.8, 1.2],
                                 "extrapolation_value": 3.0})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_long_axes_gather_and_scatter_like_the_matrix(monkeypatch, mode):
    # past DENSE_MAX_ENTRIES an axis resamples by gathering / scatter-adding its taps
    import sim.ops.resize as rz

    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
             "axes": [2, 3], "extrapolation_value": 3.0}
    roi = [0.1, -0.2, 0.8, 1.2]
    monkeypatch.setattr(rz, "DENSE_MAX_ENTRIES", 0)
    _same(X, {**attrs, "antialias": 1}, sizes=[3, 9], roi=roi)
    check_grad("Resize", [X64], {**attrs, "sizes": [6, 3], "roi": roi})


def test_empty_tensors():
    (y,) = run_op("Resize", [np.zeros((0, 3), np.float32)], {"scales": [1, 2], "mode": "linear"})
    assert y.shape == (0, 6)
    (y,) = run_op("Resize", [X], {"sizes": [0, 4], "axes": [2, 3], "mode": "cubic"})
    assert y.shape == (1, 2, 0, 4)


def test_grad_by_hand():
    # nearest 2 -> 4 (asymmetric, floor): each input feeds two outputs, so dx sums pairs
    dy = np.array([1.0, 2.0, 3.0, 4.0])
    (dx,) = run_op("ResizeGrad", [dy], {"shape": [2], "sizes": [4], "mode": "nearest",
                                        "coordinate_transformation_mode": "asymmetric",
                                        "nearest_mode": "floor"})
    np.testing.assert_allclose(dx, [3.0, 7.0])
    with pytest.raises(GraphError, match="does not match"):
        one_op_graph("ResizeGrad", [dy], {"shape": [2], "sizes": [5]})


def test_work_by_hand():
    x = np.zeros((1, 1, 4, 4), np.float32)
    # linear x2 on both axes: pass 1 makes 8x4 = 32 elements, pass 2 makes 8x8 = 64;
    # 2 taps at one multiply-add (2 FLOP) each
    w = one_op_graph("Resize", [x], {"scales": [1, 1, 2, 2], "mode": "linear"}).work("node")
    assert w.flops == 2 * 2 * (32 + 64)
    assert w.bytes_read == 64 and w.bytes_written == 4 * 64
    w = one_op_graph("Resize", [x], {"scales": [1, 1, 2, 2], "mode": "cubic"}).work("node")
    assert w.flops == 2 * 4 * (32 + 64)
    w = one_op_graph("Resize", [x], {"scales": [1, 1, 2, 2], "mode": "nearest"}).work("node")
    assert w.flops == 0 and w.bytes == 4 * 16 + 4 * 64
    # antialias at scale 1/2 doubles the support: linear 4 taps along the one resized axis
    w = one_op_graph("Resize", [x], {"scales": [1, 1, 1, 0.5], "mode": "linear",
                                     "antialias": 1}).work("node")
    assert w.flops == 2 * 4 * 8
    # tf_crop_and_resize adds a select per element of each pass
    w = one_op_graph("Resize", [x], {"sizes": [2, 2], "axes": [2, 3], "mode": "nearest",
                                     "coordinate_transformation_mode": "tf_crop_and_resize",
                                     "roi": [0, 0, 1, 1]}).work("node")
    assert w.flops == 2 * 4 + 2 * 2
    g = one_op_graph("ResizeGrad", [np.zeros((1, 1, 8, 8), np.float32)],
                     {"shape": [1, 1, 4, 4], "scales": [1, 1, 2, 2], "mode": "linear"})
    assert g.work("node").flops == 2 * 2 * (32 + 64)


def _onnx_model(node, inits, x_shape, opset):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [node], "m", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return model


def _import_and_run(model, x):
    from sim.exec import execute
    from sim.frontends.onnx_import import import_model

    g = import_model(model)
    (node,) = g.nodes.values()
    return node, execute(g, {"X": x})[g.outputs[0]]


def test_importer_turns_constant_operands_into_attributes():
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    roi = np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3], np.float32)
    node = helper.make_node("Resize", ["X", "roi", "", "sizes"], ["Y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize",
                            extrapolation_value=1.0)
    model = _onnx_model(node, {"roi": roi, "sizes": np.array([1, 2, 4, 6], np.int64)},
                        X.shape, 19)
    n, y = _import_and_run(model, X)
    assert n.op == "Resize" and list(n.inputs) == ["X"]
    assert n.attrs["sizes"] == [1, 2, 4, 6] and len(n.attrs["roi"]) == 8
    np.testing.assert_allclose(y, ReferenceEvaluator(model).run(None, {"X": X})[0], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("opset,mode", [(9, "nearest"), (9, "linear"), (10, "nearest")])
def test_importer_maps_upsample_and_resize10(opset, mode):
    from onnx import helper

    op = "Upsample" if opset == 9 else "Resize"
    node = helper.make_node(op, ["X", "scales"], ["Y"], mode=mode)
    scales = np.array([1, 1, 2, 3], np.float32)
    n, y = _import_and_run(_onnx_model(node, {"scales": scales}, X.shape, opset), X)
    assert n.op == "Resize" and n.attrs["coordinate_transformation_mode"] == "asymmetric"
    if mode == "nearest":  # integer scales: every element repeated
        np.testing.assert_array_equal(y, np.repeat(np.repeat(X, 2, axis=2), 3, axis=3))
    else:  # asymmetric linear: output i samples input i / scale
        assert y.shape == (1, 2, 10, 21)
        np.testing.assert_allclose(y[..., ::2, ::3], X, rtol=1e-6)
        np.testing.assert_allclose(y[..., 1:-1:2, ::3], (X[..., :-1, :] + X[..., 1:, :]) / 2,
                                   rtol=1e-5, atol=1e-6)


def test_large_resize_is_vectorised():
    # 1x3x224x224 -> 448x448 cubic runs as matrix products, not a Python loop per pixel
    import time

    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    t0 = time.perf_counter()
    (y,) = run_op("Resize", [x], {"scales": [1, 1, 2, 2], "mode": "cubic"})
    assert y.shape == (1, 3, 448, 448) and time.perf_counter() - t0 < 2.0

