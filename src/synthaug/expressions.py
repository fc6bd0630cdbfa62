"""Safe expressions over a record's fields, for `when:` conditions and sampler constraints.

    len(text) > 200 and lang == 'en'
    end_date > start_date
    lower(topic) in ['math', 'physics'] or has('code')

An expression is parsed once with `ast` and checked against a whitelist; nothing is ever
passed to `eval`. Allowed: field names, constants (str, int, float, bool, None), list/tuple
literals, `and`/`or`/`not`, comparisons (including chained ones, `in`, `not in`, `is None`),
`+ - * / // %` (`%` on numbers) and unary minus, subscripts and slices (`tags[0]`,
`text[:20]`), `x if c else y`,
the functions in FUNCTIONS and a few string methods (`text.lower()`, `name.startswith('A')`).
Attribute access, lambdas, comprehensions, `**` and every other construct are refused when the
expression is parsed, so an invalid expression fails before any record is read.

Evaluation runs in the event loop, so nothing may hang or exhaust memory: nesting deeper than
MAX_DEPTH is refused when parsed; a repetition (`'x' * n`, `[..] * n`) is refused before it is
built when its size, counted through nested lists and strings, would pass MAX_SIZE, and so is any
larger result; `%` on a string (printf formatting) and `round(x, n)` with |n| > MAX_DIGITS are
refused. Any failure while evaluating (memory, recursion, overflow included) is a RecordError.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from synthaug.errors import RecordError

MAX_LENGTH = 1000  # characters of an expression
MAX_SIZE = 100_000  # characters and items, counted at every depth, an expression may build
MAX_DEPTH = 50  # nesting of an expression's syntax tree
MAX_DIGITS = 308  # the largest |ndigits| round() accepts (10**ndigits is computed)

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "str": str, "int": int, "float": float, "bool": bool, "abs": abs,
    "min": min, "max": max, "round": round,
    "lower": lambda s: str(s).lower(), "upper": lambda s: str(s).upper(),
    "strip": lambda s: str(s).strip(),
}
METHODS = frozenset({"lower", "upper", "strip", "startswith", "endswith", "split", "count",
                     "isdigit", "isalpha"})
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_LEAVES = (ast.Expression, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd,
           ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Compare, ast.Name, ast.Constant,
           ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.IfExp, ast.Call, ast.Attribute,
           *_BINARY, *_COMPARE)


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses something not allowed."""


class Expression:
    """A parsed, checked expression; `evaluate(record)` gives its value for one record."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("an expression must be a non-empty string")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"an expression may hold at most {MAX_LENGTH} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid syntax in {text!r}: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"{text[:40]!r}... is nested too deeply") from None
        if _depth(tree) > MAX_DEPTH:
            raise ExpressionError(f"{text[:40]!r}... is nested more than {MAX_DEPTH} deep")
        callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            _check(node, text, callees)
        self.text = text
        self._tree = tree
        # the fields it reads (function names are not fields)
        self.names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                             and id(n) not in callees})

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        """The value for `record`; RecordError names the field that is missing or unfit."""
        try:
            return _eval(self._tree.body, record)
        except RecordError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, IndexError, KeyError,
                AttributeError, OverflowError, MemoryError, RecursionError) as exc:
            raise RecordError(self.names[0] if self.names else "?",
                              f"cannot evaluate {self.text!r}: {exc}") from None

    def holds(self, record: Mapping[str, Any]) -> bool:
        """Whether the expression is true for `record`."""
        return bool(self.evaluate(record))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _check(node: ast.AST, text: str, callees: set[int]) -> None:
    """Refuse any node outside the whitelist, naming what was found."""
    if not isinstance(node, _LEAVES):
        raise ExpressionError(f"{type(node).__name__} is not allowed in {text!r}")
    if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool
                                                         | type(None)):
        raise ExpressionError(f"constant {node.value!r} is not allowed in {text!r}")
    if isinstance(node, ast.Call):
        if node.keywords:
            raise ExpressionError(f"keyword arguments are not allowed in {text!r}")
        func = node.func
        if isinstance(func, ast.Name) and func.id not in FUNCTIONS and func.id != "has":
            raise ExpressionError(f"unknown function {func.id!r} in {text!r}; allowed: "
                                  f"{', '.join(sorted([*FUNCTIONS, 'has']))}")
        if isinstance(func, ast.Attribute) and func.attr not in METHODS:
            raise ExpressionError(f"unknown method {func.attr!r} in {text!r}; allowed: "
                                  f"{', '.join(sorted(METHODS))}")
        if not isinstance(func, ast.Name | ast.Attribute):
            raise ExpressionError(f"only named functions may be called in {text!r}")
        if isinstance(func, ast.Name) and func.id == "has" and not (
                len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            raise ExpressionError(f"has() takes one quoted field name in {text!r}")
    if isinstance(node, ast.Attribute) and id(node) not in callees:
        raise ExpressionError(f"attribute access ({node.attr}) is not allowed in {text!r}; "
                              f"only string methods may be called")
    if isinstance(node, ast.Name) and id(node) in callees and node.id not in FUNCTIONS \
            and node.id != "has":
        raise ExpressionError(f"unknown function {node.id!r} in {text!r}")


def _eval(node: ast.AST, record: Mapping[str, Any]) -> Any:
    """Evaluate a checked node."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in record:
            raise RecordError(node.id, f"missing field '{node.id}'")
        return record[node.id]
    if isinstance(node, ast.BoolOp):
        return _boolean(node, record)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, record)
        return not value if isinstance(node.op, ast.Not) else \
            -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, record), _eval(node.right, record)
        if isinstance(node.op, ast.Mult):
            _check_repeat(left, right)
        if isinstance(node.op, ast.Mod) and isinstance(left, str):
            raise TypeError("'%' formatting of strings is not allowed")
        return _sized(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Compare):
        return _compare(node, record)
    if isinstance(node, ast.IfExp):
        chosen = node.body if _eval(node.test, record) else node.orelse
        return _eval(chosen, record)
    if isinstance(node, ast.List | ast.Tuple):
        return _sized([_eval(item, record) for item in node.elts])
    if isinstance(node, ast.Subscript):
        return _eval(node.value, record)[_index(node.slice, record)]
    if isinstance(node, ast.Call):
        return _call(node, record)
    raise TypeError(f"{type(node).__name__} cannot be evaluated")


