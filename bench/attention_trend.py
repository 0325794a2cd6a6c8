"""How fused attention's speed moves with head size, sequence length and the causal mask:
dlsim's H100 attention model against the FlashAttention-3 paper's forward-speed panels.

Source: Shah et al., FlashAttention-3, arXiv:2407.08608 (2024), Fig. 5 (H100 80GB SXM5, BF16
forward; batch x seqlen = 16k tokens, hidden 2048, so H = 2048 / d; FLOPs = 4 B H S^2 d, halved
when causal), bar labels as transcribed at subtext.edge.nugit.net (one transcription per panel;
the d = 128 non-causal panel has a second one that agrees on every cuDNN, FA3 and FA2 bar but
one, S = 512, where it swaps cuDNN's and FA3's). The cuDNN in the paper is a 2024 release:
PyTorch 2.11's SDPA kernel in the calibration (``../shared/calibration``) runs causal d = 128
at S = 8k at 617 TFLOP/s where the paper's cuDNN ran 529, so the absolute level is not the
check here, the shape of each series is: how much slower d = 64 runs than d = 128, and how the
rate grows with S. Nothing is fitted to these numbers.

A second table checks fp32 attention, which PyTorch's SDPA runs with the memory-efficient
(xFormers CUTLASS) kernel on A100 and H100: its GEMMs run on the tensor cores as 3xTF32
(``sim.cost.gpu.attention_runs_3xtf32``). Times are xFormers' own A100 forward benchmarks:
facebookresearch/xformers PR #587 (``f32 B=64, M=1024, H=16, K=256 | 27189.1``, the PR's column,
in us) and PR #480 (B = 384, M = 197, H = 1, K = 64 / 80 / 88 in fp32 and fp16, the
``cutlass_cleanup`` column). Nothing is fitted to them either.

Run: ``.venv/bin/python bench/attention_trend.py``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sim  # noqa: E402
from sim.graph import Graph, TensorSpec  # noqa: E402

SEQ = (512, 1024, 2048, 4096, 8192, 16384)
PANELS = {  # (head dim, causal): subtext.edge.nugit.net/image/<id>
    (64, False): "55f47a106c25f22983b2741a7e8bcdbaec8521b6a583d130c6f92b94e0f65924",
    (64, True): "9b7cf01f91715dc46b5b50a018fdf4cd6872c4448f44d9c74a60aa61e56ec6f2",
    (128, False): "e27582d2db385c9bac87ebc92343d2452b7c01d5d934e596c90172b346d00d42",
    (128, True): "4ec6690918d4df7a49f27715412cc425602eb075dfe3f7821cddc4a74f058ca1",
}
# TFLOP/s at SEQ, per kernel as the spec names it (cuDNN, FlashAttention-3, FlashAttention-2)
PAPER = {
    ("cudnn", 64, False): (335, 373, 395, 408, 412, 413),
    ("cudnn", 64, True): (225, 288, 334, 363, 379, 388),
    ("cudnn", 128, False): (497, 574, 617, 609, 600, 595),
    ("cudnn", 128, True): (315, 410, 484, 518, 529, 539),
    ("flash3", 64, False): (333, 392, 460, 476, 496, 497),
    ("flash3", 64, True): (197, 265, 371, 420, 460, 473),
    ("flash3", 128, False): (467, 565, 625, 638, 646, 648),
    ("flash3", 128, True): (292, 423, 521, 579, 602, 616),
    ("flash2", 64, False): (282, 306, 318, 321, 322, 324),
    ("flash2", 64, True): (180, 229, 262, 284, 295, 299),
    ("flash2", 128, False): (309, 350, 362, 368, 370, 370),
    ("flash2", 128, True): (191, 260, 298, 319, 333, 335),
}
# the spec each series is simulated on: the bundled H100 (cuDNN, what PyTorch's SDPA runs), and
# the same GPU told to run FlashAttention-2 (its own fitted efficiency); FA3 has no parameters
# of its own in the spec, so its series runs on the cuDNN model
SPECS = {"cudnn": {}, "flash3": {}, "flash2": {"arch.attention_kernel": "flash2"}}


XFORMERS_A100 = (  # (dtype, B, M, H, K, forward us, source)
    ("fp32", 64, 1024, 16, 256, 27189.1, "xformers PR #587"),
    ("fp32", 384, 197, 1, 64, 272.1, "xformers PR #480"),
    ("fp32", 384, 197, 1, 80, 443.7, "xformers PR #480"),
    ("fp32", 384, 197, 1, 88, 447.7, "xformers PR #480"),
    ("fp16", 384, 197, 1, 64, 88.1, "xformers PR #480"),
    ("fp16", 384, 197, 1, 80, 115.5, "xformers PR #480"),
    ("fp16", 384, 197, 1, 88, 124.7, "xformers PR #480"),
)
# the A100 of those benchmarks runs the memory-efficient kernel at every dtype (40 GB SXM assumed)
A100_MEM_EFFICIENT = {"arch.attention_kernel": "mem_efficient", "memory.hbm.bandwidth": "1555 GB/s",
                      "memory.hbm.capacity": "40 GB"}


def attention_graph(b: int, h: int, s: int, d: int, causal: bool, dtype: str = "bf16") -> Graph:
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorSpec((b, h, s, d), dtype)) for n in "qkv")
    outs = g.add_node("Attention", [q, k, v], ["y", "", "", ""], {"is_causal": int(causal)}, name="node")
    g.set_outputs([o for o in outs if o])
    return g.verify()


def predicted_tflops(kernel: str, d: int, s: int, causal: bool) -> float:
    b, h = 16384 // s, 2048 // d
    hw = sim.hardware("h100", **SPECS[kernel])
    t = sim.simulate(attention_graph(b, h, s, d, causal), hw, dtype="bf16", host_inputs=False,
                     cache_reuse=False).makespan_s
    return 4.0 * b * h * s * s * d / (2 if causal else 1) / t / 1e12


def main() -> int:
    print("time error (predicted / measured - 1) at S = " + ", ".join(f"{s // 1024}k" if s >= 1024 else str(s)
                                                                      for s in SEQ))
    gaps = {}
    for (kernel, d, causal), measured in PAPER.items():
        errs = [m / predicted_tflops(kernel, d, s, causal) - 1 for s, m in zip(SEQ, measured)]
        gaps[(kernel, d, causal)] = statistics.median(errs)
        print(f"{kernel:7s} d={d:<4d}{'causal' if causal else 'full':7s}"
              + " ".join(f"{100 * e:+6.1f}%" for e in errs))
    print("\nd = 64 against d = 128 (median error of the d = 64 series minus the d = 128 one; 0: the "
          "model has the head-size trend right):")
    for kernel in SPECS:
        for causal in (False, True):
            gap = gaps[(kernel, 64, causal)] - gaps[(kernel, 128, causal)]
            print(f"  {kernel:7s} {'causal' if causal else 'full':7s}{100 * gap:+6.1f} points")
    print("\nmemory-efficient (xFormers CUTLASS) attention forward on A100, non-causal:")
    hw = sim.hardware("a100", **A100_MEM_EFFICIENT)
    for dt, b, m, h, k, us, src in XFORMERS_A100:
        t = sim.simulate(attention_graph(b, h, m, k, False, dt), hw, dtype=dt, host_inputs=False,
                         cache_reuse=False).makespan_s
        print(f"  {dt} B={b} M={m} H={h} K={k}: measured {us:.1f} us, predicted {t * 1e6:.1f} us "
              f"({100 * (t * 1e6 / us - 1):+.0f}%)  [{src}]")
    print("\nsource: Shah et al., FlashAttention-3, arXiv:2407.08608, Fig. 5; panels transcribed at "
          "https://subtext.edge.nugit.net/image/<id>:")
    for (d, causal), ident in PANELS.items():
        print(f"  d={d} {'causal' if causal else 'non-causal'}: {ident}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
