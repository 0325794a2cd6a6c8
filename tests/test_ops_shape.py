"""Shape and movement ops: values against onnx.reference, gradients, counts, errors."""

import ml_dtypes
import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op
from onnx import TensorProto

from sim.errors import GraphError

RNG = np.random.default_rng(5)
X = RNG.standard_normal((2, 3, 4))
X4 = RNG.standard_normal((1, 8, 2, 3))
X5 = RNG.standard_normal((1, 2, 4, 6))


def ints(v):
    return np.array(v, np.int64)


# (op, input, our attrs, ONNX extra inputs, ONNX attrs, number of outputs)
CASES = [
    ("Reshape", X, {"shape": [0, -1]}, [ints([0, -1])], {}, 1),
    ("Reshape", X, {"shape": [4, 1, -1]}, [ints([4, 1, -1])], {}, 1),
    ("Reshape", X[:1, :1, :1], {"shape": []}, [ints([])], {}, 1),
    ("Flatten", X, {}, [], {}, 1),
    ("Flatten", X, {"axis": -1}, [], {"axis": -1}, 1),
    ("Flatten", X, {"axis": 0}, [], {"axis": 0}, 1),
    ("Flatten", X, {"axis": 3}, [], {"axis": 3}, 1),
    ("Squeeze", X[:, :1], {}, [], {}, 1),
    ("Squeeze", X[:1, :1], {"axes": [-2]}, [ints([-2])], {}, 1),
    ("Unsqueeze", X, {"axes": [0, -1]}, [ints([0, -1])], {}, 1),
    ("Unsqueeze", X[0, 0, 0], {"axes": [0]}, [ints([0])], {}, 1),
    ("Transpose", X, {}, [], {}, 1),
    ("Transpose", X, {"perm": [1, 2, 0]}, [], {"perm": [1, 2, 0]}, 1),
    ("Expand", X[:, :1], {"shape": [3, 1, 1, 1]}, [ints([3, 1, 1, 1])], {}, 1),
    ("Expand", X[0, 0, 0], {"shape": [2, 2]}, [ints([2, 2])], {}, 1),
    ("Expand", X[:1], {"shape": [1]}, [ints([1])], {}, 1),
    ("Split", X, {"axis": 2, "split": [1, 3]}, [ints([1, 3])], {"axis": 2}, 2),
    ("Split", X, {"axis": -1, "num_outputs": 2}, [], {"axis": -1, "num_outputs": 2}, 2),
    ("Split", X, {"axis": 1, "num_outputs": 2}, [], {"axis": 1, "num_outputs": 2}, 2),
    ("Slice", X, {"starts": [1], "ends": [100], "axes": [1]}, [ints([1]), ints([100]), ints([1])], {}, 1),
    ("Slice", X, {"starts": [-1, 0], "ends": [-100, 3], "axes": [2, 1], "steps": [-2, 2]},
     [ints([-1, 0]), ints([-100, 3]), ints([2, 1]), ints([-2, 2])], {}, 1),
    ("Slice", X, {"starts": [0], "ends": [-1], "axes": [-1], "steps": [3]},
     [ints([0]), ints([-1]), ints([-1]), ints([3])], {}, 1),
    ("Slice", X, {"starts": [5, 0], "ends": [-9, 2]}, [ints([5, 0]), ints([-9, 2])], {}, 1),
    ("Slice", X, {"starts": [100], "ends": [-100], "axes": [2], "steps": [-1]},
     [ints([100]), ints([-100]), ints([2]), ints([-1])], {}, 1),
    ("Tile", X, {"repeats": [1, 2, 3]}, [ints([1, 2, 3])], {}, 1),
    ("Tile", X[0, 0, 0], {"repeats": []}, [ints([])], {}, 1),
    ("Pad", X, {"pads": [0, 1, 2, 1, 2, 1]}, [ints([0, 1, 2, 1, 2, 1])], {}, 1),
    ("Pad", X, {"pads": [1, 0, 2, 2], "axes": [-1, 1], "constant_value": 1.5},
     [ints([1, 0, 2, 2]), np.array(1.5), ints([-1, 1])], {}, 1),
    *[("Pad", X, {"pads": [0, 1, 2, 1, 2, 1], "mode": m}, [ints([0, 1, 2, 1, 2, 1])], {"mode": m}, 1)
      for m in ("reflect", "edge", "wrap")],
    ("Pad", X, {"pads": [3, 5], "axes": [2], "mode": "wrap"}, [ints([3, 5]), None, ints([2])],
     {"mode": "wrap"}, 1),
    ("DepthToSpace", X4, {"blocksize": 2}, [], {"blocksize": 2}, 1),
    ("DepthToSpace", X4, {"blocksize": 2, "mode": "CRD"}, [], {"blocksize": 2, "mode": "CRD"}, 1),
    ("SpaceToDepth", X5, {"blocksize": 2}, [], {"blocksize": 2}, 1),
    ("SpaceToDepth", X5, {"blocksize": 2, "mode": "CRD"}, [], {"blocksize": 2, "mode": "CRD"}, 1),
    ("Identity", X, {}, [], {}, 1),
]
IDS = [f"{c[0]}{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize(("op", "x", "attrs", "extra", "oattrs", "n_out"), CASES, ids=IDS)
def test_values_match_onnx_and_gradient(op, x, attrs, extra, oattrs, n_out):
    x32 = np.asarray(x, np.float32)
    ys = run_op(op, [x32], attrs)
    refs = onnx_ref(op, [x32, *extra], oattrs, n_out=n_out)
    assert len(ys) == n_out
    for y, r in zip(ys, refs):
        assert y.shape == r.shape and y.dtype == np.float32
        np.testing.assert_array_equal(y, r)
    check_grad(op, [np.asarray(x)], attrs, n_out=None)


@pytest.mark.parametrize("axis", [0, -2, 2])
def test_concat_matches_onnx_and_gradient(axis):
    parts = [X, X[:, :, :1] if axis == 2 else (X[:, :1] if axis == -2 else X[:1]), X]
    f32 = [p.astype(np.float32) for p in parts]
    np.testing.assert_array_equal(run_op("Concat", f32, {"axis": axis})[0],
                                  onnx_ref("Concat", f32, {"axis": axis})[0])
    check_grad("Concat", parts, {"axis": axis})
    check_grad("Concat", parts[:1], {"axis": axis})


def test_split_gradient_with_unused_output():
    check_grad("Split", [X], {"axis": 1, "split": [1, 2]}, n_out=1)


def test_reshape_allowzero():
    x = np.zeros((0, 3), np.float32)
    (y,) = run_op("Reshape", [x], {"shape": [3, 0], "allowzero": 1})
    assert y.shape == onnx_ref("Reshape", [x, ints([3, 0])], {"allowzero": 1})[0].shape == (3, 0)
    assert run_op("Reshape", [X.astype(np.float32)], {"shape": [0, 0, 2, 2]})[0].shape == (2, 3, 2, 2)


def test_negative_pads_crop():
    x = X.astype(np.float32)
    (y,) = run_op("Pad", [x], {"pads": [1, -1, 2, -2], "axes": [-1, 1]})
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (0, 0), (1, 2)))[:, 1:1])
    (y,) = run_op("Pad", [x], {"pads": [0, -1, 1, 0, 0, -2]})
    np.testing.assert_array_equal(y, np.pad(x[:, 1:, :2], ((0, 0), (0, 0), (1, 0))))
    check_grad("Pad", [X], {"pads": [0, -1, 1, 0, 0, -2]})
    check_grad("Pad", [X], {"pads": [1, -1, 0, -1], "axes": [-1, 1], "mode": "edge"})


