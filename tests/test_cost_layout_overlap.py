"""Hand checks of the GEMM operand layout in the skinny stream and of the softmax/GEMM overlap
of fused attention kernels (sim.cost.gpu)."""

import pytest

from sim.cost import gpu, op_cost
from sim.graph import Graph, TensorSpec
from sim.hw import load_hardware
from sim.ops.work import GemmShape, Work
from sim.passes.fusion import fuse


def _model(**kw):
    base = dict(rate_per_sm=1e15, sms=132, tiles=((128, 128),), load_Bps=1e15, elem_bytes=2,
                split_k_min=1 << 62, gemv_rate=1e18, skinny_max=128, gemv_max=1,
                stream_s_per_byte=5e-12, kmajor_s_per_byte=1e-12)
    base.update(kw)
    return gpu.GemmModel(**base)


def test_skinny_stream_rate_follows_the_weight_layout():
    # M = 1, N = K = 1000, bf16: x (1000) + y (1000) + W (10^6) elements = 2,004,000 B
    gm = _model()
    nn = gpu.gemm_time(GemmShape(1, 1000, 1000), gm)
    tn = gpu.gemm_time(GemmShape(1, 1000, 1000, b_kmajor=True), gm)
    assert nn == pytest.approx(2.004e6 * 5e-12)
    assert tn == pytest.approx(2.004e6 * 1e-12)


def test_kmajor_stream_is_the_copy_rate_of_the_spec():
    h = load_hardware("h100", **{"memory.hbm.bandwidth": "2 TB/s", "memory.hbm.efficiency": 0.5})
    assert gpu.kmajor_s_per_byte(h) == pytest.approx(1e-12)  # 1 / (2e12 x 0.5)


def _graph(op, inputs, attrs, pre=None):
    g = Graph("t")
    names = [g.add_input(f"x{i}", TensorSpec(s, "bf16")) for i, s in enumerate(inputs)]
    if pre is not None:
        names[1] = g.add_node("Transpose", [names[1]], None, {"perm": pre}, name="tr")[0]
    out = g.add_node(op, names, None, attrs, name="node")
    g.set_outputs(out)
    return g.verify()


def test_gemm_transb_and_a_transposed_matmul_operand_are_k_major():
    g = _graph("Gemm", [(4, 64), (32, 64)], {"transB": 1})
    assert g.work("node").gemms[0].b_kmajor
    g = _graph("Gemm", [(4, 64), (64, 32)], {})
    assert not g.work("node").gemms[0].b_kmajor
    # a weight stored [N, K] and transposed into the MatMul: fused, it is read through strides
    fused = fuse(_graph("MatMul", [(4, 64), (32, 64)], {}, pre=[1, 0]))
    (node,) = [n for n in fused.topo_order() if n.op == "Fused"]
    (gemm,) = fused.work(node.name).gemms
    assert (gemm.m, gemm.n, gemm.k, gemm.b_kmajor) == (4, 32, 64, True)


def test_decode_linear_streams_weight_at_copy_rate_when_k_major():
    h = load_hardware("h100")
    m, n, k = 1, 12288, 5376
    nbytes = 2.0 * (m * k + k * n + m * n)
    tn = op_cost(Work(flops=2.0 * m * n * k, matmul_flops=2.0 * m * n * k, bytes_read=2.0 * (m * k + k * n),
                      bytes_written=2.0 * m * n, gemms=(GemmShape(m, n, k, b_kmajor=True),)), h, "bf16")
    # the stream at HBM peak x copy efficiency, plus two HBM latencies, plus the launch floor
    by_hand = h.launch_s + nbytes / h.main_memory.achievable_Bps + 2 * h.main_memory.latency_s
    assert tn.time_s == pytest.approx(by_hand, rel=1e-6)


def test_overlapped_hides_the_shorter_part():
    assert gpu.overlapped(3.0, 1.0, 1.0) == 3.0
    assert gpu.overlapped(1.0, 3.0, 0.25) == pytest.approx(3.75)
    assert gpu.overlapped(2.0, 2.0, 0.0) == 4.0


