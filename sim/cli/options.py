"""Typed option records: each command turns its parsed arguments into one frozen record once,
so the code below reads typed attributes (``opts.train``), never ``getattr(args, "train")``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from sim.cli.args import parse_dispatch, parse_hw_sets, parse_place, parse_sets


@dataclass(frozen=True)
class RunOptions:
    """Everything ``sim run`` was asked, parsed and typed (defaults are the command line's)."""

    workload: str
    hw: str = "h100"
    dtype: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)       # --set K=V
    hw_sets: dict[str, Any] = field(default_factory=dict)    # --hw-set FIELD=VALUE
    placement: dict[str, str] = field(default_factory=dict)  # --place PATTERN=DEVICE
    train: bool = False
    loss: str | None = None
    optimizer: str | None = None
    optimizer_impl: str | None = None
    checkpoint: bool = False
    amp: bool = False
    ignore_oom: bool = False
    fuse: bool = False
    runtime: str | None = None
    json: str | None = None
    trace: str | None = None
    plot: str | None = None
    top: int = 10
    streams: int = 1
    resident_inputs: bool = False
    cache_reuse: bool = True
    dispatch_s: float | None = None                          # --dispatch, in seconds
    cuda_graphs: bool = False
    parallel: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The record of ``sim run``'s parsed ``args`` (value errors name their option)."""
        dispatch = getattr(args, "dispatch", None)
        return cls(
            workload=args.workload, hw=getattr(args, "hw", None) or "h100",
            dtype=getattr(args, "dtype", None),
            sets=parse_sets(getattr(args, "set", None)),
            hw_sets=parse_hw_sets(getattr(args, "hw_set", None)),
            placement=parse_place(getattr(args, "place", None)),
            train=bool(getattr(args, "train", False)), loss=getattr(args, "loss", None),
            optimizer=getattr(args, "optimizer", None), optimizer_impl=getattr(args, "optimizer_impl", None),
            checkpoint=bool(getattr(args, "checkpoint", False)),
            amp=bool(getattr(args, "amp", False)), ignore_oom=bool(getattr(args, "ignore_oom", False)),
            fuse=bool(getattr(args, "fuse", False)), runtime=getattr(args, "runtime", None),
            json=getattr(args, "json", None), trace=getattr(args, "trace", None),
            plot=getattr(args, "plot", None), top=getattr(args, "top", 10),
            streams=getattr(args, "streams", 1),
            resident_inputs=bool(getattr(args, "resident_inputs", False)),
            cache_reuse=not getattr(args, "no_cache_reuse", False),
            dispatch_s=parse_dispatch(dispatch) if dispatch is not None else None,
            cuda_graphs=bool(getattr(args, "cuda_graphs", False)),
            parallel=getattr(args, "parallel", None),
        )
