"""Frontends: YAML workloads, ONNX models, PyTorch modules -> Graph."""

from __future__ import annotations

import os
from typing import Any

from sim.errors import GraphError
from sim.graph import Graph


def load(path: str | os.PathLike[str], *, target_attention: str | None = None, **params: Any) -> Graph:
    """Load a network as a graph: ``.yaml``/``.yml`` workloads or ``.onnx`` models.

    Keyword arguments override the workload's ``params`` (``batch=32``) or, for ONNX, bind
    symbolic input dimensions. ``target_attention`` names the attention kernel of the GPU the
    graph is for (``arch.attention_kernel``): it resolves a workload's ``attention: auto``.
    """
    if not isinstance(path, str | os.PathLike):
        raise GraphError(f"expected a file path or a bundled workload name, got {path!r}")
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if os.path.exists(p) and not os.path.isfile(p):
        from sim.io import check_input

        check_input(p, error=GraphError)  # a directory, FIFO or device: refused before reading
    if not os.path.exists(p):
        # a bare workload name resolves against the bundled workloads/ folder
        from sim.frontends.yaml_loader import resolve_workload

        p = resolve_workload(p)
        ext = os.path.splitext(p)[1].lower()
    if ext in (".yaml", ".yml"):
        from sim.frontends.yaml_loader import load_yaml

        return load_yaml(p, target_attention=target_attention, **params)
    if ext == ".onnx":
        from sim.frontends.onnx_import import load_onnx

        return load_onnx(p, **params)
    raise GraphError(f"unknown workload format {ext!r} (expected .yaml or .onnx)", where=p)
