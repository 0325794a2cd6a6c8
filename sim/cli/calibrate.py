"""``sim calibrate``: microbenchmark this machine with the executor's own kernels and write a
CPU spec fitted to them (see ``sim.calib``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from sim.errors import SimError


def add_parser(sub: Any) -> None:
    """Register ``sim calibrate``."""
    p = sub.add_parser("calibrate", help="fit a CPU spec to this machine (the executor's kernels)")
    p.add_argument("-o", "--output", default="this-cpu.yaml",
                   help="spec YAML to write (default this-cpu.yaml)")
    p.add_argument("--name", default="this-cpu", help="the spec's name")
    p.add_argument("--quick", action="store_true", help="a reduced suite (seconds; a rough fit)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads to measure with (default 1: CPU time is then the kernel's time "
                        "even on a busy machine); sim validate must use the same")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds spent per microbenchmark")
    p.add_argument("--folds", type=int, default=4, help="cross-validation folds")
    p.set_defaults(func=calibrate_command)


def blas_threads(n: int) -> Any:
    """A context limiting BLAS thread pools to ``n`` (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    if n < 1:
        raise SimError(f"--threads must be >= 1, got {n}", where="--threads")
    return threadpool_limits(n)


def timer(threads: int) -> Any:
    """CPU seconds of this process with one thread (immune to other processes), else wall time."""
    return time.process_time if threads == 1 else time.perf_counter


def calibrate_command(args: argparse.Namespace) -> int:
    from sim.calib.bench import cases, run_suite
    from sim.calib.fit import calibrate_fit, machine_info, spec_yaml
    from sim.cost.fit import format_errors

    if args.min_time <= 0:
        raise SimError(f"--min-time must be > 0, got {args.min_time}", where="--min-time")
    suite = cases(quick=args.quick)
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()
    machine = machine_info(args.threads)
    with blas_threads(args.threads):
        samples = run_suite(suite, min_time=args.min_time, clock=timer(args.threads),
                            cold_bytes=0 if args.quick else machine.l3_bytes,
                            progress=(lambda s: print(f"\r{s:60s}", end="", file=sys.stderr, flush=True))
                            if tty else None)
    print(f"{chr(13) if tty else ''}measured {len(samples)} kernels in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    fit = calibrate_fit(samples, machine, folds=args.folds)
    p = fit.params
    print(f"machine: {machine.name}, {machine.cores} cores, {args.threads} BLAS thread(s)")
    print(f"per-op overhead {p['launch'] * 1e6:.2f} us, matrix {p['matrix'] / 1e9:.2f} GFLOP/s "
          f"(convolution x{p['conv']:.2f}), vector {p['vector'] / 1e9:.2f} GFLOP/s, bandwidth "
          f"L2 {p['l2'] / 1e9:.1f} / L3 {p['l3'] / 1e9:.1f} / DRAM {p['dram'] / 1e9:.1f} GB/s")
    print(format_errors(fit.errors, "fitted (signed: predicted / measured - 1)"))
    print(format_errors(fit.cv_errors, f"{args.folds}-fold cross-validated (kernels the fit did not see)"))
    text = spec_yaml(fit, machine, len(samples), args.name, time.strftime("%Y-%m-%d", time.gmtime()))
    from sim.io import atomic_write

    atomic_write(args.output, text)
    print(f"wrote spec {args.output}")
    return 0
