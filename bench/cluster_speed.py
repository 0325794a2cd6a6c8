"""Wall time and peak RAM of one simulated GPT-3 175B training step against GPU count.

Each layout runs in a fresh subprocess (so peak RSS is that run's own); targets from the
cluster issue: 1,024 GPUs (TP8 x PP16 x DP8) <= 60 s and <= 4 GiB, 4,096 GPUs <= 120 s.
Run: ``.venv/bin/python bench/cluster_speed.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

LAYOUTS = [
    (64, "tp=8,pp=8,dp=1"),
    (128, "tp=8,pp=16,dp=1"),
    (256, "tp=8,pp=16,dp=2"),
    (512, "tp=8,pp=16,dp=4"),
    (1024, "tp=8,pp=16,dp=8"),
    (2048, "tp=8,pp=16,dp=16"),
    (4096, "tp=8,pp=16,dp=32"),
]
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import sim
from sim.cluster import simulate_training
gpus, layout = int(sys.argv[1]), sys.argv[2]
hw = sim.hardware("dgx-a100-cluster", nodes=gpus // 8)
r = simulate_training("gpt3-175b", hw, layout, batch=1536, sets={"vocab": 51200}, recompute=True,
                      check_memory=False, progress=False)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
print(json.dumps({"wall_s": time.perf_counter() - t0, "rss": rss,
                  "step_s": r.makespan_s, "tflops": r.tflops_per_gpu, "mfu": r.mfu}))
"""


def main() -> int:
    head = ("GPUs", "layout", "wall s", "RAM GiB", "step s", "TFLOP/s/GPU", "MFU")
    print("{:>5} {:<18} {:>7} {:>8} {:>8} {:>12} {:>6}".format(*head))
    rows = []
    for gpus, layout in LAYOUTS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(gpus), layout], capture_output=True, text=True, check=True
        )
        d = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((gpus, d))
        print(
            f"{gpus:5d} {layout:<18} {d['wall_s']:7.1f} {d['rss'] / 2**30:8.2f} {d['step_s']:8.2f} "
            f"{d['tflops']:12.1f} {d['mfu'] * 100:5.1f}%"
        )
    by = dict(rows)
    ok = by[1024]["wall_s"] <= 60 and by[1024]["rss"] <= 4 * 2**30 and by[4096]["wall_s"] <= 120
    print(f"targets (1,024 GPUs <= 60 s and <= 4 GiB; 4,096 GPUs <= 120 s): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
