"""Conv, ConvTranspose and their backward ops: values against onnx.reference, gradients by
finite differences, FLOP/byte counts against hand counts."""

import time

import numpy as np
import pytest
from helpers import check_grad, onnx_ref, run_op

from sim.errors import GraphError
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.ops.registry import get_op
from sim.ops.work import GemmShape

RNG = np.random.default_rng(11)
F32 = np.float32


def _r(*shape, dtype=F32):
    return RNG.standard_normal(shape).astype(dtype)


def _check_conv(x, w, b=None, **attrs):
    ins = [x, w] + ([b] if b is not None else [])
    (y,) = run_op("Conv", ins, attrs)
    (ref,) = onnx_ref("Conv", ins, attrs)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    return y


# ----------------------------------------------------------------------------- Conv values
@pytest.mark.parametrize(
    "xshape, wshape, attrs",
    [
        # non-square, group 2, stride (2,1), asymmetric pads, dilation (2,1)
        ((2, 4, 7, 9), (6, 2, 3, 2), dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[2, 1])),
        ((2, 4, 7, 9), (6, 2, 3, 2), dict(group=2, strides=[2, 3], auto_pad="SAME_UPPER")),
        ((2, 4, 8, 9), (6, 2, 3, 2), dict(group=2, strides=[2, 3], auto_pad="SAME_LOWER")),
        ((2, 4, 7, 9), (6, 4, 3, 2), dict(strides=[2, 3], auto_pad="VALID")),
        ((1, 3, 5, 5), (2, 3, 3, 3), dict()),
        ((1, 6, 9, 10), (6, 1, 3, 3), dict(group=6, strides=[2, 2], pads=[1, 1, 1, 1])),  # depthwise
        ((1, 3, 11), (5, 3, 3), dict(strides=[2], pads=[2, 1], dilations=[2])),  # 1-D
        ((1, 4, 5, 6, 4), (4, 1, 3, 2, 3), dict(group=4, strides=[1, 2, 2], pads=[1, 0, 1, 0, 1, 1])),  # 3-D
        ((2, 2, 6, 5, 4), (3, 2, 2, 2, 2), dict(dilations=[2, 1, 2], kernel_shape=[2, 2, 2])),  # 3-D dil
    ],
)
def test_conv_matches_onnx(xshape, wshape, attrs):
    _check_conv(_r(*xshape), _r(*wshape), **attrs)


def test_conv_bias():
    x, w, b = _r(2, 4, 6, 7), _r(6, 2, 3, 3), _r(6)
    y = _check_conv(x, w, b, group=2, strides=[2, 2], pads=[1, 0, 0, 1])
    (nob,) = run_op("Conv", [x, w], dict(group=2, strides=[2, 2], pads=[1, 0, 0, 1]))
    np.testing.assert_allclose(y - nob, np.broadcast_to(b.reshape(1, 6, 1, 1), y.shape), atol=1e-5)


def test_same_padding_split():
    # in 8, stride 2, kernel 3: out ceil(8/2) = 4, total pad (4-1)*2 + 3 - 8 = 1;
    # SAME_UPPER puts it at the end, SAME_LOWER at the start
    x, w = _r(1, 1, 1, 8), _r(1, 1, 1, 3)
    (up,) = run_op("Conv", [x, w], dict(strides=[1, 2], auto_pad="SAME_UPPER"))
    (lo,) = run_op("Conv", [x, w], dict(strides=[1, 2], auto_pad="SAME_LOWER"))
    (up_ref,) = onnx_ref("Conv", [x, w], dict(strides=[1, 2], pads=[0, 0, 0, 1]))
    (lo_ref,) = onnx_ref("Conv", [x, w], dict(strides=[1, 2], pads=[0, 1, 0, 0]))
    np.testing.assert_allclose(up, up_ref, rtol=1e-5)
    np.testing.assert_allclose(lo, lo_ref, rtol=1e-5)


