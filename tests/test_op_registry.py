"""The op registry is complete: every op has its parts, a gradient or a reason, and a test."""

import re
from pathlib import Path

import numpy as np
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


def test_op_traits_name_the_op_groups():
    from sim.ops.registry import TRAITS, all_ops, has_trait

    ops = all_ops()
    with_trait = {t: {n for n, d in ops.items() if t in d.traits} for t in TRAITS}
    assert with_trait["view"] == {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
    assert with_trait["no_kernel"] == with_trait["view"] | {"Depend"}
    assert with_trait["collective"] == {"AllReduce", "AllGather", "ReduceScatter", "AllToAll"}
    assert with_trait["strided_operands"] == {"MatMul", "Gemm", "Attention"}
    assert {"Add", "Relu", "Gelu", "GeluGrad", "Where", "Cast", "Equal"} <= with_trait["elementwise"]
    not_elementwise = {"Softmax", "Transpose", "MatMul", "LayerNormalization", "ReduceSum"}
    assert not not_elementwise & with_trait["elementwise"]
    assert has_trait("Transpose", "view") is False and has_trait("AdamUpdate", "optimizer")


def test_unary_elementwise_ops_act_element_by_element():
    """An elementwise op's value at an element does not depend on the tensor's shape: the
    kernel on a [3, 4] array equals the kernel on its 12 elements laid flat."""
    from sim.ops.registry import all_ops, has_trait

    x = np.linspace(0.1, 0.9, 12).reshape(3, 4)
    checked = 0
    for name, d in all_ops().items():
        if not has_trait(name, "elementwise") or name in ("Cast", "Identity", "Not", "BitShift"):
            continue
        try:
            (y,) = d.kernel([x], {})
        except Exception:  # noqa: BLE001  (ops of more than one input)
            continue
        (flat,) = d.kernel([x.ravel()], {})
        np.testing.assert_array_equal(np.asarray(y).ravel(), np.asarray(flat))
        checked += 1
    assert checked >= 20
