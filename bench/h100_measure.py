"""Measure on a CUDA GPU what the H100 calibration files lack; one prepared run for a lent machine.

The calibration (``bench/data/calibration``) times one kernel per call with
``triton.testing.do_bench`` (CUDA events, L2 flushed). Open questions that need a GPU
(docs/validation.md, "noticed, left alone"), each a section here:

* ``floor``: the per-kernel floor when kernels run back to back. Each small kernel is timed
  three ways: alone (``do_bench``, the calibration's method), N launches queued on one stream
  between one pair of events (eager PyTorch's device-bound regime), and the same N launches
  replayed from one CUDA graph (TensorRT, ``do_bench_cudagraph``).
* ``rows``: softmax and layer norm with rows longer than the calibration's 8 KB (eager), and
  softmax under ``torch.compile`` (Inductor's looped reductions).
* ``write``: write-dominated kernels: short-K batched GEMMs with large outputs, a fill
  (write only) and a sum (read only), beside a copy.
* ``conv``: fp16 convolutions in NCHW and channels-last at batch 32, timed, with the kernel
  names one NCHW call launches (does cuDNN transpose NCHW operands on this GPU?).
* ``network``: whole ResNet-50, BERT-base and GPT-2 small forward passes (the models of
  ``tests/torch_nets.py``) in eager PyTorch, fp16 and fp32, at batch 1 and 32: the profiler's
  summed kernel time, the kernel count and the wall time per pass.

Run on the GPU machine (PyTorch with CUDA there)::

    PYTHONUNBUFFERED=1 python3 bench/h100_measure.py --out "$OUT" --budget 420

It writes ``h100_extra.jsonl`` (one record per measurement, the calibration's fields where a
kind exists there) and ``README.md`` (this method, the device and the versions) to ``--out``,
prints progress per section and skips what would run past ``--budget`` seconds. Each record
is written as soon as it is measured, so a run cut short keeps what it finished.
``--smoke`` runs every section on tiny shapes (on the CPU when there is no GPU), to check the
script itself; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

N_QUEUED = 200  # launches per stream / graph timing


class Run:
    """Where records go, and the time budget."""

    def __init__(self, out: str, budget_s: float, smoke: bool) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.dev = "cuda" if self.cuda else "cpu"
        self.smoke = smoke
        self.start = time.monotonic()
        self.budget_s = budget_s
        os.makedirs(out, exist_ok=True)
        self.path = os.path.join(out, "h100_extra.jsonl")
        self.readme = os.path.join(out, "README.md")
        self.count = 0
        open(self.path, "w").close()

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def record(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.count += 1

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    # ------------------------------------------------------------------ timers
    def isolated_ms(self, fn: Callable[[], Any]) -> float:
        """Median ms of one call, the calibration's method (do_bench: events, L2 flushed)."""
        if self.cuda:
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        return self._wall_ms(fn, 3)

    def queued_ms(self, fn: Callable[[], Any], n: int = N_QUEUED) -> float:
        """ms per call of ``n`` calls queued on one stream between one pair of events (no flush)."""
        if not self.cuda:
            return self._wall_ms(fn, n)
        for _ in range(3):
            fn()
        self.sync()

        def body() -> None:
            for _ in range(n):
                fn()

        return self._events_ms(body, n)

    def graph_ms(self, fn: Callable[[], Any], n: int = N_QUEUED) -> float | None:
        """ms per call of ``n`` calls captured in one CUDA graph and replayed (None on the CPU)."""
        if not self.cuda:
            return None
        torch = self.torch
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                fn()
        g.replay()
        self.sync()
        return self._events_ms(g.replay, n)

    def _events_ms(self, body: Callable[[], Any], n: int) -> float:
        """Best of 5 timings of ``body`` between one pair of CUDA events, per each of its ``n`` calls."""
        torch = self.torch
        best = float("inf")
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            body()
            b.record()
            b.synchronize()
            best = min(best, a.elapsed_time(b) / n)
        return best

    def _wall_ms(self, fn: Callable[[], Any], n: int) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) * 1e3 / n


