"""Fusion pass: numerics unchanged, FLOPs unchanged, fewer nodes and fewer bytes."""

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx_nets import bert_layers, conv_bn_relu_block

from sim.exec import execute
from sim.frontends.onnx_import import import_model
from sim.graph import Graph, TensorSpec
from sim.ops.work import GemmShape
from sim.passes.fusion import fuse

RNG = np.random.default_rng(0)


def _bytes(g):
    return sum(g.work(n).bytes for n in g)


def test_bert_layer_fuses():
    m = bert_layers(batch=2, seq=8, hidden=32, heads=4, ffn=64)
    g = import_model(m)
    f = fuse(g)
    x = RNG.standard_normal((2, 8, 32)).astype(np.float32)
    (ref,) = ReferenceEvaluator(m).run(None, {"x": x})
    a = execute(g, {"x": x})[g.outputs[0]]
    b = execute(f, {"x": x})[f.outputs[0]]
    np.testing.assert_allclose(a, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    assert len(f) <= len(g) // 2, (len(g), len(f))
    assert f.flops == g.flops
    assert _bytes(f) < 0.75 * _bytes(g)
    fused = [n for n in f if n.op == "Fused"]
    # MatMul + bias Add chains and the exporter's 5-op GELU end up in one node
    assert any(n.meta["fused_ops"][:2] == ["MatMul", "Add"] and "Erf" in n.meta["fused_ops"]
               for n in fused)
    names = [name for n in fused for name in n.meta["fused"]]
    assert len(names) == len(set(names)) and set(names) <= set(g.nodes)
    # every Transpose feeds a MatMul (head split, K^T, head merge) and becomes its prologue:
    # no Transpose kernel is left, and each one sits in the group of the MatMul it feeds
    transposes = [n for n in g if n.op == "Transpose"]
    assert transposes and not [n for n in f if n.op == "Transpose"]
    for t in transposes:
        (group,) = [n for n in fused if t.name in n.meta["fused"]]
        assert "MatMul" in group.meta["fused_ops"]
        assert group.meta["fused_ops"].index("Transpose") < group.meta["fused_ops"].index("MatMul")


def test_sibling_projections_merge_into_one_gemm():
    # q, k, v = x @ wq, x @ wk, x @ wv, each through its own view of x, then added up
    g = Graph("qkv")
    x = g.add_input("x", TensorSpec((2, 4, 8)))
    outs = []
    for name in "qkv":
        w = g.add_param(f"w{name}", TensorSpec((8, 6)))
        (flat,) = g.add_node("Reshape", [x], name=f"{name}.flat", attrs={"shape": [8, 8]})
        (y,) = g.add_node("MatMul", [flat, w], name=f"{name}.mm")
        outs.append(y)
    (s1,) = g.add_node("Add", outs[:2], name="s1")
    (s2,) = g.add_node("Add", [s1, outs[2]], name="s2")
    g.set_outputs([s2])
    f = fuse(g.verify())
    (mm,) = [n for n in f if n.op == "Fused" and n.meta["fused_ops"].count("MatMul") == 3]
    w = f.work(mm)
    # one 8 x 18 x 8 GEMM (n = 3 x 6); x read once (64 fp32 = 256 B) although three views of it
    # come in, and the three 8x6 weights (3 x 192 B). The first Add (q + k) joins the group as
    # k's epilogue, so q and k stay inside: s1 and v are written (2 x 192 B); s2 reads them
    assert sorted(mm.meta["fused_ops"]) == ["Add", "MatMul", "MatMul", "MatMul"]
    assert w.gemms == (GemmShape(8, 18, 8),) and w.matmul_flops == 3 * 2 * 8 * 6 * 8
    assert (w.bytes_read, w.bytes_written) == (256 + 3 * 192, 2 * 192)
    feeds = {"x": RNG.standard_normal((2, 4, 8)).astype(np.float32)}
    np.testing.assert_allclose(execute(f, feeds)[s2], execute(g, feeds)[s2], rtol=1e-6)


def test_transpose_prologue_only_for_a_single_matrix_consumer():
    # x -> Transpose -> MatMul joins; y -> Transpose -> (Relu and MatMul) stays a kernel
    g = Graph("t")
    x = g.add_input("x", TensorSpec((4, 3)))
    y = g.add_input("y", TensorSpec((4, 3)))
    w = g.add_param("w", TensorSpec((4, 5)))
    (xt,) = g.add_node("Transpose", [x], name="tx", attrs={"perm": [1, 0]})
    (a,) = g.add_node("MatMul", [xt, w], name="mx")
    (yt,) = g.add_node("Transpose", [y], name="ty", attrs={"perm": [1, 0]})
    (r,) = g.add_node("Relu", [yt], name="ry")
    (b,) = g.add_node("MatMul", [yt, w], name="my")
    g.set_outputs([a, r, b])
    f = fuse(g.verify())
    groups = {n.name: n.meta.get("fused", [n.name]) for n in f}
    assert ["tx", "mx"] in groups.values() and ["ty", "ry"] in groups.values()
    assert ["my"] in groups.values()
    feeds = {"x": RNG.standard_normal((4, 3)).astype(np.float32),
             "y": RNG.standard_normal((4, 3)).astype(np.float32)}
    want, got = execute(g, feeds), execute(f, feeds)
    for o in g.outputs:
        np.testing.assert_array_equal(got[o], want[o])
    # the fused MatMul reads x (48 B) and w (80 B) and writes a (60 B): the transposed copy
    # of x never goes to memory
    (mx,) = [n for n in f if n.meta.get("fused") == ["tx", "mx"]]
    w_mx = f.work(mx)
    assert (w_mx.bytes_read, w_mx.bytes_written) == (48 + 80, 60)


def test_conv_bn_relu_residual_fuses():
    m = conv_bn_relu_block()
    g = import_model(m)
    f = fuse(g)
    assert [n.meta["fused_ops"] for n in f] == [
        ["Conv", "BatchNormalization", "Relu"],
        ["Conv", "BatchNormalization", "Add", "Relu"],
    ]
    x = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    (ref,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_allclose(execute(f, {"x": x})[f.outputs[0]], ref, rtol=1e-4, atol=1e-5)
    assert f.flops == g.flops


def test_work_of_fused_node_by_hand():
    # x[4,8] @ w[8,8] + b[8] -> relu: FLOPs 2*4*8*8 + 32 + 32; bytes: x, w, b in, y out only
    g = Graph("mlp")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_param("w", TensorSpec((8, 8)))
    g.add_param("b", TensorSpec((8,)))
    g.add_node("MatMul", ["x", "w"], ["h"])
    g.add_node("Add", ["h", "b"], ["h2"])
    g.add_node("Relu", ["h2"], ["y"])
    g.set_outputs(["y"])
    f = fuse(g)
    (n,) = list(f)
    w = f.work(n)
    assert w.flops == 512 + 32 + 32 and w.matmul_flops == 512
    assert w.bytes_read == (32 + 64 + 8) * 4 and w.bytes_written == 32 * 4
    assert len(w.gemms) == 1 and (w.gemms[0].m, w.gemms[0].n, w.gemms[0].k) == (4, 8, 8)
    assert n.meta["fused"] == ["matmul", "add", "relu"]


def test_intermediate_used_elsewhere_becomes_output_and_aliases():
    g = Graph("branch")
    g.add_input("x", TensorSpec((3, 4)))
    g.add_node("Reshape", ["x"], ["xr"], {"shape": [4, 3]}, name="alone")
    g.add_node("Relu", ["x"], ["r"])
    g.add_node("Neg", ["r"], ["n"])
    g.add_node("Transpose", ["r"], ["t"], {"perm": [1, 0]})  # not elementwise: reads r
    g.add_node("Reshape", ["t"], ["rt"], {"shape": [12]}, name="view")
    g.set_outputs(["n", "rt", "xr"])
    f = fuse(g)
    # the Reshape of t would only leave the group as a second copy of t: it stays a free view
    assert [n.meta.get("fused_ops") for n in f] == [None, ["Relu", "Neg"], None, None]
    assert f.nodes["alone"].meta["alias_of"] == "x" and f.work("alone").bytes == 0
    assert f.nodes["view"].meta["alias_of"] == "t" and f.work("view").bytes == 0
    (fz,) = [n for n in f if n.meta.get("fused_ops") == ["Relu", "Neg"]]
    assert set(fz.outputs) == {"r", "n"}  # r is also read outside the group
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    out = execute(f, {"x": x})
    np.testing.assert_array_equal(out["n"], -np.maximum(x, 0))
    np.testing.assert_array_equal(out["rt"], np.maximum(x, 0).T.reshape(12))


def test_input_graph_untouched():
    m = conv_bn_relu_block()
    g = import_model(m)
    before = [(n.name, n.op) for n in g]
    fuse(g)
    assert [(n.name, n.op) for n in g] == before


def test_node_reading_two_constants():
    from onnx import TensorProto, helper, numpy_helper

    c = [helper.make_node("Constant", [], [f"c{i}"],
                          value=numpy_helper.from_array(np.array(v, np.float32)))
         for i, v in enumerate((2.0, 3.0))]
    nodes = [*c, helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Where", ["m", "c0", "c1"], ["w"]),
             helper.make_node("Add", ["r", "w"], ["y"])]
    m = helper.make_model(helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                     helper.make_tensor_value_info("m", TensorProto.BOOL, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)])
    g = import_model(m, fold=False)
    f = fuse(g)
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    mask = np.array([True, False, True])
    np.testing.assert_array_equal(execute(f, {"x": x, "m": mask})["y"],
                                  np.maximum(x, 0) + np.where(mask, 2.0, 3.0))


def test_training_graph_fuses_backward_chains():
    from sim.passes.autodiff import gradients

    g = Graph("mlp")
    g.add_input("x", TensorSpec((4, 8)))
    g.add_param("w", TensorSpec((8, 8)))
    g.add_param("b", TensorSpec((8,)))
    g.add_node("MatMul", ["x", "w"], ["h"])
    g.add_node("Add", ["h", "b"], ["h2"])
    g.add_node("Relu", ["h2"], ["y"])
    g.add_input("dy", TensorSpec((4, 8)))
    tg, grads = gradients(g, ["y"], ["w", "b"], ["dy"])
    tg.set_outputs(["y", grads["w"], grads["b"]])
    f = fuse(tg)
    assert len(f) < len(tg) and f.flops == tg.flops
    assert any("ReluGrad" in n.meta.get("fused_ops", []) for n in f)
    feeds = {"x": RNG.standard_normal((4, 8)).astype(np.float32),
             "dy": RNG.standard_normal((4, 8)).astype(np.float32)}
    a, b = execute(tg, feeds), execute(f, feeds)
    for k in tg.outputs:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6)