def _attention(s, causal, softcap=0.0, d=64):
    q = TensorSpec((1, 2, s, d), "bf16")
    g = Graph("a")
    names = [g.add_input(f"{c}", q) for c in "qkv"]
    attrs = {"is_causal": int(causal), **({"softcap": softcap} if softcap else {})}
    outs = g.add_node("Attention", names, ["y", "", "", ""], attrs, name="node")
    g.set_outputs([o for o in outs if o])
    return g.verify().work("node")


def test_key_blocks_per_row_counts_pairs_per_query_row():
    # non-causal S = 512: every row attends 512 keys = 4 blocks of 128
    assert gpu.key_blocks_per_row(_attention(512, False)) == pytest.approx(4.0)
    # causal S = 512: 512 x 513 / 2 pairs over 512 rows = 256.5 keys = 2.004 blocks
    assert gpu.key_blocks_per_row(_attention(512, True)) == pytest.approx(256.5 / 128)
    # a softcap adds a tanh per pair: the row count read from the transcendentals stays right
    assert gpu.key_blocks_per_row(_attention(512, True, softcap=30.0)) == pytest.approx(256.5 / 128)
    # fewer keys than one block: the whole softmax is exposed (one block)
    assert gpu.key_blocks_per_row(_attention(64, False)) == 1.0


def test_query_block_waves():
    # 2 heads x 512 rows = 8 blocks of 128 queries: one wave on 132 SMs
    assert gpu.query_block_waves(_attention(512, False), 132) == 1
    # 2 heads x 16896 rows = 264 blocks = two full waves of 132; one more block: a third
    assert gpu.query_block_waves(_attention(16896, True), 132) == 2
    assert gpu.query_block_waves(_attention(16896 + 64, True), 132) == 3
    assert gpu.query_block_waves(Work(flops=1.0, gemms=(GemmShape(8, 8, 8),)), 132) == 0


def test_attention_overlap_leaves_the_last_key_block_exposed():
    w = _attention(512, False)  # 4 key blocks: 3/4 of the shorter part can hide; one wave of blocks
    on = load_hardware("h100", **{"arch.softmax_overlap.cudnn": 1.0, "memory.hbm.latency": "1 us"})
    assert gpu.matrix_and_vector_s(w, on, 4.0, 2.0) == pytest.approx(4.0 + 2.0 - 0.75 * 2.0 + 1e-6)
    off = load_hardware("h100", **{"arch.attention_kernel": "flash2", "memory.hbm.latency": "1 us"})
    assert gpu.matrix_and_vector_s(w, off, 4.0, 2.0) == pytest.approx(6.0 + 1e-6)  # in sequence
    plain = Work(flops=1.0, matmul_flops=1.0, gemms=(GemmShape(8, 8, 8),))
    assert gpu.matrix_and_vector_s(plain, on, 4.0, 2.0) == 6.0


def test_attention_pays_its_block_cycles_per_key_block_step():
    # non-causal S = 512, 2 heads: 2 x 512 x 512 pairs = 32 steps of 128 x 128, spread over
    # 132 SMs; 1000 cycles each at 1.98 GHz: 1000 x 32 / 132 / 1.98e9 s on top of the rest
    w = _attention(512, False)
    base = {"memory.hbm.latency": "1 us", "arch.softmax_overlap.cudnn": 1.0}
    none = load_hardware("h100", **base, **{"arch.attention_block_cycles.cudnn": 0})
    some = load_hardware("h100", **base, **{"arch.attention_block_cycles.cudnn": 1000})
    extra = gpu.matrix_and_vector_s(w, some, 4e-6, 2e-6) - gpu.matrix_and_vector_s(w, none, 4e-6, 2e-6)
    assert extra == pytest.approx(1000 * 32 / 132 / 1.98e9, rel=1e-9)
    # the cycles belong to the kernel that runs: FlashAttention-2 here has none of its own
    fa2 = load_hardware("h100", **base, **{"arch.attention_block_cycles.cudnn": 1000,
                                          "arch.attention_kernel": "flash2"})
    assert gpu.block_steps_s(w, fa2.arch) == 0.0
    # head size 128 has twice the FLOPs of 64 in the same steps: the overhead per FLOP halves,
    # which is why d = 64 runs at a lower FLOP rate
    w128 = _attention(512, False, d=128)
    assert w128.matmul_flops == pytest.approx(2 * w.matmul_flops)
    assert gpu.block_steps_s(w128, some.arch) == pytest.approx(gpu.block_steps_s(w, some.arch), rel=1e-9)
