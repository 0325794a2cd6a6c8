"""FP8 inference as deployments run it (``cast_graph(g, "fp8")``): E4M3 GEMMs on weight
parameters in a bf16 model, checked against byte counts by hand and a NumPy reference."""

import ml_dtypes
import numpy as np
import pytest
from helpers import moe_layer

import sim
from sim.engine import compute_dtype
from sim.errors import GraphError
from sim.exec import execute
from sim.graph import Graph, TensorSpec
from sim.passes.fusion import fuse
from sim.passes.precision import cast_graph, store_as
from sim.passes.runtime import kernel_count, runtime_graph

M, K, N = 64, 256, 128


def _block(tied: bool = False) -> Graph:
    """x -> LayerNorm -> Gemm(W, bias) -> Relu -> MatMul with another activation (scores),
    optionally with W also read by a Gather (a tied embedding)."""
    g = Graph("block")
    x = g.add_input("x", TensorSpec((M, K)))
    s = g.add_param("scale", TensorSpec((K,)), "ones")
    b0 = g.add_param("shift", TensorSpec((K,)), "zeros")
    w = g.add_param("w", TensorSpec((N, K)))
    bias = g.add_param("bias", TensorSpec((N,)), "zeros")
    (h,) = g.add_node("LayerNormalization", [x, s, b0], ["h"], {"axis": -1}, name="ln")
    (y,) = g.add_node("Gemm", [h, w, bias], ["y"], {"transB": 1}, name="fc")
    (r,) = g.add_node("Relu", [y], ["r"], name="act")
    (rt,) = g.add_node("Transpose", [r], ["rt"], {"perm": [1, 0]}, name="rt")
    (sc,) = g.add_node("MatMul", [r, rt], ["scores"], name="scores")
    outs = [sc]
    if tied:
        ids = g.add_input("ids", TensorSpec((4,), "int64"))
        (e,) = g.add_node("Gather", [w, ids], ["emb"], name="embed")
        outs.append(e)
    g.set_outputs(outs)
    return g.verify()


def test_weights_and_gemm_inputs_in_fp8_the_rest_in_bf16():
    h = cast_graph(_block(), "fp8")
    assert h.meta["dtype"] == "fp8"
    assert h.tensors["w"].dtype == "fp8"  # stored quantised: no cast per step
    assert {h.tensors[t].dtype for t in ("x", "scale", "bias", "h", "y", "r", "scores")} == {"bf16"}
    assert compute_dtype(h, h.nodes["fc"]) == "fp8"
    assert compute_dtype(h, h.nodes["scores"]) == "bf16"  # two activations: not an fp8 GEMM
    casts = sorted((h.tensors[n.inputs[0]].dtype, h.tensors[n.outputs[0]].dtype)
                   for n in h.nodes.values() if n.op == "Cast")
    # h quantised once; both operands of fc dequantised
    assert casts == [("bf16", "fp8"), ("fp8", "bf16"), ("fp8", "bf16")]
    assert h.param_bytes == N * K * 1 + (2 * K + N) * 2


def test_fused_fp8_gemm_reads_one_byte_operands():
    f = fuse(cast_graph(_block(), "fp8"))
    ops = {n.name: n.meta.get("fused_ops", [n.op]) for n in f.nodes.values()}
    ln = next(n for n in f.nodes.values() if "LayerNormalization" in ops[n.name])
    fc = next(n for n in f.nodes.values() if "Gemm" in ops[n.name])
    assert ops[ln.name] == ["LayerNormalization", "Cast"]  # the norm writes the fp8 copy
    assert ops[fc.name][:3] == ["Cast", "Cast", "Gemm"]  # dequantise on load
    # the norm: reads x, scale, shift in bf16, writes h in fp8
    wl = f.work(ln)
    assert (wl.bytes_read, wl.bytes_written) == (M * K * 2 + 2 * K * 2, M * K * 1)
    # the GEMM: reads h (fp8), W (fp8), bias (bf16); writes its bf16 result (here after Relu)
    wg = f.work(fc)
    assert wg.bytes_read == M * K * 1 + N * K * 1 + N * 2
    assert wg.bytes_written == M * N * 2
    assert compute_dtype(f, fc) == "fp8"


