"""``defop`` records the family (the defining module's name) without inspecting the stack."""

from sim.ops.registry import FAMILIES, all_ops


def test_each_op_belongs_to_the_module_that_defines_it():
    ops = all_ops()
    # hand-picked: where docs/ops.md files these ops
    expected = {"MatMul": "linalg", "Conv": "conv", "MaxPool": "pool", "Relu": "elementwise",
                "Softmax": "reduce", "LayerNormalization": "norm", "Reshape": "shape",
                "Gather": "index", "LSTM": "rnn", "SoftmaxCrossEntropyLoss": "loss"}
    assert {name: ops[name].family for name in expected} == expected
    assert {op.family for op in ops.values()} == set(FAMILIES)

