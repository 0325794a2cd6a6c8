"""Normalization ops: values against onnx.reference, gradients, FLOP/byte counts."""

import numpy as np
import pytest
from helpers import check_grad, onnx_ref, run_op

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec

RNG = np.random.default_rng(31)
F32 = np.float32
F64 = np.float64


def _r(*shape, dtype=F32):
    return RNG.standard_normal(shape).astype(dtype)


def _var(*shape, dtype=F32):
    return (RNG.random(shape) + 0.5).astype(dtype)


def _both(op, ins, attrs, n_out=1, opset=21, rtol=1e-5):
    ys = run_op(op, ins, attrs, n_out=n_out)
    refs = onnx_ref(op, ins, attrs, n_out=n_out, opset=opset)
    assert len(ys) == len(refs) == n_out
    for y, ref in zip(ys, refs):
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=rtol, atol=1e-5)
    return ys


def _bn_inputs(c, dtype=F32):
    return [_r(c, dtype=dtype), _r(c, dtype=dtype), _r(c, dtype=dtype), _var(c, dtype=dtype)]


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4), (2, 3, 5), (1, 2, 3, 2, 2)])
def test_batchnorm_inference(shape):
    _both("BatchNormalization", [_r(*shape), *_bn_inputs(shape[1])], dict(epsilon=1e-3))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3)])
def test_batchnorm_training(shape):
    y, rm, rv = _both("BatchNormalization", [_r(*shape), *_bn_inputs(shape[1])],
                      dict(training_mode=1, momentum=0.8), n_out=3)
    assert rm.shape == rv.shape == (shape[1],)


def test_batchnorm_running_stats_by_hand():
    # channel 0 holds [1, 3] over the batch: mean 2, biased variance 1;
    # running_mean = 0.9*0 + 0.1*2 = 0.2, running_var = 0.9*1 + 0.1*1 = 1
    x = np.array([[[1.0]], [[3.0]]], F32)  # N=2, C=1, L=1
    one = np.ones(1, F32)
    zero = np.zeros(1, F32)
    y, rm, rv = run_op("BatchNormalization", [x, one, zero, zero, one], dict(training_mode=1, epsilon=0.0),
                       n_out=3)
    np.testing.assert_allclose(y.reshape(-1), [-1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(rm, [0.2], rtol=1e-6)
    np.testing.assert_allclose(rv, [1.0], rtol=1e-6)


@pytest.mark.parametrize("axis, scale_shape, bias", [(-1, (6,), True), (1, (3, 6), True), (1, (6,), False),
                                                     (0, (2, 3, 6), True)])
def test_layernorm(axis, scale_shape, bias):
    ins = [_r(2, 3, 6), _r(*scale_shape)] + ([_r(6)] if bias else [])
    _both("LayerNormalization", ins, dict(axis=axis, epsilon=1e-4), n_out=3)


@pytest.mark.parametrize("axis, scale_shape", [(-1, (6,)), (-2, (3, 6)), (1, (6,))])
def test_rmsnorm_opset23(axis, scale_shape):
    _both("RMSNormalization", [_r(2, 3, 6), _r(*scale_shape)], dict(axis=axis, epsilon=1e-2), opset=23)


def test_rmsnorm_by_hand():
    # [3, 4]: mean square 12.5 -> y = x / sqrt(12.5) (epsilon 0, scale 1)
    (y,) = run_op("RMSNormalization", [np.array([[3.0, 4.0]], F32), np.ones(2, F32)], dict(epsilon=0.0))
    np.testing.assert_allclose(y, [[3 / 12.5**0.5, 4 / 12.5**0.5]], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7), (1, 2, 2, 3, 2)])
def test_instancenorm(shape):
    _both("InstanceNormalization", [_r(*shape), _r(shape[1]), _r(shape[1])], dict(epsilon=1e-4))


@pytest.mark.parametrize("groups", [1, 3, 6])
def test_groupnorm_opset21(groups):
    _both("GroupNormalization", [_r(2, 6, 3, 2), _r(6), _r(6)], dict(num_groups=groups))


