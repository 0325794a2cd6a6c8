"""Work (FLOPs, transcendentals, bytes) of ops not hand-counted elsewhere, on tiny shapes.

Every expected number is counted by hand from the convention in docs/ops.md ("Counting
conventions") and the family module's docstring (sim/ops/*.py): each input read once, each
output written once; compare/add/max/bit op 1 FLOP per output element; gathers read only the
elements they fetch (plus the indices); data movement and fills do no FLOPs.
"""

import numpy as np
import pytest
from helpers import one_op_graph

F32, F16, I64, B = np.float32, np.float16, np.int64, np.bool_


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


def work_of(op, arrays, attrs=None):
    return one_op_graph(op, arrays, attrs).work("node")


AX2 = {"axes": [2]}  # (2, 3, 4) -> (2, 3, 1): 24 fp32 in (96 B), 6 fp32 out (24 B)

# (op, inputs, attrs, (flops, transcendentals, bytes_read, bytes_written))
CASES = [
    # ---------------------------------------------------------------- logical.py: 1 FLOP per output
    # (2,3) fp32 (24 B) vs (1,3) fp32 (12 B) -> 6 bools (6 B); 6 compares
    pytest.param("Equal", [z(2, 3), z(1, 3)], {}, (6, 0, 36, 6), id="Equal"),
    pytest.param("Greater", [z(2, 3), z(1, 3)], {}, (6, 0, 36, 6), id="Greater"),
    pytest.param("GreaterOrEqual", [z(2, 3), z(1, 3)], {}, (6, 0, 36, 6), id="GreaterOrEqual"),
    pytest.param("LessOrEqual", [z(2, 3), z(1, 3)], {}, (6, 0, 36, 6), id="LessOrEqual"),
    # (2,3) bool (6 B) with (3,) bool (3 B) -> 6 bools; 6 bit ops
    pytest.param("And", [z(2, 3, dtype=B), z(3, dtype=B)], {}, (6, 0, 9, 6), id="And"),
    pytest.param("Or", [z(2, 3, dtype=B), z(3, dtype=B)], {}, (6, 0, 9, 6), id="Or"),
    pytest.param("Xor", [z(2, 3, dtype=B), z(3, dtype=B)], {}, (6, 0, 9, 6), id="Xor"),
    # 4 bools in (4 B), 4 out; 4 bit ops
    pytest.param("Not", [z(4, dtype=B)], {}, (4, 0, 4, 4), id="Not"),
    # 5 fp16 in (10 B) -> 5 bools (5 B); 1 test per element
    pytest.param("IsNaN", [z(5, dtype=F16)], {}, (5, 0, 10, 5), id="IsNaN"),
    pytest.param("IsInf", [z(5, dtype=F16)], {}, (5, 0, 10, 5), id="IsInf"),
    pytest.param("IsInf", [z(5, dtype=F16)], {"detect_negative": 0}, (5, 0, 10, 5), id="IsInf-pos"),
    # ---------------------------------------------------------- elementwise.py: Max/Min k-1, MaxMinGrad k+1
    # 3 inputs (4,) (4,) (1,) fp32: 16+16+4 = 36 B in, 4 fp32 out (16 B); 2 max per output = 8
    pytest.param("Max", [z(4), z(4), z(1)], {}, (8, 0, 36, 16), id="Max-3in"),
    pytest.param("Min", [z(4), z(4), z(1)], {}, (8, 0, 36, 16), id="Min-3in"),
    # one input: k-1 = 0 FLOPs, a copy (12 B in, 12 B out)
    pytest.param("Max", [z(3)], {}, (0, 0, 12, 12), id="Max-1in"),
    # (dy, y, x0, x1) = (4,) (4,) (4,) (1,) fp32: 16*3+4 = 52 B in; 2 grads of dy's shape (32 B);
    # k=2 forward inputs -> 3 FLOPs per dy element = 12
    pytest.param("MaxMinGrad", [z(4), z(4), z(4), z(1)], {}, (12, 0, 52, 32), id="MaxMinGrad"),
    # ---------------------------------------------------------------- reduce.py table, per input element
    pytest.param("ReduceMax", [z(2, 3, 4)], AX2, (24, 0, 96, 24), id="ReduceMax"),  # 1 per in
    pytest.param("ReduceMin", [z(2, 3, 4)], AX2, (24, 0, 96, 24), id="ReduceMin"),  # 1 per in
    pytest.param("ReduceProd", [z(2, 3, 4)], AX2, (24, 0, 96, 24), id="ReduceProd"),  # 1 multiply per in
    pytest.param("ReduceL1", [z(2, 3, 4)], AX2, (48, 0, 96, 24), id="ReduceL1"),  # abs + add: 2*24
    pytest.param("ReduceSumSquare", [z(2, 3, 4)], AX2, (48, 0, 96, 24), id="ReduceSumSquare"),  # 2*24
    # all axes, keepdims 0: 24 in -> one scalar (4 B); still 1 per input element
    pytest.param("ReduceMax", [z(2, 3, 4)], {"keepdims": 0}, (24, 0, 96, 4), id="ReduceMax-all"),
    # 24 adds + 6 logs (1 FLOP + 1 transcendental each) = 30 FLOPs, 6 transcendentals
    pytest.param("ReduceLogSum", [z(2, 3, 4)], AX2, (30, 6, 96, 24), id="ReduceLogSum"),
    # 4*24 (max, sub, exp, add) + 2*6 (log, +max) = 108 FLOPs; 24 exps + 6 logs = 30 transcendentals
    pytest.param("ReduceLogSumExp", [z(2, 3, 4)], AX2, (108, 30, 96, 24), id="ReduceLogSumExp"),
    # axis 1 of (2,3,4): 24 compares; 96 B in, (2,1,4) int64 out = 8*8 = 64 B
    pytest.param("ArgMin", [z(2, 3, 4)], {"axis": 1}, (24, 0, 96, 64), id="ArgMin"),
    pytest.param("ArgMin", [z(2, 3, 4, dtype=F16)], {"axis": -1, "keepdims": 0}, (24, 0, 48, 48),
                 id="ArgMin-fp16"),  # 48 B in; (2,3) int64 out = 48 B
    # 1 compare per element; one-hot of the same shape out
    pytest.param("Hardmax", [z(2, 3, 4)], {}, (24, 0, 96, 96), id="Hardmax"),
    pytest.param("Hardmax", [z(2, 3, 4)], {"axis": 0}, (24, 0, 96, 96), id="Hardmax-axis0"),
    # 1 add per element
    pytest.param("CumSum", [z(2, 3, 4)], {"axis": 1}, (24, 0, 96, 96), id="CumSum"),
    pytest.param("CumSum", [z(2, 3, 4)], {"axis": 1, "exclusive": 1, "reverse": 1}, (24, 0, 96, 96),
                 id="CumSum-excl-rev"),
    # (dy, y) (2,3,4) fp32: 192 B in, 96 B out; 4 per element (dy*y, row sum, sub, mul) = 96
    pytest.param("SoftmaxGrad", [z(2, 3, 4), z(2, 3, 4)], {}, (96, 0, 192, 96), id="SoftmaxGrad"),
    # 4 per element (exp(y), row sum of dy, mul, sub) = 96, one exp per element = 24
    pytest.param("LogSoftmaxGrad", [z(2, 3, 4), z(2, 3, 4)], {"axis": 1}, (96, 24, 192, 96),
                 id="LogSoftmaxGrad"),
    # ------------------------------------------------ loss.py: MSELossGrad 2 FLOP per prediction element
    # dloss fp32 scalar (4 B) + pred (2,3) (24 B) + target (3,) (12 B) = 40 B; dpred 24 B; 2*6
    pytest.param("MSELossGrad", [z(), z(2, 3), z(3)], {}, (12, 0, 40, 24), id="MSELossGrad"),
    # reduction none: dloss is (2,3) (24 B): 24+24+24 = 72 B in
    pytest.param("MSELossGrad", [z(2, 3), z(2, 3), z(2, 3)], {"reduction": "none"}, (12, 0, 72, 24),
                 id="MSELossGrad-none"),
    # --------------------------------------------- index.py: gathers read indices + fetched elements only
    # data (3,4) fp32, indices (3,2) int64 (48 B) axis 1 -> (3,2) fp32 (24 B): reads 48 + 6*4
    pytest.param("GatherElements", [z(3, 4), z(3, 2, dtype=I64)], {"axis": 1}, (0, 0, 72, 24),
                 id="GatherElements"),
    # data (4,3) fp32, indices (2,1) int64 (16 B) -> 2 rows of 3 (24 B): reads 16 + 24
    pytest.param("GatherND", [z(4, 3), z(2, 1, dtype=I64)], {}, (0, 0, 40, 24), id="GatherND"),
    # batch_dims 1: data (2,5,3), indices (2,1,1) (16 B) -> (2,1,3) = 6 fp32 (24 B)
    pytest.param("GatherND", [z(2, 5, 3), z(2, 1, 1, dtype=I64)], {"batch_dims": 1}, (0, 0, 40, 24),
                 id="GatherND-batch"),
    # Gather of data (4,3) by 2 int64 ids (16 B): dy (2,3) (24 B) scatter-added into (4,3) (48 B);
    # one add per scattered element = 6
    pytest.param("GatherGrad", [z(2, 3), z(2, dtype=I64)], {"axis": 0, "shape": [4, 3]}, (6, 0, 40, 48),
                 id="GatherGrad"),
    # axis 1: data (3,4), 2 ids -> dy (3,2) = 6 elements; out (3,4) = 48 B
    pytest.param("GatherGrad", [z(3, 2), z(2, dtype=I64)], {"axis": 1, "shape": [3, 4]}, (6, 0, 40, 48),
                 id="GatherGrad-axis1"),
    # data (4,3) (48 B), indices (2,1) (16 B), updates (2,3) (24 B) = 88 B in; copy out 48 B;
    # plain write: 0 FLOPs, with a reduction 1 per update element = 6
    pytest.param("ScatterND", [z(4, 3), z(2, 1, dtype=I64), z(2, 3)], {}, (0, 0, 88, 48), id="ScatterND"),
    pytest.param("ScatterND", [z(4, 3), z(2, 1, dtype=I64), z(2, 3)], {"reduction": "add"},
                 (6, 0, 88, 48), id="ScatterND-add"),
    pytest.param("ScatterND", [z(4, 3), z(2, 1, dtype=I64), z(2, 3)], {"reduction": "max"},
                 (6, 0, 88, 48), id="ScatterND-max"),
    # indices (2,) int64 (16 B) + (off, on) fp32 (8 B) -> (2,3) fp32 (24 B); a fill, 0 FLOPs
    pytest.param("OneHot", [z(2, dtype=I64), None, z(2)], {"depth": 3}, (0, 0, 24, 24), id="OneHot"),
    pytest.param("OneHot", [z(2, dtype=I64), None, z(2)], {"depth": 3, "axis": 0}, (0, 0, 24, 24),
                 id="OneHot-axis0"),
    # masked copy: (3,3) fp32 in 36 B, out 36 B
    pytest.param("Trilu", [z(3, 3)], {}, (0, 0, 36, 36), id="Trilu"),
    pytest.param("Trilu", [z(2, 3, 3)], {"upper": 0, "k": 1}, (0, 0, 72, 72), id="Trilu-lower"),
    # x (3,2,2) fp32 (48 B) + lens (2,) int64 (16 B) = 64 B in; x-shaped out 48 B
    pytest.param("ReverseSequence", [z(3, 2, 2), z(2, dtype=I64)], {"batch_axis": 1, "time_axis": 0},
                 (0, 0, 64, 48), id="ReverseSequence"),
    # ------------------------------------------- generate.py: outputs that do not depend on input values
    # only the input's shape is used: nothing read; (2,3) fp32 written (24 B), as int64 48 B
    pytest.param("EyeLike", [z(2, 3)], {}, (0, 0, 0, 24), id="EyeLike"),
    pytest.param("EyeLike", [z(2, 3)], {"dtype": "int64", "k": 1}, (0, 0, 0, 48), id="EyeLike-int64"),
    # metadata, like Shape (tests/test_ops_generate.py asserts Shape costs 0 bytes)
    pytest.param("Size", [z(2, 3, 4)], {}, (0, 0, 0, 0), id="Size"),
    # ------------------------------------------------- shape.py: data movement, each tensor once, 0 FLOPs
    # (1,4,1,2) -> (1,1,2,4): 8 fp32 in and out
    pytest.param("DepthToSpace", [z(1, 4, 1, 2)], {"blocksize": 2}, (0, 0, 32, 32), id="DepthToSpace"),
    pytest.param("DepthToSpace", [z(1, 4, 1, 2)], {"blocksize": 2, "mode": "CRD"}, (0, 0, 32, 32),
                 id="DepthToSpace-CRD"),
    # (1,1,2,4) -> (1,4,1,2)
    pytest.param("SpaceToDepth", [z(1, 1, 2, 4)], {"blocksize": 2}, (0, 0, 32, 32), id="SpaceToDepth"),
    # (2,3) fp32 (24 B) padded by one column each side -> (2,5) (40 B)
    pytest.param("Pad", [z(2, 3)], {"pads": [0, 1, 0, 1]}, (0, 0, 24, 40), id="Pad"),
    pytest.param("Pad", [z(2, 3)], {"pads": [0, 1, 0, 1], "mode": "reflect"}, (0, 0, 24, 40),
                 id="Pad-reflect"),
    # negative pads crop: (2,3) -> (2,1): reads the input once (24 B), writes 8 B
    pytest.param("Pad", [z(2, 3)], {"pads": [0, -1, 0, -1]}, (0, 0, 24, 8), id="Pad-crop"),
    # constant mode: dy (2,5) (40 B) -> dx (2,3) (24 B); each dx element receives exactly one dy
    # element (the padding's gradient is dropped), so no adds
    pytest.param("PadGrad", [z(2, 5)], {"pads": [0, 1, 0, 1], "shape": [2, 3]}, (0, 0, 40, 24),
                 id="PadGrad-constant"),
    # rows 1..2 of (4,5) fp32: reads the input once (80 B, shape.py: each input read once),
    # writes (2,5) = 40 B
    pytest.param("Slice", [z(4, 5)], {"starts": [1], "ends": [3], "axes": [0]}, (0, 0, 80, 40), id="Slice"),
    # every other column, backwards: (4,5) -> (4,3)
    pytest.param("Slice", [z(4, 5)], {"starts": [-1], "ends": [-1000], "axes": [1], "steps": [-2]},
                 (0, 0, 80, 48), id="Slice-step"),
    # dy (2,5) (40 B) written into zeros (4,5) (80 B)
    pytest.param("SliceGrad", [z(2, 5)], {"starts": [1], "ends": [3], "axes": [0], "shape": [4, 5]},
                 (0, 0, 40, 80), id="SliceGrad"),
    # (2,6) fp32 (48 B) -> (2,2) + (2,4) (16 + 32 B)
    pytest.param("Split", [z(2, 6)], {"axis": 1, "split": [2, 4]}, (0, 0, 48, 48), id="Split"),
    # num_outputs 3 over 7 rows: chunks 3, 3, 1 of (7,2) fp16 -> 28 B in, 28 B out
    pytest.param("Split", [z(7, 2, dtype=F16)], {"num_outputs": 3}, (0, 0, 28, 28), id="Split-num"),
    # (2,3) fp16 (12 B) -> (4,3) fp16 (24 B)
    pytest.param("Tile", [z(2, 3, dtype=F16)], {"repeats": [2, 1]}, (0, 0, 12, 24), id="Tile"),
    pytest.param("Tile", [z(2, 3)], {"repeats": [2, 3]}, (0, 0, 24, 144), id="Tile-2x3"),
]