def test_fp8_gemm_runs_at_the_fp8_rate():
    # a compute-bound linear layer: the fp8 GEMM kernel is faster than the bf16 one by at
    # most the peak ratio (1979 / 989 TFLOP/s on h100), and faster than bf16 at all
    g = Graph("lin")
    x = g.add_input("x", TensorSpec((8192, 8192)))
    w = g.add_param("w", TensorSpec((8192, 8192)))
    g.add_node("Gemm", [x, w], ["y"], {"transB": 1}, name="fc")
    g.set_outputs(["y"])
    hw = sim.hardware("h100")

    def gemm_s(dtype):
        f = fuse(cast_graph(g.verify(), dtype))
        res = sim.simulate(f, hw, host_inputs=False)
        return sum(r["end_s"] - r["start_s"] for r in res.records()
                   if f.work(f.nodes[r["name"]]).matmul_flops)

    ratio = gemm_s("bf16") / gemm_s("fp8")
    assert 1.5 < ratio <= 1979 / 989.4 + 1e-6


def test_tied_weight_keeps_its_gemm_in_bf16():
    h = cast_graph(_block(tied=True), "fp8")
    assert h.tensors["w"].dtype == "bf16" and h.tensors["emb"].dtype == "bf16"
    assert compute_dtype(h, h.nodes["fc"]) == "bf16"
    assert not any(n.op == "Cast" for n in h.nodes.values())


def test_fp8_numerics_round_gemm_inputs_only():
    rng = np.random.default_rng(0)
    g = Graph("lin")
    x = g.add_input("x", TensorSpec((16, 32)))
    # weights on the E4M3 grid, so storing them is exact and the reference is unambiguous
    wv = (rng.integers(-8, 9, (32, 24)) / 16).astype(np.float32)
    w = g.add_param("w", TensorSpec((32, 24)), value=wv)
    (y,) = g.add_node("MatMul", [x, w], ["y"], name="fc")
    (z,) = g.add_node("Tanh", [y], ["z"], name="act")
    g.set_outputs([z])
    xv = rng.standard_normal((16, 32)).astype(np.float32)
    got = execute(cast_graph(g.verify(), "fp8"), {"x": xv})["z"].astype(np.float32)
    bf16, e4m3 = ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn
    xq = xv.astype(bf16).astype(e4m3).astype(np.float32)
    ref = np.tanh((xq @ wv).astype(bf16).astype(np.float32)).astype(bf16).astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2)
    # and not the all-fp8 graph's: its tanh output is rounded to E4M3 (3 mantissa bits)
    allfp8 = execute(store_as(g, "fp8"), {"x": xv})["z"].astype(np.float32)
    assert np.abs(allfp8 - ref).max() > 5 * np.abs(got - ref).max()


def test_eager_folds_dequantise_and_launches_one_quantise_per_activation():
    g = _block()
    bf16 = runtime_graph(g, "eager", "bf16")
    fp8 = runtime_graph(g, "eager", "fp8")
    assert kernel_count(fp8) == kernel_count(bf16) + 1  # the quantise of h
    fc = next(n for n in fp8.nodes.values() if n.op == "Fused")
    assert fc.meta["fused_ops"] == ["Cast", "Cast", "Gemm"]
    assert fp8.work(fc).bytes_read == M * K + N * K + N * 2


def test_cast_after_fusing_is_refused():
    with pytest.raises(GraphError, match="cast before fusing"):
        cast_graph(fuse(_block()), "fp8")


