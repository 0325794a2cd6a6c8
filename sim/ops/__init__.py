"""The op library: one registered definition per op (ONNX names and semantics)."""

from sim.ops.registry import OpDef, all_ops, defop, get_op, has_op, register
from sim.ops.work import GemmShape, Work

__all__ = ["GemmShape", "OpDef", "Work", "all_ops", "defop", "get_op", "has_op", "register"]