def test_backward_ops_by_hand():
    dy = np.arange(1.0, 4.0)
    (dx,) = run_op("SliceGrad", [dy], {"shape": [7], "starts": [1], "ends": [6], "steps": [2]})
    np.testing.assert_array_equal(dx, [0, 1, 0, 2, 0, 3, 0])
    # edge padding of [a, b] by (2, 1): outputs a a a b b -> da = 1+2+3, db = 4+5
    (dx,) = run_op("PadGrad", [np.arange(1.0, 6.0)], {"shape": [2], "pads": [2, 1], "mode": "edge"})
    np.testing.assert_array_equal(dx, [6, 9])


def test_cast():
    x = np.array([-1.7, 0.4, 2.5, 300.2], np.float32)
    for to, enum in (("int32", TensorProto.INT32), ("fp64", TensorProto.DOUBLE), ("bool", TensorProto.BOOL),
                     ("fp16", TensorProto.FLOAT16)):
        (y,) = run_op("Cast", [x], {"to": to})
        (ref,) = onnx_ref("Cast", [x], {"to": enum})
        assert y.dtype == ref.dtype
        np.testing.assert_array_equal(y, ref)
    (y,) = run_op("Cast", [x], {"to": "bf16"})
    assert y.dtype == ml_dtypes.bfloat16 and float(y[3]) == 300.0  # 8 significant bits
    check_grad("Cast", [X], {"to": "fp64"})
    with pytest.raises(GraphError, match="unknown dtype"):
        one_op_graph("Cast", [x], {"to": "float128"})


@pytest.mark.parametrize("to,enum,npdt,big", [
    ("fp8", TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn, 448.0),
    ("fp8e5m2", TensorProto.FLOAT8E5M2, ml_dtypes.float8_e5m2, 57344.0),
])
@pytest.mark.parametrize("src", [np.float32, np.float16])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_fp8_saturation(to, enum, npdt, big, src, saturate):
    x = np.array([0.0, -0.0, 0.3, -1.7, 300.0, 460.0, 480.0, 1e4, 6e4, -6e4, np.inf, -np.inf,
                  np.nan], np.float32).astype(src)
    (y,) = run_op("Cast", [x], {"to": to, "saturate": saturate})
    (ref,) = onnx_ref("Cast", [x], {"to": enum, "saturate": saturate}, opset=19)
    assert y.dtype == ref.dtype == npdt
    np.testing.assert_array_equal(y.astype(np.float32), ref.astype(np.float32))
    # and by hand: saturate clamps to the largest finite value, else NaN (E4M3FN) / inf (E5M2)
    finite = np.isfinite(x.astype(np.float32))
    over = finite & (np.abs(x.astype(np.float32)) > big * 1.1)
    if saturate:
        assert np.all(np.abs(y[over].astype(np.float32)) == big)
        assert float(y[-3]) == big and float(y[-2]) == -big
    elif to == "fp8":
        assert np.all(np.isnan(y[over].astype(np.float32)))
    else:
        assert np.all(np.isinf(y[over].astype(np.float32)))
    assert np.isnan(float(y[-1]))


