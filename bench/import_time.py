"""What ``import sim`` costs over importing its dependencies alone, measured side by side.

    .venv/bin/python bench/import_time.py [--runs 9] [--src DIR]

Each sample is a fresh interpreter that times one import with ``time.perf_counter``:

* **sim**: ``import sim`` and ``sim.ops.registry.load_all()`` (the whole op library, as every
  ``sim`` command needs);
* **deps**: the third-party modules that the first import loads (numpy, networkx, ml_dtypes
  ... found by diffing ``sys.modules``, so a dependency made lazy leaves both sides), imported
  in the order sim loaded them.

Both sides import from bytecode, as an installed package does: the runs use a fresh
``PYTHONPYCACHEPREFIX`` (so ``PYTHONDONTWRITEBYTECODE`` in the environment does not leave sim
alone compiling its sources while its dependencies load their wheels' ``.pyc``), filled by one
discarded warm-up run of each side. ``--compile`` times the other case instead: no bytecode
written or read for either side's sources that lack it (what a checkout with
``PYTHONDONTWRITEBYTECODE=1`` pays on every start).

Samples alternate (deps, sim, deps, sim ...) so machine load hits both alike; the table gives
min and median seconds and the ratio sim / deps of each. The target is a ratio <= 1.5.
``--src DIR`` measures the ``sim`` package found in DIR instead (e.g. an older checkout
exported with ``git archive``), for before/after numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SIM = """
import sys, time
t0 = time.perf_counter()
import sim
from sim.ops.registry import load_all
load_all()
t = time.perf_counter() - t0
print(t)
"""

_LIST = """
import json, sys
before = set(sys.modules)
import sim
from sim.ops.registry import load_all
load_all()
std = sys.stdlib_module_names
new = [m for m in sys.modules if m not in before]
third = [m for m in new if m.split('.')[0] not in std and m.split('.')[0] != 'sim'
         and not m.startswith('_')]
print(json.dumps(third))
"""

_DEPS = """
import importlib, json, sys, time
mods = json.loads(sys.argv[1])
t0 = time.perf_counter()
for m in mods:
    if m not in sys.modules:
        try:
            importlib.import_module(m)
        except Exception:
            pass
t = time.perf_counter() - t0
print(t)
"""


def _env(src: str, pycache: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _run(code: str, src: str, *args: str, pycache: str | None = None) -> str:
    env = _env(src, pycache)
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=src, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def measure(src: str, runs: int, pycache: str | None) -> tuple[list[str], list[float], list[float]]:
    """(dependency modules, deps seconds, sim seconds), ``runs`` fresh interpreters each
    (after one discarded warm-up of each side)."""
    mods = json.loads(_run(_LIST, src, pycache=pycache))
    deps: list[float] = []
    full: list[float] = []
    for i in range(runs + 1):
        d = float(_run(_DEPS, src, json.dumps(mods), pycache=pycache))
        f = float(_run(_SIM, src, pycache=pycache))
        if i:
            deps.append(d)
            full.append(f)
    return mods, deps, full


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="fresh interpreters per side (default 9)")
    ap.add_argument("--src", default=ROOT, help="directory holding the sim package to measure")
    ap.add_argument("--compile", action="store_true",
                    help="no bytecode cache: sources without .pyc are compiled on every run")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlsim-pycache-") as tmp:
        mods, deps, full = measure(os.path.abspath(args.src), args.runs, None if args.compile else tmp)
    tops = sorted({m.split(".")[0] for m in mods})
    mode = "compiling sources (no bytecode cache)" if args.compile else "from bytecode"
    print(f"sim from {os.path.abspath(args.src)}; dependencies loaded at import: {', '.join(tops)} "
          f"({len(mods)} modules); {args.runs} runs each, alternating, {mode}")
    print(f"{'':28s} {'min s':>8s} {'median s':>9s}")
    print(f"{'dependencies alone':28s} {min(deps):8.3f} {statistics.median(deps):9.3f}")
    print(f"{'import sim + op library':28s} {min(full):8.3f} {statistics.median(full):9.3f}")
    print(f"{'ratio sim / deps':28s} {min(full) / min(deps):8.2f} "
          f"{statistics.median(full) / statistics.median(deps):9.2f}   (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
