"""Mixture-of-experts FFN: ``MoE``, after ONNX Runtime's ``com.microsoft.MoE`` contrib op.

Inputs ``(input [..., hidden], router_probs [..., E], fc1_experts_weights [E, hidden, inter],
fc1_experts_bias [E, inter], fc2_experts_weights [E, inter, hidden], fc2_experts_bias
[E, hidden], fc3_experts_weights [E, hidden, inter], fc3_experts_bias [E, inter])``, the
biases and fc3 optional; attributes ``k`` (experts per token, default 1),
``activation_type`` (relu, gelu, silu, identity; default relu) and
``normalize_routing_weights`` (0/1). ``router_probs`` are the router's logits: each token goes
to the ``k`` experts of largest logit, weighted by the softmax over all experts (with
``normalize_routing_weights=1``, by the softmax over the chosen ``k``, as Mixtral does).
Expert ``e`` computes ``act(x W1_e + b1_e) W2_e + b2_e``, or with fc3 the gated form
``(act(x W1_e + b1_e) * (x W3_e + b3_e)) W2_e + b2_e`` (SwiGLU with silu). The output has the
input's shape.

Expert parallelism (an attribute of our own, ``global_experts`` G, default E): the op is one
rank's share of a layer of G experts. ``router_probs`` has G columns (the replicated router),
the op holds E of the experts (the rank's; taken as the first E, every rank's share being
alike) and computes only the token-expert pairs routed to them; the rest of each token's
output comes from the other ranks (summed by a ReduceScatter or AllReduce after it).
With an all-to-all dispatcher (``source_ranks`` R, default 1) the op stands for the rank's
experts serving the tokens that ``R`` symmetric ranks (its own included) route to them: each
rank routes its own ``rows`` tokens (the router's work is its own), the held experts get the
routed pairs of ``R x rows`` tokens (the work model's expert part). The executor, seeing one
member, computes its own tokens' share as above.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import need
from sim.ops.registry import defop
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec

ACTIVATIONS = ("relu", "gelu", "silu", "identity")


def _pad(specs: list[Any], n: int) -> list[Any]:
    return list(specs) + [None] * (n - len(specs))


def _dims(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> dict[str, int]:
    x, router, w1 = need(specs, 3, "MoE")
    b1, w2, b2, w3, b3 = _pad(specs, 8)[3:8]
    if w2 is None:
        raise GraphError("MoE needs fc2_experts_weights (input 4)")
    if x.rank < 2:
        raise GraphError(f"MoE input must be [..., hidden], got {x.shape}")
    hidden = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    if w1.rank != 3 or w1.shape[1] != hidden:
        raise GraphError(f"fc1_experts_weights {w1.shape} is not [E, {hidden}, inter]")
    E, _, inter = w1.shape
    G = int(attrs.get("global_experts", E) or E)
    if G < E:
        raise GraphError(f"MoE global_experts {G} is fewer than the {E} experts held")
    if router.shape != (*x.shape[:-1], G):
        raise GraphError(f"router_probs {router.shape} is not {(*x.shape[:-1], G)}")
    if w2.shape != (E, inter, hidden):
        raise GraphError(f"fc2_experts_weights {w2.shape} is not {(E, inter, hidden)}")
    if w3 is not None and w3.shape != w1.shape:
        raise GraphError(f"fc3_experts_weights {w3.shape} differs from fc1 {w1.shape}")
    for name, b, want in (("fc1", b1, (E, inter)), ("fc2", b2, (E, hidden)), ("fc3", b3, (E, inter))):
        if b is not None and b.shape != want:
            raise GraphError(f"{name}_experts_bias {b.shape} is not {want}")
    if b3 is not None and w3 is None:
        raise GraphError("fc3_experts_bias without fc3_experts_weights")
    k = int(attrs.get("k", 1))
    if not 1 <= k <= G:
        raise GraphError(f"MoE k={k} must be between 1 and the {G} experts")
    act = str(attrs.get("activation_type", "relu"))
    if act not in ACTIVATIONS:
        raise GraphError(f"MoE activation_type {act!r} is not one of {', '.join(ACTIVATIONS)}")
    src = int(attrs.get("source_ranks", 1))
    if src < 1:
        raise GraphError(f"MoE source_ranks {src} must be >= 1")
    return {"rows": rows, "hidden": hidden, "E": E, "inter": inter, "k": k, "G": G,
            "gated": int(w3 is not None), "src": src}


def _infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    _dims(specs, attrs)
    assert specs[0] is not None
    return [specs[0]]


def expected_experts(rows: int, experts: int, k: int) -> float:
    """Expected number of experts that receive at least one of ``rows`` tokens when each
    token picks ``k`` distinct experts uniformly: ``E * (1 - (1 - k/E)^rows)``.

    >>> expected_experts(1, 8, 2), round(expected_experts(64, 8, 2), 6)
    (2.0, 8.0)
    """
    return experts * (1.0 - (1.0 - k / experts) ** rows)


def expert_read_fraction(ins: list[TensorSpec | None], attrs: dict[str, Any]) -> float:
    """The share of each expert weight (and bias) tensor the kernel reads: the experts
    expected to get a token, of those held (``_work``'s bytes)."""
    d = _dims(ins, attrs)
    routed = d["rows"] * d["src"]
    return (1.0 - (1.0 - d["k"] / d["G"]) ** routed) if d["G"] else 1.0


def _work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict[str, Any]) -> Work:
    """Work of a grouped-GEMM MoE kernel. Routing is a runtime value: the estimate assumes the
    router spreads tokens uniformly, so ``rows * k * E / G`` token-expert pairs fall on the
    ``E (1 - (1 - k/G)^rows)`` held experts expected to get any (``expected_experts`` when
    G = E) (each one's weights read once, which
    is what makes small-batch MoE decode memory-bound) with ``rows * k / hit`` rows each.
    Matmul FLOPs: ``2 * rows * k * hidden * inter`` per projection (2, or 3 gated). Vector
    FLOPs: routing softmax over E (4 per logit: max, subtract, exp, sum) plus a top-k pass
    (E per row); per routed row the activation (4 for silu/gelu, 1 relu) and gate multiply,
    biases and the weighted combine (2 per output element). Transcendentals: E exps per row and
    one per activation element (silu/gelu). Bytes: input, router logits and output once, plus
    the weights (and biases) of the experts hit."""
    d = _dims(ins, attrs)
    rows, h, E, inter, k, G = d["rows"], d["hidden"], d["E"], d["inter"], d["k"], d["G"]
    routed = rows * d["src"]  # the tokens whose pairs may fall here (source_ranks x own)
    pairs = routed * k * E / G  # the token-expert pairs that fall on the experts held
    hit = E * (1.0 - (1.0 - k / G) ** routed)
    per_expert = max(1, round(pairs / hit)) if hit else 0
    n_hit = max(1, round(hit))
    n_proj = 3 if d["gated"] else 2
    mm = 2.0 * pairs * h * inter * n_proj
    gemms = [GemmShape(per_expert, inter, h, n_hit)] * (n_proj - 1)
    gemms.append(GemmShape(per_expert, h, inter, n_hit))
    act = str(attrs.get("activation_type", "relu"))
    act_flops = {"relu": 1, "gelu": 4, "silu": 4, "identity": 0}[act]
    biases = [s for s in _pad(ins, 8)[3:8:2] if s is not None]
    bias_flops = pairs * sum(s.shape[1] for s in biases)
    vec = rows * G * 5 + pairs * inter * (act_flops + d["gated"]) + bias_flops + 2 * pairs * h
    trans = rows * G + (pairs * inter if act in ("gelu", "silu") else 0)
    x, router = ins[0], ins[1]
    assert x is not None and router is not None
    expert_bytes = sum(s.nbytes for s in _pad(ins, 8)[2:8] if s is not None) / E
    r = x.nbytes + router.nbytes + hit * expert_bytes
    return Work(flops=mm + vec, matmul_flops=mm, transcendentals=trans, bytes_read=r,
                bytes_written=sum(o.nbytes for o in outs), gemms=tuple(gemms))


