"""A tiny, safe expression language for sweep constraints, e.g. `layer_2_size <= layer_1_size`.

Expressions are parsed with Python's `ast` and walked here; nothing is ever passed to `eval`. Allowed:
parameter names (canonical or research spellings), numbers, strings, True/False/None, comparisons,
and/or/not, + - * / // % on numbers only (no string formatting or repetition), and `in` with a literal list.
Function calls, attributes, subscripts, lambdas, `**` and everything else are refused. Expressions are
bounded in length, depth and the size of their numbers; any evaluation error is a one-line ConstraintError.
A comparison or arithmetic with an unset parameter (None, e.g. `sequence_model_layers` for C3D) does not
apply to that trial, so the rule holds.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import UserError

MAX_LENGTH = 500  # characters of one expression
MAX_DEPTH = 24  # nesting of the expression tree
MAX_MAGNITUDE = 10**18  # largest number an expression may compute

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_REFUSED = {ast.Call: "function calls", ast.Attribute: "attribute access", ast.Subscript: "subscripts",
            ast.Lambda: "lambdas", ast.NamedExpr: "assignments", ast.IfExp: "conditional expressions",
            ast.JoinedStr: "f-strings", ast.Pow: "powers (**)"}
_ALLOWED = (ast.Expression, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Name, ast.Constant, ast.List,
            ast.Tuple, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Load, *_COMPARE, *_BINARY)


class ConstraintError(UserError, ValueError):
    """An expression outside the language, one naming an unknown parameter, or one that cannot be evaluated."""


class _NotApplicable(Exception):
    """An unset parameter took part: the rule does not apply to this trial."""


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.Expression
    aliases: Mapping[str, str] = field(default_factory=dict)  # research spelling -> canonical parameter

    def holds(self, params: Mapping[str, Any]) -> bool:
        """Whether the trial's canonical parameters satisfy the rule; ConstraintError if it cannot be evaluated."""
        try:
            return bool(_evaluate(self.tree.body, params, self.aliases))
        except _NotApplicable:
            return True
        except ConstraintError as err:
            raise ConstraintError(f"constraint {self.text!r}: {err}") from None
        except (ArithmeticError, TypeError, ValueError, MemoryError, RecursionError) as err:
            why = str(err) or type(err).__name__
            raise ConstraintError(f"constraint {self.text!r} cannot be evaluated: {why}") from None


def parse_constraint(text: str, known: set[str], aliases: Mapping[str, str] | None = None,
                     canonical_value: Callable[[str, Any], Any] | None = None) -> Constraint:
    """Parse and check one expression; `aliases` maps other parameter spellings to canonical names and
    `canonical_value(name, literal)` respells a literal compared with a parameter as the trial holds it."""
    aliases = dict(aliases or {})
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("an empty constraint")
    if len(text) > MAX_LENGTH:
        raise ConstraintError(f"{text[:40]!r}...: longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ConstraintError(f"{text!r} is not a valid expression") from None
    if _depth(tree) > MAX_DEPTH:
        raise ConstraintError(f"{text!r}: nested deeper than {MAX_DEPTH} levels")
    for node in ast.walk(tree):
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                raise ConstraintError(f"{text!r}: {what} are not allowed (only parameters, literals and operators)")
        if not isinstance(node, _ALLOWED):
            raise ConstraintError(f"{text!r}: {type(node).__name__} is not part of the constraint language")
        if isinstance(node, ast.Name) and node.id not in known and node.id not in aliases:
            raise ConstraintError(f"{text!r}: unknown parameter {node.id!r}")
        if isinstance(node, ast.BinOp) and any(_is_text(side) for side in (node.left, node.right)):
            raise ConstraintError(f"{text!r}: arithmetic works on numbers only (no string formatting or repetition)")
    if canonical_value is not None:
        _respell_literals(tree, aliases, canonical_value)
    return Constraint(text, tree, aliases)


def _respell_literals(tree: ast.Expression, aliases: Mapping[str, str],
                      canonical_value: Callable[[str, Any], Any]) -> None:
    """`backbone == 'mobilenetv2_1.00_224'` compares with the canonical `mobilenet_v2` the trial holds."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, right in zip(operands, operands[1:]):
            for name, other in ((left, right), (right, left)):
                if isinstance(name, ast.Name):
                    parameter = aliases.get(name.id, name.id)
                    items = other.elts if isinstance(other, (ast.List, ast.Tuple)) else [other]
                    for item in items:
                        if isinstance(item, ast.Constant) and isinstance(item.value, str):
                            item.value = canonical_value(parameter, item.value)


def _depth(node: ast.AST) -> int:
    """Height of the tree, without recursion (a long sum is a deep tree)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return deepest


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, (ast.List, ast.Tuple)) or (isinstance(node, ast.Constant) and
                                                       isinstance(node.value, (str, bytes)))


def _number(value: Any) -> int | float:
    """An arithmetic operand or result: a bounded number (None means the rule does not apply)."""
    if value is None:
        raise _NotApplicable
    if not isinstance(value, (int, float)):
        raise ConstraintError(f"arithmetic works on numbers only, not on {type(value).__name__} {value!r:.40}")
    if abs(value) > MAX_MAGNITUDE:
        raise ConstraintError(f"a number beyond {MAX_MAGNITUDE:.0e}")
    return value


def _unset_operand(op: ast.cmpop, left: Any, right: Any) -> bool:
    """An ordering with None, or membership in None: the parameter is unset for this architecture."""
    if isinstance(op, (ast.In, ast.NotIn)):
        return right is None
    return not isinstance(op, (ast.Eq, ast.NotEq)) and (left is None or right is None)


def _evaluate(node: ast.AST, params: Mapping[str, Any], aliases: Mapping[str, str]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return params.get(aliases.get(node.id, node.id))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item, params, aliases) for item in node.elts]
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, params, aliases)
        if isinstance(node.op, ast.Not):
            return not value
        return -_number(value) if isinstance(node.op, ast.USub) else +_number(value)
    if isinstance(node, ast.BinOp):
        left = _number(_evaluate(node.left, params, aliases))
        right = _number(_evaluate(node.right, params, aliases))
        return _number(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.BoolOp):
        values = (_evaluate(item, params, aliases) for item in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, params, aliases)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, params, aliases)
            if _unset_operand(op, left, right):
                raise _NotApplicable
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ConstraintError(f"unsupported expression {type(node).__name__}")  # unreachable after parse_constraint
