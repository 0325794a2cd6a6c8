"""Linear algebra: MatMul, Gemm, Einsum (ONNX semantics).

Conventions chosen here:

* Gemm: ``Y = alpha * A' @ B' + beta * C`` with ``A' = A.T if transA``, ``B' = B.T if transB``
  and C (optional) unidirectionally broadcast to ``(M, N)``. Work: the GEMM is
  ``2*M*N*K`` matmul FLOP (with ``transB``, B is K-contiguous: ``GemmShape.b_kmajor``); on
  top, vector FLOPs of 1 per output element for each of:
  scaling by ``alpha`` (when ``alpha != 1``), adding C (when present), scaling C by ``beta``
  (when present and ``beta != 1``). Its gradient is expressed with Gemm again (transposes
  become trans flags); dC is ``beta * dY`` summed over C's broadcast axes.
* Einsum: ``equation`` attribute (explicit ``->`` or implicit output, ``...`` allowed); kernel
  ``numpy.einsum``. Work for two operands: one multiply-add (2 FLOP) per point of the joint
  index space, described as the GEMM ``m`` = indices of the first operand and the output only,
  ``n`` = of the second operand and the output only, ``k`` = contracted, ``batch`` = shared by
  all three; one operand: 1 FLOP per input element (a sum), no GEMM; more operands: 2 FLOP per
  point of the joint space per extra operand. The gradient of operand i is an Einsum of the
  output gradient with the other operands (indices an operand sums away are restored with
  an ``Expand``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.errors import GraphError
from sim.ops.common import broadcast_shapes, io_bytes, matmul_exact, need
from sim.ops.registry import add_traits, defop
from sim.ops.work import GemmShape, Work
from sim.tensor import TensorSpec


def _matmul_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], int, int, int, int]:
    """(output shape, batch, m, n, k) of numpy.matmul semantics (1-D operands promoted)."""
    if not a or not b:
        raise GraphError("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise GraphError(f"MatMul inner dimensions differ: {a} @ {b}")
    batch_shape = broadcast_shapes(a2[:-2], b2[:-2])
    m, k, n = a2[-2], a2[-1], b2[-1]
    out = [*batch_shape, m, n]
    if len(a) == 1:
        out.pop(-2)
    if len(b) == 1:
        out.pop(-1)
    return tuple(out), math.prod(batch_shape), m, n, k


def _matmul_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    a, b = need(specs, 2, "MatMul")
    if a.dtype != b.dtype:
        raise GraphError(f"MatMul dtypes differ: {a.dtype} and {b.dtype}")
    return [TensorSpec(_matmul_shapes(a.shape, b.shape)[0], a.dtype)]


def _matmul_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    a, b = need(ins, 2, "MatMul")
    _, batch, m, n, k = _matmul_shapes(a.shape, b.shape)
    if b.rank == 2 and a.rank > 2:
        # a stack of rows times one matrix is one GEMM over all rows (as BLAS-backed
        # frameworks run x @ W for x [batch, seq, in]): the weight is read once, not per batch
        m, batch = m * batch, 1
    g = GemmShape(m, n, k, batch)
    r, w = io_bytes(ins, outs)
    return Work(flops=g.flops, matmul_flops=g.flops, bytes_read=r, bytes_written=w, gemms=(g,))


def _matmul_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs
    sa, sb = gb.spec(a), gb.spec(b)
    if sa.rank < 2 or sb.rank < 2:
        # promote vectors to matrices so the general rule applies
        a2 = gb.op("Reshape", [a], shape=[1, *sa.shape]) if sa.rank == 1 else a
        b2 = gb.op("Reshape", [b], shape=[*sb.shape, 1]) if sb.rank == 1 else b
        out_shape = _matmul_shapes(gb.spec(a2).shape, gb.spec(b2).shape)[0]
        dy2 = gb.op("Reshape", [dy], shape=list(out_shape))
        da2 = gb.op("MatMul", [dy2, gb.transpose_last2(b2)])
        db2 = gb.op("MatMul", [gb.transpose_last2(a2), dy2])
        da = gb.unbroadcast(da2, (1, *sa.shape) if sa.rank == 1 else sa.shape)
        db = gb.unbroadcast(db2, (*sb.shape, 1) if sb.rank == 1 else sb.shape)
        return [gb.op("Reshape", [da], shape=list(sa.shape)),
                gb.op("Reshape", [db], shape=list(sb.shape))]
    da = gb.op("MatMul", [dy, gb.transpose_last2(b)])
    db = gb.op("MatMul", [gb.transpose_last2(a), dy])
    return [gb.unbroadcast(da, sa.shape), gb.unbroadcast(db, sb.shape)]


defop(
    "MatMul",
    infer=_matmul_infer,
    work=_matmul_work,
    kernel=lambda xs, attrs: [matmul_exact(xs[0], xs[1])],
    grad=_matmul_grad,
    doc="numpy.matmul semantics: batched, broadcasting, 1-D operands promoted.",
)


# ----------------------------------------------------------------------------- Gemm
def _gemm_dims(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> tuple[int, int, int]:
    a, b = need(specs, 2, "Gemm")
    if a.rank != 2 or b.rank != 2:
        raise GraphError(f"Gemm operands must be 2-D, got {a.shape} and {b.shape}")
    m, k = a.shape[::-1] if int(attrs.get("transA", 0)) else a.shape
    k2, n = b.shape[::-1] if int(attrs.get("transB", 0)) else b.shape
    if k != k2:
        raise GraphError(f"Gemm inner dimensions differ: {k} and {k2} (transA/transB applied)")
    return m, n, k


def _gemm_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    a, b = need(specs, 2, "Gemm")
    if a.dtype != b.dtype:
        raise GraphError(f"Gemm dtypes differ: {a.dtype} and {b.dtype}")
    m, n, _ = _gemm_dims(specs, attrs)
    c = specs[2] if len(specs) > 2 else None
    if c is not None:
        try:
            ok = c.rank <= 2 and broadcast_shapes(c.shape, (m, n)) == (m, n)
        except GraphError:
            ok = False
        if not ok:
            raise GraphError(f"Gemm C shape {c.shape} does not broadcast to ({m}, {n})")
        if c.dtype != a.dtype:
            raise GraphError(f"Gemm C dtype {c.dtype} differs from {a.dtype}")
    return [TensorSpec((m, n), a.dtype)]


def _gemm_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    m, n, k = _gemm_dims(ins, attrs)
    g = GemmShape(m, n, k, b_kmajor=bool(int(attrs.get("transB", 0))))
    has_c = len(ins) > 2 and ins[2] is not None
    extra = 0
    if float(attrs.get("alpha", 1.0)) != 1.0:
        extra += m * n
    if has_c:
        extra += m * n
        if float(attrs.get("beta", 1.0)) != 1.0:
            extra += m * n
    r, w = io_bytes(ins, outs)
    return Work(flops=g.flops + extra, matmul_flops=g.flops, bytes_read=r, bytes_written=w, gemms=(g,))


def _gemm_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = xs[0], xs[1]
    c = xs[2] if len(xs) > 2 else None
    if int(attrs.get("transA", 0)):
        a = a.T
    if int(attrs.get("transB", 0)):
        b = b.T
    y = matmul_exact(a, b)
    alpha = float(attrs.get("alpha", 1.0))
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None:
        beta = float(attrs.get("beta", 1.0))
        y = y + (c * np.asarray(beta, y.dtype) if beta != 1.0 else c)
    return [y]


def _gemm_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    a, b = node.inputs[0], node.inputs[1]
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    alpha = float(node.attrs.get("alpha", 1.0))
    # A' = op(A), B' = op(B): dA' = alpha dY B'^T, dB' = alpha A'^T dY
    if ta:
        da = gb.op("Gemm", [b, dy], alpha=alpha, transA=tb, transB=1)
    else:
        da = gb.op("Gemm", [dy, b], alpha=alpha, transB=1 - tb)
    if tb:
        db = gb.op("Gemm", [dy, a], alpha=alpha, transA=1, transB=ta)
    else:
        db = gb.op("Gemm", [a, dy], alpha=alpha, transA=1 - ta)
    grads: list[str | None] = [da, db]
    if len(node.inputs) > 2 and node.inputs[2]:
        sc = gb.spec(node.inputs[2])
        dc = gb.unbroadcast(dy, sc.shape)
        beta = float(node.attrs.get("beta", 1.0))
        if beta != 1.0:
            dc = gb.op("Mul", [dc, gb.const(beta, sc.dtype)])
        grads.append(dc)
    return grads


defop(
    "Gemm",
    infer=_gemm_infer,
    work=_gemm_work,
    kernel=_gemm_kernel,
    grad=_gemm_grad,
    doc="Y = alpha * op(A) @ op(B) + beta * C (ONNX Gemm): alpha, beta, transA, transB; "
        "C optional, unidirectionally broadcast.",
)


# ----------------------------------------------------------------------------- Einsum
def _parse_einsum(eq: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str, dict[str, int]]:
    """Operand subscripts and output subscripts with ``...`` expanded to capital letters,
    and the size of every index."""
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise GraphError(f"Einsum equation {eq!r} has {len(terms)} operands, {len(shapes)} given")
    ell_rank = 0
    for t, s in zip(terms, shapes):
        if "..." in t:
            ell_rank = max(ell_rank, len(s) - (len(t) - 3))
    ell = "".join(chr(ord("Z") - i) for i in range(ell_rank))[::-1]
    sizes: dict[str, int] = {}
    out_terms = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            n_ell = len(s) - (len(t) - 3)
            t = t.replace("...", ell[ell_rank - n_ell:])
        if len(t) != len(s) or (t and not t.isalpha()):
            raise GraphError(f"Einsum term {t!r} does not fit operand shape {s}")
        for ch, d in zip(t, s):
            known = sizes.get(ch, d)
            if known != d and not (ch in ell and 1 in (known, d)):  # only ... broadcasts
                raise GraphError(f"Einsum index {ch!r} has sizes {known} and {d}")
            sizes[ch] = max(known, d)
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {ch: "".join(out_terms).count(ch) for ch in sizes}
        out = ell + "".join(sorted(ch for ch, c in counts.items() if c == 1 and ch not in ell))
    if not out.isalpha() and out:
        raise GraphError(f"Einsum output {rhs!r} is malformed")
    for ch in out:
        if ch not in sizes:
            raise GraphError(f"Einsum output index {ch!r} is not in any operand")
    return out_terms, out, sizes


def _einsum_parts(
    specs: list[TensorSpec | None], attrs: dict[str, Any]
) -> tuple[list[str], str, dict[str, int]]:
    eq = attrs.get("equation")
    if not eq:
        raise GraphError("Einsum needs an equation")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    if not specs or any(s is None for s in specs):
        raise GraphError("Einsum needs at least one operand and no omitted ones")
    return _parse_einsum(eq, [s.shape for s in specs if s is not None])


def _einsum_infer(specs: list[TensorSpec | None], attrs: dict[str, Any]) -> list[TensorSpec]:
    terms, out, sizes = _einsum_parts(specs, attrs)
    first = specs[0]
    assert first is not None
    if any(s is not None and s.dtype != first.dtype for s in specs):
        raise GraphError("Einsum operand dtypes differ")
    return [TensorSpec(tuple(sizes[ch] for ch in out), first.dtype)]


def _einsum_work(ins: list[TensorSpec | None], outs: list[TensorSpec], attrs: dict) -> Work:
    terms, out, sizes = _einsum_parts(ins, attrs)
    r, w = io_bytes(ins, outs)
    if len(terms) == 1:
        return Work(flops=ins[0].numel if ins[0] is not None else 0, bytes_read=r, bytes_written=w)
    space = math.prod(sizes.values())
    if len(terms) > 2:
        return Work(flops=2.0 * space * (len(terms) - 1), bytes_read=r, bytes_written=w)
    ta, tb = set(terms[0]), set(terms[1])
    o = set(out)

    def size(chs: set[str]) -> int:
        return math.prod(sizes[c] for c in chs)

    batch = ta & tb & o
    g = GemmShape(size((ta & o) - tb), size((tb & o) - ta), size((ta | tb) - o), size(batch))
    return Work(flops=g.flops, matmul_flops=g.flops, bytes_read=r, bytes_written=w, gemms=(g,))


def _einsum_kernel(xs: list[Any], attrs: dict[str, Any]) -> list[np.ndarray]:
    terms, out, _ = _parse_einsum(str(attrs["equation"]), [x.shape for x in xs])
    return [np.asarray(np.einsum(f"{','.join(terms)}->{out}", *xs, optimize=len(xs) > 2))]


def _einsum_grad(gb: Any, node: Any, dys: list[str | None]) -> list[str | None]:
    (dy,) = dys
    specs = [gb.spec(t) for t in node.inputs]
    terms, out, sizes = _einsum_parts(specs, node.attrs)
    grads: list[str | None] = []
    for i, (t, s) in enumerate(zip(terms, specs)):
        if len(set(t)) != len(t):
            raise GraphError(f"Einsum gradient: repeated index in term {t!r} is not supported")
        others = [(terms[j], node.inputs[j]) for j in range(len(terms)) if j != i]
        avail = set(out).union(*[set(tj) for tj, _ in others])
        kept = "".join(ch for ch in t if ch in avail)
        eq = ",".join([out] + [tj for tj, _ in others]) + "->" + kept
        g = gb.op("Einsum", [dy] + [name for _, name in others], equation=eq)
        if kept != t:  # indices only this operand had: every position gets the same gradient
            shape_kept = [sizes[ch] if ch in kept else 1 for ch in t]
            g = gb.op("Reshape", [g], shape=shape_kept)
            g = gb.op("Expand", [g], shape=[sizes[ch] for ch in t])
        grads.append(gb.unbroadcast(g, s.shape) if gb.spec(g).shape != s.shape else g)
    return grads


defop(
    "Einsum",
    infer=_einsum_infer,
    work=_einsum_work,
    kernel=_einsum_kernel,
    grad=_einsum_grad,
    doc="Einstein summation (ONNX Einsum): attr equation; ellipsis and implicit output allowed.",
)

add_traits("strided_operands", "MatMul", "Gemm")