def test_conv_hand_value():
    # all-ones 1x1x3x3 input, 1x1x2x2 kernel of ones, pads 1: corners see 1 element, edges 2,
    # the inner four 4
    (y,) = run_op("Conv", [np.ones((1, 1, 3, 3), F32), np.ones((1, 1, 2, 2), F32)], dict(pads=[1, 1, 1, 1]))
    np.testing.assert_array_equal(y[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_conv_bad_shapes():
    with pytest.raises(GraphError, match="input channels per group"):
        run_op("Conv", [_r(1, 4, 5, 5), _r(2, 3, 3, 3)])
    with pytest.raises(GraphError, match="divisible by group"):
        run_op("Conv", [_r(1, 4, 5, 5), _r(3, 2, 3, 3)], dict(group=2))
    with pytest.raises(GraphError, match="bias"):
        run_op("Conv", [_r(1, 3, 5, 5), _r(2, 3, 3, 3), _r(3)])
    with pytest.raises(GraphError, match="auto_pad"):
        run_op("Conv", [_r(1, 3, 5, 5), _r(2, 3, 3, 3)], dict(auto_pad="SAME"))
    with pytest.raises(GraphError, match="does not fit"):
        run_op("Conv", [_r(1, 3, 2, 2), _r(2, 3, 3, 3)])


# ----------------------------------------------------------------------------- ConvTranspose values
def _ref_convtranspose(x, w, b, group=1, **attrs):
    """onnx.reference per group (its own grouped path slices W on the wrong axis)."""
    cg = x.shape[1] // group
    parts = [
        onnx_ref("ConvTranspose", [x[:, i * cg:(i + 1) * cg], w[i * cg:(i + 1) * cg]], attrs)[0]
        for i in range(group)
    ]
    y = np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    return y


@pytest.mark.parametrize(
    "xshape, wshape, bias, attrs",
    [
        ((2, 4, 3, 5), (4, 3, 3, 2), False,
         dict(group=2, strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2])),
        ((2, 4, 3, 5), (4, 3, 3, 2), True, dict(group=2, strides=[2, 1], dilations=[2, 2])),
        ((2, 4, 3, 5), (4, 3, 3, 2), False, dict(group=2, strides=[2, 3], output_shape=[6, 14],
                                                 auto_pad="SAME_UPPER")),
        ((2, 4, 3, 5), (4, 3, 3, 2), False, dict(group=2, strides=[2, 3], auto_pad="SAME_UPPER")),
        ((2, 4, 3, 5), (4, 3, 3, 2), False, dict(group=2, strides=[2, 3], auto_pad="SAME_LOWER")),
        ((2, 4, 3, 5), (4, 3, 3, 2), True, dict(strides=[2, 3], auto_pad="VALID")),
        ((1, 3, 4), (3, 2, 3), False, dict(strides=[3], dilations=[2], pads=[1, 2])),  # 1-D
        ((1, 2, 2, 3, 2), (2, 2, 2, 2, 3), False, dict(strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0],
                                                       output_padding=[1, 0, 1])),  # 3-D
    ],
)
def test_convtranspose_matches_onnx(xshape, wshape, bias, attrs):
    x, w = _r(*xshape), _r(*wshape)
    b = _r(wshape[1] * attrs.get("group", 1)) if bias else None
    (y,) = run_op("ConvTranspose", [x, w] + ([b] if bias else []), attrs)
    ref = _ref_convtranspose(x, w, b, **attrs)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_convtranspose_output_shape_sets_pads():
    # NOTSET with output_shape: total padding s*(in-1) + k - out = 2*2 + 3 - 6 = 1 goes to the
    # start (ONNX: pads[start] = total - total/2), i.e. the same as explicit pads [1, 0]
    x, w = _r(1, 2, 1, 3), _r(2, 1, 1, 3)
    (y,) = run_op("ConvTranspose", [x, w], dict(strides=[1, 2], output_shape=[1, 6]))
    (ref,) = onnx_ref("ConvTranspose", [x, w], dict(strides=[1, 2], pads=[0, 1, 0, 0]))
    assert y.shape == (1, 1, 1, 6)
    np.testing.assert_allclose(y, ref, rtol=1e-5)


def test_convtranspose_inverts_conv_shape():
    # a stride-2 3x3 conv on 9x9 with pads 1 gives 5x5; ConvTranspose with the same attrs maps back
    (y,) = run_op("ConvTranspose", [_r(1, 4, 5, 5), _r(4, 3, 3, 3)], dict(strides=[2, 2], pads=[1, 1, 1, 1]))
    assert y.shape == (1, 3, 9, 9)


# ----------------------------------------------------------------------------- gradients
CONV_GRAD_CASES = [
    ((2, 4, 7, 6), (6, 2, 3, 2), True, dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[2, 1])),
    ((1, 4, 7, 6), (6, 2, 3, 2), False, dict(group=2, strides=[2, 3], auto_pad="SAME_LOWER")),
    ((1, 3, 6, 5), (3, 1, 3, 3), True, dict(group=3, strides=[2, 2], auto_pad="SAME_UPPER")),  # depthwise
    ((2, 3, 9), (4, 3, 3), True, dict(strides=[2], pads=[2, 1], dilations=[2])),  # 1-D
    ((1, 2, 4, 3, 5), (2, 1, 2, 2, 3), True,
     dict(group=2, strides=[2, 1, 2], pads=[1, 0, 1, 0, 1, 1])),  # 3-D
]


