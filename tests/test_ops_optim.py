"""Optimizer update ops against hand NumPy formulas (and torch.optim where torch is installed)."""

import numpy as np
import pytest
from helpers import one_op_graph, run_op

from sim.errors import GraphError
from sim.graph import Graph, TensorSpec
from sim.ops import get_op

rng = np.random.default_rng(1)
P = rng.standard_normal((3, 4))
G = rng.standard_normal((3, 4))
M = rng.standard_normal((3, 4)) * 0.1
V = rng.uniform(0.01, 0.1, (3, 4))


def test_sgd():
    (p,) = run_op("SGDUpdate", [P, G], {"lr": 0.1})
    np.testing.assert_allclose(p, P - 0.1 * G, rtol=1e-12)
    (p,) = run_op("SGDUpdate", [P, G], {"lr": 0.1, "weight_decay": 0.01})
    np.testing.assert_allclose(p, P - 0.1 * (G + 0.01 * P), rtol=1e-12)
    (p,) = run_op("SGDUpdate", [P, G * 1024], {"lr": 0.1, "grad_scale": 1 / 1024})
    np.testing.assert_allclose(p, P - 0.1 * G, rtol=1e-12)


@pytest.mark.parametrize("nesterov", [0, 1])
def test_momentum(nesterov):
    attrs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.001, "nesterov": nesterov}
    p, v = run_op("MomentumUpdate", [P, G, M], attrs)
    g = G + 0.001 * P
    v_ref = 0.9 * M + g
    step = g + 0.9 * v_ref if nesterov else v_ref
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    np.testing.assert_allclose(p, P - 0.05 * step, rtol=1e-12)


@pytest.mark.parametrize("t", [1, 7])
def test_adam(t):
    attrs = {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6, "weight_decay": 0.1}
    p, m, v = run_op("AdamUpdate", [P, G, M, V, np.array(t, np.int64)], attrs)
    g = G + 0.1 * P
    m_ref = 0.8 * M + 0.2 * g
    v_ref = 0.99 * V + 0.01 * g * g
    p_ref = P - 1e-2 * (m_ref / (1 - 0.8**t)) / (np.sqrt(v_ref / (1 - 0.99**t)) + 1e-6)
    np.testing.assert_allclose(m, m_ref, rtol=1e-12)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12)


def test_adamw_decay_is_decoupled():
    attrs = {"lr": 1e-2, "weight_decay": 0.1}
    p, m, v = run_op("AdamWUpdate", [P, G, M, V, np.array(3, np.int64)], attrs)
    m_ref = 0.9 * M + 0.1 * G
    v_ref = 0.999 * V + 0.001 * G * G
    p_ref = P * (1 - 1e-3) - 1e-2 * (m_ref / (1 - 0.9**3)) / (np.sqrt(v_ref / (1 - 0.999**3)) + 1e-8)
    np.testing.assert_allclose(m, m_ref, rtol=1e-12)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12)


def test_work_counts():
    n = 12
    f32 = [a.astype(np.float32) for a in (P, G, M, V)]
    step = np.array(1, np.int64)
    # Adam: 14 FLOP and one sqrt per element; reads p, g, m, v (+ the 8-byte step), writes p, m, v
    w = one_op_graph("AdamUpdate", [*f32, step]).work("node")
    assert (w.flops, w.transcendentals) == (14 * n, n)
    assert w.bytes_read == 4 * n * 4 + 8 and w.bytes_written == 3 * n * 4
    w = one_op_graph("AdamWUpdate", [*f32, step], {"weight_decay": 0.01}).work("node")
    assert w.flops == 16 * n
    w = one_op_graph("SGDUpdate", f32[:2], {"lr": 0.1}).work("node")
    assert w.flops == 2 * n and w.bytes_read == 2 * n * 4 and w.bytes_written == n * 4
    w = one_op_graph("MomentumUpdate", f32[:3], {"weight_decay": 0.1}).work("node")
    assert w.flops == 6 * n and w.bytes_written == 2 * n * 4
    w = one_op_graph("AdamUpdate", [*f32, step], {"grad_scale": 0.5}).work("node")
    assert w.flops == 15 * n  # one more multiply to unscale the gradient