def _dtype(torch: Any, name: str) -> Any:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# ---------------------------------------------------------------------------------- sections
def floor(r: Run) -> None:
    """Small kernels alone, queued on a stream and replayed from a CUDA graph."""
    torch, dev = r.torch, r.dev
    F = torch.nn.functional
    cases: list[tuple[str, dict[str, Any], Callable[[], Any]]] = []
    x = torch.randn(1024, device=dev)
    cases.append(("add", {"dtype": "fp32", "numel": 1024}, lambda: x.add(1.0)))
    half = torch.float16 if r.cuda else torch.float32
    y = torch.randn(1 << (10 if r.smoke else 20), device=dev, dtype=half)
    cases.append(("relu", {"dtype": "fp16", "numel": y.numel()}, lambda: torch.relu(y)))
    dt = torch.bfloat16 if r.cuda else torch.float32
    for m, n, k in ((128, 128, 128), (128, 768, 768), (128, 3072, 768)):
        a = torch.randn(m, k, device=dev, dtype=dt)
        b = torch.randn(k, n, device=dev, dtype=dt)
        cases.append(("gemm", {"dtype": "bf16", "M": m, "N": n, "K": k}, lambda a=a, b=b: a @ b))
    h = torch.randn(128, 768, device=dev, dtype=dt)
    w, bias = torch.ones(768, device=dev, dtype=dt), torch.zeros(768, device=dev, dtype=dt)
    cases.append(("layernorm", {"dtype": "bf16", "rows": 128, "cols": 768},
                  lambda: F.layer_norm(h, (768,), w, bias)))
    cases.append(("softmax", {"dtype": "bf16", "rows": 128, "cols": 768}, lambda: torch.softmax(h, -1)))
    for op, fields, fn in cases:
        rec = {"kind": "floor", "op": op, **fields, "isolated_ms": r.isolated_ms(fn),
               "stream_ms": r.queued_ms(fn), "graph_ms": r.graph_ms(fn), "n": N_QUEUED}
        r.record(rec)
        print(f"  floor {op} {fields}: alone {rec['isolated_ms'] * 1e3:.2f} us, "
              f"queued {rec['stream_ms'] * 1e3:.2f} us, graph "
              f"{(rec['graph_ms'] or 0) * 1e3:.2f} us")


