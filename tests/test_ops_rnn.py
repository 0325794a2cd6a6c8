"""LSTM, GRU, RNN: values against onnx.reference and hand NumPy cells, work against hand
counts, BPTT gradients by finite differences (float64, seq 3, batch 2, input 3, hidden 4)."""

import numpy as np
import pytest
from helpers import check_grad, one_op_graph, onnx_ref, run_op

from sim.errors import GraphError
from sim.ops.work import GemmShape

T, BATCH, IN, HID = 3, 2, 3, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DIRS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def make_inputs(kind, direction="forward", dtype=np.float64, seed=0, full=True, layout=0):
    rng = np.random.default_rng(seed)
    D, G = DIRS[direction], GATES[kind]
    x = rng.standard_normal((T, BATCH, IN) if layout == 0 else (BATCH, T, IN))
    st = (D, BATCH, HID) if layout == 0 else (BATCH, D, HID)
    ins = [x, rng.standard_normal((D, G * HID, IN)) * 0.6, rng.standard_normal((D, G * HID, HID)) * 0.6]
    if full:
        ins += [rng.standard_normal((D, 2 * G * HID)) * 0.5, None, rng.standard_normal(st)]
        if kind == "LSTM":
            ins += [rng.standard_normal(st), rng.standard_normal((D, 3 * HID)) * 0.5]
    return [None if a is None else a.astype(dtype) for a in ins]