@pytest.mark.parametrize("xshape, wshape, bias, attrs", CONV_GRAD_CASES)
def test_conv_gradients(xshape, wshape, bias, attrs):
    x, w = _r(*xshape, dtype=np.float64), _r(*wshape, dtype=np.float64)
    ins = [x, w] + ([_r(wshape[0], dtype=np.float64)] if bias else [])
    check_grad("Conv", ins, attrs)  # every input: data, weights, bias


CT_GRAD_CASES = [
    ((2, 4, 3, 5), (4, 3, 3, 2), True,
     dict(group=2, strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2])),
    ((1, 4, 3, 4), (4, 3, 3, 2), False,
     dict(group=2, strides=[2, 3], dilations=[2, 1], auto_pad="SAME_UPPER")),
    ((1, 2, 4), (2, 3, 3), True, dict(strides=[3], dilations=[2], pads=[1, 2])),  # 1-D
    ((1, 2, 2, 3, 2), (2, 2, 2, 2, 3), False, dict(strides=[2, 1, 2], output_padding=[1, 0, 1])),  # 3-D
]


@pytest.mark.parametrize("xshape, wshape, bias, attrs", CT_GRAD_CASES)
def test_convtranspose_gradients(xshape, wshape, bias, attrs):
    x, w = _r(*xshape, dtype=np.float64), _r(*wshape, dtype=np.float64)
    ins = [x, w] + ([_r(wshape[1] * attrs.get("group", 1), dtype=np.float64)] if bias else [])
    check_grad("ConvTranspose", ins, attrs)


def test_conv_gradient_ops_emitted():
    g = Graph("c")
    g.add_input("x", TensorSpec((1, 3, 8, 8)))
    g.add_param("w", TensorSpec((4, 3, 3, 3)))
    g.add_param("b", TensorSpec((4,)))
    (y,) = g.add_node("Conv", ["x", "w", "b"], ["y"], dict(strides=[2, 2], auto_pad="SAME_UPPER"))
    (s,) = g.add_node("ReduceSum", ["y"], ["s"], dict(keepdims=0))
    from sim.passes.autodiff import gradients

    gg, _ = gradients(g, s, ["x", "w", "b"])
    ops = sorted(n.op for n in gg.nodes.values() if n.meta.get("forward") == "conv")
    assert ops == ["ConvGradData", "ConvGradFilter", "ReduceSum"]
    bwd = [n for n in gg.nodes.values() if n.op in ("ConvGradData", "ConvGradFilter")]
    assert len(bwd) == 2 and all(n.attrs["pads"] == [0, 0, 1, 1] for n in bwd)  # SAME_UPPER resolved


# ----------------------------------------------------------------------------- work
def _work(op, specs, attrs, n_out=1):
    g = Graph("w")
    names = []
    for i, s in enumerate(specs):
        names.append(g.add_input(f"x{i}", s) if s is not None else "")
    outs = g.add_node(op, names, None, attrs, name="n")
    return g.work("n"), [g.tensors[o] for o in outs]


def test_conv_work_small_hand_count():
    # 1x3x5x5 input, 2x3x3x3 weight, stride 1, no pad: output 1x2x3x3.
    # each of the 2*3*3 = 18 outputs is 3*3*3 = 27 multiply-adds: 2 * 18 * 27 = 972 FLOP
    w, (y,) = _work("Conv", [TensorSpec((1, 3, 5, 5)), TensorSpec((2, 3, 3, 3))], {})
    assert y.shape == (1, 2, 3, 3)
    assert w.flops == w.matmul_flops == 2 * 1 * 2 * 3 * 3 * 3 * 3 * 3 == 972
    assert w.gemms == (GemmShape(m=9, n=2, k=27, batch=1, kernel="conv", k_runs=9),)
    # fp32: input 75 + weight 54 elements read, 18 written
    assert (w.bytes_read, w.bytes_written) == ((75 + 54) * 4, 18 * 4)
    # a bias adds 1 FLOP per output element (vector work) and 2 more elements read
    wb, _ = _work("Conv", [TensorSpec((1, 3, 5, 5)), TensorSpec((2, 3, 3, 3)), TensorSpec((2,))], {})
    assert wb.flops == 972 + 18 and wb.matmul_flops == 972 and wb.bytes_read == (75 + 54 + 2) * 4


