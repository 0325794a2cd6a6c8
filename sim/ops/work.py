"""Work estimates: what an op does, independent of any hardware.

A cost model turns a ``Work`` into seconds for a given unit; ``Work`` itself never holds time.
Conventions (see docs/ops.md): a multiply-add is 2 FLOP; an elementwise add, compare or max is
1 FLOP per output element; transcendental functions (exp, log, tanh, erf, sqrt, reciprocal)
are counted in ``transcendentals`` (one per evaluation) *and* add their listed FLOPs.
Bytes are the minimal traffic: every input read once, every output written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class GemmShape:
    """A (batched) matrix multiply C[b] (m x n) = A[b] (m x k) @ B[b] (k x n).

    ``kernel`` names the kernel the multiply runs inside (``"attention"`` for the two GEMMs
    of a fused attention op and those of its gradient, ``"conv"`` for a convolution's implicit
    GEMM; empty for a plain GEMM), so a spec can say how close such a kernel gets to a GEMM
    library's rate (``arch.kernel_efficiency`` on GPUs).
    ``k_runs`` says K is that many runs of ``k / k_runs`` contiguous elements (a convolution's
    K is R x S filter taps of C channels each): a tensor-core kernel pads each run to its
    vector width, so a 3-channel stem costs more than its FLOPs.
    ``b_bytes`` is the bytes per element of B when B is stored narrower than A (weight-only
    quantised GEMMs: 0.5 for int4 plus its scales); 0 means A's element size.
    ``b_kmajor`` says B is stored K-contiguous, as an ``[n, k]`` row-major matrix read
    transposed (``x @ W^T``: ONNX Gemm ``transB=1``, ``torch.nn.functional.linear``, cuBLAS's
    "TN"); False is ``a @ b`` with B ``[k, n]``, N-contiguous. A GPU cost model streams the
    two layouts differently in skinny and matrix-vector kernels (``sim.cost.gpu``).
    """

    m: int
    n: int
    k: int
    batch: int = 1
    kernel: str = ""
    k_runs: int = 1
    b_bytes: float = field(default=0.0, repr=False)
    b_kmajor: bool = field(default=False, repr=False)

    @property
    def flops(self) -> float:
        return 2.0 * self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class Serial:
    """Part of an op's work that runs as ``count`` dependent steps (a recurrence: step t needs
    step t-1's result), each step launching ``kernels`` one after another.

    The op's FLOP totals include these steps (``count`` x each kernel, and a step GEMM appears
    in ``Work.gemms`` with its batch multiplied by ``count``); its bytes stay the op's minimal
    traffic (inputs read once, outputs written once), while each step kernel's bytes are the
    traffic of one step (weights, state and gates, largely served on chip).
    ``Work.parallel_part`` is what is left to run as one kernel. A cost model times the steps
    one by one.
    """

    count: int
    kernels: tuple[Work, ...]

    @property
    def total(self) -> Work:
        """The work of all the steps together."""
        one = ZERO
        for k in self.kernels:
            one = one + k
        return one.scaled(self.count)


@dataclass(frozen=True)
class Reduction:
    """The layout of a reduction: ``outputs`` results, each combining ``per_output`` inputs.

    ``inner``: the reduced elements include the contiguous (fastest-moving) axis, as a row sum
    does; False for a column sum (the reduced axes are all outer, strided ones). ``runs``: how
    many separate strided runs the reduced axes form after adjacent axes merge (a sum over the
    last two axes is 1 run; a convolution bias gradient over N, H, W of NCHW is 2). A GPU cost
    model derives the reduction kernel's launch from it (``sim.cost.reduction``).
    """

    outputs: int
    per_output: int
    inner: bool
    runs: int = 1


def reduction_layout(shape: tuple[int, ...], axes: tuple[int, ...]) -> Reduction | None:
    """The ``Reduction`` of summing a contiguous tensor of ``shape`` over ``axes`` (size-1 axes
    dropped and adjacent axes of the same kind merged, as a tensor iterator coalesces them);
    None when nothing is reduced or nothing is left.

    >>> reduction_layout((64, 128), (0,))
    Reduction(outputs=128, per_output=64, inner=False, runs=1)
    >>> reduction_layout((32, 64, 7, 7), (0, 2, 3))
    Reduction(outputs=64, per_output=1568, inner=True, runs=2)
    """
    kinds = [i in axes for i, d in enumerate(shape) if d != 1]
    sizes = [d for d in shape if d != 1]
    reduced = math.prod(d for d, k in zip(sizes, kinds) if k)
    kept = math.prod(d for d, k in zip(sizes, kinds) if not k)
    if not any(kinds) or reduced <= 1 or kept < 1:
        return None
    runs = sum(1 for i, k in enumerate(kinds) if k and (i == 0 or not kinds[i - 1]))
    return Reduction(int(kept), int(reduced), kinds[-1], runs)


@dataclass(frozen=True)
class Work:
    """Frozen, addable record of an op's work.

    ``flops`` is the total; ``matmul_flops`` is the part that matrix units (tensor cores,
    MXUs, systolic arrays, DSP MAC arrays) can run; the rest runs on vector units.
    ``launches`` is the number of kernel launches the work takes (1; a share of a launch when
    one multi-tensor kernel serves several ops, as an optimizer's ``multi_tensor_apply``).
    ``rows`` is nonzero for a row-wise kernel: the number of independent rows it reduces,
    each inside one warp or thread block, so a cost model can charge per-row work and keep a
    row's re-reads on chip; ``kernel`` names which (``"softmax"``, ``"norm"``).
    ``reduction`` is the layout of a plain reduction (a sum, mean, max ... over some axes: the
    framework's generic reduce kernel); work added to other work is no longer one.

    >>> w = Work(flops=4, bytes_read=32, bytes_written=16) + Work(flops=2)
    >>> w.flops, w.bytes_read, w.bytes_written
    (6.0, 32.0, 16.0)
    """

    flops: float = 0.0
    matmul_flops: float = 0.0
    transcendentals: float = 0.0
    bytes_read: float = 0.0
    bytes_written: float = 0.0
    gemms: tuple[GemmShape, ...] = field(default=())
    serial: tuple[Serial, ...] = field(default=(), repr=False)
    rows: float = 0.0
    kernel: str = ""
    launches: float = 1.0
    reduction: Reduction | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("flops", "matmul_flops", "transcendentals", "bytes_read", "bytes_written", "rows",
                     "launches"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "gemms", tuple(self.gemms))
        object.__setattr__(self, "serial", tuple(self.serial))

    def __add__(self, other: Work) -> Work:
        return Work(
            self.flops + other.flops,
            self.matmul_flops + other.matmul_flops,
            self.transcendentals + other.transcendentals,
            self.bytes_read + other.bytes_read,
            self.bytes_written + other.bytes_written,
            self.gemms + other.gemms,
            self.serial + other.serial,
            self.rows + other.rows,
            self.kernel or other.kernel,
            max(self.launches, other.launches),  # work added into one kernel launches once
            self.reduction if other.empty else other.reduction if self.empty else None,
        )

    @property
    def empty(self) -> bool:
        """No FLOPs and no bytes."""
        return self.flops <= 0 and self.bytes <= 0

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP per byte (inf for zero-byte work)."""
        return self.flops / self.bytes if self.bytes else float("inf")

    def scaled(self, factor: float) -> Work:
        """This work repeated ``factor`` times (GEMM shapes are repeated in ``batch``)."""
        gemms = tuple(replace(g, batch=int(round(g.batch * factor))) for g in self.gemms)
        return Work(
            self.flops * factor,
            self.matmul_flops * factor,
            self.transcendentals * factor,
            self.bytes_read * factor,
            self.bytes_written * factor,
            gemms,
            tuple(Serial(s.count, tuple(k.scaled(factor) for k in s.kernels)) for s in self.serial),
            self.rows * factor,
            self.kernel,
            self.launches,
            self.reduction if factor == 1 else None,
        )

    def parallel_part(self) -> Work:
        """This work less its ``serial`` steps' FLOPs and GEMMs: what runs as one parallel
        kernel (it keeps the op's bytes: see ``Serial``).

        >>> step = Work(flops=8, matmul_flops=8, bytes_read=4, gemms=(GemmShape(1, 2, 2),))
        >>> w = Work(flops=100, matmul_flops=40, bytes_read=50,
        ...          gemms=(GemmShape(4, 2, 2), GemmShape(1, 2, 2, batch=3)), serial=(Serial(3, (step,)),))
        >>> p = w.parallel_part()
        >>> p.flops, p.matmul_flops, p.bytes_read, p.gemms
        (76.0, 16.0, 50.0, (GemmShape(m=4, n=2, k=2, batch=1, kernel='', k_runs=1),))
        """
        if not self.serial:
            return self
        gemms = list(self.gemms)
        flops, mm, trans = self.flops, self.matmul_flops, self.transcendentals
        for s in self.serial:
            t = s.total
            flops, mm, trans = flops - t.flops, mm - t.matmul_flops, trans - t.transcendentals
            for g in t.gemms:
                gemms = _remove_gemm(gemms, g)
        return Work(max(flops, 0.0), max(mm, 0.0), max(trans, 0.0), self.bytes_read, self.bytes_written,
                    tuple(gemms))


def _remove_gemm(gemms: list[GemmShape], g: GemmShape) -> list[GemmShape]:
    """``gemms`` with ``g.batch`` instances of ``g``'s shape taken out of the first that has them."""
    for i, h in enumerate(gemms):
        if (h.m, h.n, h.k, h.kernel) == (g.m, g.n, g.k, g.kernel) and h.batch >= g.batch:
            rest = h.batch - g.batch
            return gemms[:i] + ([replace(h, batch=rest)] if rest else []) + gemms[i + 1:]
    return gemms


ZERO = Work()
