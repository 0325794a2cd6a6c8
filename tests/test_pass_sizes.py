"""Passes stay small visitors on sim.graph.rewrite: no function in sim/passes/ over 66 lines
(docstring included)."""

from __future__ import annotations

import ast
import pathlib

LIMIT = 66


def test_no_long_function_in_passes():
    root = pathlib.Path(__file__).resolve().parent.parent / "sim" / "passes"
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > LIMIT:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
