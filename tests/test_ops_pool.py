"""Pooling ops: values against onnx.reference, gradients, FLOP/byte counts."""

import numpy as np
import pytest
from helpers import check_grad, onnx_ref, run_op

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec

RNG = np.random.default_rng(21)
F32 = np.float32


def _r(*shape, dtype=F32):
    return RNG.standard_normal(shape).astype(dtype)


def _both(op, x, attrs, n_out=1):
    ys = run_op(op, [x], attrs, n_out=n_out)
    refs = onnx_ref(op, [x], attrs, n_out=n_out)
    for y, ref in zip(ys, refs):
        assert y.shape == ref.shape
        if y.dtype.kind == "i":
            np.testing.assert_array_equal(y, ref)
        else:
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


POOL_CASES = [
    ((2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1])),
    ((2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1)),
    ((2, 3, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 1])),
    ((2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_UPPER")),
    ((2, 3, 9), dict(kernel_shape=[2], strides=[2], ceil_mode=1)),  # 1-D with ceil overhang
    ((1, 2, 5, 4, 6), dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 1, 1, 1, 0])),  # 3-D
]


@pytest.mark.parametrize("shape, attrs", POOL_CASES)
def test_maxpool_matches_onnx(shape, attrs):
    _both("MaxPool", _r(*shape), attrs, n_out=2)  # Y and Indices


def test_maxpool_storage_order():
    _both("MaxPool", _r(2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 2], storage_order=1), n_out=2)


def test_maxpool_same_lower():
    # ONNX: SAME_* output is ceil(in / stride). in 8, k 3, s 2 -> 4 outputs, total pad
    # 3*2 + 3 - 8 = 1, at the start for SAME_LOWER; compared with explicit pads
    # (onnx.reference's own SAME_LOWER MaxPool uses floor(in / stride))
    x = _r(1, 2, 8, 8)
    (y,) = run_op("MaxPool", [x], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"), n_out=1)
    (ref,) = onnx_ref("MaxPool", [x], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]))
    assert y.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(y, ref)


def test_maxpool_hand_indices():
    x = np.array([[[[1, 5, 2, 0], [3, 4, 9, 1], [0, 2, 7, 8], [6, 1, 3, 2]]]], F32)
    y, idx = run_op("MaxPool", [x], dict(kernel_shape=[2, 2], strides=[2, 2]), n_out=2)
    np.testing.assert_array_equal(y[0, 0], [[5, 9], [6, 8]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 6], [12, 11]])


@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("shape, attrs", POOL_CASES + [
    ((2, 3, 7, 8), dict(kernel_shape=[3, 3], strides=[1, 2], pads=[2, 2, 2, 2], dilations=[2, 2])),
])
def test_averagepool_matches_onnx(shape, attrs, cip):
    _both("AveragePool", _r(*shape), dict(attrs, count_include_pad=cip))