@pytest.mark.parametrize(("op", "arrays", "attrs", "want"), CASES)
def test_work_hand_count(op, arrays, attrs, want):
    w = work_of(op, arrays, attrs)
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written) == want
    assert w.matmul_flops == 0 and w.gemms == ()


def test_range_work():
    # 0, 3, 6, 9: ceil((10 - 0) / 3) = 4 int64 written (32 B), nothing read; each element is
    # start + i * delta, a multiply-add: 2 FLOP each
    w = work_of("Range", [], {"start": 0, "limit": 10, "delta": 3})
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written, w.matmul_flops) == (8, 0, 0, 32, 0)
    # fp32 1.0, 1.5 (limit exclusive): 2 elements, 8 B, 4 FLOP
    w = work_of("Range", [], {"start": F32(1.0), "limit": F32(2.0), "delta": F32(0.5)})
    assert (w.flops, w.bytes_read, w.bytes_written) == (4, 0, 8)


def test_pad_grad_reflect_work():
    # reflect pads (2, 1) on (3,): dy (6,) fp32 (24 B) -> dx (3,) (12 B); each of the 6 dy
    # elements is added into its source: 6 FLOP
    w = work_of("PadGrad", [z(6)], {"pads": [2, 1], "mode": "reflect", "shape": [3]})
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written, w.matmul_flops) == (6, 0, 24, 12, 0)