def _boolean(node: ast.BoolOp, record: Mapping[str, Any]) -> Any:
    """`and` / `or` with Python's short-circuit rules."""
    value: Any = None
    for operand in node.values:
        value = _eval(operand, record)
        if isinstance(node.op, ast.And) and not value:
            return value
        if isinstance(node.op, ast.Or) and value:
            return value
    return value


def _compare(node: ast.Compare, record: Mapping[str, Any]) -> bool:
    left = _eval(node.left, record)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _eval(right_node, record)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True


def _index(node: ast.AST, record: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _eval(p, record) for p in parts))
    return _eval(node, record)


def _call(node: ast.Call, record: Mapping[str, Any]) -> Any:
    args = [_eval(arg, record) for arg in node.args]
    func = node.func
    if isinstance(func, ast.Name):
        if func.id == "has":
            return record.get(args[0]) is not None
        if func.id == "round" and len(args) > 1 and isinstance(args[1], int) \
                and abs(args[1]) > MAX_DIGITS:
            raise ValueError(f"round() to {args[1]} digits is out of range (|n| <= {MAX_DIGITS})")
        return _sized(FUNCTIONS[func.id](*args))
    assert isinstance(func, ast.Attribute)
    target = _eval(func.value, record)
    if not isinstance(target, str):
        raise TypeError(f".{func.attr}() applies to strings, got {type(target).__name__}")
    return _sized(getattr(target, func.attr)(*args))


def _depth(tree: ast.AST) -> int:
    """How deeply the syntax tree nests (walked without recursion)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check_repeat(left: Any, right: Any) -> None:
    """Refuse `'x' * n` or `[..] * n` whose result, counted at every depth, would pass
    MAX_SIZE, before it is built."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list) and isinstance(times, int) \
                and deep_size(seq) * times > MAX_SIZE:
            raise ValueError(f"repeating {len(seq)} items {times} times is too large")


def deep_size(value: Any, budget: int = MAX_SIZE) -> int:
    """Characters and items in `value`, through nested lists, tuples and mappings; the count
    stops soon after it passes `budget`, so walking a huge value costs little."""
    total, stack = 0, [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
    return total


def _sized(value: Any) -> Any:
    """`value`, unless it is too large (more than MAX_SIZE characters and items in all)."""
    if isinstance(value, str | list | tuple | dict) and deep_size(value) > MAX_SIZE:
        raise ValueError(f"a value of more than {MAX_SIZE} characters and items is too large")
    return value
