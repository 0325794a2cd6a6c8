"""Command line: ``sim run``, ``sim train``, ``sim ops``, ``sim hw``, ``sim calibrate``, ``sim validate``,
``sim serve``.

Every command runs inside one error boundary (``main``): bad input prints one line naming the
file or option and exits 2 with no traceback. That covers ``SimError`` and, as a safety net,
what bad input can still raise from deeper down (OS errors, undecodable text, recursion,
overflow, division by zero, memory). Anything else is a bug in dlsim: it prints the traceback,
says so and where to report it, and exits 1. Exit codes: 0 done, 2 bad input, 1 internal
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sim.errors import SimError


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="simulate a workload on hardware and print a summary")
    p.add_argument("workload", help="workload YAML, ONNX model, or bundled workload name")
    p.add_argument("--hw", default="h100", help="hardware spec name or YAML path (default h100)")
    p.add_argument("--dtype", help="cast floating tensors: fp32 tf32 fp16 bf16 int8; "
                                   "fp8: fp8 GEMMs in a bf16 model")
    p.add_argument("--set", action="append", metavar="K=V", help="override a workload param")
    p.add_argument("--hw-set", action="append", metavar="FIELD=VALUE",
                   help="override a spec field, e.g. memory.hbm.bandwidth='6.7 TB/s'")
    p.add_argument("--place", action="append", metavar="PATTERN=DEVICE",
                   help="place ops whose name or layer matches PATTERN on DEVICE")
    p.add_argument("--train", action="store_true", help="simulate one training step")
    p.add_argument("--loss", help="training loss with --train: cross_entropy (default) or mse")
    p.add_argument("--optimizer", help="optimizer with --train: sgd momentum adam (default) adamw ...")
    p.add_argument("--optimizer-impl", choices=("foreach", "fused", "forloop", "per_param"),
                   help="how the optimizer step runs, as torch.optim's foreach (default) / fused=True / "
                        "foreach=False, or one fused kernel per parameter (docs/training.md)")
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing (with --train)")
    p.add_argument("--ignore-oom", action="store_true",
                   help="keep simulating past an out-of-memory point and report the would-be peak")
    p.add_argument("--fuse", action="store_true", help="run the fusion pass first")
    p.add_argument("--runtime", choices=("eager", "compiled", "tensorrt"),
                   help="run as that framework would: its rewrites, fusion and dispatch (docs/runtime.md)")
    p.add_argument("--json", metavar="F", help="write the result as JSON")
    p.add_argument("--trace", metavar="F", help="write a Chrome/Perfetto trace")
    p.add_argument("--plot", metavar="F", help="write a timeline/roofline/memory plot (PNG)")
    p.add_argument("--top", type=int, default=10, help="how many ops to list")
    p.add_argument("--streams", type=int, default=1,
                   help="concurrent compute streams per device (they share memory bandwidth)")
    p.add_argument("--resident-inputs", action="store_true",
                   help="graph inputs start on the device (no host copy)")
    p.add_argument("--no-cache-reuse", action="store_true",
                   help="stream every byte from main memory (no on-chip reuse between ops)")
    p.add_argument("--dispatch", metavar="TIME",
                   help="host time to issue each kernel, e.g. '8 us' (eager framework overhead)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="launch the whole graph once (no per-op host dispatch)")
    p.add_argument("--parallel", metavar="tp=T,pp=P,dp=D[,mbs=B,...]",
                   help="a 3-D parallel training step on a cluster: tp=T,pp=P,dp=D[,mbs=B]"
                        "[,schedule=gpipe|1f1b|interleaved:V][,zero=0..3][,sp] with --set batch=GLOBAL; "
                        "or, on one node, dp=N (with --train) / pp=S[,mb=M] op by op (docs/parallel.md)")
    p.add_argument("--amp", action="store_true",
                   help="mixed-precision training: --dtype compute, fp32 master weights and optimizer states")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from sim.cli.run import run_command

    return run_command(args)


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a workload on a bundled dataset with the executor")
    p.add_argument("workload")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", help="training precision: fp32, or bf16/fp16 mixed precision as torch.autocast "
                                   "runs it (fp32 master weights and optimizer states)")
    p.add_argument("--prune", help="magnitude pruning: e.g. 0.5 (unstructured) or 2:4")
    p.add_argument("--set", action="append", metavar="K=V")
    p.add_argument("--hw", default="h100",
                   help="also simulate one training step on this hardware (default h100; 'none' skips)")
    p.add_argument("--json", metavar="F")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from sim.cli.train import train_command

    return train_command(args)


def _add_ops(sub: Any) -> None:
    p = sub.add_parser("ops", help="list the op library")
    p.set_defaults(func=_cmd_ops)


def _cmd_ops(args: argparse.Namespace) -> int:
    from sim.ops import all_ops

    for name, op in sorted(all_ops().items()):
        grad = "grad" if op.grad else f"no grad: {op.no_grad}"
        print(f"{name:28s} {op.family:12s} {grad}")
    return 0


def _add_hw(sub: Any) -> None:
    p = sub.add_parser("hw", help="list bundled hardware specs or show one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_hw)


def _cmd_hw(args: argparse.Namespace) -> int:
    from sim.hw import describe, list_hardware

    if args.name:
        print(describe(args.name))
    else:
        for name in list_hardware():
            print(name)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``sim run: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from sim.cli.serve import add_parser as add_serve

    parser = _Parser(prog="sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_train(sub)
    _add_ops(sub)
    _add_hw(sub)
    from sim.cli import calibrate, validate

    calibrate.add_parser(sub)
    validate.add_parser(sub)
    from sim.cli import plot, results, search, sweep  # what-if studies: sim/study/

    for study_command in (sweep, results, plot, search):
        study_command.add(sub)
    add_serve(sub)
    return parser


REPORT_TO = "the dlsim issue tracker (with the command line and this traceback)"


def _inputs(args: argparse.Namespace) -> str:
    """The files and options a command read, to name in a safety-net message."""
    names = [str(getattr(args, k)) for k in ("workload", "hw") if getattr(args, k, None)]
    return ", ".join(names) or f"sim {getattr(args, 'command', '')}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _user_error(err: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for an exception that bad input causes, or None for a bug."""
    if isinstance(err, SimError):
        return _one_line(str(err))
    if isinstance(err, OSError):
        name = err.filename if err.filename is not None else _inputs(args)
        return _one_line(f"{name}: {err.strerror or err}")
    if isinstance(err, UnicodeDecodeError):
        return _one_line(f"{_inputs(args)}: input is not UTF-8 text ({err.reason})")
    if isinstance(err, RecursionError):
        return f"{_inputs(args)}: input nests or refers to itself too deeply"
    if isinstance(err, MemoryError):
        return f"{_inputs(args)}: input needs more memory than this machine has"
    if isinstance(err, OverflowError | ZeroDivisionError):
        return _one_line(f"{_inputs(args)}: a number in the input is out of range ({err})")
    return None


