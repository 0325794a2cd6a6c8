"""Kernels per execution mode for ResNet-50 and BERT-base, next to what PyTorch dispatches.

For each network: the torch model of ``tests/torch_nets.py`` exported to ONNX (opset 17 and
13, as ``torch.onnx.export`` writes them) and the bundled YAML workload, counted under
``--runtime eager | compiled | tensorrt`` (``sim.passes.runtime.kernel_count``), and the ATen
operators PyTorch eager dispatches for one forward pass of the same model (counted with a
``TorchDispatchMode`` on the CPU build, views and metadata ops excluded): on a CUDA device
each such operator launches at least one kernel. Also the simulated H100 bf16 batch-1 time of
each mode (counts are of the fp32 graph; a bf16 cast can add Cast kernels).
Run: ``.venv/bin/python bench/runtime_kernels.py`` (about a minute).
"""

from __future__ import annotations

import os
import sys
import tempfile

import sim
from sim.passes.runtime import MODES, kernel_count, runtime_graph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_nets import aten_ops  # noqa: E402


def export(model, example, path: str, opset: int) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(model.eval(), (example,), path, dynamo=False, export_params=False,
                          opset_version=opset)


def row(name: str, g) -> str:
    h100 = sim.hardware("h100")
    cells = [name, str(kernel_count(g))]
    times = []
    for mode in MODES:
        r = sim.simulate(g, h100, dtype="bf16", runtime=mode)
        cells.append(str(kernel_count(runtime_graph(g, mode))))
        times.append(f"{r.makespan_s * 1e6:,.0f}")
    return "| " + " | ".join(cells + times) + " |"


def main() -> None:
    import torch
    from torch_nets import Bert, ResNet50

    nets = [("ResNet-50", ResNet50().eval(), torch.zeros(1, 3, 224, 224), "resnet50", {"batch": 1}),
            ("BERT-base s128", Bert().eval(), torch.zeros(1, 128, dtype=torch.long), "bert-base",
             {"batch": 1})]
    print("| graph | ops with work | eager | compiled | tensorrt | eager us | compiled us | tensorrt us |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    torch_counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, example, workload, params in nets:
            for opset in (17, 13):
                path = os.path.join(tmp, f"{workload}-{opset}.onnx")
                export(model, example, path, opset)
                print(row(f"{label} ONNX opset {opset}", sim.load(path)))
            print(row(f"{label} workloads/{workload}.yaml", sim.load(workload, **params)))
            torch_counts[label] = aten_ops(model, example)
    print()
    for label, (n, per) in torch_counts.items():
        top = ", ".join(f"{k} {v}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        print(f"PyTorch {torch.__version__} eager {label}: {n} ATen compute ops ({top})")


if __name__ == "__main__":
    main()
