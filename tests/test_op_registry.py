"""The op registry is complete: every op has its parts, a gradient or a reason, and a test."""

import re
from pathlib import Path

import pytest

from sim.ops import all_ops

TESTS = Path(__file__).parent
OPS = all_ops()


def _test_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TESTS.glob("test_ops_*.py")))


def test_registry_is_not_empty():
    assert {"MatMul", "Add", "Relu", "Reshape", "ReduceSum", "Softmax", "Where"} <= set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_definition_is_complete(name):
    op = OPS[name]
    assert op.name == name
    for part in ("infer", "work", "kernel"):
        assert callable(getattr(op, part)), f"{name} lacks {part}"
    assert callable(op.grad) or (isinstance(op.no_grad, str) and op.no_grad.strip()), (
        f"{name} has neither a gradient rule nor a no_grad reason"
    )


def test_every_op_is_named_in_an_op_test():
    text = _test_text()
    missing = sorted(n for n in OPS if not re.search(rf"[\"']{re.escape(n)}[\"']", text))
    assert not missing, f"ops never named in tests/test_ops_*.py: {missing}"