def test_averagepool_hand_counts():
    # 1x1x3x3 ones, kernel 2, pads 1 all round, stride 2 -> 2x2 windows.
    # count_include_pad=0: every window averages ones -> 1; =1: corner windows hold 1 real of 4
    x = np.ones((1, 1, 3, 3), F32)
    a = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])
    (y0,) = run_op("AveragePool", [x], dict(a, count_include_pad=0))
    (y1,) = run_op("AveragePool", [x], dict(a, count_include_pad=1))
    np.testing.assert_allclose(y0[0, 0], np.ones((2, 2)))
    np.testing.assert_allclose(y1[0, 0], [[0.25, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool_matches_onnx(p):
    _both("LpPool", _r(2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], p=p))


def test_global_pools():
    x = _r(2, 3, 5, 4)
    _both("GlobalAveragePool", x, {})
    _both("GlobalMaxPool", x, {})
    # 3-D against NumPy (onnx.reference's GlobalMaxPool reduces the wrong axes beyond 2-D)
    x3 = _r(2, 3, 4, 2, 3)
    (ya,) = run_op("GlobalAveragePool", [x3])
    (ym,) = run_op("GlobalMaxPool", [x3])
    np.testing.assert_allclose(ya, x3.mean(axis=(2, 3, 4), keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(ym, x3.max(axis=(2, 3, 4), keepdims=True))


# ----------------------------------------------------------------------------- gradients
GRAD_CASES = [
    ((2, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1)),
    ((1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[1, 2], pads=[2, 2, 2, 2], dilations=[2, 2])),
    ((1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_LOWER")),
    ((2, 2, 9), dict(kernel_shape=[2], strides=[2], ceil_mode=1)),
    ((1, 2, 4, 3, 5), dict(kernel_shape=[2, 2, 3], strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0])),
]


@pytest.mark.parametrize("shape, attrs", GRAD_CASES)
def test_pool_gradients(shape, attrs):
    x = _r(*shape, dtype=np.float64)
    check_grad("MaxPool", [x], attrs)
    for cip in (0, 1):
        check_grad("AveragePool", [x], dict(attrs, count_include_pad=cip))
    check_grad("LpPool", [x], dict(attrs, p=3))


def test_global_pool_gradients():
    for shape in [(2, 3, 4, 5), (1, 2, 3, 2, 2)]:
        x = _r(*shape, dtype=np.float64)
        check_grad("GlobalAveragePool", [x])
        check_grad("GlobalMaxPool", [x])


def test_maxpool_grad_routes_to_argmax():
    x = np.array([[[[1, 5, 2, 0], [3, 4, 9, 1], [0, 2, 7, 8], [6, 1, 3, 2]]]], np.float64)
    g = Graph("mp")
    g.add_input("x", TensorSpec((1, 1, 4, 4), "fp64"))
    g.add_input("dy", TensorSpec((1, 1, 2, 2), "fp64"))
    (dx,) = g.add_node("MaxPoolGrad", ["dy", "x"], ["dx"], dict(kernel_shape=[2, 2], strides=[2, 2]))
    g.set_outputs([dx])
    from sim.exec import execute

    out = execute(g, {"x": x, "dy": np.array([[[[1.0, 2.0], [3.0, 4.0]]]])})["dx"]
    want = np.zeros((4, 4))
    want[0, 1], want[1, 2], want[3, 0], want[2, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(out[0, 0], want)


# ----------------------------------------------------------------------------- work
def _work(op, shape, attrs, n_out=1):
    g = Graph("w")
    g.add_input("x", TensorSpec(shape))
    outs = g.add_node(op, ["x"], ["y", "i"][:n_out], attrs, name="n")
    return g.work("n"), [g.tensors[o] for o in outs]


def test_maxpool_work():
    # 1x1x4x4, kernel 2, stride 2: 4 outputs, each a max over 4 elements = 16 FLOP
    w, (y,) = _work("MaxPool", (1, 1, 4, 4), dict(kernel_shape=[2, 2], strides=[2, 2]))
    assert y.shape == (1, 1, 2, 2)
    assert w.flops == 16 and w.matmul_flops == 0
    assert (w.bytes_read, w.bytes_written) == (16 * 4, 4 * 4)
    # with the Indices output, 4 int64 more written
    w2, outs = _work("MaxPool", (1, 1, 4, 4), dict(kernel_shape=[2, 2], strides=[2, 2]), n_out=2)
    assert outs[1].dtype == "int64" and w2.bytes_written == 4 * 4 + 4 * 8


def test_resnet50_maxpool_work():
    # ResNet-50's 3x3/2 pool, pads 1: 1x64x112x112 -> 1x64x56x56, 9 compares per output
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    w, (y,) = _work("MaxPool", (1, 64, 112, 112), attrs)
    assert y.shape == (1, 64, 56, 56)
    assert w.flops == 64 * 56 * 56 * 9 == 1_806_336


def test_averagepool_and_global_work():
    # 1x2x6x6, kernel 3 stride 3: 2*2*2 = 8 outputs, 9 adds each + 1 divide = 80 FLOP
    w, _ = _work("AveragePool", (1, 2, 6, 6), dict(kernel_shape=[3, 3], strides=[3, 3]))
    assert w.flops == 8 * 9 + 8 == 80
    # global average over 1x2048x7x7: 2048 * 49 adds + 2048 divides
    wg, (yg,) = _work("GlobalAveragePool", (1, 2048, 7, 7), {})
    assert yg.shape == (1, 2048, 1, 1)
    assert wg.flops == 2048 * 49 + 2048
    assert (wg.bytes_read, wg.bytes_written) == (2048 * 49 * 4, 2048 * 4)


def test_pool_bad_attrs():
    with pytest.raises(GraphError, match="kernel_shape"):
        run_op("MaxPool", [_r(1, 1, 4, 4)], {})
    with pytest.raises(GraphError, match="strides"):
        run_op("AveragePool", [_r(1, 1, 4, 4)], dict(kernel_shape=[2, 2], strides=[2]))


def test_backward_ops_emitted_and_work():
    from sim.passes.autodiff import gradients

    g = Graph("p")
    g.add_input("x", TensorSpec((1, 1, 4, 4)))
    names = {}
    for op, attrs in [("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
                      ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
                      ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
                      ("GlobalAveragePool", {}), ("GlobalMaxPool", {})]:
        (names[op],) = g.add_node(op, ["x"], [op.lower()], attrs, name=op.lower())
    g.add_input("d", TensorSpec((1, 1, 2, 2)))
    g.add_input("d1", TensorSpec((1, 1, 1, 1)))
    dys = ["d", "d", "d", "d1", "d1"]
    gg, _ = gradients(g, list(names.values()), ["x"], dys)
    emitted = {gg.nodes[n].meta["forward"]: gg.nodes[n] for n in gg.nodes if n.startswith(tuple(
        f"{k.lower()}.grad" for k in names)) and gg.nodes[n].op.endswith("Grad")}
    assert {k: v.op for k, v in emitted.items()} == {
        "maxpool": "MaxPoolGrad", "averagepool": "AveragePoolGrad", "lppool": "LpPoolGrad",
        "globalaveragepool": "AveragePoolGrad", "globalmaxpool": "MaxPoolGrad",
    }
    # MaxPoolGrad: 4 windows of dY, 4 compares each + 1 scatter-add = 20 FLOP;
    # reads dY (4) and X (16), writes dX (16), fp32
    w = gg.work(emitted["maxpool"])
    assert w.flops == 20 and (w.bytes_read, w.bytes_written) == (20 * 4, 16 * 4)
    # AveragePoolGrad: 4 windows, 4 adds + 1 divide each; reads only dY
    w = gg.work(emitted["averagepool"])
    assert w.flops == 20 and (w.bytes_read, w.bytes_written) == (4 * 4, 16 * 4)
    # global average backward: one 4x4 window
    w = gg.work(emitted["globalaveragepool"])
    assert w.flops == 16 + 1


def test_maxpool_int8():
    x = RNG.integers(-100, 100, (1, 2, 5, 5)).astype(np.int8)
    _both("MaxPool", x, dict(kernel_shape=[2, 2], strides=[2, 2]), n_out=2)
    # padding never wins, even against the most negative int8
    low = np.full((1, 1, 2, 2), -128, np.int8)
    (y,) = run_op("MaxPool", [low], dict(kernel_shape=[2, 2], pads=[1, 1, 1, 1]), n_out=1)
    assert y.dtype == np.int8 and (y == -128).all()
