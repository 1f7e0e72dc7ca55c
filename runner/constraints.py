"""A tiny, safe expression language for sweep constraints, e.g. `layer_2_size <= layer_1_size`.

Expressions are parsed with Python's `ast` and walked here; nothing is ever passed to `eval`. Allowed:
parameter names, numbers, strings, True/False/None, comparisons, and/or/not, + - * / // %, `in` with a
literal list. Function calls, attributes, subscripts, lambdas and everything else are refused.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_REFUSED = {ast.Call: "function calls", ast.Attribute: "attribute access", ast.Subscript: "subscripts",
            ast.Lambda: "lambdas", ast.NamedExpr: "assignments", ast.IfExp: "conditional expressions"}


class ConstraintError(ValueError):
    """An expression outside the language, or one naming an unknown parameter."""


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.Expression

    def holds(self, params: Mapping[str, Any]) -> bool:
        try:
            return bool(_evaluate(self.tree.body, params))
        except TypeError:  # e.g. None <= 64 when a parameter is unset for this architecture: rule not applicable
            return True


def parse_constraint(text: str, known: set[str]) -> Constraint:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConstraintError(f"{text!r} is not a valid expression") from None
    for node in ast.walk(tree):
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                raise ConstraintError(f"{text!r}: {what} are not allowed (only parameters, literals and operators)")
        if isinstance(node, ast.Name) and node.id not in known:
            raise ConstraintError(f"{text!r}: unknown parameter {node.id!r}")
    _check_nodes(tree.body, text)
    return Constraint(text, tree)


def _check_nodes(node: ast.AST, text: str) -> None:
    allowed = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Name, ast.Constant, ast.List, ast.Tuple,
               ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Load, *_COMPARE, *_BINARY)
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            raise ConstraintError(f"{text!r}: {type(child).__name__} is not part of the constraint language")


def _evaluate(node: ast.AST, params: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return params.get(node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item, params) for item in node.elts]
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, params)
        return (not value) if isinstance(node.op, ast.Not) else (-value if isinstance(node.op, ast.USub) else +value)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, params), _evaluate(node.right, params))
    if isinstance(node, ast.BoolOp):
        values = (_evaluate(item, params) for item in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, params)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, params)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ConstraintError(f"unsupported expression {ast.dump(node)}")  # unreachable after _check_nodes
