"""Indexing ops: Gather, GatherElements, GatherND, scatters, TopK, OneHot, Trilu,
ReverseSequence, TensorScatter (KV-cache writes).

Gathers read only the elements they fetch (plus the indices), so an embedding lookup costs
``tokens x width`` bytes, not the whole table. Their gradients scatter-add the output
gradient back into a zero tensor of the data's shape (``GatherGrad`` ...), backward ops
that cost one add per scattered element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import need, norm_axis
from sim.ops.registry import defop
from sim.ops.work import Work
from sim.tensor import TensorSpec

_INT = ("int64", "int32", "int16", "int8", "uint8")


def _check_int(spec: TensorSpec, op: str, what: str = "indices") -> None:
    if spec.dtype not in _INT:
        raise GraphError(f"{op} {what} must be an integer tensor, got {spec.dtype}")


def _gather_read_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """A gather reads its indices and the elements it fetches (at most all of data)."""
    data, idx = need(ins, 2, "gather")
    fetched = min(data.nbytes, outs[0].nbytes)
    return Work(bytes_read=idx.nbytes + fetched, bytes_written=outs[0].nbytes)


def _scatter_add_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """Scatter-add of ``updates`` (input 0) into zeros: one add per update element."""
    upd, idx = need(ins, 2, "scatter")
    return Work(flops=upd.numel, bytes_read=upd.nbytes + idx.nbytes, bytes_written=outs[0].nbytes)


def _fix_neg(idx: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + dim, idx)


# ---------------------------------------------------------------------------------- Gather
def _gather_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx = need(specs, 2, "Gather")
    _check_int(idx, "Gather")
    if data.rank == 0:
        raise GraphError("Gather data must have rank >= 1")
    ax = norm_axis(int(attrs.get("axis", 0)), data.rank)
    return [TensorSpec((*data.shape[:ax], *idx.shape, *data.shape[ax + 1:]), data.dtype)]


def _gather_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx = xs[0], xs[1]
    ax = norm_axis(int(attrs.get("axis", 0)), data.ndim)
    return [np.take(data, _fix_neg(idx, data.shape[ax]), axis=ax)]


def _gather_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    data, idx = node.inputs
    ds = gb.spec(data)
    ax = norm_axis(int(node.attrs.get("axis", 0)), ds.rank)
    return [gb.op("GatherGrad", [dys[0], idx], axis=ax, shape=list(ds.shape)), None]


defop(
    "Gather",
    infer=_gather_infer,
    work=_gather_read_work,
    kernel=_gather_kernel,
    grad=_gather_grad,
    doc="ONNX Gather: out = take(data, indices, axis); negative indices count from the end.",
)


def _gather_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, idx = need(specs, 2, "GatherGrad")
    _check_int(idx, "GatherGrad")
    shape = tuple(int(d) for d in attrs["shape"])
    ax = norm_axis(int(attrs.get("axis", 0)), len(shape))
    want = (*shape[:ax], *idx.shape, *shape[ax + 1:])
    if dy.shape != want:
        raise GraphError(f"GatherGrad gradient has shape {dy.shape}, expected {want}")
    return [TensorSpec(shape, dy.dtype)]


def _gather_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, idx = xs[0], xs[1]
    shape = tuple(int(d) for d in attrs["shape"])
    ax = norm_axis(int(attrs.get("axis", 0)), len(shape))
    out = np.zeros(shape, dtype=dy.dtype)
    idx = _fix_neg(idx, shape[ax])
    # move the gathered axis first so that np.add.at scatters along it
    out_m = np.moveaxis(out, ax, 0)
    dy_m = np.moveaxis(dy.reshape(*shape[:ax], idx.size, *shape[ax + 1:]), ax, 0)
    np.add.at(out_m, idx.reshape(-1), dy_m)
    return [out]


defop(
    "GatherGrad",
    infer=_gather_grad_infer,
    work=_scatter_add_work,
    kernel=_gather_grad_kernel,
    no_grad="backward op",
    doc="Gradient of Gather w.r.t. data: scatter-add dy into zeros(shape) along axis; "
        "inputs (dy, indices); attrs axis, shape.",
)


# --------------------------------------------------------------------------- GatherElements
def _full_index(idx: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """Index tuple addressing ``data[..., idx, ...]`` element-wise along ``axis``."""
    grid: list[Any] = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return tuple(grid)


def _gather_el_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx = need(specs, 2, "GatherElements")
    _check_int(idx, "GatherElements")
    if data.rank != idx.rank:
        raise GraphError(f"GatherElements ranks differ: data {data.shape}, indices {idx.shape}")
    norm_axis(int(attrs.get("axis", 0)), data.rank)
    return [TensorSpec(idx.shape, data.dtype)]


def _gather_el_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx = xs[0], xs[1]
    ax = norm_axis(int(attrs.get("axis", 0)), data.ndim)
    return [data[_full_index(_fix_neg(idx, data.shape[ax]), ax)]]


def _gather_el_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    data, idx = node.inputs
    ds = gb.spec(data)
    ax = norm_axis(int(node.attrs.get("axis", 0)), ds.rank)
    return [gb.op("GatherElementsGrad", [dys[0], idx], axis=ax, shape=list(ds.shape)), None]


defop(
    "GatherElements",
    infer=_gather_el_infer,
    work=_gather_read_work,
    kernel=_gather_el_kernel,
    grad=_gather_el_grad,
    doc="ONNX GatherElements: out[i][j] = data[idx[i][j]][j] (axis 0), like take_along_axis.",
)


def _gather_el_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, idx = need(specs, 2, "GatherElementsGrad")
    _check_int(idx, "GatherElementsGrad")
    if dy.shape != idx.shape:
        raise GraphError(f"GatherElementsGrad: dy {dy.shape} and indices {idx.shape} differ")
    return [TensorSpec(tuple(int(d) for d in attrs["shape"]), dy.dtype)]


def _gather_el_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, idx = xs[0], xs[1]
    shape = tuple(int(d) for d in attrs["shape"])
    ax = norm_axis(int(attrs.get("axis", 0)), len(shape))
    out = np.zeros(shape, dtype=dy.dtype)
    np.add.at(out, _full_index(_fix_neg(idx, shape[ax]), ax), dy)
    return [out]


defop(
    "GatherElementsGrad",
    infer=_gather_el_grad_infer,
    work=_scatter_add_work,
    kernel=_gather_el_grad_kernel,
    no_grad="backward op",
    doc="Gradient of GatherElements (and TopK values): scatter-add dy into zeros(shape).",
)


# ---------------------------------------------------------------------------------- GatherND
def _nd_parts(data_shape: tuple[int, ...], idx_shape: tuple[int, ...], b: int) -> tuple[int, ...]:
    """Output shape of GatherND (also the updates shape of ScatterND when b == 0)."""
    if not idx_shape:
        raise GraphError("GatherND indices must have rank >= 1")
    m = idx_shape[-1]
    if b < 0 or b >= min(len(data_shape), len(idx_shape)):
        raise GraphError(f"batch_dims {b} too large for data {data_shape}, indices {idx_shape}")
    if data_shape[:b] != idx_shape[:b]:
        raise GraphError(f"batch dims differ: data {data_shape[:b]}, indices {idx_shape[:b]}")
    if m > len(data_shape) - b:
        raise GraphError(f"indices last dim {m} exceeds data rank {len(data_shape)} - batch_dims {b}")
    return (*idx_shape[:-1], *data_shape[b + m:])


def _gather_nd_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx = need(specs, 2, "GatherND")
    _check_int(idx, "GatherND")
    return [TensorSpec(_nd_parts(data.shape, idx.shape, int(attrs.get("batch_dims", 0))), data.dtype)]


def _nd_index(data_shape: tuple[int, ...], idx: np.ndarray, b: int) -> tuple[Any, ...]:
    """(batch index, per-dim indices) addressing ``data.reshape(B, *data.shape[b:])``."""
    bsz = int(np.prod(data_shape[:b], dtype=np.int64))
    m = idx.shape[-1]
    flat = np.asarray(idx).astype(np.int64).reshape(bsz, -1, m)
    cols = tuple(_fix_neg(flat[..., j], data_shape[b + j]) for j in range(m))
    return (np.arange(bsz)[:, None], *cols)


def _gather_nd_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx = xs[0], xs[1]
    b = int(attrs.get("batch_dims", 0))
    out_shape = _nd_parts(data.shape, idx.shape, b)
    bsz = int(np.prod(data.shape[:b], dtype=np.int64))
    d = data.reshape(bsz, *data.shape[b:])
    return [d[_nd_index(data.shape, idx, b)].reshape(out_shape)]


def _gather_nd_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    data, idx = node.inputs
    b = int(node.attrs.get("batch_dims", 0))
    shape = list(gb.spec(data).shape)
    return [gb.op("GatherNDGrad", [dys[0], idx], batch_dims=b, shape=shape), None]


defop(
    "GatherND",
    infer=_gather_nd_infer,
    work=_gather_read_work,
    kernel=_gather_nd_kernel,
    grad=_gather_nd_grad,
    doc="ONNX GatherND with batch_dims: indices' last axis addresses leading data dims.",
)


def _gather_nd_grad_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    dy, idx = need(specs, 2, "GatherNDGrad")
    _check_int(idx, "GatherNDGrad")
    shape = tuple(int(d) for d in attrs["shape"])
    want = _nd_parts(shape, idx.shape, int(attrs.get("batch_dims", 0)))
    if dy.shape != want:
        raise GraphError(f"GatherNDGrad gradient has shape {dy.shape}, expected {want}")
    return [TensorSpec(shape, dy.dtype)]


def _gather_nd_grad_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    dy, idx = xs[0], xs[1]
    shape = tuple(int(d) for d in attrs["shape"])
    b = int(attrs.get("batch_dims", 0))
    bsz = int(np.prod(shape[:b], dtype=np.int64))
    m = idx.shape[-1]
    out = np.zeros((bsz, *shape[b:]), dtype=dy.dtype)
    ind = _nd_index(shape, idx, b)
    np.add.at(out, ind, dy.reshape(bsz, ind[1].shape[1] if m else 1, *shape[b + m:]))
    return [out.reshape(shape)]


defop(
    "GatherNDGrad",
    infer=_gather_nd_grad_infer,
    work=_scatter_add_work,
    kernel=_gather_nd_grad_kernel,
    no_grad="backward op",
    doc="Gradient of GatherND w.r.t. data: scatter-add dy into zeros(shape).",
)


# ---------------------------------------------------------------------------------- scatters
_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """Copy of data (read + write) plus the updates and indices; one op per update if reducing."""
    data, idx, upd = need(ins, 3, "scatter")
    red = str(attrs.get("reduction", "none"))
    return Work(
        flops=upd.numel if red != "none" else 0,
        bytes_read=data.nbytes + idx.nbytes + upd.nbytes,
        bytes_written=outs[0].nbytes,
    )


def _apply_scatter(out: np.ndarray, where: tuple[Any, ...], upd: np.ndarray, red: str) -> None:
    if red == "none":
        out[where] = upd
    elif red in _REDUCE:
        _REDUCE[red].at(out, where, upd)
    else:
        raise GraphError(f"unknown scatter reduction {red!r}")


def _scatter_el_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx, upd = need(specs, 3, "ScatterElements")
    _check_int(idx, "ScatterElements")
    if idx.shape != upd.shape or idx.rank != data.rank:
        raise GraphError(f"ScatterElements shapes: data {data.shape}, indices {idx.shape}, "
                         f"updates {upd.shape}")
    if upd.dtype != data.dtype:
        raise GraphError(f"ScatterElements dtypes differ: {data.dtype} and {upd.dtype}")
    if str(attrs.get("reduction", "none")) not in ("none", *_REDUCE):
        raise GraphError(f"unknown reduction {attrs.get('reduction')!r}")
    norm_axis(int(attrs.get("axis", 0)), data.rank)
    return [data]


def _scatter_el_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx, upd = xs[0], xs[1], xs[2]
    ax = norm_axis(int(attrs.get("axis", 0)), data.ndim)
    out = np.array(data, copy=True)
    where = _full_index(_fix_neg(idx, data.shape[ax]), ax)
    _apply_scatter(out, where, upd, str(attrs.get("reduction", "none")))
    return [out]


def _scatter_grad(gather_op: str, gather_attrs: dict[str, Any]) -> Any:
    def grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
        data, idx, upd = node.inputs
        dy = dys[0]
        red = str(node.attrs.get("reduction", "none"))
        if red == "add":
            ddata = dy
        elif red == "none":
            su = gb.spec(upd)
            zeros = gb.const(0.0, su.dtype, su.shape)
            ddata = gb.op(node.op, [dy, idx, zeros], **node.attrs)
        else:
            raise GraphError(f"{node.op} with reduction {red!r} has no gradient rule")
        kw = {k: node.attrs.get(k, v) for k, v in gather_attrs.items()}
        return [ddata, None, gb.op(gather_op, [dy, idx], **kw)]

    return grad


defop(
    "ScatterElements",
    infer=_scatter_el_infer,
    work=_scatter_work,
    kernel=_scatter_el_kernel,
    grad=_scatter_grad("GatherElements", {"axis": 0}),
    doc="ONNX ScatterElements (reduction none/add/mul/max/min). Gradients for none and add.",
)


def _scatter_nd_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    data, idx, upd = need(specs, 3, "ScatterND")
    _check_int(idx, "ScatterND")
    want = _nd_parts(data.shape, idx.shape, 0)
    if upd.shape != want:
        raise GraphError(f"ScatterND updates have shape {upd.shape}, expected {want}")
    if upd.dtype != data.dtype:
        raise GraphError(f"ScatterND dtypes differ: {data.dtype} and {upd.dtype}")
    if str(attrs.get("reduction", "none")) not in ("none", *_REDUCE):
        raise GraphError(f"unknown reduction {attrs.get('reduction')!r}")
    return [data]


def _scatter_nd_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, idx, upd = xs[0], xs[1], xs[2]
    out = np.array(data, copy=True)
    idx = np.asarray(idx).astype(np.int64)
    m = idx.shape[-1]
    where = tuple(_fix_neg(idx[..., j], data.shape[j]) for j in range(m))
    _apply_scatter(out, where, upd, str(attrs.get("reduction", "none")))
    return [out]


defop(
    "ScatterND",
    infer=_scatter_nd_infer,
    work=_scatter_work,
    kernel=_scatter_nd_kernel,
    grad=_scatter_grad("GatherND", {}),
    doc="ONNX ScatterND (reduction none/add/mul/max/min). Gradients for none and add.",
)


# ---------------------------------------------------------------------------------- TopK
def _topk_k(attrs: dict[str, Any]) -> int:
    if "k" not in attrs:
        raise GraphError("TopK needs the attribute k (a constant K input becomes it on import)")
    return int(np.asarray(attrs["k"]).reshape(-1)[0])


def _topk_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "TopK")
    ax = norm_axis(int(attrs.get("axis", -1)), x.rank)
    k = _topk_k(attrs)
    if not 0 <= k <= x.shape[ax]:
        raise GraphError(f"TopK k={k} out of range for axis of size {x.shape[ax]}")
    shape = list(x.shape)
    shape[ax] = k
    return [TensorSpec(tuple(shape), x.dtype), TensorSpec(tuple(shape), "int64")]


def _topk_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    (x,) = need(ins, 1, "TopK")
    k = max(_topk_k(attrs), 2)
    r, w = x.nbytes, sum(o.nbytes for o in outs)
    return Work(flops=x.numel * float(np.ceil(np.log2(k))), bytes_read=r, bytes_written=w)


def _topk_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    ax = norm_axis(int(attrs.get("axis", -1)), x.ndim)
    k = _topk_k(attrs)
    largest = int(attrs.get("largest", 1))
    xm = np.moveaxis(x, ax, -1)
    # stable sort: among equal values the lower index comes first (ONNX)
    key = -xm.astype(np.float64) if largest else xm
    order = np.argsort(key, axis=-1, kind="stable")[..., :k]
    vals = np.take_along_axis(xm, order, axis=-1)
    return [np.moveaxis(vals, -1, ax), np.moveaxis(order, -1, ax).astype(np.int64)]


def _topk_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    x = node.inputs[0]
    sx = gb.spec(x)
    ax = norm_axis(int(node.attrs.get("axis", -1)), sx.rank)
    if dys[0] is None:
        return [None]
    return [gb.op("GatherElementsGrad", [dys[0], node.outputs[1]], axis=ax, shape=list(sx.shape))]


defop(
    "TopK",
    infer=_topk_infer,
    work=_topk_work,
    kernel=_topk_kernel,
    grad=_topk_grad,
    doc="ONNX TopK with k as an attribute; outputs (values, int64 indices), ties by lower index.",
)


# ---------------------------------------------------------------------------------- OneHot
def _onehot_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    if len(specs) < 3 or specs[0] is None or specs[2] is None:
        raise GraphError("OneHot needs inputs (indices, depth or '', values)")
    idx, vals = specs[0], specs[2]
    if "depth" not in attrs:
        raise GraphError("OneHot needs the attribute depth (a constant depth input becomes it)")
    depth = int(np.asarray(attrs["depth"]).reshape(-1)[0])
    if vals.numel != 2:
        raise GraphError(f"OneHot values must hold 2 elements (off, on), got {vals.shape}")
    r = idx.rank + 1
    ax = norm_axis(int(attrs.get("axis", -1)), r)
    shape = list(idx.shape)
    shape.insert(ax, depth)
    return [TensorSpec(tuple(shape), vals.dtype)]


def _onehot_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    idx, vals = np.asarray(xs[0]), np.asarray(xs[2]).reshape(-1)
    depth = int(np.asarray(attrs["depth"]).reshape(-1)[0])
    ax = norm_axis(int(attrs.get("axis", -1)), idx.ndim + 1)
    ind = np.asarray(idx).astype(np.int64)
    ind = np.where(ind < 0, ind + depth, ind)
    rng_shape = [1] * (idx.ndim + 1)
    rng_shape[ax] = depth
    hot = np.expand_dims(ind, ax) == np.arange(depth).reshape(rng_shape)
    return [np.where(hot, vals[1], vals[0]).astype(vals.dtype)]


def _movement(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    return Work(bytes_read=sum(s.nbytes for s in ins if s is not None),
                bytes_written=sum(o.nbytes for o in outs))


defop(
    "OneHot",
    infer=_onehot_infer,
    work=_movement,
    kernel=_onehot_kernel,
    no_grad="indices are integers; the (off, on) values pair is not trained",
    doc="ONNX OneHot with depth as an attribute; inputs (indices, '', values).",
)


# ---------------------------------------------------------------------------------- Trilu
def _trilu_k(attrs: dict[str, Any]) -> int:
    return int(np.asarray(attrs.get("k", 0)).reshape(-1)[0])


def _trilu_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    (x,) = need(specs, 1, "Trilu")
    if x.rank < 2:
        raise GraphError(f"Trilu input must have rank >= 2, got {x.shape}")
    return [x]


def _trilu_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = xs[0]
    k = int(np.asarray(xs[1]).reshape(-1)[0]) if len(xs) > 1 and xs[1] is not None else _trilu_k(attrs)
    f = np.triu if int(attrs.get("upper", 1)) else np.tril
    return [f(x, k)]


def _trilu_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    attrs = dict(node.attrs)
    return [gb.op("Trilu", [dys[0]], **attrs)] + [None] * (len(node.inputs) - 1)


defop(
    "Trilu",
    infer=_trilu_infer,
    work=_movement,
    kernel=_trilu_kernel,
    grad=_trilu_grad,
    doc="ONNX Trilu: keep the upper (upper=1) or lower triangle offset by k (attribute).",
)


# ---------------------------------------------------------------------------- ReverseSequence
def _revseq_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    x, lens = need(specs, 2, "ReverseSequence")
    _check_int(lens, "ReverseSequence", "sequence_lens")
    b = norm_axis(int(attrs.get("batch_axis", 1)), x.rank)
    t = norm_axis(int(attrs.get("time_axis", 0)), x.rank)
    if b == t or x.rank < 2:
        raise GraphError(f"ReverseSequence needs distinct batch and time axes, got {b} and {t}")
    if lens.shape != (x.shape[b],):
        raise GraphError(f"sequence_lens has shape {lens.shape}, expected ({x.shape[b]},)")
    return [x]


def _revseq_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, lens = xs[0], np.asarray(xs[1]).astype(np.int64)
    b = norm_axis(int(attrs.get("batch_axis", 1)), x.ndim)
    t = norm_axis(int(attrs.get("time_axis", 0)), x.ndim)
    out = np.array(x, copy=True)
    for i, n in enumerate(lens):
        n = int(min(max(n, 0), x.shape[t]))
        dst: list[Any] = [slice(None)] * x.ndim
        src: list[Any] = [slice(None)] * x.ndim
        dst[b] = src[b] = i
        dst[t] = slice(0, n)
        src[t] = slice(n - 1, None, -1) if n else slice(0, 0)
        out[tuple(dst)] = x[tuple(src)]
    return [out]


def _revseq_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    # reversing the first n steps is its own inverse
    return [gb.op("ReverseSequence", [dys[0], node.inputs[1]], **node.attrs), None]


defop(
    "ReverseSequence",
    infer=_revseq_infer,
    work=_movement,
    kernel=_revseq_kernel,
    grad=_revseq_grad,
    doc="ONNX ReverseSequence: reverse the first sequence_lens[i] steps along time_axis for "
        "each i along batch_axis.",
)


# ---------------------------------------------------------------------------- TensorScatter
def _tscatter_axis(rank: int, attrs: dict[str, Any]) -> int:
    ax = norm_axis(int(attrs.get("axis", -2)), rank)
    if ax == 0:
        raise GraphError("TensorScatter axis must not be the batch axis 0")
    return ax


def _tscatter_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    cache, upd = need(specs, 2, "TensorScatter")
    ax = _tscatter_axis(cache.rank, attrs)
    if upd.rank != cache.rank or any(
        (u > c if i == ax else u != c) for i, (u, c) in enumerate(zip(upd.shape, cache.shape))
    ):
        raise GraphError(f"TensorScatter update {upd.shape} does not fit cache {cache.shape}")
    if upd.dtype != cache.dtype:
        raise GraphError(f"TensorScatter dtypes differ: {cache.dtype} and {upd.dtype}")
    idx = specs[2] if len(specs) > 2 else None
    if idx is not None:
        _check_int(idx, "TensorScatter", "write_indices")
        if idx.shape != (cache.shape[0],):
            raise GraphError(f"write_indices has shape {idx.shape}, expected ({cache.shape[0]},)")
    if str(attrs.get("mode", "linear")) not in ("linear", "circular"):
        raise GraphError(f"TensorScatter mode {attrs.get('mode')!r} (linear or circular)")
    return [cache]


def _tscatter_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    cache, upd = xs[0], xs[1]
    ax = _tscatter_axis(cache.ndim, attrs)
    starts = np.asarray(xs[2]).astype(np.int64) if len(xs) > 2 and xs[2] is not None \
        else np.zeros(cache.shape[0], np.int64)
    circular = str(attrs.get("mode", "linear")) == "circular"
    out = np.array(cache, copy=True)
    mid: list[Any] = [slice(None)] * (ax - 1)
    for b in range(cache.shape[0]):
        for s in range(upd.shape[ax]):
            pos = int(starts[b]) + s
            if circular:
                pos %= cache.shape[ax]
            out[(b, *mid, pos)] = upd[(b, *mid, s)]
    return [out]


def _tscatter_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    """A KV-cache write happens in place: read the update (and indices), write it once."""
    cache, upd = need(ins, 2, "TensorScatter")
    idx = ins[2] if len(ins) > 2 and ins[2] is not None else None
    return Work(bytes_read=upd.nbytes + (idx.nbytes if idx else 0), bytes_written=upd.nbytes)


defop(
    "TensorScatter",
    infer=_tscatter_infer,
    work=_tscatter_work,
    kernel=_tscatter_kernel,
    no_grad="KV-cache write (inference); not differentiated",
    doc="ONNX TensorScatter (opset 24): write update into past_cache along axis at "
        "write_indices[b] (linear or circular); the cache is updated in place.",
)