def test_conv_work_grouped():
    # depthwise: 1x8x6x6, 8x1x3x3, group 8, pads 1 -> 1x8x6x6; each output 9 MACs
    w, _ = _work("Conv", [TensorSpec((1, 8, 6, 6)), TensorSpec((8, 1, 3, 3))], dict(group=8, pads=[1] * 4))
    assert w.flops == 2 * 8 * 36 * 9 == 5184
    assert w.gemms == (GemmShape(m=36, n=1, k=9, batch=8, kernel="conv", k_runs=9),)


def test_resnet50_stem_flops():
    # 7x7/2 conv, pads 3, 1x3x224x224 -> 1x64x112x112: 2 * 112*112 * 64 * 3*7*7 = 236,027,904 FLOP
    # (bias-free, as in ResNet-50 where BatchNormalization follows; a bias would add 112*112*64)
    w, (y,) = _work("Conv", [TensorSpec((1, 3, 224, 224)), TensorSpec((64, 3, 7, 7))],
                    dict(strides=[2, 2], pads=[3, 3, 3, 3]))
    assert y.shape == (1, 64, 112, 112)
    assert w.flops == 2 * 112 * 112 * 64 * 3 * 7 * 7 == 236_027_904
    assert w.gemms == (GemmShape(m=112 * 112, n=64, k=3 * 49, batch=1, kernel="conv", k_runs=49),)


