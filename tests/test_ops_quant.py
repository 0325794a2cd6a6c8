"""MatMulNBits (com.microsoft semantics): values against a hand dequantisation, the
quantisation error bound, work against hand counts."""

import numpy as np
import pytest
from helpers import one_op_graph, run_op

from sim.ops.quant import pack, quantize


def _hand_dequant(b, scales, bits, bs, K):
    """Unpack by hand: 4-bit values two per byte, low nibble first; subtract 2^(bits-1)."""
    N = b.shape[0]
    flat = b.reshape(N, -1)
    if bits == 4:
        vals = np.empty((N, flat.shape[1] * 2), np.int64)
        vals[:, 0::2] = flat & 15
        vals[:, 1::2] = flat >> 4
    else:
        vals = flat.astype(np.int64)
    return (vals[:, :K] - 2 ** (bits - 1)) * np.repeat(scales, bs, axis=1)[:, :K]


@pytest.mark.parametrize("bits", [4, 8])
def test_matmulnbits_values_and_error_bound(bits):
    rng = np.random.default_rng(bits)
    K, N, bs = 64, 5, 32
    w = rng.standard_normal((K, N))
    b, scales = quantize(w.T, bits, bs)
    deq = _hand_dequant(b, scales, bits, bs, K)
    # round-to-nearest: every weight within half a step of its block's scale
    assert np.all(np.abs(deq - w.T) <= np.repeat(scales, bs, axis=1) / 2 + 1e-12)
    a = rng.standard_normal((2, 3, K)).astype(np.float32)
    (y,) = run_op("MatMulNBits", [a, b, scales.astype(np.float32)],
                  {"K": K, "N": N, "bits": bits, "block_size": bs})
    np.testing.assert_allclose(y, a @ deq.T.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_pack_low_nibble_first():
    q = np.array([[1, 2, 3, 4] + [8] * 12])
    assert pack(q, 4, 16)[0, 0, :2].tolist() == [1 + 2 * 16, 3 + 4 * 16]


def test_matmulnbits_work_hand_count():
    K, N, bs, M = 256, 64, 128, 3
    arrs = [np.zeros((M, K), np.float32), np.zeros((N, 2, 64), np.uint8), np.zeros((N, 2), np.float32)]
    w = one_op_graph("MatMulNBits", arrs, {"K": K, "N": N, "bits": 4, "block_size": bs}).work("node")
    assert w.matmul_flops == 2 * M * N * K
    assert w.flops == 2 * M * N * K + 2 * N * K  # plus a subtract and a multiply per weight
    # A in fp32, the weight at half a byte per value, one fp32 scale per block, Y in fp32
    assert w.bytes_read == 4 * M * K + N * K // 2 + 4 * N * 2
    assert w.bytes_written == 4 * M * N