def test_no_grad_and_shape_checks():
    for op in ("SGDUpdate", "MomentumUpdate", "AdamUpdate", "AdamWUpdate"):
        assert get_op(op).no_grad == "optimizer update"
    g = Graph("bad")
    g.add_input("p", TensorSpec((3, 4)))
    g.add_input("g", TensorSpec((4, 3)))
    with pytest.raises(GraphError, match="input 1 has shape"):
        g.add_node("SGDUpdate", ["p", "g"], name="upd")
    g.add_input("g2", TensorSpec((3, 4)))
    with pytest.raises(GraphError, match="needs the step"):
        g.add_node("AdamUpdate", ["p", "g2", "g2", "g2"], name="upd")


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw"])
def test_against_torch_optim(opt):
    torch = pytest.importorskip("torch")
    p0 = torch.tensor(P, requires_grad=True)
    kw = {"sgd": dict(lr=0.1, weight_decay=0.01),
          "momentum": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
          "adam": dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01),
          "adamw": dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)}[opt]
    cls = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}[opt]
    o = cls([p0], **kw)
    ours = P.copy()
    states = [np.zeros_like(P)] * {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}[opt]
    op = {"sgd": "SGDUpdate", "momentum": "MomentumUpdate", "adam": "AdamUpdate", "adamw": "AdamWUpdate"}[opt]
    attrs = {"lr": kw["lr"], "weight_decay": kw["weight_decay"]}
    if opt == "momentum":
        attrs["momentum"] = 0.9
    if opt in ("adam", "adamw"):
        attrs |= {"beta1": 0.9, "beta2": 0.99, "epsilon": 1e-8}
    for t in range(1, 4):
        grad = np.sin(ours * t)  # any deterministic gradient
        p0.grad = torch.tensor(grad)
        o.step()
        outs = run_op(op, [ours, grad, *states, np.array(t, np.int64)], attrs)
        ours, states = outs[0], outs[1:]
        np.testing.assert_allclose(ours, p0.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_depend_passes_its_first_input_through():
    from helpers import check_grad

    x, after = rng.standard_normal((2, 3)), rng.standard_normal((4,))
    (y,) = run_op("Depend", [x, after])
    np.testing.assert_array_equal(y, x)
    assert one_op_graph("Depend", [x, after]).work("node").bytes == 0
    check_grad("Depend", [x, after], wrt=[0])


def test_sgd_spelled_as_torch_and_its_refusals():
    from sim.graph import Graph, TensorSpec
    from sim.passes.training import training_graph

    g = Graph("lin")
    g.add_input("x", TensorSpec((4, 3)))
    g.add_param("w", TensorSpec((3, 2)))
    g.add_node("MatMul", ["x", "w"], ["y"])
    g.set_outputs(["y"])
    ops = {n.op for n in training_graph(g, optimizer="sgd", momentum=0.9, dampening=0.1).nodes.values()}
    assert "MomentumUpdate" in ops
    ops = {n.op for n in training_graph(g, optimizer="SGD", momentum=0.0, nesterov=False).nodes.values()}
    assert "SGDUpdate" in ops and "MomentumUpdate" not in ops
    with pytest.raises(GraphError, match="nesterov momentum requires zero dampening"):
        training_graph(g, optimizer="sgd", momentum=0.9, nesterov=True, dampening=0.5)
    with pytest.raises(GraphError, match="need a nonzero momentum"):
        training_graph(g, optimizer="sgd", nesterov=True)
    # dampening costs one multiply per element (hand count: mu*v, (1-d)*g, add, lr*v, subtract)
    w = one_op_graph("MomentumUpdate", [P, G, M], {"dampening": 0.1}).work("node")
    assert w.flops == 5 * P.size