def test_cast_int_to_fp8_saturates():
    x = np.array([-100000, -3, 0, 7, 500, 100000], np.int32)
    for to, enum in (("fp8", TensorProto.FLOAT8E4M3FN), ("fp8e5m2", TensorProto.FLOAT8E5M2)):
        (y,) = run_op("Cast", [x], {"to": to})
        (ref,) = onnx_ref("Cast", [x], {"to": enum}, opset=19)
        np.testing.assert_array_equal(y.astype(np.float32), ref.astype(np.float32))


def test_dropout():
    x = np.ones((64, 64), np.float32)
    y, mask = run_op("Dropout", [x], {"ratio": 0.25, "training_mode": 1, "seed": 7})
    assert mask.dtype == np.bool_ and abs(mask.mean() - 0.75) < 0.03
    np.testing.assert_allclose(y, np.where(mask, 1 / 0.75, 0))
    y2, mask2 = run_op("Dropout", [x], {"ratio": 0.25, "training_mode": 1, "seed": 7})
    np.testing.assert_array_equal(mask, mask2)  # deterministic in the seed
    y3, mask3 = run_op("Dropout", [x], {"ratio": 0.25})  # inference: identity, mask all true
    np.testing.assert_array_equal(y3, onnx_ref("Dropout", [x], {}, n_out=1)[0])
    assert mask3.all()
    check_grad("Dropout", [X], {"ratio": 0.3, "training_mode": 1, "seed": 3})
    check_grad("Dropout", [X], {"ratio": 0.3})


def work_of(op, shapes, attrs=None, dtype=np.float32):
    return one_op_graph(op, [np.zeros(s, dtype) for s in shapes], attrs).work("node")


def test_work_hand_counts():
    for op, attrs in (("Reshape", {"shape": [-1]}), ("Flatten", {}), ("Squeeze", {}),
                      ("Unsqueeze", {"axes": [0]}), ("Identity", {})):
        w = work_of(op, [(2, 1, 3)], attrs)
        assert (w.flops, w.bytes) == (0, 0), op
    w = work_of("Transpose", [(2, 3, 4)])  # reads and writes 24 floats
    assert (w.flops, w.bytes_read, w.bytes_written) == (0, 96, 96)
    w = work_of("Concat", [(2, 3), (2, 5)], {"axis": 1})
    assert (w.bytes_read, w.bytes_written) == (64, 64)
    w = work_of("Expand", [(3, 1)], {"shape": [2, 3, 4]}, np.float16)
    assert (w.bytes_read, w.bytes_written) == (6, 48)
    w = work_of("Dropout", [(10,)], {"training_mode": 1})  # compare and scale; y and mask out
    assert (w.flops, w.bytes_read, w.bytes_written) == (20, 40, 50)
    w = work_of("Cast", [(10,)], {"to": "bf16"})
    assert (w.flops, w.bytes_read, w.bytes_written) == (0, 40, 20)


@pytest.mark.parametrize(("op", "shape", "attrs", "msg"), [
    ("Reshape", (2, 3), {"shape": [4, -1]}, "cannot infer"),
    ("Reshape", (2, 3), {"shape": [-1, -1]}, "more than one -1"),
    ("Reshape", (2, 3), {"shape": [5]}, "cannot become"),
    ("Transpose", (2, 3), {"perm": [0, 0]}, "not a permutation"),
    ("Squeeze", (2, 3), {"axes": [0]}, "not 1"),
    ("Split", (4,), {}, "num_outputs"),
    ("Split", (4,), {"split": [1, 2]}, "do not add up"),
    ("Slice", (4,), {"starts": [0], "ends": [2], "steps": [0]}, "step 0"),
    ("Tile", (2, 3), {"repeats": [2]}, "do not fit"),
    ("Pad", (2, 3), {"pads": [1, 1]}, "need 2 per axis"),
    ("Pad", (2, 3), {"pads": [1, 1, 1, 1], "mode": "mirror"}, "not one of"),
    ("DepthToSpace", (1, 3, 2, 2), {"blocksize": 2}, "not divisible"),
    ("Expand", (2, 3), {"shape": [4, 1]}, "do not broadcast"),
    ("Flatten", (2, 3), {"axis": 3}, "out of range"),
])
def test_errors(op, shape, attrs, msg):
    with pytest.raises(GraphError, match=msg):
        one_op_graph(op, [np.zeros(shape, np.float32)], attrs)