# Options that name a file a command writes, and arguments that name a file it reads, across
# every subcommand: ``main`` refuses an output that is an input (or another output) before any
# command runs (``sim.io.check_outputs``), so a new subcommand is covered by naming its options so.
OUTPUT_OPTIONS = {"json": "--json", "trace": "--trace", "plot": "--plot", "csv": "--csv", "out": "--out",
                  "output": "--output"}
INPUT_ARGS = ("workload", "file", "hw", "store")


def _input_files(args: argparse.Namespace) -> list[str]:
    """The files a command will read (bundled names resolved; names that resolve to nothing are
    left for the command to report)."""
    files = []
    for key in INPUT_ARGS:
        value = getattr(args, key, None)
        if not isinstance(value, str) or not value:
            continue
        if os.path.exists(value):
            files.append(value)
            continue
        try:
            if key == "hw":
                from sim.hw.loader import spec_file

                files.append(spec_file(value))
            elif key == "workload":
                from sim.frontends.yaml_loader import resolve_workload

                files.append(resolve_workload(value))
        except SimError:
            pass
    return files


def check_io(args: argparse.Namespace) -> None:
    """Before any command runs: no output option names an input or another output, and each
    output's folder is writable (``sim.io.check_outputs``)."""
    outputs = {opt: getattr(args, key) for key, opt in OUTPUT_OPTIONS.items()
               if isinstance(getattr(args, key, None), str) and getattr(args, key)}
    if outputs:
        from sim.io import check_outputs

        check_outputs(outputs, _input_files(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sim`` command line; returns the exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a one-line usage error (exit 2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    try:
        check_io(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``sim run ... | head``): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # the one error boundary of the command line
        message = _user_error(err, args)
        if message is None:
            import traceback

            traceback.print_exc()
            print(f"sim: internal error: {type(err).__name__}: {_one_line(str(err))}. This is a bug in "
                  f"dlsim, not in your input; please report it to {REPORT_TO}",
                  file=sys.stderr)
            return 1
        print(f"sim: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