def test_norm_bad_shapes():
    with pytest.raises(GraphError, match="scale shape"):
        run_op("BatchNormalization", [_r(2, 3, 4), _r(4), _r(3), _r(3), _var(3)])
    with pytest.raises(GraphError, match="does not broadcast"):
        run_op("LayerNormalization", [_r(2, 3, 6), _r(5)])
    with pytest.raises(GraphError, match="groups"):
        run_op("GroupNormalization", [_r(2, 6, 3), _r(6), _r(6)], dict(num_groups=4))


# ----------------------------------------------------------------------------- gradients
def test_batchnorm_inference_grad():
    # every input, running statistics included (the affine map's derivatives)
    check_grad("BatchNormalization", [_r(2, 3, 4, 5, dtype=F64), *_bn_inputs(3, F64)], dict(epsilon=1e-3))


def test_batchnorm_training_grad():
    x = _r(2, 3, 4, 5, dtype=F64)
    check_grad("BatchNormalization", [x, *_bn_inputs(3, F64)], dict(training_mode=1), wrt=[0, 1, 2])
    # through all three outputs (Y, running_mean, running_var): every input gets a gradient
    check_grad("BatchNormalization", [x, *_bn_inputs(3, F64)], dict(training_mode=1, momentum=0.7),
               n_out=None)


@pytest.mark.parametrize("axis, scale_shape", [(-1, (6,)), (1, (3, 6)), (1, (1, 6))])
def test_layernorm_grad(axis, scale_shape):
    x = _r(2, 3, 6, dtype=F64)
    check_grad("LayerNormalization", [x, _r(*scale_shape, dtype=F64), _r(6, dtype=F64)], dict(axis=axis))
    check_grad("LayerNormalization", [x, _r(*scale_shape, dtype=F64)], dict(axis=axis))
    # Mean and InvStdDev outputs too (stash_type 11: stored in fp64)
    check_grad("LayerNormalization", [x, _r(*scale_shape, dtype=F64), _r(6, dtype=F64)],
               dict(axis=axis, stash_type=11), n_out=None)


@pytest.mark.parametrize("axis, scale_shape", [(-1, (6,)), (1, (3, 6))])
def test_rmsnorm_grad(axis, scale_shape):
    check_grad("RMSNormalization", [_r(2, 3, 6, dtype=F64), _r(*scale_shape, dtype=F64)], dict(axis=axis))


def test_group_instance_norm_grad():
    check_grad("GroupNormalization", [_r(2, 6, 3, 2, dtype=F64), _r(6, dtype=F64), _r(6, dtype=F64)],
               dict(num_groups=3))
    check_grad("InstanceNormalization", [_r(2, 3, 4, 3, dtype=F64), _r(3, dtype=F64), _r(3, dtype=F64)])


# ----------------------------------------------------------------------------- work
def _work(op, specs, attrs, n_out=1):
    g = Graph("w")
    names = [g.add_input(f"x{i}", s) for i, s in enumerate(specs)]
    outs = g.add_node(op, names, [f"y{i}" for i in range(n_out)], attrs, name="n")
    return g.work("n"), [g.tensors[o] for o in outs]


def test_batchnorm_work():
    # 1x64x56x56 fp32 inference: 2 FLOP per element (folded multiply-add) + 5 per channel,
    # one rsqrt per channel
    c, n = 64, 64 * 56 * 56
    specs = [TensorSpec((1, c, 56, 56))] + [TensorSpec((c,))] * 4
    w, _ = _work("BatchNormalization", specs, {})
    assert w.flops == 2 * n + 5 * c and w.transcendentals == c
    assert (w.bytes_read, w.bytes_written) == ((n + 4 * c) * 4, n * 4)
    # training: 6 FLOP per element; writes Y and the two running statistics
    wt, _ = _work("BatchNormalization", specs, dict(training_mode=1), n_out=3)
    assert wt.flops == 6 * n + 5 * c and wt.bytes_written == (n + 2 * c) * 4
    # ... and reads X twice (statistics pass, then the normalising pass)
    assert wt.bytes_read == (2 * n + 4 * c) * 4


