"""Run every benchmark in bench/ one after another and print their reports.

    .venv/bin/python bench/run_all.py
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = [
    ("H100 calibration fit", ["calibrate_h100.py", "--cv", "5"]),
    ("held-out validation against published measurements", ["validate_public.py"]),
    ("attention head-size and sequence trends (FlashAttention-3 paper)", ["attention_trend.py"]),
    ("ONNX conformance", ["onnx_conformance.py"]),
    ("simulator speed", ["sim_speed.py"]),
    ("import time", ["import_time.py"]),
    ("serving simulation speed", ["serve_speed.py"]),
]


def main() -> int:
    failed = 0
    for title, (script, *args) in SCRIPTS:
        print(f"\n=== {title} ({script}) ===", flush=True)
        rc = subprocess.call([sys.executable, os.path.join(HERE, script), *args])
        if rc:
            print(f"{script} exited with {rc}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
