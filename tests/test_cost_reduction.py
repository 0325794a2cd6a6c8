"""The generic reduce kernel's launch and time (sim/cost/reduction.py).

Expected launches are worked by hand from ATen's ``setReduceConfig`` (aten/src/ATen/native/cuda/
Reduce.cuh): 512 threads at most, ``set_block_dimension``, warps split the inputs when each
thread keeps at least min(16 x block_height, 256) values, blocks split them when a thread still
has 256 or more and the grid is below SMs x 2048 / threads.
"""

import pytest

import sim
from sim.cost import op_cost
from sim.cost.reduction import block_dims, launch_config, reduction_time
from sim.errors import SpecError
from sim.graph import Graph, TensorSpec
from sim.hw import DeviceSpec, load_hardware, override
from sim.ops.work import Reduction, Work, reduction_layout


def h100() -> DeviceSpec:
    d = load_hardware("h100")
    assert isinstance(d, DeviceSpec)
    return d


def test_layout_of_common_reductions():
    # x.sum() of a vector; a bias gradient (column sum of [tokens, features]); a row mean;
    # a convolution's bias gradient over N, H, W of NCHW (two runs); global average pooling
    assert reduction_layout((65536,), (0,)) == Reduction(1, 65536, True, 1)
    assert reduction_layout((4096, 768), (0,)) == Reduction(768, 4096, False, 1)
    assert reduction_layout((8, 128, 768), (2,)) == Reduction(1024, 768, True, 1)
    assert reduction_layout((32, 64, 56, 56), (0, 2, 3)) == Reduction(64, 32 * 56 * 56, True, 2)
    assert reduction_layout((32, 2048, 7, 7), (2, 3)) == Reduction(32 * 2048, 49, True, 1)
    # size-1 axes do not count; nothing reduced is no reduction
    assert reduction_layout((1, 768, 1), (0, 2)) is None
    assert reduction_layout((4, 1, 8), (1,)) is None


def test_block_dimension_by_hand():
    assert block_dims(16384, 1, 512) == (512, 1)   # one long row: every thread along it
    assert block_dims(49, 65536, 512) == (32, 16)  # short rows: a warp per row, 16 rows
    assert block_dims(32, 64, 128) == (32, 4)      # 4-wide output vectors: 512 / 4 threads


def test_full_sums_by_hand():
    # 64K fp32: 16-byte loads (4 values), 65536 / 4 = 16384 > 512 -> 512 x 1 threads, each
    # with 65536 / 512 = 128 values >= 16 (warps split, height 1), 128 < 256: one block,
    # 128 / 4 = 32 load steps
    c = launch_config(Reduction(1, 65536, True), 4, 132)
    assert (c.block, c.grid, c.values_per_thread, c.steps) == ((512, 1), (1, 1), 128, 32)
    assert not c.global_reduce
    # bf16: 8 values per 16-byte load, half the steps
    assert launch_config(Reduction(1, 65536, True), 2, 132).steps == 16
    # 16M fp32: 32768 values per thread; target 132 x 2048 / 512 = 528 blocks;
    # max(min(528, 32768 / 16), 32768 / 256) = 528 blocks per output, 63 values each
    c = launch_config(Reduction(1, 16 * 2**20, True), 4, 132)
    assert (c.grid, c.values_per_thread, c.global_reduce) == ((1, 528), 63, True)


def test_column_sums_by_hand():
    # bias gradient of a [64, 128] fp32 activation: 4-wide output vectors -> dim0 32, 128
    # threads max -> 32 x 4 threads; 64 values >= min(4 x 16, 256): warps split the rows ->
    # 16 values per thread, 4 rows (vt0) per step; 128 / 4 / 32 = 1 block
    c = launch_config(Reduction(128, 64, False), 4, 132)
    assert (c.block, c.grid, c.values_per_thread, c.steps) == ((32, 4), (1, 1), 16, 4)
    # [64, 10]: 2-wide vectors, 5 of them -> 4 lanes x 64 warps (256 threads max); 64 < 256:
    # each warp takes its own outputs, so 5 threads each walk all 64 rows: 16 steps
    c = launch_config(Reduction(10, 64, False), 4, 132)
    assert (c.block, c.grid, c.values_per_thread, c.steps) == ((4, 64), (1, 1), 64, 16)


