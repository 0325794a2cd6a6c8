"""``ClusterResult``: a simulated cluster training step, its summary, JSON, trace and plot.

FLOP counts (Narayanan et al. 2021, appendix; ``B`` sequences of ``s`` tokens, ``l`` layers,
hidden ``h``, MLP width ``f``, vocabulary ``V``): a layer's forward is
``B s (8 h^2 + 4 h f) + 4 B s^2 h`` (``24 B s h^2 (1 + s/6h)`` for ``f = 4h``), the LM head's
``2 B s h V``. Model FLOPs per step are 3 forwards (forward + backward) of everything;
hardware FLOPs add one more forward of the layers when activations are recomputed: with
``f = 4h`` that is Megatron-LM's ``96 B s l h^2 (1 + s/6h + V/16lh)``. ``tflops_per_gpu``
uses the hardware count, as the Megatron-LM papers report; ``mfu`` the model count over the
dense peak (PaLM's definition).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from sim.cluster.layout import Layout
from sim.cluster.memory import RankMemory
from sim.cluster.schedule import ScheduleResult, StageTimes


@dataclass
class ClusterResult:
    workload: str
    hardware: str
    layout: Layout
    gpus: int
    per_node: int
    batch: int
    microbatches: int
    seq: int
    hidden: int
    layers: int
    vocab: int
    ffn: int
    heads: int
    recompute: bool
    amp: bool
    dtype: str
    optimizer: str
    schedule: ScheduleResult
    memory: list[RankMemory]
    stages: list[StageTimes]
    peak_flops: float
    model: Any = None
    tp_comm_s: float = 0.0
    wall_s: float = 0.0
    engine_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ numbers
    @property
    def makespan_s(self) -> float:
        """The whole step: first forward to the last optimizer update."""
        return self.schedule.makespan_s

    def _layer_fwd_flops(self) -> float:
        b, s, h, f = self.batch, self.seq, self.hidden, self.ffn or 4 * self.hidden
        return b * s * (8 * h * h + 4 * h * f) + 4 * b * s * s * h

    @property
    def model_flops(self) -> float:
        """FLOPs of one step without recomputation (3 forward passes)."""
        return 3 * (
            self.layers * self._layer_fwd_flops() + 2 * self.batch * self.seq * self.hidden * self.vocab
        )

    @property
    def hardware_flops(self) -> float:
        """FLOPs the GPUs execute: model FLOPs plus the recomputed layer forwards."""
        return self.model_flops + (self.layers * self._layer_fwd_flops() if self.recompute else 0.0)

    @property
    def tflops_per_gpu(self) -> float:
        return self.hardware_flops / self.makespan_s / self.gpus / 1e12 if self.makespan_s > 0 else 0.0

    @property
    def mfu(self) -> float:
        denom = self.makespan_s * self.gpus * self.peak_flops
        return self.model_flops / denom if denom > 0 else 0.0

    @property
    def bubble_fraction(self) -> float:
        """Idle share of the pipeline phase (0 without a pipeline)."""
        return self.schedule.bubble_fraction() if self.layout.pp * self.layout.chunks > 1 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.seq / self.makespan_s if self.makespan_s > 0 else 0.0

    def memory_blocks(self) -> list[RankMemory]:
        """The memory blocks the summary shows: the first stage, the fullest, the last."""
        if len(self.memory) <= 3:
            return list(self.memory)
        full = max(self.memory, key=lambda m: m.total)
        picked = [self.memory[0], full, self.memory[-1]]
        return [m for i, m in enumerate(picked) if m not in picked[:i]]

    def exposed_comm(self) -> dict[str, float]:
        """Communication time not hidden behind compute, by kind (the slowest stage's)."""
        e = self.schedule.exposed
        return {
            "tp": self.tp_comm_s,
            "pp": e.get("pp", 0.0),
            "dp": e.get("dp", 0.0) + e.get("emb", 0.0),
            "zero": e.get("zero", 0.0),
        }

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "hardware": self.hardware,
            "layout": self.layout.describe(),
            "tp": self.layout.tp,
            "pp": self.layout.pp,
            "dp": self.layout.dp,
            "mbs": self.layout.mbs,
            "zero": self.layout.zero,
            "sp": self.layout.sp,
            "schedule": self.layout.schedule,
            "chunks": self.layout.chunks,
            "gpus": self.gpus,
            "batch": self.batch,
            "microbatches": self.microbatches,
            "seq": self.seq,
            "layers": self.layers,
            "hidden": self.hidden,
            "vocab": self.vocab,
            "recompute": self.recompute,
            "attention": self.attention,
            "precision": self.precision,
            "optimizer": self.optimizer,
            "makespan_s": self.makespan_s,
            "tflops_per_gpu": self.tflops_per_gpu,
            "mfu": self.mfu,
            "model_flops": self.model_flops,
            "hardware_flops": self.hardware_flops,
            "tokens_per_s": self.tokens_per_s,
            "bubble_fraction": self.bubble_fraction,
            "exposed_comm_s": self.exposed_comm(),
            "stages": [{"fwd_s": st.fwd_s, "bwd_s": st.bwd_s} for st in self.stages],
            "memory": [
                {
                    "rank": m.rank,
                    "total_bytes": m.total,
                    "capacity_bytes": m.capacity,
                    "components": m.components,
                }
                for m in self.memory
            ],
            "simulated_ranks": self.layout.pp,
            "wall_s": self.wall_s,
        }

    @property
    def attention(self) -> str:
        """The attention core timed: "fused" (one kernel) or "materialized" (scores written out)."""
        return str(getattr(self.model, "attention", "fused"))

    @property
    def precision(self) -> str:
        return (
            f"{self.dtype} mixed (fp32 master weights and optimizer states)"
            if self.amp
            else f"{self.dtype} (pure)"
        )

    def write_json(self, path: str | os.PathLike[str]) -> None:
        from sim.io import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False))

    def summary(self) -> str:
        lay = self.layout
        gib = 2**30
        lines = [
            f"{self.workload} on {self.hardware}: {self.gpus} GPUs "
            f"({self.gpus // max(1, self.per_node)} nodes), {lay.describe()}",
            f"  batch {self.batch} x {self.seq} tokens, {self.microbatches} microbatches per replica, "
            f"{self.precision}, {self.optimizer}" + (", full recomputation" if self.recompute else "")
            + (", attention scores materialised" if self.attention == "materialized" else ""),
            f"  step time        {self.makespan_s:.3f} s   ({self.tokens_per_s:,.0f} tokens/s)",
            f"  per-GPU          {self.tflops_per_gpu:.1f} TFLOP/s (hardware FLOPs, Megatron's count)   "
            f"MFU {self.mfu * 100:.1f}%",
            f"  pipeline bubble  {self.bubble_fraction * 100:.1f}%",
            "  exposed comm     " + ", ".join(f"{k} {v:.3f} s" for k, v in self.exposed_comm().items()),
        ]
        for m in self.memory_blocks():
            parts = ", ".join(f"{k} {v / gib:.1f}" for k, v in m.components.items())
            lines.append(
                f"  memory {m.rank}: {m.total / gib:.1f} GiB of {m.capacity / gib:.0f} GiB ({parts} GiB)"
            )
        if len(self.memory) > len(self.memory_blocks()):
            lines.append(
                f"  ({len(self.memory)} distinct stages: the first, the fullest and the last shown; "
                "every stage in the JSON)"
            )
        st0 = self.stages[0]
        lines.append(
            f"  stage 0 per microbatch: forward {st0.fwd_s * 1e3:.2f} ms, backward {st0.bwd_s * 1e3:.2f} ms"
            + (" (with recomputation)" if self.recompute else "")
        )
        lines.append(f"  simulated {lay.pp} ranks (one per stage) in {self.wall_s:.1f} s")
        return "\n".join(lines)

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """Chrome/Perfetto trace: one process per simulated rank (stage s, TP rank 0), with a
        compute track and communication tracks (p2p, data parallel)."""
        tracks = {"compute": 1, "p2p": 2, "dp": 3}
        ev: list[dict[str, Any]] = []
        for s in range(self.layout.pp):
            ev.append(
                {
                    "name": "process_name",
                    "ph": "M",
                    "pid": s,
                    "tid": 0,
                    "args": {"name": f"stage {s} / tp rank 0 (x{self.layout.tp * self.layout.dp} ranks)"},
                }
            )
            for tname, tid in tracks.items():
                ev.append({"name": "thread_name", "ph": "M", "pid": s, "tid": tid, "args": {"name": tname}})
        for e in sorted(self.schedule.events, key=lambda e: (e.device, e.start_s, e.kind)):
            name = (
                e.kind
                + (f" mb{e.microbatch}" if e.microbatch >= 0 else "")
                + (f" c{e.chunk}" if self.layout.chunks > 1 else "")
            )
            ev.append(
                {
                    "name": name,
                    "cat": e.track,
                    "ph": "X",
                    "pid": e.device,
                    "tid": tracks.get(e.track, 1),
                    "ts": round(e.start_s * 1e6, 3),
                    "dur": round((e.end_s - e.start_s) * 1e6, 3),
                }
            )
        from sim.io import atomic_write

        atomic_write(path, json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"}, allow_nan=False))

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A timeline with one row per pipeline stage (forward, backward, optimizer, exposed
        data-parallel communication), readable at any GPU count."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        p = self.layout.pp
        fig, ax = plt.subplots(figsize=(12, 1.2 + 0.35 * p), dpi=110)
        colors = {
            "F": "#4C72B0",
            "B": "#DD8452",
            "opt": "#55A868",
            "dp": "#C44E52",
            "zero": "#8172B3",
            "emb": "#937860",
        }
        bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for e in self.schedule.events:
            if e.track == "p2p":
                continue
            key = "dp" if e.kind in ("dp",) else e.kind
            y = e.device
            if e.track == "dp":
                bars.setdefault((y, key), []).append((e.start_s, e.end_s - e.start_s))
            else:
                bars.setdefault((y, key), []).append((e.start_s, e.end_s - e.start_s))
        for (y, key), spans in sorted(bars.items()):
            off, h = (0.3, 0.35) if key in ("dp", "zero", "emb") else (-0.3, 0.6)
            ax.broken_barh(spans, (y + off - h / 2, h), facecolors=colors.get(key, "grey"), linewidth=0)
        ax.set_yticks(range(p))
        ax.set_yticklabels([f"stage {s}" for s in range(p)])
        ax.invert_yaxis()
        ax.set_xlabel("time (s)")
        ax.set_xlim(0, self.makespan_s * 1.01)
        ax.set_title(
            f"{self.workload}: {self.gpus} GPUs, {self.layout.describe()} — step {self.makespan_s:.2f} s, "
            f"{self.tflops_per_gpu:.0f} TFLOP/s/GPU, bubble {self.bubble_fraction * 100:.1f}%",
            fontsize=9,
        )
        ax.legend(
            handles=[
                Patch(color=colors[k], label=lbl)
                for k, lbl in (
                    ("F", "forward"),
                    ("B", "backward"),
                    ("opt", "optimizer"),
                    ("dp", "DP grad reduce"),
                    ("zero", "ZeRO gather"),
                    ("emb", "embedding/SP-norm grads"),
                )
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12 - 0.3 / max(1, p)),
            ncol=6,
            fontsize=8,
            frameon=False,
        )
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
