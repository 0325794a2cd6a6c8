"""Recurrent ops in ONNX semantics: LSTM, GRU, RNN, and their BPTT backward ops.

Inputs (ONNX order): ``X, W, R, B, sequence_lens, initial_h`` (+ ``initial_c, P`` for LSTM).
``X`` is [seq, batch, input] (``layout=0``) or [batch, seq, input] (``layout=1``); ``W`` is
[dirs, G*H, input], ``R`` [dirs, G*H, H], ``B`` [dirs, 2*G*H] (W biases then R biases), with
G = 4 gates for LSTM (order i, o, f, c), 3 for GRU (z, r, h), 1 for RNN. Outputs ``Y``
[seq, dirs, batch, H] (layout 1: [batch, seq, dirs, H]), ``Y_h`` (and ``Y_c``) [dirs, batch, H]
(layout 1: [batch, dirs, H]).

Attributes: ``hidden_size``, ``direction`` (forward / reverse / bidirectional), ``layout``,
``activations`` with ``activation_alpha`` / ``activation_beta`` (any ONNX RNN activation:
Sigmoid Tanh Relu Affine LeakyRelu ThresholdedRelu ScaledTanh HardSigmoid Elu Softsign
Softplus; alphas and betas are taken in order by the activations that use them), ``clip``
(applied to every gate's pre-activation, after biases and peepholes, and for LSTM to the
cell state where it enters h(); the carried cell state is not clipped), LSTM ``input_forget``
(f = 1 - i), GRU ``linear_before_reset``.
``sequence_lens``: batch entry b runs steps 0..len_b-1 (the reverse direction starts at
len_b - 1); Y is zero past len_b and Y_h / Y_c hold the state after the last valid step
(zero for len_b = 0), as onnxruntime does.

Backward ops ``LSTMGrad``, ``GRUGrad``, ``RNNGrad`` run backpropagation through time. They
recompute the forward pass (no reserve space is kept between forward and backward), so their
work is the forward work plus the backward work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.dtypes import is_float, itemsize
from sim.errors import GraphError
from sim.ops.common import io_bytes, need
from sim.ops.registry import defop
from sim.ops.work import GemmShape, Serial, Work
from sim.tensor import TensorSpec

# ---------------------------------------------------------------------------- activations


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass(frozen=True)
class Act:
    """An RNN activation: value f(x), derivative d(x, y) from input and output, costs."""

    name: str
    f: Callable[[np.ndarray, float, float], np.ndarray]
    d: Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]
    alpha: float | None  # default alpha (None: takes no alpha)
    beta: float | None
    flops: int  # per evaluation (elementwise.py's table)
    trans: int
    grad_flops: int


_ACTS = {a.name.lower(): a for a in [
    Act("Sigmoid", lambda x, a, b: _sigmoid(x), lambda x, y, a, b: y * (1 - y), None, None, 4, 1, 3),
    Act("Tanh", lambda x, a, b: np.tanh(x), lambda x, y, a, b: 1 - y * y, None, None, 1, 1, 3),
    Act("Relu", lambda x, a, b: np.maximum(x, 0), lambda x, y, a, b: (x > 0).astype(x.dtype),
        None, None, 1, 0, 1),
    Act("Affine", lambda x, a, b: a * x + b, lambda x, y, a, b: np.full_like(x, a), 1.0, 0.0, 2, 0, 1),
    Act("LeakyRelu", lambda x, a, b: np.where(x >= 0, x, a * x),
        lambda x, y, a, b: np.where(x >= 0, 1.0, a).astype(x.dtype), 0.01, None, 2, 0, 2),
    Act("ThresholdedRelu", lambda x, a, b: np.where(x > a, x, 0.0),
        lambda x, y, a, b: (x > a).astype(x.dtype), 1.0, None, 2, 0, 1),
    Act("ScaledTanh", lambda x, a, b: a * np.tanh(b * x),
        lambda x, y, a, b: a * b * (1 - np.tanh(b * x) ** 2), 1.0, 1.0, 3, 1, 4),
    Act("HardSigmoid", lambda x, a, b: np.clip(a * x + b, 0, 1),
        lambda x, y, a, b: np.where((a * x + b > 0) & (a * x + b < 1), a, 0.0).astype(x.dtype),
        0.2, 0.5, 4, 0, 5),
    Act("Elu", lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))),
        lambda x, y, a, b: np.where(x >= 0, 1.0, y + a).astype(x.dtype), 1.0, None, 4, 1, 4),
    Act("Softsign", lambda x, a, b: x / (1 + np.abs(x)), lambda x, y, a, b: 1 / (1 + np.abs(x)) ** 2,
        None, None, 3, 0, 5),
    Act("Softplus", lambda x, a, b: np.logaddexp(0.0, x), lambda x, y, a, b: _sigmoid(x),
        None, None, 3, 2, 5),
]}

_KINDS = {
    # kind: (gates, number of activations per direction, defaults, forward input names)
    "LSTM": (4, 3, ("Sigmoid", "Tanh", "Tanh"),
             ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")),
    "GRU": (3, 2, ("Sigmoid", "Tanh"), ("X", "W", "R", "B", "sequence_lens", "initial_h")),
    "RNN": (1, 1, ("Tanh",), ("X", "W", "R", "B", "sequence_lens", "initial_h")),
}


@dataclass(frozen=True)
class BoundAct:
    act: Act
    alpha: float
    beta: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.act.f(x, self.alpha, self.beta)

    def deriv(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.act.d(x, y, self.alpha, self.beta)


def _acts(kind: str, attrs: dict[str, Any], dirs: int) -> list[list[BoundAct]]:
    """Per direction, the bound activations (ONNX order and alpha/beta consumption)."""
    _, n, defaults, _ = _KINDS[kind]
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in attrs.get("activations") or []]
    if not names:
        names = list(defaults) * dirs
    elif len(names) == n and dirs == 2:
        names = names * 2
    if len(names) != n * dirs:
        raise GraphError(f"{kind} needs {n * dirs} activations for {dirs} direction(s), got {names}")
    alphas = [float(a) for a in attrs.get("activation_alpha") or []]
    betas = [float(b) for b in attrs.get("activation_beta") or []]
    out: list[BoundAct] = []
    for nm in names:
        act = _ACTS.get(nm.lower())
        if act is None:
            known = ", ".join(a.name for a in _ACTS.values())
            raise GraphError(f"unknown {kind} activation {nm!r} (known: {known})")
        a = b = 0.0
        if act.alpha is not None:
            a = alphas.pop(0) if alphas else act.alpha
        if act.beta is not None:
            b = betas.pop(0) if betas else act.beta
        out.append(BoundAct(act, a, b))
    return [out[d * n:(d + 1) * n] for d in range(dirs)]


# ---------------------------------------------------------------------------- shapes


def _direction(attrs: dict[str, Any]) -> str:
    d = attrs.get("direction", "forward")
    return d.decode() if isinstance(d, bytes) else str(d)


def _dims(kind: str, specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, int]:
    G, _, _, names = _KINDS[kind]
    specs = list(specs) + [None] * (len(names) - len(specs))
    x, w, r = need(specs, 3, kind)
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise GraphError(f"{kind} layout must be 0 or 1, got {layout}")
    if x.rank != 3 or w.rank != 3 or r.rank != 3:
        raise GraphError(f"{kind} X, W, R must be 3-D, got {x.shape}, {w.shape}, {r.shape}")
    if not is_float(x.dtype) or w.dtype != x.dtype or r.dtype != x.dtype:
        raise GraphError(f"{kind} X, W, R must share one float dtype")
    T, Bt = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
    I = x.shape[2]
    D, GH, H = r.shape
    direction = _direction(attrs)
    want_d = {"forward": 1, "reverse": 1, "bidirectional": 2}.get(direction)
    if want_d is None:
        raise GraphError(f"{kind} direction must be forward, reverse or bidirectional, got {direction!r}")
    if D != want_d:
        raise GraphError(f"{kind} direction {direction} needs {want_d} direction(s) in W/R, got {D}")
    hs = attrs.get("hidden_size")
    if hs is not None and int(hs) != H:
        raise GraphError(f"{kind} hidden_size {hs} differs from R's last dimension {H}")
    _acts(kind, attrs, D)  # validates activation names and counts
    if GH != G * H or w.shape != (D, G * H, I):
        raise GraphError(f"{kind} W {w.shape} / R {r.shape} should be "
                         f"[{D}, {G * H}, {I}] / [{D}, {G * H}, {H}]")
    state = (D, Bt, H) if layout == 0 else (Bt, D, H)
    expect = {"B": (D, 2 * G * H), "sequence_lens": (Bt,), "initial_h": state, "initial_c": state,
              "P": (D, 3 * H)}
    for nm, s in zip(names[3:], specs[3:]):
        if s is None:
            continue
        if s.shape != expect[nm]:
            raise GraphError(f"{kind} {nm} has shape {s.shape}, expected {expect[nm]}")
        if nm == "sequence_lens":
            if s.dtype not in ("int32", "int64"):
                raise GraphError(f"{kind} sequence_lens must be int32 or int64, got {s.dtype}")
        elif s.dtype != x.dtype:
            raise GraphError(f"{kind} {nm} dtype {s.dtype} differs from X's {x.dtype}")
    return {"T": T, "B": Bt, "I": I, "H": H, "D": D, "G": G, "layout": layout}


def _out_specs(kind: str, d: dict[str, int], dtype: str) -> list[TensorSpec]:
    T, Bt, D, H = d["T"], d["B"], d["D"], d["H"]
    if d["layout"] == 0:
        y, st = (T, D, Bt, H), (D, Bt, H)
    else:
        y, st = (Bt, T, D, H), (Bt, D, H)
    n_state = 2 if kind == "LSTM" else 1
    return [TensorSpec(y, dtype)] + [TensorSpec(st, dtype) for _ in range(n_state)]


def _infer(kind: str):
    def infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
        d = _dims(kind, specs, attrs)
        assert specs[0] is not None
        return _out_specs(kind, d, specs[0].dtype)

    return infer


# ---------------------------------------------------------------------------- work


def _elementwise_counts(kind: str, specs: list[TensorSpec | None], attrs: dict[str, Any],
                        d: dict[str, int]) -> tuple[float, float, float]:
    """(vector FLOPs, transcendentals, backward vector FLOPs) per (step, batch, hidden unit,
    direction) of the forward cell, averaged over directions."""
    acts = _acts(kind, attrs, d["D"])
    has_b = len(specs) > 3 and specs[3] is not None
    clip = attrs.get("clip") is not None
    G = d["G"]
    flops = float(G)  # add the input projection and the recurrent product
    flops += G if has_b else 0  # bias (W and R biases pre-summed)
    bwd = 0.0
    per_dir = []
    for dacts in acts:
        extra = 0
        if kind == "LSTM":
            fa, ga, ha = dacts
            forget = int(attrs.get("input_forget", 0))
            evals = [fa] * (2 if forget else 3) + [ga, ha]
            extra = 1 if forget else 0  # f = 1 - i
        elif kind == "GRU":
            evals = [dacts[0], dacts[0], dacts[1]]
        else:
            evals = list(dacts)
        per_dir.append((sum(a.act.flops for a in evals) + extra, sum(a.act.trans for a in evals),
                        sum(a.act.grad_flops for a in evals) + extra))
    af = sum(p[0] for p in per_dir) / len(per_dir)
    at = sum(p[1] for p in per_dir) / len(per_dir)
    ag = sum(p[2] for p in per_dir) / len(per_dir)
    if kind == "LSTM":
        flops += 4  # C = f*C' + i*g (3), H = o*h(C) (1)
        bwd += 14  # cell / gate chain rule
        if len(specs) > 7 and specs[7] is not None:
            flops += 6  # three peephole multiply-adds
            bwd += 12
    elif kind == "GRU":
        flops += 1 + 3 + (1 if has_b else 0)  # r*(.), H = h + z*(H' - h), separate h-gate R bias
        bwd += 10
    else:
        bwd += 1
    if clip:
        clipped = G + 1 if kind == "LSTM" else G  # LSTM also clips the cell state entering h()
        flops += 2 * clipped
        bwd += clipped
    bwd += G  # bias gradient sums
    return flops + af, at, bwd + ag


def _step_kernels(kind: str, d: dict[str, int], vec: float, trans: float, isz: int,
                  backward: bool) -> tuple[Work, Work]:
    """The two kernels of one time step (all directions at once), as cuDNN runs a recurrence:
    the recurrent GEMM, then the pointwise gate kernel (forward), or the pointwise chain rule,
    then the GEMM that carries dH to the previous step (backward)."""
    Bt, H, D, G = d["B"], d["H"], d["D"], d["G"]
    GH = G * H
    states = 2 if kind == "LSTM" else 1
    if backward:
        g = GemmShape(Bt, H, GH, D)  # dH_prev = dgates @ R
        gemm = Work(g.flops, g.flops, bytes_read=D * (GH * H + Bt * GH) * isz,
                    bytes_written=D * Bt * H * isz, gemms=(g,))
        pw = Work(vec * Bt * H * D, bytes_read=D * Bt * (GH + (states + 1) * H) * isz,
                  bytes_written=D * Bt * (GH + (states - 1) * H) * isz)
        return pw, gemm
    g = GemmShape(Bt, GH, H, D)  # h_{t-1} @ R^T
    gemm = Work(g.flops, g.flops, bytes_read=D * (GH * H + Bt * H) * isz, bytes_written=D * Bt * GH * isz,
                gemms=(g,))
    pw = Work(vec * Bt * H * D, transcendentals=trans * Bt * H * D,
              bytes_read=D * Bt * (2 * GH + (states - 1) * H) * isz, bytes_written=D * Bt * states * H * isz)
    return gemm, pw


def _work(kind: str, backward: bool):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
        n_fwd = len(_KINDS[kind][3])
        d = _dims(kind, ins[:n_fwd], attrs)
        T, Bt, I, H, D, G = d["T"], d["B"], d["I"], d["H"], d["D"], d["G"]
        units = T * Bt * H * D
        vec, trans, bvec = _elementwise_counts(kind, ins[:n_fwd], attrs, d)
        gemms = [GemmShape(T * Bt, G * H, I, D), GemmShape(Bt, G * H, H, T * D)]
        vector = vec * units
        x = ins[0]
        assert x is not None
        isz = itemsize(x.dtype)
        serial = [Serial(T, _step_kernels(kind, d, vec, trans, isz, backward=False))]
        if backward:
            gemms += [
                GemmShape(Bt, H, G * H, T * D),  # dH_prev = dgates @ R, serial over steps
                GemmShape(G * H, H, T * Bt, D),  # dR = dgates^T @ H_prev
                GemmShape(G * H, I, T * Bt, D),  # dW = dgates^T @ X
                GemmShape(T * Bt, I, G * H, D),  # dX = dgates @ W
            ]
            vector += bvec * units + (D - 1) * T * Bt * I  # sum dX over directions
            serial.append(Serial(T, _step_kernels(kind, d, bvec, 0.0, isz, backward=True)))
        mm = sum(g.flops for g in gemms)
        r, w = io_bytes(ins, outs)
        return Work(flops=mm + vector, matmul_flops=mm, transcendentals=trans * units,
                    bytes_read=r, bytes_written=w, gemms=tuple(gemms), serial=tuple(serial))

    work.__doc__ = _WORK_DOC
    return work


_WORK_DOC = """Work of a recurrent layer (per direction; directions add up).

