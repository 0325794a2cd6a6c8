"""``sim validate``: execute a workload for real with the NumPy executor, measure each op, and
print measured against simulated time per op type and in total (``sim.calib.validate``)."""

from __future__ import annotations

import argparse
from typing import Any

from sim.errors import SimError


def add_parser(sub: Any) -> None:
    """Register ``sim validate``."""
    p = sub.add_parser("validate", help="execute a workload and compare measured with simulated op times")
    p.add_argument("workload", help="workload YAML, ONNX model, or bundled workload name")
    p.add_argument("--hw", required=True, help="spec to simulate on (e.g. the one sim calibrate wrote)")
    p.add_argument("--set", action="append", metavar="K=V", help="override a workload param (e.g. batch=1)")
    p.add_argument("--repeat", type=int, default=3, help="measured runs (each op: the fastest)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (as calibrated; default 1)")
    p.set_defaults(func=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    import sim
    from sim.calib.validate import compare, format_rows, measure
    from sim.cli.args import parse_sets
    from sim.cli.calibrate import blas_threads, timer

    if args.repeat < 1:
        raise SimError(f"--repeat must be >= 1, got {args.repeat}", where="--repeat")
    hw = sim.hardware(args.hw)
    graph = sim.load(args.workload, **parse_sets(args.set))
    with blas_threads(args.threads):
        measured = measure(graph, args.repeat, clock=timer(args.threads))
    rows = compare(graph, measured, hw)
    print(f"{graph.name}: {len(graph.nodes)} ops, executed {args.repeat + 1} times "
          f"({args.threads} BLAS thread(s)); simulated on {getattr(hw, 'name', args.hw)}")
    print(format_rows(rows))
    return 0