def _act(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "silu":
        return x / (1.0 + np.exp(-x))
    if kind == "gelu":
        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return x


def route(logits: np.ndarray, k: int, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(expert ids [rows, k], weights [rows, k]) of each row's top-k logits (ties to the lower
    index), weighted by the softmax over all experts or, with ``normalize``, over the k."""
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = z / z.sum(axis=-1, keepdims=True)
    w = np.take_along_axis(p, idx, axis=-1)
    if normalize:
        w = w / w.sum(axis=-1, keepdims=True)
    return idx, w


def _kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, router, w1, b1, w2, b2, w3, b3 = _pad(xs, 8)[:8]
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    k = int(attrs.get("k", 1))
    act = str(attrs.get("activation_type", "relu"))
    idx, w = route(router.reshape(x2.shape[0], -1).astype(np.float64), k,
                   bool(int(attrs.get("normalize_routing_weights", 0))))
    y = np.zeros(x2.shape, np.float64)
    for e in range(w1.shape[0]):  # the experts held (the first E of global_experts)
        rows, slot = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        xe = x2[rows].astype(np.float64)
        h = xe @ w1[e] + (b1[e] if b1 is not None else 0.0)
        h = _act(h, act)
        if w3 is not None:
            h = h * (xe @ w3[e] + (b3[e] if b3 is not None else 0.0))
        o = h @ w2[e] + (b2[e] if b2 is not None else 0.0)
        np.add.at(y, rows, o * w[rows, slot][:, None])
    return [y.reshape(shape).astype(x.dtype)]


defop(
    "MoE",
    infer=_infer,
    work=_work,
    kernel=_kernel,
    no_grad="inference op (top-k routing); train with the dense per-expert form",
    doc=__doc__.split("\n\n")[1] if __doc__ else "",
)