GEMMs: the input projection as one GEMM (m = seq*batch, n = G*H, k = input, batch = dirs) and
the recurrent product h_{t-1} R^T as GemmShape(m = batch, n = G*H, k = H, batch = seq*dirs):
the seq small GEMMs of one direction depend on each other and run one after another (only
the directions may overlap). Vector FLOPs per (step, batch, hidden unit, direction), default
activations: LSTM 8 (adding the two projections and the bias for 4 gates) + 3 sigmoids x 4 +
2 tanh x 1 + 4 (cell and output products) = 26, +6 with peepholes, +10 with clip; GRU 3 + 4
(biases) + 1 (reset product) + 3 (update) + 2 sigmoids x 4 + tanh 1 = 20; RNN 2 + tanh 1 = 3.
Transcendentals: one per activation evaluation (LSTM 3 sigmoid + 2 tanh, GRU 2 + 1, RNN 1;
input_forget drops the forget gate's). Bytes: every input read once, every output written
once (weights stay on chip across steps).

Time steps run one after another (``Work.serial``), as cuDNN's standard (non-persistent)
algorithm runs them: the input projection of all steps is one GEMM up front, then each step
launches the recurrent GEMM h_{t-1} R^T (batch = dirs: the directions run together) and one
pointwise kernel for the gates and the state update; a cost model times ``seq`` such steps
(the sum of their times, each with its launch), not one GEMM over all steps.

Backward (``*Grad``) = the forward recompute plus four GEMMs per direction: dH_prev =
dgates R (batch, H, G*H; serial over seq), dR = dgates^T H_prev and dW = dgates^T X
(G*H, H or input, seq*batch), dX = dgates W (seq*batch, input, G*H): backward GEMM FLOPs are
2x the forward's, 3x with the recompute. Backward vector FLOPs: 3 per sigmoid/tanh derivative
(as SigmoidGrad/TanhGrad), plus the chain rule (LSTM 14, +12 with peepholes; GRU 10; RNN 1),
the bias sums (G) and one per clipped value with clip. Its steps: the forward recompute (as
above), then ``seq`` backward steps of a pointwise chain-rule kernel and the dH_prev GEMM; the
weight and input gradients (dR, dW, dX) are batched over all steps.
"""


# ---------------------------------------------------------------------------- kernels


def _clip(z: np.ndarray, clip: float | None) -> tuple[np.ndarray, Any]:
    if clip is None:
        return z, 1.0
    return np.clip(z, -clip, clip), (np.abs(z) <= clip).astype(z.dtype)


class _Dir:
    """One direction of one recurrent layer: forward with a tape, and BPTT."""

    def __init__(self, kind: str, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
                 p: np.ndarray | None, mask: np.ndarray, reverse: bool, acts: list[BoundAct],
                 clip: float | None, attrs: dict[str, Any]) -> None:
        self.kind, self.x, self.w, self.r, self.p = kind, x, w, r, p
        G = w.shape[0] // r.shape[1]
        self.H = r.shape[1]
        self.wb, self.rb = b[: G * self.H], b[G * self.H:]
        self.mask, self.acts, self.clip = mask, acts, clip
        self.alive = mask.max(axis=0) if mask.shape[0] else mask.sum(axis=0)  # [B, 1]: len_b > 0
        T = x.shape[0]
        self.order = list(range(T - 1, -1, -1) if reverse else range(T))
        self.input_forget = bool(int(attrs.get("input_forget", 0)))
        self.lbr = bool(int(attrs.get("linear_before_reset", 0)))
        self.tape: list[dict[str, Any]] = []

    def forward(self, h: np.ndarray, c: np.ndarray | None):
        x, H = self.x, self.H
        T, Bt = x.shape[:2]
        gx = x @ self.w.T + self.wb
        y = np.zeros((T, Bt, H), dtype=x.dtype)
        step = {"LSTM": self._lstm, "GRU": self._gru, "RNN": self._rnn}[self.kind]
        for t in self.order:
            m = self.mask[t]
            tape = {"h": h, "c": c, "m": m}
            hn, cn = step(gx[t], h, c, tape)
            self.tape.append(tape)
            y[t] = m * hn
            h = m * hn + (1 - m) * h
            if c is not None:
                c = m * cn + (1 - m) * c
        return y, h * self.alive, None if c is None else c * self.alive

    def _lstm(self, gx, h, c, tp):
        f, g, hact = self.acts
        H, p = self.H, self.p
        a = gx + h @ self.r.T + self.rb
        ai, ao, af, ac = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        pi, po, pf = (0.0, 0.0, 0.0) if p is None else (p[:H], p[H:2 * H], p[2 * H:])
        zi, ki = _clip(ai + pi * c, self.clip)
        i = f(zi)
        if self.input_forget:
            zf, kf, fg = None, None, 1 - i
        else:
            zf, kf = _clip(af + pf * c, self.clip)
            fg = f(zf)
        zc, kc = _clip(ac, self.clip)
        gg = g(zc)
        cn = fg * c + i * gg
        zo, ko = _clip(ao + po * cn, self.clip)
        o = f(zo)
        zh, kh = _clip(cn, self.clip)
        hc = hact(zh)
        tp.update(zi=zi, ki=ki, i=i, zf=zf, kf=kf, f=fg, zc=zc, kc=kc, g=gg, cn=cn, zo=zo, ko=ko,
                  o=o, zh=zh, kh=kh, hc=hc)
        return o * hc, cn

    def _gru(self, gx, h, c, tp):
        f, g = self.acts
        H, r, rb = self.H, self.r, self.rb
        az = gx[:, :H] + h @ r[:H].T + rb[:H]
        ar = gx[:, H:2 * H] + h @ r[H:2 * H].T + rb[H:2 * H]
        zz, kz = _clip(az, self.clip)
        zr, kr = _clip(ar, self.clip)
        z, rg = f(zz), f(zr)
        if self.lbr:
            hr = h @ r[2 * H:].T + rb[2 * H:]
            ah = gx[:, 2 * H:] + rg * hr
        else:
            hr = None
            ah = gx[:, 2 * H:] + (rg * h) @ r[2 * H:].T + rb[2 * H:]
        zh, kh = _clip(ah, self.clip)
        ht = g(zh)
        tp.update(zz=zz, kz=kz, z=z, zr=zr, kr=kr, rg=rg, hr=hr, zh=zh, kh=kh, ht=ht)
        return (1 - z) * ht + z * h, None

    def _rnn(self, gx, h, c, tp):
        (f,) = self.acts
        za, ka = _clip(gx + h @ self.r.T + self.rb, self.clip)
        hn = f(za)
        tp.update(za=za, ka=ka, hn=hn)
        return hn, None

    def backward(self, dy: np.ndarray, dh: np.ndarray, dc: np.ndarray | None):
        """Gradients (dX, dW, dR, dB, dh0, dc0, dP) of this direction."""
        x, r = self.x, self.r
        T, Bt = x.shape[:2]
        GH = r.shape[0]
        dgx = np.zeros((T, Bt, GH), dtype=x.dtype)
        drec = np.zeros((T, Bt, GH), dtype=x.dtype)  # gradient of the recurrent pre-activation
        dr = np.zeros_like(r)
        dp = None if self.p is None else np.zeros_like(self.p)
        dh = dh * self.alive
        dc = None if dc is None else dc * self.alive
        step = {"LSTM": self._lstm_back, "GRU": self._gru_back, "RNN": self._rnn_back}[self.kind]
        for t, tp in zip(reversed(self.order), reversed(self.tape)):
            m = tp["m"]
            dhn = m * (dh + dy[t])
            dcn = None if dc is None else m * dc
            dh_prev = (1 - m) * dh
            dc_prev = None if dc is None else (1 - m) * dc
            dh_prev, dc_prev = step(tp, dhn, dcn, dh_prev, dc_prev, dgx[t], drec[t], dr, dp)
            dh, dc = dh_prev, dc_prev
        flat = dgx.reshape(T * Bt, GH)
        dw = flat.T @ x.reshape(T * Bt, -1)
        dx = dgx @ self.w
        db = np.concatenate([flat.sum(axis=0), drec.reshape(T * Bt, GH).sum(axis=0)])
        return dx, dw, dr, db, dh, dc, dp

    def _lstm_back(self, tp, dhn, dcn, dh_prev, dc_prev, dgx, drec, dr, dp):
        f, g, hact = self.acts
        H, p = self.H, self.p
        c = tp["c"]
        pi, po, pf = (0.0, 0.0, 0.0) if p is None else (p[:H], p[H:2 * H], p[2 * H:])
        do = dhn * tp["hc"]
        dcn = dcn + dhn * tp["o"] * hact.deriv(tp["zh"], tp["hc"]) * tp["kh"]
        dzo = do * f.deriv(tp["zo"], tp["o"]) * tp["ko"]
        dcn = dcn + dzo * po
        di = dcn * tp["g"]
        dgg = dcn * tp["i"]
        df = dcn * c
        dc_prev = dc_prev + dcn * tp["f"]
        dzc = dgg * g.deriv(tp["zc"], tp["g"]) * tp["kc"]
        if self.input_forget:
            di = di - df
            dzf = np.zeros_like(di)
        else:
            dzf = df * f.deriv(tp["zf"], tp["f"]) * tp["kf"]
            dc_prev = dc_prev + dzf * pf
        dzi = di * f.deriv(tp["zi"], tp["i"]) * tp["ki"]
        dc_prev = dc_prev + dzi * pi
        if dp is not None:
            dp[:H] += np.sum(dzi * c, axis=0)
            dp[H:2 * H] += np.sum(dzo * tp["cn"], axis=0)
            dp[2 * H:] += np.sum(dzf * c, axis=0)
        da = np.concatenate([dzi, dzo, dzf, dzc], axis=1)
        dgx[...] = da
        drec[...] = da
        dr += da.T @ tp["h"]
        return dh_prev + da @ self.r, dc_prev

    def _gru_back(self, tp, dhn, dcn, dh_prev, dc_prev, dgx, drec, dr, dp):
        f, g = self.acts
        H, r = self.H, self.r
        h = tp["h"]
        z, rg, ht = tp["z"], tp["rg"], tp["ht"]
        dz = dhn * (h - ht)
        dh_prev = dh_prev + dhn * z
        dah = dhn * (1 - z) * g.deriv(tp["zh"], ht) * tp["kh"]
        if self.lbr:
            drg = dah * tp["hr"]
            dhr = dah * rg
            dr[2 * H:] += dhr.T @ h
            dh_prev = dh_prev + dhr @ r[2 * H:]
            drec[:, 2 * H:] = dhr
        else:
            dr[2 * H:] += dah.T @ (rg * h)
            drh = dah @ r[2 * H:]
            drg = drh * h
            dh_prev = dh_prev + drh * rg
            drec[:, 2 * H:] = dah
        daz = dz * f.deriv(tp["zz"], z) * tp["kz"]
        dar = drg * f.deriv(tp["zr"], rg) * tp["kr"]
        dr[:H] += daz.T @ h
        dr[H:2 * H] += dar.T @ h
        dh_prev = dh_prev + daz @ r[:H] + dar @ r[H:2 * H]
        dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:] = daz, dar, dah
        drec[:, :H], drec[:, H:2 * H] = daz, dar
        return dh_prev, None

    def _rnn_back(self, tp, dhn, dcn, dh_prev, dc_prev, dgx, drec, dr, dp):
        (f,) = self.acts
        da = dhn * f.deriv(tp["za"], tp["hn"]) * tp["ka"]
        dgx[...] = da
        drec[...] = da
        dr += da.T @ tp["h"]
        return dh_prev + da @ self.r, None


def _setup(kind: str, xs: list[Any], attrs: dict[str, Any]):
    """Layout-0 arrays, per-direction runners and initial states."""
    names = _KINDS[kind][3]
    xs = list(xs) + [None] * (len(names) - len(xs))
    v = dict(zip(names, xs))
    layout = int(attrs.get("layout", 0))
    x, w, r = v["X"], v["W"], v["R"]
    if layout:
        x = np.swapaxes(x, 0, 1)
    T, Bt = x.shape[:2]
    D, GH, H = r.shape
    dt = x.dtype

    def state(name: str) -> np.ndarray:
        s = v.get(name)
        if s is None:
            return np.zeros((D, Bt, H), dtype=dt)
        return np.swapaxes(s, 0, 1) if layout else s

    b = v["B"] if v["B"] is not None else np.zeros((D, 2 * GH), dtype=dt)
    lens = v["sequence_lens"]
    lens = np.full(Bt, T) if lens is None else np.asarray(lens).astype(np.int64)
    mask = (np.arange(T)[:, None] < lens[None, :]).astype(dt)[:, :, None]  # [T, B, 1]
    acts = _acts(kind, attrs, D)
    clip = attrs.get("clip")
    clip = None if clip is None else float(clip)
    reverse = [_direction(attrs) == "reverse", True][:D]
    p = v.get("P")
    dirs = [_Dir(kind, x, w[d], r[d], b[d], None if p is None else p[d], mask, reverse[d], acts[d],
                 clip, attrs) for d in range(D)]
    h0 = state("initial_h")
    c0 = state("initial_c") if kind == "LSTM" else None
    return dirs, h0, c0, layout


def _forward(kind: str, xs: list[Any], attrs: dict[str, Any]):
    dirs, h0, c0, layout = _setup(kind, xs, attrs)
    ys, hs, cs = [], [], []
    for d, run in enumerate(dirs):
        y, h, c = run.forward(h0[d], None if c0 is None else c0[d])
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = np.stack(ys, axis=1)  # [T, D, B, H]
    yh = np.stack(hs, axis=0)
    outs = [y, yh] + ([np.stack(cs, axis=0)] if c0 is not None else [])
    if layout:
        outs = [np.transpose(outs[0], (2, 0, 1, 3))] + [np.swapaxes(o, 0, 1) for o in outs[1:]]
    return outs, dirs, layout


def _kernel(kind: str):
    def kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        return _forward(kind, xs, attrs)[0]

    return kernel


def _grad_kernel(kind: str):
    n_in = len(_KINDS[kind][3])

    def kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
        xs = list(xs) + [None] * (n_in + 3 - len(xs))
        fwd_outs, dirs, layout = _forward(kind, xs[:n_in], attrs)
        douts = [xs[n_in + i] if xs[n_in + i] is not None else np.zeros_like(o)
                 for i, o in enumerate(fwd_outs)]
        if layout:
            douts = [np.transpose(douts[0], (1, 2, 0, 3))] + [np.swapaxes(o, 0, 1) for o in douts[1:]]
        dy, dyh = douts[0], douts[1]
        dyc = douts[2] if kind == "LSTM" else None
        parts = [run.backward(dy[:, d], dyh[d], None if dyc is None else dyc[d])
                 for d, run in enumerate(dirs)]
        dx = sum(pt[0] for pt in parts)
        dw = np.stack([pt[1] for pt in parts])
        dr = np.stack([pt[2] for pt in parts])
        db = np.stack([pt[3] for pt in parts])
        dh0 = np.stack([pt[4] for pt in parts])
        if layout:
            dx, dh0 = np.swapaxes(dx, 0, 1), np.swapaxes(dh0, 0, 1)
        outs = [dx, dw, dr, db, dh0]
        if kind == "LSTM":
            dc0 = np.stack([pt[5] for pt in parts])
            outs.append(np.swapaxes(dc0, 0, 1) if layout else dc0)
            x = xs[0]
            H = xs[2].shape[2]
            outs.append(np.stack([pt[6] if pt[6] is not None else np.zeros(3 * H, x.dtype) for pt in parts]))
        return outs

    return kernel


# ---------------------------------------------------------------------------- gradient


def _grad_outputs(kind: str, specs: list[TensorSpec | None], d: dict[str, int]) -> list[TensorSpec]:
    """Gradient specs in order dX, dW, dR, dB, d_initial_h (+ d_initial_c, dP for LSTM)."""
    x = specs[0]
    assert x is not None
    dt = x.dtype
    D, G, H, Bt = d["D"], d["G"], d["H"], d["B"]
    st = (D, Bt, H) if d["layout"] == 0 else (Bt, D, H)
    out = [specs[0], specs[1], specs[2], TensorSpec((D, 2 * G * H), dt), TensorSpec(st, dt)]
    if kind == "LSTM":
        out += [TensorSpec(st, dt), TensorSpec((D, 3 * H), dt)]
    return [s for s in out if s is not None]


def _grad_infer(kind: str):
    n_in = len(_KINDS[kind][3])

    def infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
        specs = list(specs) + [None] * (n_in + 3 - len(specs))
        d = _dims(kind, specs[:n_in], attrs)
        outs = _out_specs(kind, d, specs[0].dtype if specs[0] else "fp32")
        for s, o in zip(specs[n_in:], outs):
            if s is not None and s != o:
                raise GraphError(f"{kind}Grad output gradient {s} does not match output {o}")
        return _grad_outputs(kind, specs[:n_in], d)

    return infer


def _grad_rule(kind: str):
    names = _KINDS[kind][3]
    # forward input index -> grad op output index
    slots = {0: 0, 1: 1, 2: 2, 3: 3, 5: 4, 6: 5, 7: 6}

    def grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
        ins = list(node.inputs) + [""] * (len(names) - len(node.inputs))
        n_out = 3 if kind == "LSTM" else 2
        douts = [(dys[i] if i < len(dys) and dys[i] else "") for i in range(n_out)]
        g = gb.graph
        name = g.unique_name(gb.base)
        meta = {"forward": node.name}
        if "layer" in node.meta:
            meta["layer"] = node.meta["layer"]
        n_grads = 7 if kind == "LSTM" else 5
        outs = [""] * n_grads
        for i, j in slots.items():
            if i < len(ins) and ins[i] and j < n_grads:
                outs[j] = name if j == 0 else f"{name}:{j}"
        g.add_node(f"{kind}Grad", ins + douts, outs, dict(node.attrs), name=name, meta=meta)
        res: list[str | None] = [None] * len(names)
        for i, j in slots.items():
            if i < len(names) and outs[j]:
                res[i] = outs[j]
        return res

    return grad


for _kind, (_g, _n, _defaults, _names) in _KINDS.items():
    defop(
        _kind,
        infer=_infer(_kind),
        work=_work(_kind, backward=False),
        kernel=_kernel(_kind),
        grad=_grad_rule(_kind),
        doc=f"ONNX {_kind}: inputs ({', '.join(_names)}).",
    )
    defop(
        f"{_kind}Grad",
        infer=_grad_infer(_kind),
        work=_work(_kind, backward=True),
        kernel=_grad_kernel(_kind),
        no_grad="backward op",
        doc=f"BPTT of {_kind}: inputs ({', '.join(_names)}, dY, dY_h{', dY_c' if _kind == 'LSTM' else ''}); "
            f"outputs dX, dW, dR, dB, d_initial_h{', d_initial_c, dP' if _kind == 'LSTM' else ''} "
            "(an output is left unnamed when its forward input is absent).",
    )