def test_time_is_launch_plus_the_longer_of_chain_and_stream():
    h = h100()
    rt = h.arch.reduction["step_round_trips"]
    lat = h.main_memory.latency_s
    # one block of 512 threads, 32 dependent steps: far longer than streaming 256 KB
    n = 65536
    w = Work(flops=n, bytes_read=4 * n, bytes_written=4, reduction=Reduction(1, n, True))
    c = op_cost(w, h, "fp32")
    assert c.time_s == pytest.approx(h.launch_s + 32 * rt * lat)
    assert c.bound == "memory" and 32 * rt * lat > 4 * n / h.main_memory.achievable_Bps
    # 128M fp32: 262144 values per thread -> max(min(528, 16384), 1024) = 1024 blocks (two
    # waves of 528) of 256 values, 64 steps each: 2 x 64 x 0.44 us is well under the 180 us
    # HBM stream, which binds; the cross-block combine costs the semaphore memset's launch
    n = 128 * 2**20
    w = Work(flops=n, bytes_read=4 * n, bytes_written=4, reduction=Reduction(1, n, True))
    c = op_cost(w, h, "fp32")
    assert c.launch_s == pytest.approx(2 * h.launch_s)
    assert c.time_s == pytest.approx(2 * h.launch_s + 4 * n / h.main_memory.achievable_Bps)


def test_waves_multiply_the_chain():
    # global average pooling of ResNet-50's last layer at batch 32: 65536 rows of 49 -> blocks of
    # 32 x 16 threads, 16 rows each: 4096 blocks, 4 per SM resident (2048 / 512): 8 waves of
    # one step (49 values per row over 32 lanes: 2 each, 4 per step)
    h = h100()
    red = Reduction(32 * 2048, 49, True)
    c = launch_config(red, 2, 132)
    assert (c.block, c.blocks, c.steps) == ((32, 16), 4096, 1)
    t = reduction_time(red, h, 2)
    assert t is not None
    assert t.chain_s == pytest.approx(8 * h.arch.reduction["step_round_trips"] * h.main_memory.latency_s)


def test_ops_carry_their_layout_into_the_simulation():
    # a ReduceSum node over axis 0 of [64, 10]: 16 dependent steps of one block on the H100
    g = Graph("g")
    x = g.add_input("x", TensorSpec((64, 10), "fp32"))
    g.set_outputs(g.add_node("ReduceSum", [x], None, {"axes": [0], "keepdims": 0}, name="s"))
    g.verify()
    assert g.work("s").reduction == Reduction(10, 64, False)
    h = h100()
    r = sim.simulate(g, h, host_inputs=False, cache_reuse=False)
    chain = 16 * h.arch.reduction["step_round_trips"] * h.main_memory.latency_s
    assert r.makespan_s == pytest.approx(h.launch_s + chain)


def test_global_average_pool_is_a_spatial_mean():
    g = Graph("g")
    x = g.add_input("x", TensorSpec((32, 2048, 7, 7), "fp16"))
    g.set_outputs(g.add_node("GlobalAveragePool", [x], None, {}, name="p"))
    g.verify()
    assert g.work("p").reduction == Reduction(32 * 2048, 49, True)


def test_no_reduction_section_keeps_the_second_pass():
    h = override(h100(), {"arch.reduction": {}})
    assert isinstance(h, DeviceSpec)
    n = 16 * 2**20
    w = Work(flops=n, bytes_read=4 * n, bytes_written=4, reduction=Reduction(1, n, True))
    assert op_cost(w, h, "fp32").launch_s == pytest.approx(2 * h.launch_s)


def test_unknown_reduction_field_is_refused():
    with pytest.raises(SpecError, match="reduction"):
        override(h100(), {"arch.reduction": {"step_latency": 1.0}})