def test_prologue_group_keeps_the_matrix_ops_compute_dtype():
    # a TF32 graph: the MatMul computes on the TF32 tensor cores; the group its Transpose
    # prologue opens must still say so (it used to take the Transpose's meta, and so ran fp32)
    from sim.engine import compute_dtype
    from sim.passes.precision import cast_graph

    g = Graph("t")
    x = g.add_input("x", TensorSpec((256, 128)))
    w = g.add_param("w", TensorSpec((256, 512)))
    (xt,) = g.add_node("Transpose", [x], name="tx", attrs={"perm": [1, 0]})
    (a,) = g.add_node("MatMul", [xt, w], name="mx")
    (y,) = g.add_node("Relu", [a], name="r")
    g.set_outputs([y])
    f = fuse(cast_graph(g.verify(), "tf32"))
    (mx,) = [n for n in f if n.op == "Fused"]
    assert mx.meta["fused"] == ["tx", "mx", "r"]
    assert compute_dtype(f, mx) == "tf32"


def test_rope_and_cache_write_are_one_kernel_per_layer():
    # an engine's attention preamble: the q/k/v head transposes, RoPE on q and k and the
    # KV-cache append run as one kernel (TensorRT-LLM's applyBiasRopeUpdateKVCache), which
    # writes only this step's cache rows; values as the unfused graph computes them
    import sim

    small = {"n_layer": 2, "batch": 2, "seq": 3, "kv_cache": 8, "d": 32, "heads": 4, "kv_heads": 2,
             "ffn": 64, "vocab": 50}
    g = sim.load("llama2-7b", **small)
    f = fuse(g)
    pre = [n for n in f.nodes.values() if n.op == "Fused" and "RotaryEmbedding" in n.meta["fused_ops"]]
    assert len(pre) == 2
    for n in pre:
        assert sorted(n.meta["fused_ops"]) == sorted(["Transpose"] * 3 + ["RotaryEmbedding"] * 2
                                                     + ["TensorScatter"] * 2)
        # reads q, k, v (one step's rows) and writes rotated q plus the new cache rows:
        # [2 sequences, 3 tokens] x (q 4 heads + k 2 + v 2) x head size 8, fp32
        rows = 2 * 3 * 8 * 4
        w = f.work(n)
        assert w.bytes_written == rows * (4 + 2 + 2)
        assert w.bytes_read >= rows * (4 + 2 + 2)
        assert w.bytes_read < rows * (4 + 2 + 2) + 2 * (2 * 2 * 8 * 8 * 4)  # far less than the caches
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 50, (2, 3)), "cache_lens": np.array([2, 5])}
    for t, s in g.inputs.items():
        if t not in feeds:
            feeds[t] = rng.standard_normal(s.shape).astype(np.float32)
    want, got = execute(g, feeds), execute(f, feeds)
    for o in g.outputs:
        np.testing.assert_allclose(got[o], want[o], rtol=1e-5, atol=1e-6)
