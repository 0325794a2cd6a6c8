"""Optimizer update ops: SGDUpdate, MomentumUpdate, AdamUpdate, AdamWUpdate.

Each op takes ``(param, grad, *states, step)`` and returns ``(new_param, *new_states)``;
``step`` is the 1-based number of the step being taken (an int64 scalar; only Adam's bias
correction reads it). The training pass marks each update node with
``meta["inplace"] = {out_index: in_index}`` (new param over param, new state over state), so
the engine allocates nothing for the outputs. The formulas are torch.optim's:

* SGD: ``g' = g + wd p``; ``p -= lr g'``.
* Momentum (torch SGD with ``momentum`` > 0): ``v = mu v + (1 - dampening) g'``, except on
  step 1, where ``v = g'`` (torch starts the buffer from the first gradient, undampened;
  without the ``step`` input every step takes the general form); ``p -= lr v``
  (nesterov: ``p -= lr (g' + mu v)``; torch allows nesterov only with dampening 0).
* Adam (L2 weight decay folded into the gradient): ``m = b1 m + (1 - b1) g'``,
  ``v = b2 v + (1 - b2) g'^2``, ``p -= lr m_hat / (sqrt(v_hat) + eps)`` with
  ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.
* AdamW: decoupled decay ``p *= 1 - lr wd`` first, then Adam without ``wd``.

FLOPs per parameter element (multiplies, adds, divides and sqrt count 1 each; per-step scalar
work such as ``1 - b1^t`` is negligible and not counted):

* SGD: 2 (``lr*g``, subtract), + 2 with weight decay (``wd*p``, add).
* Momentum: 4 (``mu*v``, add, ``lr*v``, subtract), + 2 with nesterov, + 2 with weight decay,
  + 1 with dampening (``(1 - dampening) * g'``).
* Adam: 14 = m (3: two multiplies, add) + v (4: square, two multiplies, add) + bias
  corrections (2) + sqrt (1, also 1 transcendental) + ``+eps`` (1) + divide (1) + ``lr*``
  (1) + subtract (1); + 2 with weight decay.
* AdamW: 14 + 2 for the decoupled decay (multiply, subtract) when ``weight_decay`` != 0.

Every op also takes ``grad_scale`` (default 1): the gradient is multiplied by it first (the
mixed-precision pass uses ``1 / loss_scale`` to unscale fp16 gradients); 1 more FLOP per
element when it is not 1.

Bytes: param, grad and every state read once; new param and new states written once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.ops.common import io_bytes
from sim.ops.registry import add_traits, defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

# number of state tensors each optimizer keeps per parameter, by update op
N_STATES = {"SGDUpdate": 0, "MomentumUpdate": 1, "AdamUpdate": 2, "AdamWUpdate": 2}
DEFAULTS: dict[str, dict[str, float]] = {
    "SGDUpdate": {"lr": 0.01, "weight_decay": 0.0},
    "MomentumUpdate": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "nesterov": 0,
                       "dampening": 0.0},
    "AdamUpdate": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0},
    "AdamWUpdate": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.01},
}


def _attr(op: str, attrs: dict[str, Any], key: str) -> float:
    return float(attrs.get(key, DEFAULTS[op][key]))


def _infer(op: str):
    n_states = N_STATES[op]

    def infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
        want = 2 + n_states
        if len(specs) < want or any(s is None for s in specs[:want]):
            raise GraphError(f"{op} needs (param, grad, {n_states} states[, step])")
        param = specs[0]
        assert param is not None
        if not is_float(param.dtype):
            raise GraphError(f"{op}: param must be floating, got {param.dtype}")
        for i, s in enumerate(specs[1:want], start=1):
            assert s is not None
            if s.shape != param.shape:
                raise GraphError(f"{op}: input {i} has shape {s.shape}, param has {param.shape}")
        step = specs[want] if len(specs) > want else None
        if step is not None and step.numel != 1:
            raise GraphError(f"{op}: step must be a scalar, got shape {step.shape}")
        if op in ("AdamUpdate", "AdamWUpdate") and step is None:
            raise GraphError(f"{op} needs the step input (bias correction)")
        return [param] + [s for s in specs[2:want] if s is not None]

    return infer


def flops_per_element(op: str, attrs: dict[str, Any]) -> tuple[float, float]:
    """(FLOPs, transcendentals) per parameter element of one update (see the module doc)."""
    wd = _attr(op, attrs, "weight_decay") != 0.0
    unscale = float(attrs.get("grad_scale", 1.0)) != 1.0
    if op == "SGDUpdate":
        return 2 + 2 * wd + unscale, 0
    if op == "MomentumUpdate":
        damp = float(attrs.get("dampening", 0.0)) != 0.0
        return 4 + 2 * bool(attrs.get("nesterov", 0)) + 2 * wd + damp + unscale, 0
    return 14 + 2 * wd + unscale, 1  # Adam (L2 on the gradient) and AdamW (decoupled): same count


def _grad(xs: list[Any], attrs: dict[str, Any]) -> Any:
    scale = float(attrs.get("grad_scale", 1.0))
    return xs[1] * np.asarray(scale, xs[1].dtype) if scale != 1.0 else xs[1]


def _work(op: str):
    def work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
        param = ins[0]
        assert param is not None
        f, t = flops_per_element(op, attrs)
        r, w = io_bytes(ins, outs)
        return Work(flops=f * param.numel, transcendentals=t * param.numel,
                    bytes_read=r, bytes_written=w)

    return work


def _sgd(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    p, g = xs[0], _grad(xs, attrs)
    wd = _attr("SGDUpdate", attrs, "weight_decay")
    if wd:
        g = g + wd * p
    return [p - _attr("SGDUpdate", attrs, "lr") * g]


def _momentum(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    p, g, v = xs[0], _grad(xs, attrs), xs[2]
    op = "MomentumUpdate"
    wd, mu, lr = _attr(op, attrs, "weight_decay"), _attr(op, attrs, "momentum"), _attr(op, attrs, "lr")
    damp = _attr(op, attrs, "dampening")
    if wd:
        g = g + wd * p
    first = len(xs) > 3 and xs[3] is not None and int(np.asarray(xs[3]).reshape(-1)[0]) == 1
    if first:
        v = np.array(g, copy=True)  # torch: buf = clone(d_p) on the first step
    else:
        v = mu * v + ((1.0 - damp) * g if damp else g)
    step = g + mu * v if attrs.get("nesterov", 0) else v
    return [p - lr * step, v]


def _adam_core(op: str, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: Any,
               attrs: dict[str, Any], l2: float) -> list[np.ndarray]:
    b1, b2 = _attr(op, attrs, "beta1"), _attr(op, attrs, "beta2")
    lr, eps = _attr(op, attrs, "lr"), _attr(op, attrs, "epsilon")
    if l2:
        g = g + l2 * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * np.square(g)
    step = int(np.asarray(t).reshape(-1)[0])
    if step < 1:
        raise ValueError(f"step must be >= 1 (1-based), got {step}")
    bc1 = 1.0 - b1**step
    bc2 = 1.0 - b2**step
    m_hat = m / np.asarray(bc1, p.dtype)
    v_hat = v / np.asarray(bc2, p.dtype)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return [p, m, v]


def _adam(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    p, _, m, v, t = xs[:5]
    g = _grad(xs, attrs)
    return _adam_core("AdamUpdate", p, g, m, v, t, attrs, _attr("AdamUpdate", attrs, "weight_decay"))


def _adamw(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    p, _, m, v, t = xs[:5]
    g = _grad(xs, attrs)
    op = "AdamWUpdate"
    p = p * (1.0 - _attr(op, attrs, "lr") * _attr(op, attrs, "weight_decay"))
    return _adam_core(op, p, g, m, v, t, attrs, 0.0)


_KERNELS = {"SGDUpdate": _sgd, "MomentumUpdate": _momentum, "AdamUpdate": _adam, "AdamWUpdate": _adamw}
_DOCS = {
    "SGDUpdate": "inputs (param, grad[, step]); attrs lr, weight_decay; output new param.",
    "MomentumUpdate": "inputs (param, grad, velocity[, step]); attrs lr, momentum, weight_decay, "
                      "nesterov, dampening; outputs (new param, new velocity).",
    "AdamUpdate": "inputs (param, grad, m, v, step); attrs lr, beta1, beta2, epsilon, "
                  "weight_decay (L2); outputs (new param, new m, new v).",
    "AdamWUpdate": "as AdamUpdate with decoupled weight decay (default 0.01).",
}

for _op in N_STATES:
    defop(_op, infer=_infer(_op), work=_work(_op), kernel=_KERNELS[_op],
          no_grad="optimizer update", doc=_DOCS[_op])


# ----------------------------------------------------------------- scheduling support
def _depend_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    if not specs or specs[0] is None:
        raise GraphError("Depend needs the tensor to pass through as its first input")
    return [specs[0]]


def _depend_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    return [dys[0]] + [None] * (len(node.inputs) - 1)


defop(
    "Depend",
    infer=_depend_infer,
    work=lambda ins, outs, attrs: Work(),
    kernel=lambda xs, attrs: [xs[0]],
    grad=_depend_grad,
    doc="Depend(x, after...) = x, not computed before the tensors `after` exist (a control "
        "dependency, like XLA's optimization barrier). The training pass uses it to hold "
        "recomputation back until the backward pass needs it; it is marked in place, so it "
        "costs no memory and no work.",
)

add_traits("no_kernel", "Depend")
add_traits("optimizer", *N_STATES)
