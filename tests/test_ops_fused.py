"""The Fused op (sim/ops/fused.py, made by sim.passes.fusion): a sub-graph run as one node."""

import numpy as np
from helpers import one_op_graph, run_op

import sim.ops.fused  # noqa: F401

SUB = {
    "inputs": ["a", "w", "b"],
    "outputs": ["y"],
    "nodes": [
        {"op": "MatMul", "inputs": ["a", "w"], "outputs": ["h"], "attrs": {}},
        {"op": "Add", "inputs": ["h", "b"], "outputs": ["h2"], "attrs": {}},
        {"op": "Relu", "inputs": ["h2"], "outputs": ["y"], "attrs": {}},
    ],
    "dtypes": {"h": "fp32", "h2": "fp32", "y": "fp32"},
}


def test_fused_kernel_and_work_by_hand():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    (y,) = run_op("Fused", [a, w, b], SUB)
    np.testing.assert_allclose(y, np.maximum(a @ w + b, 0), rtol=1e-6)
    work = one_op_graph("Fused", [a, w, b], SUB).work("node")
    # 2*2*3*4 GEMM FLOPs + 8 adds + 8 maxes; bytes: a, w, b read, y written
    assert work.flops == 48 + 8 + 8 and work.matmul_flops == 48
    assert work.bytes_read == (6 + 12 + 4) * 4 and work.bytes_written == 8 * 4


def test_fused_rounds_intermediates_to_their_dtype():
    sub = {"inputs": ["x"], "outputs": ["z"],
           "nodes": [{"op": "Add", "inputs": ["x", "x"], "outputs": ["t"], "attrs": {}},
                     {"op": "Sub", "inputs": ["t", "x"], "outputs": ["z"], "attrs": {}}],
           "dtypes": {"t": "fp16", "z": "fp32"}}
    x = np.array([1.0 + 2.0**-12], np.float32)  # 2x rounds to 2.0 in fp16
    (z,) = run_op("Fused", [x], sub)
    assert z[0] == np.float32(2.0) - x[0]