def rows(r: Run) -> None:
    """Row-wise kernels with long rows, eager, and softmax under torch.compile."""
    torch, dev = r.torch, r.dev
    F = torch.nn.functional
    total = 1 << (12 if r.smoke else 26)  # elements per tensor: 256 MB in fp32
    colses = (1024, 4096) if r.smoke else (4096, 16384, 32768, 65536, 262144)
    for dname in ("fp32", "bf16"):
        dt = _dtype(torch, dname) if r.cuda else torch.float32
        for cols in colses:
            n = max(total // cols, 1)
            x = torch.randn(n, cols, device=dev, dtype=dt)
            r.record({"kind": "softmax", "dtype": dname, "rows": n, "cols": cols,
                      "ms": r.isolated_ms(lambda x=x: torch.softmax(x, -1))})
            w, b = torch.ones(cols, device=dev, dtype=dt), torch.zeros(cols, device=dev, dtype=dt)
            r.record({"kind": "layernorm", "dtype": dname, "rows": n, "cols": cols,
                      "ms": r.isolated_ms(lambda x=x, w=w, b=b, c=cols: F.layer_norm(x, (c,), w, b))})
            del x
        print(f"  rows {dname}: {len(colses)} row lengths, softmax and layer norm eager")
    if r.left() < 120 and not r.smoke:
        print("  rows: torch.compile softmax skipped (budget)")
        return
    compiled = torch.compile(lambda x: torch.softmax(x, -1), dynamic=False)
    for cols in ((1024,) if r.smoke else (4096, 262144)):
        n = max(total // cols, 1)
        x = torch.randn(n, cols, device=dev)
        compiled(x)
        r.record({"kind": "softmax_compiled", "dtype": "fp32", "rows": n, "cols": cols,
                  "ms": r.isolated_ms(lambda x=x: compiled(x)), "torch": torch.__version__})
        print(f"  rows: torch.compile softmax fp32 {n}x{cols}")


def write(r: Run) -> None:
    """Write-dominated GEMMs and streams: bmm with short K, fill, sum, copy."""
    torch, dev = r.torch, r.dev
    dt = torch.bfloat16 if r.cuda else torch.float32
    shapes = ((2, 64, 64, 16),) if r.smoke else (
        (64, 4096, 4096, 128), (32, 2048, 2048, 128), (32, 2048, 2048, 64), (192, 1024, 1024, 64),
        (1, 8192, 8192, 128), (1, 8192, 8192, 256), (1, 4096, 4096, 256))
    for b, m, n, k in shapes:
        x = torch.randn(b, m, k, device=dev, dtype=dt)
        y = torch.randn(b, k, n, device=dev, dtype=dt)
        kind = "bmm" if b > 1 else "gemm"
        fields = {"B": b, "M": m, "N": n, "K": k} if b > 1 else {"M": m, "N": n, "K": k}
        fn = (lambda x=x, y=y: torch.bmm(x, y)) if b > 1 else (lambda x=x[0], y=y[0]: x @ y)
        r.record({"kind": kind, "dtype": "bf16", **fields, "ms": r.isolated_ms(fn)})
        del x, y
    numel = 1 << (12 if r.smoke else 28)
    for dname in ("fp32", "bf16"):
        z = torch.empty(numel, device=dev, dtype=_dtype(torch, dname) if r.cuda else torch.float32)
        r.record({"kind": "fill", "dtype": dname, "numel": z.numel(),
                  "ms": r.isolated_ms(lambda z=z: z.fill_(1.0))})
        r.record({"kind": "reduce_sum", "dtype": dname, "numel": z.numel(),
                  "ms": r.isolated_ms(lambda z=z: z.sum())})
        src = torch.randn_like(z)
        r.record({"kind": "copy_d2d", "bytes": 2 * z.numel() * z.element_size(),
                  "ms": r.isolated_ms(lambda z=z, src=src: z.copy_(src))})
        del z, src
    print(f"  write: {len(shapes)} short-K GEMMs, fill / sum / copy of {numel} elements")


CONV_LAYERS = ((64, 64, 56, 3, 1), (256, 64, 56, 1, 1), (128, 128, 28, 3, 1), (256, 256, 14, 3, 1),
               (1024, 256, 14, 1, 1), (512, 512, 7, 3, 1), (256, 512, 56, 1, 2), (3, 64, 224, 7, 2))


def conv(r: Run) -> None:
    """fp16 convolutions NCHW vs channels last at batch 32, and the kernels one NCHW call launches."""
    torch, dev = r.torch, r.dev
    F = torch.nn.functional
    dt = torch.float16 if r.cuda else torch.float32
    batch = 2 if r.smoke else 32
    layers = CONV_LAYERS[:2] if r.smoke else CONV_LAYERS
    for c, k, hw, ks, stride in layers:
        size = min(hw, 16) if r.smoke else hw
        x = torch.randn(batch, c, size, size, device=dev, dtype=dt)
        w = torch.randn(k, c, ks, ks, device=dev, dtype=dt)
        pad = ks // 2
        fields = {"dtype": "fp16", "N": batch, "C": c, "K": k, "H": size, "W": size, "R": ks, "S": ks,
                  "stride": stride, "pad": pad}
        for layout in ("nchw", "nhwc"):
            xs, ws = ((x, w) if layout == "nchw" else
                      (x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)))
            r.record({"kind": "conv2d", **fields, "layout": layout,
                      "ms": r.isolated_ms(lambda xs=xs, ws=ws, st=stride, pd=pad: F.conv2d(xs, ws, stride=st,
                                                                                        padding=pd))})
        names = [name for name, _ in _profile(r, lambda x=x, w=w, st=stride, pd=pad: F.conv2d(x, w, stride=st,
                                                                                             padding=pd))]
        r.record({"kind": "conv2d_kernels", **fields, "layout": "nchw", "kernels": names})
    print(f"  conv: {len(layers)} layers, NCHW and channels last, kernel names of each NCHW call")


def _profile(r: Run, fn: Callable[[], Any]) -> list[tuple[str, float]]:
    """(name, device us) of every kernel, memset and memcpy one call of ``fn`` launches, read
    from torch.profiler's Chrome trace (events of category kernel, gpu_memset, gpu_memcpy)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if r.cuda else [])
    fn()
    r.sync()
    with profile(activities=acts) as prof:
        fn()
        r.sync()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [(str(e.get("name", "")), float(e.get("dur", 0.0))) for e in events
            if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")]


def network(r: Run) -> None:
    """Whole forward passes in eager PyTorch: summed kernel time, kernel count, wall time."""
    torch, dev = r.torch, r.dev
    from torch_nets import GPT2, Bert, ResNet50

    small = r.smoke
    nets: list[tuple[str, Callable[[], Any], Callable[[int], Any], dict[str, Any]]] = [
        ("resnet50", lambda: ResNet50(), lambda b: torch.randn(b, 3, *(2 * (32 if small else 224,))), {}),
        ("bert-base", lambda: Bert(layers=1 if small else 12),
         lambda b: torch.randint(0, 30522, (b, 16 if small else 128)), {"seq": 16 if small else 128}),
        ("gpt2", lambda: GPT2(vocab=50257, d=768, layers=1 if small else 12, heads=12, n_pos=1024),
         lambda b: torch.randint(0, 50257, (b, 16 if small else 128)), {"seq": 16 if small else 128}),
    ]
    for name, make, example, extra in nets:
        # fp32 runs with PyTorch's defaults (cuDNN convolutions may use TF32); ResNet-50 also
        # with TF32 off, the calibration's setting for its fp32 convolutions
        for dname in ("fp16", "fp32") + (("fp32-tf32off",) if name == "resnet50" else ()):
            torch.backends.cudnn.allow_tf32 = dname != "fp32-tf32off"
            model = make().eval().to(dev)
            if dname == "fp16" and r.cuda:
                model = model.half()
            for batch in ((1,) if small else (1, 32)):
                if r.left() < 20 and not small:
                    print(f"  network: {name} {dname} b{batch} skipped (budget)")
                    continue
                x = example(batch).to(dev)
                if x.is_floating_point() and dname == "fp16" and r.cuda:
                    x = x.half()

                def fwd(model: Any = model, x: Any = x) -> Any:
                    with torch.inference_mode():
                        return model(x)

                kernels = _profile(r, fwd)
                wall = r.queued_ms(fwd, 10 if not small else 2)
                names: dict[str, int] = {}
                for k, _ in kernels:
                    names[k[:160]] = names.get(k[:160], 0) + 1
                r.record({"kind": "network", "model": name, "dtype": dname, "batch": batch, **extra,
                          "kernel_ms": sum(t for _, t in kernels) / 1e3, "kernels": len(kernels),
                          "wall_ms": wall, "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
                          "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "kernel_names": names})
                print(f"  network {name} {dname} b{batch}: {len(kernels)} kernels, "
                      f"{sum(t for _, t in kernels) / 1e3:.3f} ms kernel time, {wall:.3f} ms wall")
            del model
    torch.backends.cudnn.allow_tf32 = True


SECTIONS: dict[str, Callable[[Run], None]] = {"floor": floor, "rows": rows, "write": write, "conv": conv,
                                              "network": network}


def write_readme(r: Run, done: list[str]) -> None:
    torch = r.torch
    props = torch.cuda.get_device_properties(0) if r.cuda else None
    lines = [
        "# Extra H100 measurements (bench/h100_measure.py)", "",
        (__doc__ or "").strip(), "",
        "## This run", "",
        f"- device: {props.name if props else 'cpu (smoke run: numbers mean nothing)'}"
        + (f", {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB" if props else ""),
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version() if r.cuda else '-'}, Python {platform.python_version()}",
        f"- cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, matmul.allow_tf32 "
        f"{torch.backends.cuda.matmul.allow_tf32} (PyTorch defaults, left as they are)",
        f"- sections run: {', '.join(done)}; {r.count} records; {time.monotonic() - r.start:.0f} s",
        "- times are milliseconds; `isolated_ms`/`ms` is triton.testing.do_bench's median "
        "(CUDA events around each call, L2 flushed), as the calibration files; `stream_ms` is the "
        f"best of 5 timings of {N_QUEUED} calls queued between one event pair, divided by "
        f"{N_QUEUED}; `graph_ms` the same {N_QUEUED} calls replayed from one CUDA graph; network "
        "`kernel_ms` sums the CUDA kernel times torch.profiler records for one forward pass "
        "(inference_mode), `wall_ms` is the best per-pass time of 10 passes queued between events.",
    ]
    with open(r.readme, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "h100_measure_out"), help="folder for the results")
    p.add_argument("--budget", type=float, default=420.0, help="seconds to stay within")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script (CPU if no GPU)")
    args = p.parse_args(argv)
    r = Run(args.out, args.budget, args.smoke)
    if not r.cuda and not args.smoke:
        print("no CUDA device: run with --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    done = []
    for name in args.only.split(","):
        if name not in SECTIONS:
            print(f"--only: unknown section {name!r} (choose from {', '.join(SECTIONS)})", file=sys.stderr)
            return 2
        if r.left() < 15:
            print(f"{name}: skipped, {r.left():.0f} s of the budget left")
            continue
        print(f"{name} ({r.left():.0f} s left)")
        t = time.monotonic()
        SECTIONS[name](r)
        done.append(name)
        print(f"{name}: {time.monotonic() - t:.1f} s")
        write_readme(r, done)
    write_readme(r, done)
    print(f"wrote {r.path} ({r.count} records) and {r.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
