"""A 3-D parallel layout: ``tp=T,pp=P,dp=D[,mbs=B][,schedule=...][,zero=Z][,sp][,order=...]``.

Ranks are numbered with the dimensions of ``order`` from fastest to slowest (default
``tp,pp,dp``: the tensor-parallel group inside a node, then pipeline stages, then data-parallel
replicas, as the Megatron-LM paper places them). A rank's node is ``rank // per_node``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sim.errors import SimError

SCHEDULES = ("1f1b", "gpipe", "interleaved")
DIMS = ("tp", "pp", "dp")
_KEYS = (
    "tp",
    "pp",
    "dp",
    "mbs",
    "mb",
    "schedule",
    "zero",
    "sp",
    "order",
    "overlap",
    "bucket_mb",
)


@dataclass(frozen=True)
class Layout:
    """How one training step is split over ``tp x pp x dp`` accelerators."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    mbs: int = 1  # microbatch size (sequences per microbatch per data-parallel replica)
    schedule: str = "1f1b"  # "1f1b", "gpipe" or "interleaved"
    chunks: int = 1  # virtual stages per device under "interleaved"
    zero: int = 0  # ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters
    sp: bool = False  # Megatron sequence parallelism (with tp > 1)
    order: tuple[str, ...] = DIMS  # rank order, fastest dimension first
    overlap_grad_reduce: bool = True  # DP gradient buckets overlap the last backward
    bucket_bytes: float = 40e6 * 2  # DP bucket: Megatron's 40M elements of bf16 gradients

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def microbatches(self, batch: int) -> int:
        """Microbatches per replica per step: ``batch / (dp x mbs)``."""
        return batch // (self.dp * self.mbs)

    def stride(self, dim: str) -> int:
        """Rank distance between neighbours of a ``dim`` group."""
        s = 1
        for d in self.order:
            if d == dim:
                return s
            s *= getattr(self, d)
        raise SimError(f"unknown dimension {dim!r}", where="--parallel order")

    def per_node(self, dim: str, gpus_per_node: int) -> int:
        """Members of one ``dim`` group in one node (the group's members are ``stride`` apart)."""
        n, st = getattr(self, dim), self.stride(dim)
        if st >= gpus_per_node:
            return 1
        return max(1, min(n, gpus_per_node // st))

    def describe(self) -> str:
        sched = f"interleaved:{self.chunks}" if self.schedule == "interleaved" else self.schedule
        extra = (",sp" if self.sp else "") + (f",zero={self.zero}" if self.zero else "")
        return f"tp={self.tp},pp={self.pp},dp={self.dp},mbs={self.mbs},schedule={sched}{extra}"


def parse_layout(text: str, where: str = "--parallel") -> Layout:
    """``"tp=8,pp=8,dp=24,mbs=1,schedule=interleaved:2,zero=1,sp"`` -> ``Layout``.

    >>> parse_layout("tp=8,pp=8,dp=24").gpus
    1536
    >>> parse_layout("tp=2,pp=4,schedule=interleaved:3").chunks
    3
    """
    lay = Layout()
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, _, val = item.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise SimError(
                f"unknown field {key!r} (known: tp, pp, dp, mbs, schedule, zero, sp, order)",
                where=f"{where} {key}",
            )
        if key == "sp":
            lay = replace(lay, sp=val.strip().lower() not in ("0", "false", "no"))
        elif key == "schedule":
            lay = _schedule(lay, val.strip().lower(), where)
        elif key == "order":
            dims = tuple(d.strip() for d in val.replace("-", ":").split(":") if d.strip())
            if sorted(dims) != sorted(DIMS):
                raise SimError(
                    f"order must list tp, pp and dp once each (e.g. tp-pp-dp), got {val!r}",
                    where=f"{where} order",
                )
            lay = replace(lay, order=dims)
        elif key == "overlap":
            lay = replace(lay, overlap_grad_reduce=val.strip().lower() not in ("0", "false", "no"))
        elif key == "bucket_mb":
            lay = replace(lay, bucket_bytes=_int(val, key, where) * 2**20)
        else:
            n = _int(val, key, where)
            if key == "zero" and n > 3:
                raise SimError(f"zero must be 0, 1, 2 or 3, got {n}", where=f"{where} zero")
            lay = _set_int(lay, "mbs" if key == "mb" else key, n)
    return lay


def _set_int(lay: Layout, key: str, n: int) -> Layout:
    if key == "tp":
        return replace(lay, tp=n)
    if key == "pp":
        return replace(lay, pp=n)
    if key == "dp":
        return replace(lay, dp=n)
    if key == "zero":
        return replace(lay, zero=n)
    return replace(lay, mbs=n)


def _int(val: str, key: str, where: str) -> int:
    try:
        n = int(val)
    except ValueError:
        raise SimError(f"{key} must be a whole number, got {val!r}", where=f"{where} {key}") from None
    if n < (0 if key == "zero" else 1):
        raise SimError(f"{key} must be >= {0 if key == 'zero' else 1}, got {n}", where=f"{where} {key}")
    return n


def _schedule(lay: Layout, val: str, where: str) -> Layout:
    name, _, v = val.partition(":")
    if name not in SCHEDULES:
        raise SimError(
            f"unknown schedule {val!r} (known: 1f1b, gpipe, interleaved:V)", where=f"{where} schedule"
        )
    chunks = 1
    if name == "interleaved":
        chunks = _int(v or "2", "schedule", where)
    return replace(lay, schedule=name, chunks=chunks)


def check_layout(
    lay: Layout,
    *,
    gpus: int | None,
    layers: int,
    heads: int,
    batch: int,
    ffn: int | None = None,
    vocab: int | None = None,
    kv_heads: int | None = None,
    where: str = "--parallel",
) -> None:
    """Refuse a layout that cannot run, with one line naming the field."""
    if heads % lay.tp:
        raise SimError(f"tp={lay.tp} does not divide the {heads} attention heads", where=f"{where} tp")
    if kv_heads and kv_heads % lay.tp:
        raise SimError(f"tp={lay.tp} does not divide the {kv_heads} key/value heads", where=f"{where} tp")
    if ffn and ffn % lay.tp:
        raise SimError(f"tp={lay.tp} does not divide the MLP width {ffn}", where=f"{where} tp")
    vstages = lay.pp * lay.chunks
    if vstages > layers:
        raise SimError(
            f"pp={lay.pp}"
            + (f" x {lay.chunks} chunks" if lay.chunks > 1 else "")
            + f" is more stages than the {layers} layers",
            where=f"{where} pp",
        )
    if layers % vstages and (lay.chunks > 1 or (layers + 2) % vstages or layers + 2 < 3 * vstages):
        raise SimError(f"{layers} layers do not split evenly into {vstages} stages", where=f"{where} pp")
    if gpus is not None and lay.gpus != gpus:
        raise SimError(
            f"tp x pp x dp = {lay.tp} x {lay.pp} x {lay.dp} = {lay.gpus}, but the hardware has "
            f"{gpus} accelerators",
            where=f"{where} dp",
        )
    if batch % (lay.dp * lay.mbs):
        raise SimError(
            f"batch {batch} does not split into dp={lay.dp} x mbs={lay.mbs} "
            f"(need a multiple of {lay.dp * lay.mbs})",
            where="--set batch",
        )
    m = lay.microbatches(batch)
    if lay.schedule == "interleaved" and m % lay.pp:
        raise SimError(
            f"the interleaved schedule needs microbatches ({m}) divisible by pp={lay.pp}",
            where=f"{where} schedule",
        )
    if lay.sp and lay.tp == 1:
        raise SimError("sp (sequence parallelism) needs tp > 1", where=f"{where} sp")


def padded_vocab(vocab: int, tp: int, multiple: int = 128) -> int:
    """The vocabulary padded to a multiple of ``multiple x tp``, as Megatron-LM's
    ``--make-vocab-size-divisible-by 128`` does (GPT-2's 50,257 -> 50,304 at tp=1, 51,200 at tp=8).

    >>> padded_vocab(50257, 1), padded_vocab(50257, 8)
    (50304, 51200)
    """
    step = multiple * tp
    return -(-vocab // step) * step


def stage_layers(layers: int, stages: int) -> list[int]:
    """Transformer layers of each (virtual) stage.

    Even when ``stages`` divides ``layers`` (Megatron-LM); otherwise as DeepSpeed's
    ``partition_method="type:transformer|embedding"`` does, counting the embedding and the LM
    head as one layer each on the first and last stage (BLOOM: 70 layers + 2 over 12 stages =
    5, 6 x 10, 5).

    >>> stage_layers(80, 8)[:2], stage_layers(70, 12)
    ([10, 10], [5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5])
    """
    if layers % stages == 0:
        return [layers // stages] * stages
    units = layers + 2
    out = [units // stages] * stages
    out[0] -= 1
    out[-1] -= 1
    return out
