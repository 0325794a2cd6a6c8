"""Gemm and Einsum (MatMul is covered in test_spine): values against onnx.reference,
gradients, FLOP/byte counts."""

import numpy as np
import pytest
from helpers import check_grad, onnx_ref, run_op

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec
from sim.ops.work import GemmShape

RNG = np.random.default_rng(41)
F32 = np.float32
F64 = np.float64


def _r(*shape, dtype=F32):
    return RNG.standard_normal(shape).astype(dtype)


def _both(op, ins, attrs):
    (y,) = run_op(op, ins, attrs)
    (ref,) = onnx_ref(op, ins, attrs)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _operands(ta, tb, m=3, k=5, n=4, dtype=F32):
    a = _r(k, m, dtype=dtype) if ta else _r(m, k, dtype=dtype)
    b = _r(n, k, dtype=dtype) if tb else _r(k, n, dtype=dtype)
    return a, b


# ----------------------------------------------------------------------------- Gemm
@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("cshape", [None, (), (4,), (3, 1), (1, 4), (3, 4)])
def test_gemm_matches_onnx(ta, tb, cshape):
    a, b = _operands(ta, tb)
    ins = [a, b] + ([] if cshape is None else [_r(*cshape)])
    _both("Gemm", ins, dict(transA=ta, transB=tb, alpha=0.5, beta=-2.0))


def test_gemm_defaults_by_hand():
    a = np.array([[1.0, 2.0]], F32)
    b = np.array([[3.0], [4.0]], F32)
    (y,) = run_op("Gemm", [a, b, np.array([10.0], F32)])
    assert y.tolist() == [[21.0]]  # 1*3 + 2*4 + 10


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
def test_gemm_gradients(ta, tb):
    a, b = _operands(ta, tb, dtype=F64)
    check_grad("Gemm", [a, b, _r(3, 1, dtype=F64)], dict(transA=ta, transB=tb, alpha=0.5, beta=2.0))
    check_grad("Gemm", [a, b, _r(4, dtype=F64)], dict(transA=ta, transB=tb))
    check_grad("Gemm", [a, b], dict(transA=ta, transB=tb, alpha=-1.5))


def test_gemm_bad_shapes():
    with pytest.raises(GraphError, match="inner dimensions"):
        run_op("Gemm", [_r(3, 5), _r(4, 5)])
    with pytest.raises(GraphError, match="does not broadcast"):
        run_op("Gemm", [_r(3, 5), _r(5, 4), _r(3)])
    with pytest.raises(GraphError, match="2-D"):
        run_op("Gemm", [_r(2, 3, 5), _r(5, 4)])


def _work(op, specs, attrs):
    g = Graph("w")
    names = [g.add_input(f"x{i}", s) for i, s in enumerate(specs)]
    (y,) = g.add_node(op, names, ["y"], attrs, name="n")
    return g.work("n"), g.tensors[y]


def test_gemm_work():
    # A 3x5 (given transposed as 5x3), B 5x4: 3*4 outputs of 5 MACs = 120 FLOP
    w, y = _work("Gemm", [TensorSpec((5, 3)), TensorSpec((5, 4))], dict(transA=1))
    assert y.shape == (3, 4)
    assert w.flops == w.matmul_flops == 2 * 3 * 4 * 5 == 120
    assert w.gemms == (GemmShape(3, 4, 5),)
    assert (w.bytes_read, w.bytes_written) == ((15 + 20) * 4, 12 * 4)
    # alpha != 1 scales 12 outputs, C adds 12, beta != 1 scales 12 more: 120 + 36
    w2, _ = _work("Gemm", [TensorSpec((5, 3)), TensorSpec((5, 4)), TensorSpec((4,))],
                  dict(transA=1, alpha=2.0, beta=0.5))
    assert w2.flops == 156 and w2.matmul_flops == 120
    assert w2.bytes_read == (15 + 20 + 4) * 4


def test_gemm_classifier_flops():
    # ResNet-50's classifier as Gemm(transB=1): 1x2048 @ (1000x2048)^T + bias:
    # 2 * 2048 * 1000 = 4,096,000 matmul FLOP + 1000 bias adds
    w, _ = _work("Gemm", [TensorSpec((1, 2048)), TensorSpec((1000, 2048)), TensorSpec((1000,))],
                 dict(transB=1))
    assert w.matmul_flops == 4_096_000 and w.flops == 4_097_000


# ----------------------------------------------------------------------------- Einsum
EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("...ij,...jk", [(2, 3, 4), (4, 5)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij,kj->ik", [(3, 4), (2, 4)]),
    ("ij,j", [(3, 4), (4,)]),
    ("abc,cd->ad", [(2, 3, 4), (4, 2)]),  # b summed away in the first operand alone
    ("i,j->ij", [(3,), (2,)]),
]


@pytest.mark.parametrize("eq, shapes", EINSUM_CASES)
def test_einsum_matches_onnx(eq, shapes):
    _both("Einsum", [_r(*s) for s in shapes], dict(equation=eq))


def test_einsum_diagonal():
    _both("Einsum", [_r(3, 3)], dict(equation="ii->i"))


@pytest.mark.parametrize("eq, shapes", EINSUM_CASES)
def test_einsum_gradients(eq, shapes):
    check_grad("Einsum", [_r(*s, dtype=F64) for s in shapes], dict(equation=eq))


def test_einsum_work():
    # attention scores bhqd,bhkd->bhqk with b=2, h=4, q=8, k=16, d=32:
    # batch b*h = 8 GEMMs of 8x16 over d=32: 2 * 8 * 8 * 16 * 32 = 65,536 FLOP
    w, y = _work("Einsum", [TensorSpec((2, 4, 8, 32)), TensorSpec((2, 4, 16, 32))],
                 dict(equation="bhqd,bhkd->bhqk"))
    assert y.shape == (2, 4, 8, 16)
    assert w.gemms == (GemmShape(m=8, n=16, k=32, batch=8),)
    assert w.flops == w.matmul_flops == 65_536
    # a one-operand sum reads 12 elements: 12 FLOP
    w1, _ = _work("Einsum", [TensorSpec((3, 4))], dict(equation="ij->i"))
    assert w1.flops == 12 and w1.matmul_flops == 0


def test_einsum_bad():
    with pytest.raises(GraphError, match="sizes"):
        run_op("Einsum", [_r(3, 4), _r(5, 6)], dict(equation="ij,jk->ik"))
    with pytest.raises(GraphError, match="operands"):
        run_op("Einsum", [_r(3, 4)], dict(equation="ij,jk->ik"))


# ----------------------------------------------------------------------------- MatMul
MATMUL_CASES = [
    ((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((4,), (4,)),
]


@pytest.mark.parametrize("sa, sb", MATMUL_CASES)
def test_matmul_matches_onnx_and_grads(sa, sb):
    _both("MatMul", [_r(*sa), _r(*sb)], {})
    check_grad("MatMul", [_r(*sa, dtype=F64), _r(*sb, dtype=F64)])


def test_matmul_batched_work():
    # (2,1,3,4) @ (5,4,2): batch broadcast to 2x5 = 10 GEMMs of 3x2 over 4: 2*10*3*2*4 = 480 FLOP
    w, y = _work("MatMul", [TensorSpec((2, 1, 3, 4)), TensorSpec((5, 4, 2))], {})
    assert y.shape == (2, 5, 3, 2)
    assert w.flops == w.matmul_flops == 480 and w.gemms == (GemmShape(3, 2, 4, 10),)
