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

Bytes and kernels follow the implementation torch.optim runs (attribute ``impl``; torch 2.13,
``torch/optim/sgd.py`` and ``adam.py``, traced op by op in ``tests/test_optim_impl.py``):

* ``foreach`` (torch's default for CUDA tensors, ``foreach=None``, and so
  ``training_graph``'s): a sequence of
  ``torch._foreach_*`` ops over the whole parameter group, each one pass over its tensor
  lists and one or more ``multi_tensor_apply`` launches (``mta_launches``). SGD with
  momentum: ``_foreach_mul_(bufs)``, ``_foreach_add_(bufs, grads)``, ``_foreach_add_(params,
  bufs)`` (8 element passes: each op reads its lists and writes its first); Adam:
  ``_foreach_lerp_(m, g)``, ``_foreach_mul_(v)``, ``_foreach_addcmul_(v, g, g)``,
  ``_foreach_sqrt(v)`` (a new list), ``_foreach_div_``, ``_foreach_add_(eps)``,
  ``_foreach_addcdiv_(p, m, denom)`` (19 passes); weight decay adds ``_foreach_add(grads,
  params)`` (SGD, Adam's L2) or ``_foreach_mul_(params)`` (AdamW), nesterov one more add;
* ``forloop`` (``foreach=False``): the same tensor ops, one kernel each per parameter;
* ``fused`` (``fused=True``): ``_fused_sgd_`` / ``_fused_adam(w)_``, one pass (param, grad and
  every state read once, new param and states written once) in ``multi_tensor_apply``
  launches over the group (Adam's device step counters: one more launch);
* ``per_param`` (the op's own default): one fused kernel per parameter, the same one pass
  (an optimizer fused into the backward pass, or a hand-written per-tensor kernel).

The update ops stay one node per parameter (values, in-place memory); a ``multi_tensor_apply``
launch shared by the group is charged to each node in proportion: the training pass sets
``launches`` (this node's share of the group's kernel launches) from ``mta_launches``.
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
DEFAULTS: dict[str, dict[str, Any]] = {
    "SGDUpdate": {"lr": 0.01, "weight_decay": 0.0, "impl": "per_param"},
    "MomentumUpdate": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "nesterov": 0,
                       "dampening": 0.0, "impl": "per_param"},
    "AdamUpdate": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
                   "impl": "per_param"},
    "AdamWUpdate": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.01,
                    "impl": "per_param"},
}
IMPLS = ("foreach", "fused", "forloop", "per_param")

# multi_tensor_apply (aten/src/ATen/native/cuda/MultiTensorApply.cuh): chunks of 65536 elements,
# one thread block each; a launch takes at most max_blocks blocks and max_tensors tensors (by
# depth, the number of tensor lists). With 32 KB kernel arguments (CUDA >= 12.1 on sm_70 and
# newer: DepthToMaxConfig<true>) the limits are 7x those of the 4 KB configuration.
MTA_CHUNK = 65536
MTA_MAX_TENSORS = {False: (110, 64, 48, 36, 30), True: (770, 448, 336, 252, 210)}
MTA_MAX_BLOCKS = {False: 320, True: 2240}


def mta_launches(numels: list[int], depth: int, large_kernel_arg: bool = True) -> int:
    """Kernel launches ``multi_tensor_apply`` makes for tensors of ``numels`` elements over
    ``depth`` lists: a launch goes out when its blocks (chunks) or its tensors are full (a
    tensor counts once all its chunks are in), and once at the end.

    >>> mta_launches([65536] * 3, 2), mta_launches([2240 * 65536 + 1], 1), mta_launches([1] * 449, 2)
    (1, 2, 2)
    """
    max_t = MTA_MAX_TENSORS[large_kernel_arg][depth - 1]
    max_b = MTA_MAX_BLOCKS[large_kernel_arg]
    launches = blocks = tensors = 0
    for n in numels:
        if n <= 0:
            continue
        tensors += 1
        rem = -(-int(n) // MTA_CHUNK)
        while rem:
            take = min(rem, max_b - blocks)
            blocks += take
            rem -= take
            if blocks == max_b or (tensors == max_t and rem == 0):
                launches += 1
                blocks = 0
                tensors = 0 if rem == 0 else 1
    return launches + (1 if blocks else 0)


def torch_sequence(op: str, attrs: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The tensor ops torch.optim's foreach (and for-loop) step runs for ``op``:
    (name, element passes, tensor lists = multi_tensor_apply depth). Passes count every list
    read (a list passed twice, ``addcmul_(v, g, g)``, twice) and the one written."""
    wd = _attr(op, attrs, "weight_decay") != 0.0
    seq: list[tuple[str, int, int]] = []
    if float(attrs.get("grad_scale", 1.0)) != 1.0:  # GradScaler.unscale_
        seq.append(("_amp_foreach_non_finite_check_and_unscale_", 2, 1))
    if wd and op != "AdamWUpdate":
        seq.append(("_foreach_add", 3, 3))  # grads + wd * params, a new list
    if op == "SGDUpdate":
        return seq + [("_foreach_add_", 3, 2)]
    if op == "MomentumUpdate":
        seq += [("_foreach_mul_", 2, 1), ("_foreach_add_", 3, 2)]
        if attrs.get("nesterov", 0):
            seq.append(("_foreach_add_", 3, 2))
        return seq + [("_foreach_add_", 3, 2)]
    if op == "AdamWUpdate" and wd:
        seq.append(("_foreach_mul_", 2, 1))
    return seq + [("_foreach_lerp_", 3, 2), ("_foreach_mul_", 2, 1), ("_foreach_addcmul_", 4, 3),
                  ("_foreach_sqrt", 2, 2), ("_foreach_div_", 2, 1), ("_foreach_add_", 2, 1),
                  ("_foreach_addcdiv_", 4, 3)]


def impl_of(attrs: dict[str, Any]) -> str:
    impl = str(attrs.get("impl", "per_param"))
    if impl not in IMPLS:
        raise GraphError(f"unknown optimizer impl {impl!r} (choose from {', '.join(IMPLS)})")
    return impl


def group_launches(op: str, attrs: dict[str, Any], numels: list[int]) -> float:
    """Kernel launches one step of ``op`` makes for a group of parameters of ``numels``
    elements under ``attrs["impl"]`` (module doc)."""
    impl = impl_of(attrs)
    if impl == "per_param":
        return float(len(numels))
    if impl == "forloop":
        return float(len(numels) * len(torch_sequence(op, attrs)))
    if impl == "fused":
        depth = 2 + N_STATES[op]
        steps = mta_launches([1] * len(numels), 1) if op in ("AdamUpdate", "AdamWUpdate") else 0
        return float(mta_launches(numels, depth) + steps)
    return float(sum(mta_launches(numels, depth) for _, _, depth in torch_sequence(op, attrs)))


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
        r, w = (float(b) for b in io_bytes(ins, outs))
        launches = float(attrs.get("launches", 1.0))
        if impl_of(attrs) in ("foreach", "forloop"):  # one pass per tensor op (module doc)
            seq = torch_sequence(op, attrs)
            size = float(param.nbytes)
            passes = sum(p for _, p, _ in seq)
            r, w = (passes - len(seq)) * size, len(seq) * size
            if "launches" not in attrs:
                launches = float(len(seq))
        return Work(flops=f * param.numel, transcendentals=t * param.numel,
                    bytes_read=r, bytes_written=w, launches=launches)

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