def test_simulate_with_dtype_fp8_launches_no_dequantise_kernel():
    res = sim.simulate(_block(), sim.hardware("h100"), dtype="fp8", host_inputs=False)
    ops = [r["op"] for r in res.records()]
    assert ops.count("Cast") == 1  # the quantise of h; both dequantises read inside the GEMM
    (gemm,) = [r for r in res.records() if r["op"] == "Fused"]
    assert gemm["dtype"] == "fp8"


def test_training_runs_all_three_gemms_of_a_linear_layer_in_fp8():
    # Transformer Engine's recipe: forward, data-gradient and weight-gradient GEMMs in fp8;
    # the weights the optimizer updates stay bf16 and are quantised once per step
    train = sim.training_graph(sim.load("mlp-mnist"), optimizer="sgd")
    h = cast_graph(train, "fp8")
    gemms = {n.name for n in h.nodes.values() if n.op == "Gemm"}
    fp8 = {n for n in gemms if compute_dtype(h, h.nodes[n]) == "fp8"}
    assert fp8 == gemms == {"fc1", "fc2", "fc2.grad", "fc2.grad_1", "fc1.grad_3"}
    assert h.tensors["fc1.weight"].dtype == h.tensors["fc2.weight"].dtype == "bf16"
    quantised = sorted(n.inputs[0] for n in h.nodes.values() if n.op == "Cast" and n.attrs["to"] == "fp8")
    # two weights, the two forward inputs, and the two incoming gradients (each once)
    assert quantised == sorted(["fc1.weight", "fc2.weight", "x", "relu1", "loss.grad", "relu1.grad"])
    assert sum(n.op == "Cast" and n.attrs["to"] == "bf16" for n in h.nodes.values()) == 2 * len(gemms)
    # each cast belongs to the layer and pass of the GEMM that first reads it (the cluster
    # model sums kernel times per layer and pass)
    assert h.nodes["loss.grad.quantize"].meta["forward"] == "fc2"
    assert h.nodes["fc1.weight.quantize"].meta == {"cast": "fp8", "layer": "fc1"}


def test_moe_experts_run_as_fp8_grouped_gemms():
    # FP8 MoE serving quantises the experts (vLLM's fp8 fused_moe): stored in fp8, and the
    # fused kernel reads one byte per weight of the k experts one token is routed to
    T, d, h, E, k = 1, 16, 32, 4, 2
    h8 = cast_graph(moe_layer(T, d, h, E, k), "fp8")
    assert {h8.tensors[w].dtype for w in ("w1", "w2", "w3")} == {"fp8"}
    assert h8.tensors["lg"].dtype == "bf16" and compute_dtype(h8, h8.nodes["moe"]) == "fp8"
    f = fuse(h8)
    (moe,) = [n for n in f.nodes.values() if n.op == "Fused" and "MoE" in n.meta["fused_ops"]]
    # x arrives quantised (fp8), the router logits in bf16, k of E experts' three matrices
    assert f.work(moe).bytes_read == T * d * 1 + T * E * 2 + k * 3 * d * h * 1


def test_fused_fp8_graph_computes_what_the_unfused_one_does():
    rng = np.random.default_rng(1)
    g = cast_graph(_block(), "fp8")
    feeds = {"x": rng.standard_normal((M, K)).astype(np.float32)}
    want, got = execute(g, feeds), execute(fuse(g), feeds)
    np.testing.assert_array_equal(np.asarray(got["scores"], np.float32),
                                  np.asarray(want["scores"], np.float32))


def test_megatron_kernels_write_the_fp8_copy_of_a_norm_output():
    # Transformer Engine's LayerNormLinear: the norm kernel writes the fp8 input of the GEMM
    from sim.passes.fusion import megatron_epilogues

    f = fuse(cast_graph(_block(), "fp8"), join=megatron_epilogues)
    ops = sorted(tuple(n.meta.get("fused_ops", [n.op])) for n in f.nodes.values())
    assert ("LayerNormalization", "Cast") in ops
    assert ("Cast", "Cast", "Gemm") in ops  # the dequantises still fold into the GEMM
    assert not any(n.op == "Cast" for n in f.nodes.values())
