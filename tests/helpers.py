"""Test helpers: one-op graphs, running them, and gradient checks by finite differences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.dtypes import from_numpy
from sim.exec import Executor
from sim.graph import Graph, TensorSpec
from sim.passes.autodiff import gradients


def one_op_graph(op: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
                 n_out: int | None = None) -> Graph:
    """A graph with inputs x0, x1, ... (None -> omitted optional input) and one node."""
    g = Graph(f"one-{op}")
    names = []
    for i, a in enumerate(arrays):
        if a is None:
            names.append("")
            continue
        a = np.asarray(a)
        names.append(g.add_input(f"x{i}", TensorSpec(a.shape, from_numpy(a.dtype))))
    outs = g.add_node(op, names, None, attrs or {}, name="node")
    if n_out is not None:
        outs = outs[:n_out]
    g.set_outputs([o for o in outs if o])
    return g.verify()


def moe_layer(tokens: int, d: int, h: int, experts: int, k: int, residual: bool = False) -> Graph:
    """An MoE node (SwiGLU experts, weight parameters w1, w2, w3; inputs x [tokens, d] and
    router logits lg [tokens, experts]) named "moe", with its residual add when asked."""
    g = Graph("moe")
    x = g.add_input("x", TensorSpec((tokens, d)))
    lg = g.add_input("lg", TensorSpec((tokens, experts)))
    w1, w3 = (g.add_param(n, TensorSpec((experts, d, h))) for n in ("w1", "w3"))
    w2 = g.add_param("w2", TensorSpec((experts, h, d)))
    (y,) = g.add_node("MoE", [x, lg, w1, "", w2, "", w3], ["y"], {"k": k, "activation_type": "silu"},
                      name="moe")
    if residual:
        (y,) = g.add_node("Add", [y, x], ["z"], name="residual")
    g.set_outputs([y])
    return g.verify()


def run_op(op: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
           n_out: int | None = None) -> list[np.ndarray]:
    """Run one op through graph building and the executor; returns its outputs."""
    g = one_op_graph(op, arrays, attrs, n_out)
    feeds = {f"x{i}": np.asarray(a) for i, a in enumerate(arrays) if a is not None}
    rec = Executor(g).run(feeds)
    return [rec.values[o] for o in g.outputs]


def one_op_gradients(op: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any] | None,
                     n_out: int | None, wrt: Sequence[int], seed: int = 0
                     ) -> tuple[Graph, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """One op differentiated by autodiff and run by the executor with a random upstream
    gradient per output: (forward graph with ``d_<out>`` inputs added, upstream gradients by
    output, every value of the gradient graph, input name -> its gradient tensor)."""
    rng = np.random.default_rng(seed)
    g = one_op_graph(op, arrays, attrs, n_out)
    dys = {y: rng.standard_normal(g.tensors[y].shape) for y in g.outputs}
    for y in g.outputs:
        g.add_input(f"d_{y}", g.tensors[y])
    gg, gmap = gradients(g, list(g.outputs), [f"x{i}" for i in wrt], [f"d_{y}" for y in g.outputs])
    gg.set_outputs(list(g.outputs) + [gmap[f"x{i}"] for i in wrt])
    gg.verify()
    feeds = {f"x{i}": a for i, a in enumerate(arrays) if a is not None}
    feeds.update({f"d_{y}": d for y, d in dys.items()})
    return g, dys, Executor(gg).run(feeds).values, gmap


def check_grad(op: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
               wrt: Sequence[int] | None = None, n_out: int | None = 1, eps: float = 1e-6,
               tol: float = 1e-5, seed: int = 0) -> float:
    """Compare the op's gradient rule with central finite differences in float64.

    The scalar checked is sum(r * y) for a fixed random r per output. Returns the worst relative
    error (norm of difference over norm of the larger) and asserts it is below ``tol``.
    """
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    idx = [i for i, a in enumerate(arrays) if a is not None and a.dtype == np.float64]
    wrt = list(idx if wrt is None else wrt)
    g, rs, analytic, gmap = one_op_gradients(op, arrays, attrs, n_out, wrt, seed)
    feeds = {f"x{i}": a for i, a in enumerate(arrays) if a is not None}

    fwd = Executor(g)

    def f(fe: dict[str, np.ndarray]) -> float:
        vals = fwd.run({**fe, **{f"d_{y}": rs[y] for y in g.outputs}}).values
        return float(sum(np.sum(rs[y] * vals[y]) for y in g.outputs))

    worst = 0.0
    for i in wrt:
        x = arrays[i]
        num = np.zeros_like(x, dtype=np.float64)
        flat = num.reshape(-1)
        for j in range(x.size):
            xp = x.copy().reshape(-1)
            xm = x.copy().reshape(-1)
            xp[j] += eps
            xm[j] -= eps
            fp = f({**feeds, f"x{i}": xp.reshape(x.shape)})
            fm = f({**feeds, f"x{i}": xm.reshape(x.shape)})
            flat[j] = (fp - fm) / (2 * eps)
        ana = analytic[gmap[f"x{i}"]].astype(np.float64)
        denom = max(np.linalg.norm(ana), np.linalg.norm(num), 1e-12)
        err = float(np.linalg.norm(ana - num) / denom)
        assert err < tol, f"{op}: gradient of input {i} off by {err:.2e} (tol {tol:.0e})"
        worst = max(worst, err)
    return worst


def onnx_ref(op: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
             n_out: int = 1, opset: int = 21, domain: str = "") -> list[np.ndarray]:
    """Run one ONNX node with ``onnx.reference`` (an independent reference implementation).

    ``inputs`` are the ONNX inputs in ONNX order (shape operands as int64 arrays, as ONNX
    wants them; ``None`` for an omitted optional input). ``attrs`` are ONNX attributes.
    """
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names, vinfos, feeds = [], [], {}
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        a = np.asarray(a)
        name = f"i{i}"
        names.append(name)
        elem = helper.np_dtype_to_tensor_dtype(a.dtype)
        vinfos.append(helper.make_tensor_value_info(name, elem, a.shape))
        feeds[name] = a
    outs = [f"o{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, domain=domain, **(attrs or {}))
    graph = helper.make_graph(
        [node], "ref", vinfos,
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, feeds)]
