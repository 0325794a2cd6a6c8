"""fp32 (CUDA-core) skinny GEMMs and GEMVs on H100 against hand numbers (sim/cost/gpu.py)."""

import pytest

from sim.cost import op_cost
from sim.hw import DeviceSpec, load_hardware
from sim.ops.work import GemmShape, Work

# the fitted values pinned to round numbers, so the hand counts below do not move with a refit
PINNED = {"launch": "0 us", "units.vector.efficiency.fp32": 0.75, "arch.tile_overhead.fp32": 1980,
          "arch.stream_inflight.fp32": 3000, "arch.gemv_inflight.fp32": 20000,
          "arch.gemv_round_trips.fp32": 2, "arch.tiles.vector": [[32, 128]]}


def dev(**changes) -> DeviceSpec:
    d = load_hardware("h100", **{**PINNED, **changes})
    assert isinstance(d, DeviceSpec)
    return d


def gemm(m: int, n: int, k: int) -> Work:
    fl = 2.0 * m * n * k
    return Work(flops=fl, matmul_flops=fl, bytes_read=(m * k + k * n) * 4, bytes_written=m * n * 4,
                gemms=(GemmShape(m, n, k),))


def test_skinny_fp32_gemm_splits_k_across_idle_sms():
    # M = 8 against a 768 x 768 fp32 weight on 32 x 128 CUDA-core tiles: 6 tiles on 132 SMs.
    # By hand: per-SM rate 66.9 TFLOP/s x 0.75 / 132 = 380.11 GFLOP/s, so a k-step of the tile
    # is 2 x 32 x 128 / 380.11e9 = 21.552 ns of math (longer than its shared-memory reads,
    # 64 threads x 16 x 4 B / 250 GB/s = 16.384 ns, and its load, 136 x 4 B / 126.72 GB/s).
    # One fix-up hand-off of an 8 x 128 fp32 partial: 2 x 0.26 us + 2 x 4096 B / 126.72 GB/s
    # = 0.58465 us; tile overhead 1980 cycles = 1 us. With slices down to 8 of K (up to 22):
    #   s slices: ceil(768 / s) x 21.552 ns + 1 us + (s - 1) x 0.58465 us
    #   s = 4: 6.892 us, s = 5: 154 x 21.552 ns + 1 + 2.3386 = 6.658 us, s = 6: 6.682 us
    # so 5 slices, plus 2 x 0.6 us HBM fill/drain: 7.858 us. Whole K (split_k_min 1024):
    # 768 x 21.552 ns + 1 us + 1.2 us = 18.752 us.
    step = 2 * 32 * 128 / (66.9e12 * 0.75 / 132)
    handoff = 2 * 0.26e-6 + 2 * 8 * 128 * 4 / (64 * 1.98e9)
    split5 = 154 * step + 1e-6 + 4 * handoff + 1.2e-6
    assert split5 == pytest.approx(7.858e-6, rel=1e-3)
    c = op_cost(gemm(8, 768, 768), dev(), "fp32")
    assert c.compute_s == pytest.approx(split5, rel=1e-9)
    whole = op_cost(gemm(8, 768, 768), dev(**{"arch.skinny_split_k_min": {}}), "fp32")
    assert whole.compute_s == pytest.approx(768 * step + 2.2e-6, rel=1e-9)
    assert whole.compute_s == pytest.approx(18.752e-6, rel=1e-3)


def test_gemv_streams_at_its_own_in_flight_limit_plus_round_trips():
    # M = 1 against a 4096 x 11008 fp32 weight (B N-contiguous) runs as a GEMV. By hand with
    # 20000 elements in flight per SM, 0.6 us HBM latency, 3.35 TB/s:
    # 1 / (1 / 3.35e12 + 0.6e-6 / (132 x 20000 x 4)) = 2.8143 TB/s; bytes (11008 + 4096 +
    # 11008 x 4096) x 4 = 180.415 MB -> 64.106 us; plus 2 dependent round trips and the
    # 2 x 0.6 us fill/drain: 66.506 us.
    bw = 1 / (1 / 3.35e12 + 0.6e-6 / (132 * 20000 * 4))
    nbytes = (11008 + 4096 + 11008 * 4096) * 4
    expected = nbytes / bw + 2 * 0.6e-6 + 1.2e-6
    assert expected == pytest.approx(66.506e-6, rel=1e-4)
    assert op_cost(gemm(1, 4096, 11008), dev(), "fp32").compute_s == pytest.approx(expected, rel=1e-9)
    # without a GEMV limit of its own the GEMV streams at the skinny kernels' 3000 per SM
    slow = 1 / (1 / 3.35e12 + 0.6e-6 / (132 * 3000 * 4))
    plain = dev(**{"arch.gemv_inflight": {}, "arch.gemv_round_trips": {}})
    assert op_cost(gemm(1, 4096, 11008), plain, "fp32").compute_s == pytest.approx(
        nbytes / slow + 1.2e-6, rel=1e-9)