def test_layernorm_and_rmsnorm_work():
    # GPT-2 block LayerNorm: 1x1024x768, bias: 7 FLOP per element + 3 per row, 1024 rsqrt;
    # X read twice (row statistics, then normalise), scale and bias once, Y written once
    rows, d = 1024, 768
    specs = [TensorSpec((1, rows, d)), TensorSpec((d,)), TensorSpec((d,))]
    w, _ = _work("LayerNormalization", specs, {})
    assert w.flops == 7 * rows * d + 3 * rows and w.transcendentals == rows
    assert (w.bytes_read, w.bytes_written) == ((2 * rows * d + 2 * d) * 4, rows * d * 4)
    # with Mean and InvStdDev written as well (fp32, one per row each)
    w3, outs = _work("LayerNormalization", specs, {}, n_out=3)
    assert outs[1].shape == (1, rows, 1) and w3.bytes_written == (rows * d + 2 * rows) * 4
    # Llama RMSNorm: 4 FLOP per element + 3 per row
    wr, _ = _work("RMSNormalization", specs[:2], {})
    assert wr.flops == 4 * rows * d + 3 * rows and wr.transcendentals == rows
    assert wr.bytes_read == (rows * d + d) * 4  # one pass (a fused kernel)
    # the backward op reads dY and X twice each (reduce, then apply), Scale once
    wg, _ = _work("LayerNormGrad", [TensorSpec((1, rows, d)), TensorSpec((1, rows, d)),
                                    TensorSpec((d,))], {}, n_out=3)
    assert wg.bytes_read == (4 * rows * d + d) * 4


def test_groupnorm_work():
    # 2x6x3x2 in 3 groups: 6 normalized groups (2 samples x 3), 72 elements at 7 FLOP
    w, _ = _work("GroupNormalization", [TensorSpec((2, 6, 3, 2)), TensorSpec((6,)), TensorSpec((6,))],
                 dict(num_groups=3))
    assert w.flops == 7 * 72 + 3 * 6 and w.transcendentals == 6


@pytest.mark.parametrize("op, specs, attrs, bwd", [
    ("BatchNormalization", [(2, 3, 4)] + [(3,)] * 4, dict(training_mode=1), "BatchNormGrad"),
    ("BatchNormalization", [(2, 3, 4)] + [(3,)] * 4, {}, "BatchNormGrad"),
    ("LayerNormalization", [(2, 3, 4), (4,), (4,)], {}, "LayerNormGrad"),
    ("RMSNormalization", [(2, 3, 4), (4,)], {}, "RMSNormGrad"),
    ("GroupNormalization", [(2, 3, 4), (3,), (3,)], dict(num_groups=3), "GroupNormGrad"),
    ("InstanceNormalization", [(2, 3, 4), (3,), (3,)], {}, "GroupNormGrad"),
])
def test_backward_op_emitted_and_work(op, specs, attrs, bwd):
    from sim.passes.autodiff import gradients

    g = Graph("n")
    names = [g.add_input(f"x{i}", TensorSpec(s)) for i, s in enumerate(specs)]
    (y,) = g.add_node(op, names, ["y"], attrs, name="norm")
    g.add_input("dy", TensorSpec((2, 3, 4)))
    gg, grads = gradients(g, [y], names[:3], ["dy"])
    (node,) = [n for n in gg.nodes.values() if n.meta.get("forward") == "norm" and n.op.endswith("Grad")]
    assert node.op == bwd
    w = gg.work(node)
    # 24 elements at 15 FLOP (RMSNormGrad 10) plus a few per normalized group
    per = 10 if bwd == "RMSNormGrad" else 15
    groups = {"BatchNormGrad": 3, "LayerNormGrad": 6, "RMSNormGrad": 6, "GroupNormGrad": 6}[bwd]
    per_group = 10 if bwd == "BatchNormGrad" else 3
    assert w.flops == per * 24 + per_group * groups and w.transcendentals == groups