def test_reduce_extremum_grad_work():
    # dy (2,3,1), x (2,3,4), y (2,3,1) fp32: 24 + 96 + 24 = 144 B read, dx (2,3,4) 96 B written;
    # compare, count ties, select: 3 FLOP per element of x = 72
    w = work_of("ReduceExtremumGrad", [z(2, 3, 1), z(2, 3, 4), z(2, 3, 1)])
    assert (w.flops, w.transcendentals, w.bytes_read, w.bytes_written) == (72, 0, 144, 96)


@pytest.mark.parametrize("dloss, dlogp, flops", [
    # scores (4,5): the softmax again (5 per score) and 4 row reciprocals (1 FLOP each) = 104;
    # with dloss: - onehot and scale, 2 per score (+40); with dlog_prob: 3 per score (+60)
    (True, False, 144), (False, True, 164), (True, True, 204)])
def test_softmax_cross_entropy_grad_work(dloss, dlogp, flops):
    ins = [z() if dloss else None, z(4, 5) if dlogp else None, z(4, 5), np.zeros(4, I64)]
    w = work_of("SoftmaxCrossEntropyLossGrad", ins)
    # one exp per score and one reciprocal per row
    assert (w.flops, w.transcendentals) == (flops, 20 + 4)
    # dloss 4 B, dlog_prob 80 B, scores 80 B, labels 32 B read; dx 80 B written
    assert (w.bytes_read, w.bytes_written) == (4 * dloss + 80 * dlogp + 112, 80)
