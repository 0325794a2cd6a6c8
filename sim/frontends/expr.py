"""A small, safe evaluator for the symbolic sizes of YAML workloads.

Expressions are parsed with :mod:`ast` and walked node by node; only numbers, names,
``+ - * / // % **``, unary ``+ -``, parentheses and the functions ``min``, ``max``,
``ceil``, ``floor`` are accepted (anything else is a ``GraphError``). Nothing is ever passed
to ``eval``.

``/`` is true division, but a result that is a whole number comes back as an ``int``
(``768/12`` is ``64``), so sizes written as quotients stay usable as shapes.

>>> evaluate("(s + 1) // 2 + max(d / heads, 3)", {"s": 9, "d": 768, "heads": 12})
69
>>> evaluate("ceil(10 / 4) * 2**3", {})
24
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from sim.errors import GraphError
from sim.limits import env_var, limit

Number = int | float

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}

_FUNCS: dict[str, Callable[..., Number]] = {
    "min": min,
    "max": max,
    "ceil": lambda x: int(math.ceil(x)),
    "floor": lambda x: int(math.floor(x)),
}

_MAX_POW = 4096  # keeps ``2**10**10`` from hanging the loader


def _tidy(v: Number) -> Number:
    """Whole floats become ints (``768/12`` -> ``64``); everything else is unchanged."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**62:
        return int(v)
    return v


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> ast.expr:
    """Parse ``text`` as one expression (cached). ``SyntaxError`` if it is not one (also for
    text over the ``expr_chars`` limit or nested past what the parser can take)."""
    if len(text) > limit("expr_chars"):
        raise SyntaxError(f"over {limit('expr_chars')} characters ({env_var('expr_chars')})")
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (RecursionError, MemoryError, ValueError):
        raise SyntaxError("nested too deeply") from None


def names(text: str) -> set[str]:
    """The names an expression refers to (not counting function names)."""
    tree = parse(text)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in _FUNCS:
            out.add(node.id)
    return out


def _unknown(name: str, env: Mapping[str, Any], text: str) -> GraphError:
    close = difflib.get_close_matches(name, [str(k) for k in env], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return GraphError(f"unknown param {name!r} in expression {text!r}{hint}")


def _checked(v: Any, node: ast.AST, text: str) -> Number:
    """``v`` unless it is not finite or a whole number wider than the ``expr_bits`` limit."""
    if isinstance(v, complex):
        raise GraphError(f"{ast.unparse(node)!r} is not a real number in expression {text!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise GraphError(f"{ast.unparse(node)!r} is not a finite number in expression {text!r}")
    if isinstance(v, int) and v.bit_length() > limit("expr_bits"):
        raise GraphError(f"{ast.unparse(node)!r} is too large in expression {text!r} "
                         f"(over {limit('expr_bits')} bits; {env_var('expr_bits')})")
    return v


def _eval(node: ast.AST, env: Mapping[str, Any], text: str) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise GraphError(f"only numbers are allowed in expression {text!r}, got {node.value!r}")
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise _unknown(node.id, env, text)
        v = env[node.id]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise GraphError(f"param {node.id!r} is {v!r}, not a number, in expression {text!r}")
        return v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a = _eval(node.left, env, text)
        b = _eval(node.right, env, text)
        if isinstance(node.op, ast.Pow):
            if abs(b) > _MAX_POW:
                raise GraphError(f"exponent {b} is too large in expression {text!r}")
            if abs(a) > 1 and b > 0 and math.log2(abs(a)) * b > limit("expr_bits"):
                raise GraphError(f"{ast.unparse(node)!r} is too large in expression {text!r} "
                                 f"(over {limit('expr_bits')} bits; {env_var('expr_bits')})")
        try:
            return _checked(_tidy(_BINOPS[type(node.op)](a, b)), node, text)
        except ZeroDivisionError:
            raise GraphError(f"division by zero in expression {text!r}") from None
        except OverflowError:
            raise GraphError(f"overflow in expression {text!r}") from None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, env, text)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        if node.keywords or not node.args:
            raise GraphError(f"{node.func.id}() takes positional arguments only, in {text!r}")
        args = [_eval(a, env, text) for a in node.args]
        if node.func.id in ("ceil", "floor") and len(args) != 1:
            raise GraphError(f"{node.func.id}() takes one argument, in {text!r}")
        return _tidy(_FUNCS[node.func.id](*args))
    if isinstance(node, ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise GraphError(
            f"unknown function {fname!r} in expression {text!r} (allowed: ceil, floor, max, min)"
        )
    raise GraphError(f"{ast.unparse(node)!r} is not allowed in expression {text!r}")


def evaluate(expr: str | Number, env: Mapping[str, Any]) -> Number:
    """Evaluate a size expression over ``env`` (param name -> number).

    Numbers pass through unchanged. Raises ``GraphError`` (one line) on syntax errors,
    unknown names (with a close-match suggestion) and anything outside the small grammar.

    >>> evaluate("4*d", {"d": 64})
    256
    >>> evaluate(7, {})
    7
    """
    if isinstance(expr, bool):
        raise GraphError(f"expected a number or an expression, got {expr!r}")
    if isinstance(expr, int | float):
        return expr
    if not isinstance(expr, str):
        raise GraphError(f"expected a number or an expression, got {expr!r}")
    text = expr.strip()
    if len(text) > limit("expr_chars"):
        raise GraphError(f"expression of {len(text):,} characters is over the limit of "
                         f"{limit('expr_chars'):,} ({env_var('expr_chars')})")
    try:
        tree = parse(text)
    except SyntaxError as err:
        raise GraphError(f"cannot parse expression {expr!r}: {err.msg}") from None
    except (RecursionError, MemoryError):
        raise GraphError(f"expression {text[:40]!r}... nests too deeply") from None
    try:
        return _eval(tree, env, text)
    except RecursionError:
        raise GraphError(f"expression {text[:40]!r}... nests too deeply") from None


def is_bare_name(text: str) -> bool:
    """True if ``text`` is a single identifier (``gelu``, ``same``, ``bf16``)."""
    return text.strip().isidentifier()


def evaluate_int(expr: str | Number, env: Mapping[str, Any], what: str = "value") -> int:
    """``evaluate`` and insist on a whole number (sizes, counts, axes)."""
    v = evaluate(expr, env)
    if isinstance(v, float):
        if not v.is_integer():
            raise GraphError(f"{what} {expr!r} evaluates to {v}, not a whole number")
        v = int(v)
    return int(v)


def resolve(value: Any, env: Mapping[str, Any], strict: bool = False) -> Any:
    """Resolve a YAML value against the params in ``env``.

    Numbers and booleans pass through; lists are resolved item by item; a string is
    evaluated as an expression. A bare name that is not a param stays a string (``same``,
    ``gelu``, ``bf16``) unless ``strict`` (a size is expected), where it is an error;
    a bare name that is a param gives the param's value, whatever its type.

    >>> resolve(["batch", "4*d", "same"], {"batch": 2, "d": 8})
    [2, 32, 'same']
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [resolve(v, env, strict) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if is_bare_name(text):
            if text in env:
                return env[text]
            if not strict:
                return value
            raise _unknown(text, env, text)
        try:
            parse(text)
        except SyntaxError:
            if strict:
                raise GraphError(f"cannot parse expression {value!r}") from None
            return value
        return evaluate(text, env)
    return value
