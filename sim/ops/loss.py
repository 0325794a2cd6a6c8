"""Loss ops: SoftmaxCrossEntropyLoss (ONNX), MSELoss (ours), and their backward ops.

Work counts (per element of ``scores`` [N, C, d...], D = N * prod(d)):

* ``SoftmaxCrossEntropyLoss``: row max (1), subtract (1), exp (1 + 1 transcendental),
  row sum (1), log-prob subtract (1) = 5 FLOP and 1 transcendental per score; per row
  (D of them) one log (1 + 1 transcendental), the label pick and weight multiply (2) and the
  reduction (1) = 4 FLOP and 1 transcendental.
* ``SoftmaxCrossEntropyLossGrad`` recomputes the softmax (max, subtract, exp, sum,
  multiply by the row reciprocal = 5 FLOP + 1 transcendental per score, and per row the
  reciprocal, 1 FLOP + 1 transcendental), then with ``dloss`` subtracts the one-hot label
  and scales (2 FLOP per score: 7 per score in all), and with ``dlog_prob`` subtracts
  ``softmax * rowsum(dlog_prob)`` (3 FLOP per score).
* ``impl="torch"`` (what ``training_graph`` asks for): the kernels ``F.cross_entropy`` runs
  in PyTorch, not one fused kernel each way. Forward: ``_log_softmax`` (reads the scores,
  writes the log-probabilities) and ``nll_loss_forward`` (picks one per row): 2 launches.
  Backward: autograd's ``ones_like`` seed, ``nll_loss_backward`` (zero-fills the [N, C]
  gradient, then scatters one value per row: 2 kernels on CUDA) and
  ``_log_softmax_backward_data`` (reads that gradient and the log-probabilities, writes the
  scores' gradient): 4 launches, two [N, C] writes and two [N, C] reads. FLOPs are as above.
* ``MSELoss``: subtract, square, accumulate = 3 FLOP per element.
* ``MSELossGrad``: subtract, multiply by the scaled upstream gradient = 2 FLOP per element.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.dtypes import is_float
from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, io_bytes, need
from sim.ops.registry import defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

REDUCTIONS = ("mean", "sum", "none")


def _reduction(attrs: dict[str, Any]) -> str:
    red = str(attrs.get("reduction", "mean"))
    if red not in REDUCTIONS:
        raise GraphError(f"reduction must be one of {REDUCTIONS}, got {red!r}")
    return red


# ----------------------------------------------------------------- SoftmaxCrossEntropyLoss
def _sce_check(specs: list[TensorSpec | None]) -> tuple[TensorSpec, TensorSpec, TensorSpec | None]:
    scores, labels = need(specs, 2, "SoftmaxCrossEntropyLoss")
    weights = specs[2] if len(specs) > 2 else None
    if scores.rank < 2:
        raise GraphError(f"scores must be [N, C] or [N, C, d...], got {scores.shape}")
    if not is_float(scores.dtype):
        raise GraphError(f"scores must be floating, got {scores.dtype}")
    if labels.dtype not in ("int64", "int32"):
        raise GraphError(f"labels must be int64 or int32, got {labels.dtype}")
    want = (scores.shape[0], *scores.shape[2:])
    if labels.shape != want:
        raise GraphError(f"labels shape {labels.shape} does not match scores {scores.shape} (want {want})")
    if weights is not None and weights.shape != (scores.shape[1],):
        raise GraphError(f"weights must be [C] = [{scores.shape[1]}], got {weights.shape}")
    return scores, labels, weights


def _sce_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    scores, labels, _ = _sce_check(specs)
    red = _reduction(attrs)
    loss_shape = labels.shape if red == "none" else ()
    return [TensorSpec(loss_shape, scores.dtype), scores]


def _sce_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    scores = ins[0]
    assert scores is not None
    n = scores.numel
    rows = n // scores.shape[1]
    r, w = (float(b) for b in io_bytes(ins, outs))
    launches = 1.0
    if attrs.get("impl") == "torch":  # _log_softmax writes the log-probabilities; nll_loss picks
        w = max(w, float(outs[0].nbytes + scores.nbytes))
        launches = 2.0
    return Work(flops=5 * n + 4 * rows, transcendentals=n + rows, bytes_read=r, bytes_written=w,
                launches=launches)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def _row_weights(labels: np.ndarray, weights: np.ndarray | None, ignore: int | None,
                 dtype: np.dtype) -> np.ndarray | None:
    """Per-row weight (ONNX: weights[label], 0 where label == ignore_index), or None."""
    if weights is None and ignore is None:
        return None
    if weights is not None:
        wr = np.take(weights, labels.astype(np.int64), mode="clip")
    else:
        wr = np.ones(labels.shape)
    if ignore is not None:
        wr = np.where(labels == ignore, 0.0, wr)
    return wr.astype(dtype)


def _pick(logp: np.ndarray, labels: np.ndarray, ignore: int | None) -> np.ndarray:
    """logp[n, labels[n, d...], d...] (0 where ignored)."""
    safe = labels.astype(np.int64)
    if ignore is not None:
        safe = np.where(labels == ignore, 0, safe)
    return np.take_along_axis(logp, np.expand_dims(safe, 1), axis=1)[:, 0]


def _ignore(attrs: dict[str, Any]) -> int | None:
    v = attrs.get("ignore_index")
    return None if v is None else int(v)


def _sce_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    scores, labels = xs[0], xs[1]
    weights = xs[2] if len(xs) > 2 else None
    ignore = _ignore(attrs)
    logp = _log_softmax(scores)
    loss = -_pick(logp, labels, ignore)
    wr = _row_weights(labels, weights, ignore, scores.dtype)
    if wr is not None:
        loss = loss * wr
    red = _reduction(attrs)
    if red == "mean":
        loss = np.sum(loss) / (np.sum(wr) if wr is not None else loss.size)
    elif red == "sum":
        loss = np.sum(loss)
    return [np.asarray(loss, dtype=scores.dtype), logp.astype(scores.dtype)]


def _sce_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    dloss = dys[0]
    dlogp = dys[1] if len(dys) > 1 else None
    scores, labels = node.inputs[0], node.inputs[1]
    weights = node.inputs[2] if len(node.inputs) > 2 else ""
    dx = gb.op("SoftmaxCrossEntropyLossGrad", [dloss or "", dlogp or "", scores, labels, weights],
               **node.attrs)
    return [dx, None, None]


defop(
    "SoftmaxCrossEntropyLoss",
    infer=_sce_infer,
    work=_sce_work,
    kernel=_sce_kernel,
    grad=_sce_grad,
    doc="ONNX SoftmaxCrossEntropyLoss: inputs (scores [N,C,d...], labels [N,d...] int, "
        "weights [C] optional); attrs reduction mean|sum|none, ignore_index; outputs "
        "(loss, log_prob).",
)


def _sce_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    if len(specs) < 4 or specs[2] is None or specs[3] is None:
        raise GraphError("SoftmaxCrossEntropyLossGrad needs (dloss, dlog_prob, scores, labels)")
    scores, _, _ = _sce_check(specs[2:])
    return [scores]


def _sce_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    scores = ins[2]
    assert scores is not None
    n = scores.numel
    rows = n // scores.shape[1]
    flops = 5 * n + rows  # the softmax again, and one reciprocal per row
    if ins[0] is not None:
        flops += 2 * n  # - onehot, * dloss (and the row weight)
    if ins[1] is not None:
        flops += 3 * n  # dlogp - softmax * rowsum(dlogp)
    r, w = (float(b) for b in io_bytes(ins, outs))
    launches = 1.0
    if attrs.get("impl") == "torch":  # ones_like, zero-fill + scatter, _log_softmax_backward_data
        labels = ins[3]
        r = 2.0 * scores.nbytes + (labels.nbytes if labels is not None else 0)
        w = 2.0 * scores.nbytes
        launches = 4.0
    return Work(flops=flops, transcendentals=n + rows, bytes_read=r, bytes_written=w, launches=launches)


def _sce_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dloss, dlogp, scores, labels = xs[0], xs[1], xs[2], xs[3]
    weights = xs[4] if len(xs) > 4 else None
    ignore = _ignore(attrs)
    p = np.exp(_log_softmax(scores))
    dx = np.zeros_like(scores)
    if dloss is not None:
        onehot = np.zeros_like(scores)
        safe = labels.astype(np.int64)
        if ignore is not None:
            safe = np.where(labels == ignore, 0, safe)
        np.put_along_axis(onehot, np.expand_dims(safe, 1), 1.0, axis=1)
        wr = _row_weights(labels, weights, ignore, scores.dtype)
        scale = np.ones(labels.shape, scores.dtype) if wr is None else wr
        red = _reduction(attrs)
        if red == "mean":
            scale = scale / (np.sum(wr) if wr is not None else labels.size)
        upstream = np.broadcast_to(dloss, labels.shape) if red != "none" else dloss
        scale = scale * upstream
        dx = dx + (p - onehot) * np.expand_dims(scale, 1)
    if dlogp is not None:
        dx = dx + dlogp - p * np.sum(dlogp, axis=1, keepdims=True)
    return [dx.astype(scores.dtype)]


defop(
    "SoftmaxCrossEntropyLossGrad",
    infer=_sce_grad_infer,
    work=_sce_grad_work,
    kernel=_sce_grad_kernel,
    no_grad="backward op",
    doc="d scores of SoftmaxCrossEntropyLoss; inputs (dloss|'', dlog_prob|'', scores, labels, "
        "weights|''), same attrs as the forward op.",
)


# ----------------------------------------------------------------- MSELoss
def _mse_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    pred, target = need(specs, 2, "MSELoss")
    if pred.dtype != target.dtype:
        raise GraphError(f"MSELoss dtypes differ: {pred.dtype} and {target.dtype}")
    shape = broadcast_shapes(pred.shape, target.shape)
    if shape != pred.shape:
        raise GraphError(f"target {target.shape} must broadcast to prediction {pred.shape}")
    return [TensorSpec(pred.shape if _reduction(attrs) == "none" else (), pred.dtype)]


def _mse_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    pred = ins[0]
    assert pred is not None
    r, w = io_bytes(ins, outs)
    return Work(flops=3 * pred.numel, bytes_read=r, bytes_written=w)


def _mse_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    pred, target = xs
    sq = np.square(pred - target)
    red = _reduction(attrs)
    out = np.mean(sq) if red == "mean" else np.sum(sq) if red == "sum" else sq
    return [np.asarray(out, dtype=pred.dtype)]


def _mse_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dloss,) = dys
    pred, target = node.inputs
    dpred = gb.op("MSELossGrad", [dloss, pred, target], **node.attrs)
    dtarget = gb.unbroadcast(gb.op("Neg", [dpred]), gb.spec(target).shape)
    return [dpred, dtarget]


defop(
    "MSELoss",
    infer=_mse_infer,
    work=_mse_work,
    kernel=_mse_kernel,
    grad=_mse_grad,
    doc="Mean squared error (ours, like torch.nn.MSELoss): inputs (prediction, target "
        "broadcastable to it); attr reduction mean|sum|none.",
)


def _mse_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    _, pred, _ = need(specs, 3, "MSELossGrad")
    return [pred]


def _mse_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dloss, pred, target = xs
    scale = 2.0 / pred.size if _reduction(attrs) == "mean" else 2.0
    return [(scale * (pred - target) * dloss).astype(pred.dtype)]


def _mse_grad_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    r, w = io_bytes(ins, outs)
    return Work(flops=2 * math.prod(outs[0].shape), bytes_read=r, bytes_written=w)


defop(
    "MSELossGrad",
    infer=_mse_grad_infer,
    work=_mse_grad_work,
    kernel=_mse_grad_kernel,
    no_grad="backward op",
    doc="d prediction of MSELoss; inputs (dloss, prediction, target).",
)