def n_outputs(kind):
    return 3 if kind == "LSTM" else 2


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_matches_onnx_reference(kind, direction):
    ins = make_inputs(kind, direction, np.float32)
    attrs = {"hidden_size": HID, "direction": direction}
    outs = run_op(kind, ins, attrs)
    refs = onnx_ref(kind, ins, attrs, n_out=n_outputs(kind), opset=14)
    assert len(outs) == n_outputs(kind)
    for a, b in zip(outs, refs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_layout1_and_no_optional_inputs_match_onnx(kind):
    for ins, attrs in [
        (make_inputs(kind, "bidirectional", np.float32, layout=1), {"layout": 1}),
        (make_inputs(kind, "forward", np.float32, full=False), {}),
    ]:
        attrs = {"hidden_size": HID, "direction": "bidirectional" if attrs else "forward", **attrs}
        outs = run_op(kind, ins, attrs)
        refs = onnx_ref(kind, ins, attrs, n_out=n_outputs(kind), opset=14)
        for a, b in zip(outs, refs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gru_linear_before_reset_matches_onnx():
    ins = make_inputs("GRU", "bidirectional", np.float32)
    attrs = {"hidden_size": HID, "direction": "bidirectional", "linear_before_reset": 1}
    for a, b in zip(run_op("GRU", ins, attrs), onnx_ref("GRU", ins, attrs, n_out=2, opset=14)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ hand NumPy references


def sig(x):
    return 1 / (1 + np.exp(-x))


def hand_lstm(x, w, r, b, lens, h0, c0, p, clip=None, input_forget=False, reverse=False,
              f=sig, g=np.tanh, h=np.tanh):
    """One direction of an ONNX LSTM, written step by step (ORT semantics for sequence_lens)."""
    cl = (lambda z: np.clip(z, -clip, clip)) if clip else (lambda z: z)
    y = np.zeros((T, BATCH, HID))
    hh, cc = h0.copy(), c0.copy()
    for bi in range(BATCH):
        steps = range(lens[bi] - 1, -1, -1) if reverse else range(lens[bi])
        ht, ct = h0[bi].copy(), c0[bi].copy()
        for t in steps:
            a = w @ x[t, bi] + r @ ht + b[:4 * HID] + b[4 * HID:]
            ai, ao, af, ac = np.split(a, 4)
            i = f(cl(ai + p[:HID] * ct))
            fg = 1 - i if input_forget else f(cl(af + p[2 * HID:] * ct))
            ct = fg * ct + i * g(cl(ac))
            o = f(cl(ao + p[HID:2 * HID] * ct))
            ht = o * h(cl(ct))  # onnxruntime clips the cell state entering h()
            y[t, bi] = ht
        hh[bi], cc[bi] = ht, ct
    return y, hh, cc


def test_lstm_sequence_lens_clip_input_forget_activations_vs_hand():
    rng = np.random.default_rng(3)
    ins = make_inputs("LSTM", "bidirectional", np.float64, seed=3)
    lens = np.array([2, 3], np.int32)
    ins[4] = lens
    x, w, r, b, _, h0, c0, p = ins
    attrs = {"hidden_size": HID, "direction": "bidirectional", "clip": 1.2, "input_forget": 1,
             "activations": ["HardSigmoid", "LeakyRelu", "Softsign", "Sigmoid", "Tanh", "ScaledTanh"],
             "activation_alpha": [0.3, 0.1, 0.8], "activation_beta": [0.4, 1.5]}
    y, yh, yc = run_op("LSTM", ins, attrs)
    acts = [
        (lambda z: np.clip(0.3 * z + 0.4, 0, 1), lambda z: np.where(z >= 0, z, 0.1 * z),
         lambda z: z / (1 + np.abs(z))),
        (sig, np.tanh, lambda z: 0.8 * np.tanh(1.5 * z)),
    ]
    for d in range(2):
        fa, ga, ha = acts[d]
        ry, rh, rc = hand_lstm(x, w[d], r[d], b[d], lens, h0[d], c0[d], p[d], clip=1.2,
                               input_forget=True, reverse=d == 1, f=fa, g=ga, h=ha)
        np.testing.assert_allclose(y[:, d], ry, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(yh[d], rh, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(yc[d], rc, rtol=1e-10, atol=1e-12)
    assert np.all(y[2, :, 0] == 0)  # batch entry 0 has length 2
    del rng


def test_gru_and_rnn_sequence_lens_vs_hand():
    lens = np.array([3, 1], np.int64)
    ins = make_inputs("GRU", "reverse", seed=5)
    ins[4] = lens
    x, w, r, b, _, h0 = ins
    y, yh = run_op("GRU", ins, {"hidden_size": HID, "direction": "reverse", "clip": 0.9})
    cl = lambda z: np.clip(z, -0.9, 0.9)  # noqa: E731
    for bi in range(BATCH):
        ht = h0[0, bi]
        for t in range(lens[bi] - 1, -1, -1):
            wz, wr, wh = np.split(w[0], 3)
            rz, rr, rh = np.split(r[0], 3)
            bz, br, bh, cz, cr, ch = np.split(b[0], 6)
            z = sig(cl(wz @ x[t, bi] + rz @ ht + bz + cz))
            rg = sig(cl(wr @ x[t, bi] + rr @ ht + br + cr))
            hc = np.tanh(cl(wh @ x[t, bi] + rh @ (rg * ht) + ch + bh))
            ht = (1 - z) * hc + z * ht
            np.testing.assert_allclose(y[t, 0, bi], ht, rtol=1e-10)
        np.testing.assert_allclose(yh[0, bi], ht, rtol=1e-10)
    assert np.all(y[1:, 0, 1] == 0)

    ins = make_inputs("RNN", "forward", seed=6)
    ins[4] = lens
    x, w, r, b, _, h0 = ins
    y, yh = run_op("RNN", ins, {"hidden_size": HID, "activations": ["Relu"]})
    for bi in range(BATCH):
        ht = h0[0, bi]
        for t in range(lens[bi]):
            ht = np.maximum(w[0] @ x[t, bi] + r[0] @ ht + b[0, :HID] + b[0, HID:], 0)
        np.testing.assert_allclose(yh[0, bi], ht, rtol=1e-10)


def test_zero_length_sequence_gives_zero_state():
    ins = make_inputs("LSTM", "bidirectional", np.float32)
    ins[4] = np.array([0, 3], np.int32)
    y, yh, yc = run_op("LSTM", ins, {"direction": "bidirectional"})
    assert np.all(y[:, :, 0] == 0) and np.all(yh[:, 0] == 0) and np.all(yc[:, 0] == 0)
    assert np.all(yh[:, 1] != 0)


def test_errors_are_typed():
    ins = make_inputs("LSTM", "forward")
    with pytest.raises(GraphError, match="bidirectional needs 2"):
        one_op_graph("LSTM", ins, {"direction": "bidirectional"})
    with pytest.raises(GraphError, match="hidden_size 5"):
        one_op_graph("LSTM", ins, {"hidden_size": 5})
    with pytest.raises(GraphError, match="unknown LSTM activation 'Gelu'"):
        one_op_graph("LSTM", ins, {"activations": ["Gelu", "Tanh", "Tanh"]})


# ------------------------------------------------------------------ work


def test_lstm_work_hand_counts():
    ins = make_inputs("LSTM", "forward", np.float32)[:4]  # X, W, R, B
    w = one_op_graph("LSTM", ins).work("node")
    # input projection: m = seq*batch = 6, n = 4H = 16, k = 3; recurrent: 3 serial (2 x 16 x 4)
    assert w.gemms == (GemmShape(6, 16, 3, 1), GemmShape(2, 16, 4, 3))
    assert w.matmul_flops == 2 * 6 * 16 * 3 + 3 * 2 * 2 * 16 * 4  # 576 + 768
    units = T * BATCH * HID  # 24
    assert w.transcendentals == 5 * units  # 3 sigmoid + 2 tanh per unit and step
    assert w.flops == w.matmul_flops + 26 * units
    nbytes = 4 * (18 + 48 + 64 + 32)
    assert w.bytes_read == nbytes
    assert w.bytes_written == 4 * (T * BATCH * HID + 2 * BATCH * HID)
    wb = one_op_graph("LSTM", make_inputs("LSTM", "bidirectional", np.float32)[:4],
                      {"direction": "bidirectional"}).work("node")
    assert wb.matmul_flops == 2 * w.matmul_flops and wb.transcendentals == 2 * w.transcendentals


def test_gru_rnn_work_hand_counts():
    wg = one_op_graph("GRU", make_inputs("GRU", "forward", np.float32)[:4]).work("node")
    units = T * BATCH * HID
    assert wg.matmul_flops == 2 * 6 * 12 * 3 + 3 * 2 * 2 * 12 * 4
    assert wg.transcendentals == 3 * units and wg.flops == wg.matmul_flops + 20 * units
    wr = one_op_graph("RNN", make_inputs("RNN", "forward", np.float32)[:4]).work("node")
    assert wr.matmul_flops == 2 * 6 * 4 * 3 + 3 * 2 * 2 * 4 * 4
    assert wr.transcendentals == units and wr.flops == wr.matmul_flops + 3 * units


def test_lstm_grad_work_is_3x_forward_gemms():
    ins = make_inputs("LSTM", "bidirectional", np.float32)
    fwd = one_op_graph("LSTM", ins, {"direction": "bidirectional"}).work("node")
    rng = np.random.default_rng(0)
    dys = [rng.standard_normal(s).astype(np.float32) for s in [(T, 2, BATCH, HID), (2, BATCH, HID)]]
    bwd = one_op_graph("LSTMGrad", [*ins, *dys], {"direction": "bidirectional"}).work("node")
    assert bwd.matmul_flops == 3 * fwd.matmul_flops  # recompute + 2x backward GEMMs
    assert bwd.transcendentals == fwd.transcendentals


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_grad(direction):
    check_grad("LSTM", make_inputs("LSTM", direction), {"hidden_size": HID, "direction": direction},
               n_out=None)


def test_lstm_grad_lens_clip_input_forget_layout1():
    ins = make_inputs("LSTM", "bidirectional", layout=1, seed=2)
    ins[4] = np.array([3, 2], np.int64)
    attrs = {"direction": "bidirectional", "layout": 1, "clip": 2.5, "input_forget": 1,
             "activations": ["Sigmoid", "Softsign", "Elu"] * 2}
    check_grad("LSTM", ins, attrs, n_out=None)


def test_lstm_grad_without_optional_inputs():
    check_grad("LSTM", make_inputs("LSTM", "reverse", full=False), {"direction": "reverse"},
               n_out=None)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_grad(lbr):
    ins = make_inputs("GRU", "bidirectional")
    ins[4] = np.array([2, 3], np.int32)
    check_grad("GRU", ins, {"direction": "bidirectional", "linear_before_reset": lbr}, n_out=None)


def test_rnn_grad():
    check_grad("RNN", make_inputs("RNN", "bidirectional", layout=1),
               {"direction": "bidirectional", "layout": 1, "activations": ["Tanh", "Softplus"]},
               n_out=None)


def test_lstm_values_and_grads_match_torch():
    torch = pytest.importorskip("torch")
    from test_ops_attention import backward_values

    rng = np.random.default_rng(11)
    lstm = torch.nn.LSTM(IN, HID, bidirectional=True, dtype=torch.float64)
    x = rng.standard_normal((T, BATCH, IN))
    h0, c0 = rng.standard_normal((2, BATCH, HID)), rng.standard_normal((2, BATCH, HID))

    def iofc(wt):  # torch gate order i, f, g, o -> ONNX i, o, f, c
        i, f, g, o = np.split(wt, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    params = {n: p.detach().numpy() for n, p in lstm.named_parameters()}
    sfx = ["_l0", "_l0_reverse"]
    W = np.stack([iofc(params["weight_ih" + s]) for s in sfx])
    R = np.stack([iofc(params["weight_hh" + s]) for s in sfx])
    B = np.stack([np.concatenate([iofc(params["bias_ih" + s]), iofc(params["bias_hh" + s])]) for s in sfx])
    dys = [rng.standard_normal((T, 2, BATCH, HID)), rng.standard_normal((2, BATCH, HID)),
           rng.standard_normal((2, BATCH, HID))]
    (y, yh, yc), (dx, dw, *_rest) = backward_values(
        "LSTM", [x, W, R, B, None, h0, c0], {"direction": "bidirectional"}, dys)

    tx = torch.tensor(x, requires_grad=True)
    ty, (th, tc) = lstm(tx, (torch.tensor(h0), torch.tensor(c0)))
    np.testing.assert_allclose(y, ty.detach().numpy().reshape(T, BATCH, 2, HID).transpose(0, 2, 1, 3),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(yh, th.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(yc, tc.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy_t = torch.tensor(dys[0].transpose(0, 2, 1, 3).reshape(T, BATCH, 2 * HID))
    torch.autograd.backward([ty, th, tc], [dy_t, torch.tensor(dys[1]), torch.tensor(dys[2])])
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    tw = np.stack([iofc(dict(lstm.named_parameters())["weight_ih" + s].grad.numpy()) for s in sfx])
    np.testing.assert_allclose(dw, tw, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ backward ops


def grad_graph(kind, ins, attrs):
    """The gradient graph of one recurrent node w.r.t. every present float input."""
    from sim.passes.autodiff import gradients

    g = one_op_graph(kind, ins, attrs)
    for y in g.outputs:
        g.add_input(f"d_{y}", g.tensors[y])
    wrt = [f"x{i}" for i, a in enumerate(ins) if a is not None and a.dtype.kind == "f"]
    gg, gmap = gradients(g, list(g.outputs), wrt, [f"d_{y}" for y in g.outputs])
    return g, gg, gmap, wrt


@pytest.mark.parametrize("kind,grad_op", [("GRU", "GRUGrad"), ("RNN", "RNNGrad")])
def test_gradient_graph_is_one_dedicated_backward_op(kind, grad_op):
    ins = make_inputs(kind, "bidirectional")
    ins[4] = np.array([3, 1], np.int64)
    g, gg, gmap, wrt = grad_graph(kind, ins, {"direction": "bidirectional"})
    new = [n for n in gg.nodes.values() if n.name not in g.nodes]
    assert [n.op for n in new] == [grad_op]  # no other node on the data path
    (bw,) = new
    assert bw.inputs == (*g.nodes["node"].inputs, *(f"d_{y}" for y in g.outputs))
    # every input gradient (X, W, R, B, initial_h) is one output of that node, in order
    assert [gmap[w] for w in wrt] == list(bw.outputs)
    assert gg.tensors[gmap["x3"]].shape == (2, 2 * GATES[kind] * HID)


@pytest.mark.parametrize("kind,grad_op", [("GRU", "GRUGrad"), ("RNN", "RNNGrad")])
def test_backward_op_leaves_absent_inputs_ungraded(kind, grad_op):
    ins = make_inputs(kind, "forward", full=False)  # X, W, R only
    _, gg, gmap, _ = grad_graph(kind, ins, {})
    (bw,) = [n for n in gg.nodes.values() if n.op == grad_op]
    assert bw.outputs[3:] == ("", "")  # no dB, no d_initial_h
    assert set(gmap) == {"x0", "x1", "x2"}


def test_gru_grad_and_rnn_grad_work_hand_counts():
    """Forward recompute + four backward GEMMs per direction (seq 3, batch 2, input 3, hidden 4).

    GRU (G = 3, GH = 12), forward GEMMs: input projection 2*6*12*3 = 432, recurrent
    3 steps x 2*2*12*4 = 576 (1008). Backward: dH_prev = dgates R, 3 x 2*2*4*12 = 576;
    dR = dgates^T H_prev 2*12*4*6 = 576; dW = dgates^T X 2*12*3*6 = 432; dX = dgates W
    2*6*3*12 = 432 (2016). Total 3024 = 3x the forward. Vector per (step, batch, unit): forward
    20, backward 9 (3 per sigmoid/tanh derivative) + 10 chain rule + 3 bias sums = 22.
    RNN (G = 1): forward 144 + 192 = 336, backward 192 + 192 + 144 + 144 = 672, total 1008;
    vector forward 3, backward 3 (tanh') + 1 + 1 = 5.
    """
    units = T * BATCH * HID  # 24
    rng = np.random.default_rng(1)
    for kind, grad_op, mm, vec in [("GRU", "GRUGrad", 3024, (20 + 22) * units),
                                   ("RNN", "RNNGrad", 1008, (3 + 5) * units)]:
        ins = make_inputs(kind, "forward", np.float32)[:4]  # X, W, R, B
        dys = [rng.standard_normal(s).astype(np.float32) for s in [(T, 1, BATCH, HID), (1, BATCH, HID)]]
        w = one_op_graph(grad_op, [*ins, None, None, *dys]).work("node")
        G = GATES[kind]
        assert w.gemms == (GemmShape(6, G * HID, IN, 1), GemmShape(BATCH, G * HID, HID, T),
                           GemmShape(BATCH, HID, G * HID, T), GemmShape(G * HID, HID, 6, 1),
                           GemmShape(G * HID, IN, 6, 1), GemmShape(6, IN, G * HID, 1))
        assert w.matmul_flops == mm
        assert w.flops == mm + vec
        fwd = one_op_graph(kind, ins).work("node")
        assert w.transcendentals == fwd.transcendentals  # the recompute; derivatives reuse outputs
        in_bytes = 4 * (T * BATCH * IN + G * HID * IN + G * HID * HID + 2 * G * HID)
        dy_bytes = 4 * (T * BATCH * HID + BATCH * HID)
        assert w.bytes_read == in_bytes + dy_bytes
        # dX, dW, dR, dB and d_initial_h (one_op_graph names all five outputs)
        assert w.bytes_written == in_bytes + 4 * BATCH * HID
    # bidirectional: twice the GEMM work, plus the sum of the two directions' dX (T*B*I adds)
    ins = make_inputs("GRU", "bidirectional", np.float32)[:4]
    dys = [rng.standard_normal(s).astype(np.float32) for s in [(T, 2, BATCH, HID), (2, BATCH, HID)]]
    w2 = one_op_graph("GRUGrad", [*ins, None, None, *dys], {"direction": "bidirectional"}).work("node")
    assert w2.matmul_flops == 2 * 3024
    assert w2.flops == 2 * 3024 + 2 * 42 * units + T * BATCH * IN


@pytest.mark.parametrize("kind,grad_op", [("GRU", "GRUGrad"), ("RNN", "RNNGrad")])
def test_backward_op_run_directly_matches_finite_differences(kind, grad_op):
    """GRUGrad / RNNGrad fed dY only: dX equals the finite-difference gradient of sum(dY * Y)."""
    ins = make_inputs(kind, "reverse")
    attrs = {"direction": "reverse"}
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((T, 1, BATCH, HID))
    outs = run_op(grad_op, [*ins, dy, None], attrs)
    assert len(outs) == 5
    dx = outs[0]
    eps = 1e-6
    num = np.zeros_like(ins[0])
    for j in range(ins[0].size):
        xp, xm = ins[0].copy(), ins[0].copy()
        xp.reshape(-1)[j] += eps
        xm.reshape(-1)[j] -= eps
        yp = run_op(kind, [xp, *ins[1:]], attrs, n_out=1)[0]
        ym = run_op(kind, [xm, *ins[1:]], attrs, n_out=1)[0]
        num.reshape(-1)[j] = np.sum(dy * (yp - ym)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ time: step by step


def _lstm_layer(T_, B_, I_, H_, direction="forward"):
    from sim.graph import Graph, TensorSpec

    D = DIRS[direction]
    g = Graph("lstm")
    g.add_input("x", TensorSpec((T_, B_, I_)))
    g.add_param("w", TensorSpec((D, 4 * H_, I_)))
    g.add_param("r", TensorSpec((D, 4 * H_, H_)))
    g.add_param("b", TensorSpec((D, 8 * H_)))
    g.add_node("LSTM", ["x", "w", "r", "b"], ["y", "yh", "yc"], {"direction": direction}, name="lstm")
    g.set_outputs(["y"])
    return g


def test_lstm_time_is_seq_dependent_steps_by_formula():
    """An LSTM layer takes t(input projection) + T x (t(recurrent GEMM) + t(gate kernel)), each
    step's kernels built here by hand from the layer's dimensions and timed as single kernels
    (on a CPU spec: no cache reuse between steps to account for)."""
    from sim.cost import op_cost
    from sim.hw import load_hardware
    from sim.ops.work import Work

    T_, B_, I_, H_ = 35, 20, 64, 128
    cpu = load_hardware("xeon-8480")
    g = _lstm_layer(T_, B_, I_, H_)
    work = g.work(g.nodes["lstm"])
    f4 = 4  # fp32 bytes
    proj = GemmShape(T_ * B_, 4 * H_, I_)
    # the input projection of all steps as one GEMM (with the layer's own input/output bytes)
    first = Work(proj.flops, proj.flops, bytes_read=work.bytes_read,
                 bytes_written=work.bytes_written, gemms=(proj,))
    rec = GemmShape(B_, 4 * H_, H_)
    step_gemm = Work(rec.flops, rec.flops, bytes_read=f4 * (4 * H_ * H_ + B_ * H_),
                     bytes_written=f4 * B_ * 4 * H_, gemms=(rec,))
    # gates: 4 pre-activation adds + 4 bias adds, 3 sigmoids (4) + 2 tanh (1), 4 products = 26
    step_pw = Work(26 * B_ * H_, transcendentals=5 * B_ * H_,
                   bytes_read=f4 * B_ * (8 * H_ + H_), bytes_written=f4 * B_ * 2 * H_)
    want = (op_cost(first, cpu, "fp32").time_s
            + T_ * (op_cost(step_gemm, cpu, "fp32").time_s + op_cost(step_pw, cpu, "fp32").time_s))
    got = op_cost(work, cpu, "fp32").time_s
    assert got == pytest.approx(want, rel=1e-9)
    # one GEMM over all steps (the parallel estimate) is far faster than the recurrence
    parallel = Work(work.flops, work.matmul_flops, work.transcendentals, work.bytes_read,
                    work.bytes_written, work.gemms)
    assert got > 5 * op_cost(parallel, cpu, "fp32").time_s


def test_lstm_steps_pay_launches_on_a_gpu_and_directions_run_together():
    import sim

    h100 = sim.hardware("h100")
    T_, B_, H_ = 35, 20, 650
    fwd = sim.simulate(_lstm_layer(T_, B_, H_, H_), h100)
    (rec,) = [r for r in fwd.ops if r["op"] == "LSTM"]
    t = rec["end_s"] - rec["start_s"]
    # every step launches a recurrent GEMM and a gate kernel, one after another
    assert t >= 2 * T_ * h100.launch_s
    bi = sim.simulate(_lstm_layer(T_, B_, H_, H_, "bidirectional"), h100)
    (rb,) = [r for r in bi.ops if r["op"] == "LSTM"]
    # both directions share each step's launches: well under twice the time
    assert rb["end_s"] - rb["start_s"] < 1.6 * t