def _resnet50_convs():
    """(cin, cout, kernel, stride, input size) of ResNet-50's 53 convolutions (v1.5: stride on 3x3)."""
    layers = [(3, 64, 7, 2, 224)]
    hw, cin = 56, 64
    for blocks, mid, out, stride in [(3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2)]:
        for b in range(blocks):
            s = stride if b == 0 else 1
            layers += [(cin, mid, 1, 1, hw), (mid, mid, 3, s, hw), (mid, out, 1, 1, hw // s)]
            if b == 0:
                layers.append((cin, out, 1, s, hw))
            cin, hw = out, hw // s
    return layers


def test_resnet50_conv_flops_and_speed():
    g = Graph("resnet50-convs")
    feeds = {}
    total_ref = 0
    for i, (cin, cout, k, s, hw) in enumerate(_resnet50_convs()):
        x = g.add_input(f"x{i}", TensorSpec((1, cin, hw, hw)))
        wname = g.add_param(f"w{i}", TensorSpec((cout, cin, k, k)), "he")
        (y,) = g.add_node("Conv", [x, wname], [f"y{i}"], dict(strides=[s, s], pads=[k // 2] * 4))
        g.set_outputs([*g.outputs, y])
        feeds[x] = _r(1, cin, hw, hw)
        total_ref += 2 * (hw // s) ** 2 * cout * cin * k * k
    assert len(_resnet50_convs()) == 53
    # 4,087,136,256 multiply-adds in the convolutions; with the 2048x1000 classifier that is the
    # well-known 4.09 G multiply-adds of ResNet-50 at 224x224
    assert total_ref == 2 * 4_087_136_256
    assert g.flops == total_ref
    t0 = time.perf_counter()
    execute(g, feeds)
    assert time.perf_counter() - t0 < 10.0  # a few seconds at most in NumPy (typically < 1 s)


def test_backward_op_work_matches_forward():
    # ConvGradData and ConvGradFilter do exactly the forward conv's multiply-adds
    attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], group=2, kernel_shape=[3, 3])
    fwd, (y,) = _work("Conv", [TensorSpec((2, 4, 9, 9)), TensorSpec((6, 2, 3, 3))], attrs)
    gd, (dx,) = _work("ConvGradData", [y, TensorSpec((6, 2, 3, 3))], dict(attrs, input_shape=[2, 4, 9, 9]))
    gf, (dw,) = _work("ConvGradFilter", [TensorSpec((2, 4, 9, 9)), y], dict(attrs, filter_shape=[6, 2, 3, 3]))
    assert dx.shape == (2, 4, 9, 9) and dw.shape == (6, 2, 3, 3)
    # y is 2x6x5x5: 2*25 positions * 3 out/group * 2 in/group * 9 taps * 2 groups MACs
    macs = 2 * 25 * 3 * 2 * 9 * 2
    assert fwd.flops == gd.flops == gf.flops == 2 * macs
    assert gd.gemms == (GemmShape(m=50, n=18, k=3, batch=2, kernel="conv"),)
    assert gf.gemms == (GemmShape(m=3, n=18, k=50, batch=2, kernel="conv_wgrad"),)


def test_convtranspose_work():
    # 1x4x3x3 input, 4x2x3x3 weight, stride 2: output 1x2x7x7. Every input element is
    # multiplied into 2*9 outputs: 2 * (9 * 4 * 2 * 9) = 1296 FLOP; bias adds 2*49
    w, (y,) = _work("ConvTranspose", [TensorSpec((1, 4, 3, 3)), TensorSpec((4, 2, 3, 3)), TensorSpec((2,))],
                    dict(strides=[2, 2]))
    assert y.shape == (1, 2, 7, 7)
    assert w.matmul_flops == 1296 and w.flops == 1296 + 98
    assert w.gemms == (GemmShape(m=9, n=18, k=4, batch=1, kernel="conv"),)
    assert (w.bytes_read, w.bytes_written) == ((36 + 72 + 2) * 4, 98 * 4)


def test_registry_entries_complete():
    for name in ("Conv", "ConvTranspose", "ConvGradData", "ConvGradFilter"):
        op = get_op(name)
        assert op.family == "conv" and (op.grad is not None or op.no_grad)


def test_conv_fp16_storage():
    # fp16 tensors compute in fp32 and are rounded back: close to the fp32 reference
    x, w = _r(1, 4, 6, 6).astype(np.float16), _r(2, 4, 3, 3).astype(np.float16)
    (y,) = run_op("Conv", [x, w], dict(pads=[1, 1, 1, 1]))
    (ref,) = onnx_ref("Conv", [x.astype(F32), w.astype(F32)], dict(pads=[1, 1, 1, 1]))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(F32), ref, rtol=1e-2, atol=2e-2)


def test_small_cnn_gradient_end_to_end():
    """Conv -> BatchNormalization (training) -> Relu -> MaxPool -> GlobalAveragePool -> Gemm,
    differentiated by autodiff and checked against central differences in float64."""
    from sim.exec import Executor
    from sim.passes.autodiff import gradients

    g = Graph("cnn")
    g.add_input("x", TensorSpec((2, 3, 8, 8), "fp64"))
    for name, shape in [("w", (4, 3, 3, 3)), ("b", (4,)), ("scale", (4,)), ("shift", (4,)),
                        ("w2", (4, 5)), ("r", (2, 5))]:
        g.add_input(name, TensorSpec(shape, "fp64"))
    g.add_param("mean", TensorSpec((4,), "fp64"), "zeros", trainable=False)
    g.add_param("var", TensorSpec((4,), "fp64"), "ones", trainable=False)
    (c,) = g.add_node("Conv", ["x", "w", "b"], ["c"], dict(strides=[2, 2], auto_pad="SAME_UPPER"))
    bn = g.add_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn", "", ""],
                    dict(training_mode=1))
    (a,) = g.add_node("Relu", [bn[0]], ["a"])
    (p,) = g.add_node("MaxPool", [a], ["p"], dict(kernel_shape=[2, 2], strides=[2, 2]))
    (gp,) = g.add_node("GlobalAveragePool", [p], ["gp"])
    (f,) = g.add_node("Reshape", [gp], ["f"], dict(shape=[2, 4]))
    (y,) = g.add_node("Gemm", [f, "w2"], ["y"])
    (m,) = g.add_node("Mul", [y, "r"], ["m"])
    (loss,) = g.add_node("ReduceSum", [m], ["loss"], dict(keepdims=0))
    g.set_outputs([loss])
    wrt = ["x", "w", "b", "scale", "shift", "w2"]
    gg, gmap = gradients(g, loss, wrt)
    gg.set_outputs([gmap[t] for t in wrt])
    feeds = {t: _r(*g.tensors[t].shape, dtype=np.float64) for t in [*wrt, "r"]}
    ana = Executor(gg).run(feeds).values
    fwd = Executor(g)
    eps = 1e-6
    for t in wrt:
        num = np.zeros(feeds[t].size)
        for j in range(feeds[t].size):
            hi, lo = feeds[t].copy().reshape(-1), feeds[t].copy().reshape(-1)
            hi[j] += eps
            lo[j] -= eps
            fp = fwd.run({**feeds, t: hi.reshape(feeds[t].shape)}).values[loss]
            fm = fwd.run({**feeds, t: lo.reshape(feeds[t].shape)}).values[loss]
            num[j] = (float(fp) - float(fm)) / (2 * eps)
        got = ana[gmap[t]].reshape(-1)
        # the conv bias gradient is zero in exact arithmetic (training-mode BN removes it)
        assert np.linalg.norm(got - num) <= 1e-5 * max(np.linalg.norm(num), 1e-4), t
    assert np.abs(ana[gmap["b"]]).max() < 1e-12


def test_convtranspose_bad_output_padding():
    with pytest.raises(GraphError, match="output_padding"):
        run_op("ConvTranspose", [_r(1, 2, 3, 3), _r(2, 1, 3, 3)], dict(strides=[2, 2], output_padding=[2, 0]))
