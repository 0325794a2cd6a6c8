"""Package layering: every import between packages under ``sim/`` points down the layers of
docs/architecture.md, so the package dependency graph has no cycle and nothing imports the CLI.

Imports are read from the source with ``ast``: module-level ones and the ones inside functions
(which run later but still tie the packages together). Imports under ``if TYPE_CHECKING:``
load nothing at run time and are left out.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import networkx as nx

SIM = Path(__file__).resolve().parents[1] / "sim"

# Layer of each package (a top-level module counts as a package; "sim" is sim/__init__.py).
# A package may import packages of lower layers only: never its peers, never upwards.
LAYERS: dict[str, int] = {
    "errors": 0,
    "dtypes": 1, "limits": 1,
    "tensor": 2, "io": 2,
    "ops": 3, "hw": 3,
    "graph": 4, "cost": 4,
    "frontends": 5, "passes": 5, "exec": 5, "report": 5,
    "engine": 6,
    "training": 7, "cluster": 7, "calib": 7,
    "study": 8, "serve": 8,
    "sim": 9,
    "cli": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SIM.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sim"


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = SIM / rel
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the statements inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported sim module, line) for every runtime import statement in ``path``."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # "from sim import cli" imports the module sim.cli
                sub = f"{target}.{a.name}"
                out.append((sub if _is_module(sub) else target, node.lineno))
    return [(t, line) for t, line in out if t == "sim" or t.startswith("sim.")]


def _edges() -> list[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") across package boundaries."""
    edges = []
    for path in sorted(SIM.rglob("*.py")):
        src = _package(_module_name(path))
        for target, line in _imports(path):
            dst = _package(target)
            if dst != src:
                edges.append((src, dst, f"{path.relative_to(SIM.parent)}:{line}"))
    return edges


def test_the_walk_sees_function_level_imports():
    # sim/__init__.py imports the engine inside simulate(), not at module level
    edges = {(s, d) for s, d, _ in _edges()}
    assert ("sim", "engine") in edges and ("engine", "cost") in edges


def test_every_package_has_a_layer():
    packages = {_package(_module_name(p)) for p in SIM.rglob("*.py")}
    missing = sorted(packages - set(LAYERS))
    assert not missing, f"give {missing} a layer here and in docs/architecture.md"


def test_package_graph_is_acyclic():
    g = nx.DiGraph((s, d) for s, d, _ in _edges())
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles between packages: {cycles}"


def test_imports_point_down_the_layers():
    wrong = [f"{where}: {src} (layer {LAYERS.get(src)}) imports {dst} (layer {LAYERS.get(dst)})"
             for src, dst, where in _edges()
             if src not in LAYERS or dst not in LAYERS or LAYERS[dst] >= LAYERS[src]]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli():
    offenders = [w for s, d, w in _edges() if d == "cli" and s != "cli"]
    assert not offenders


def test_a_planted_cycle_is_caught(tmp_path, monkeypatch):
    # the checker itself: a graph module importing the engine inside a function is reported
    fake = tmp_path / "sim"
    (fake / "graph").mkdir(parents=True)
    (fake / "engine").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "graph" / "__init__.py").write_text("def f():\n    from sim.engine import run\n")
    (fake / "engine" / "__init__.py").write_text("from sim.graph import Graph\n")
    monkeypatch.setattr(sys.modules[__name__], "SIM", fake)
    g = nx.DiGraph((s, d) for s, d, _ in _edges())
    assert list(nx.simple_cycles(g)) and ("graph", "engine") in g.edges
