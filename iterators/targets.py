"""Target expressions over a cache's metrics, e.g. ``(acc*100)/latency_gpu``, evaluated without ``eval``.

The expression is parsed into a Python AST and walked by a tiny interpreter that knows numbers, metric names,
arithmetic, comparisons and a whitelist of numpy functions called as ``np.<name>(...)``; anything else is rejected.
Every value is a float64 scalar, so no intermediate can grow (``10**10**10`` is inf at once, not a billion-digit
integer) and a division by zero gives inf or nan: entries whose target is not finite are skipped like entries that
lack a metric.
"""
from __future__ import annotations

import ast
import operator

import numpy as np

from iterators.errors import UserError

NUMPY_FUNCTIONS = {name: getattr(np, name) for name in (
    "log", "log10", "log2", "log1p", "exp", "sqrt", "power", "abs", "minimum", "maximum", "clip", "tanh",
    "floor", "ceil", "round", "square", "reciprocal", "where")}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
MAX_LENGTH = 500  # characters; longer expressions are refused before parsing (deep nesting would exhaust the stack)


class TargetError(UserError, ValueError):
    """A target expression that cannot be used: one line naming it and what to do."""


class Target:
    """A parsed target expression; ``Target("acc/latency_gpu")(metrics)`` evaluates it on one entry's metrics."""

    def __init__(self, expression: str):
        self.expression = expression
        if len(expression) > MAX_LENGTH:
            raise TargetError(f"-target is {len(expression)} characters long; at most {MAX_LENGTH} are accepted")
        try:
            self._tree = ast.parse(expression, mode="eval").body
        except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
            raise TargetError(f"cannot parse -target {expression!r}: {getattr(err, 'msg', err)}") from None
        self.names = sorted(self._check(self._tree))

    def _check(self, node) -> set[str]:
        """Validate the whole tree once, up front; return the metric names it uses."""
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            if not np.isfinite(float(node.value) if abs(node.value) < 1e308 else np.inf):
                raise TargetError(f"-target {self.expression!r}: the number {ast.unparse(node)[:20]} is too large")
            return set()
        if isinstance(node, ast.Name):
            if node.id == "np":
                raise TargetError("np may only be used as np.<function>(...)")
            return {node.id}
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return self._check(node.left) | self._check(node.right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._check(node.operand)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            return self._check(node.left) | self._check(node.comparators[0])
        if isinstance(node, ast.Call):
            f = node.func
            if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "np"
                    and f.attr in NUMPY_FUNCTIONS) or node.keywords:
                raise TargetError(f"-target {self.expression!r}: only np.<function>(args) calls are allowed, with "
                                  f"functions from: {', '.join(sorted(NUMPY_FUNCTIONS))}")
            return set().union(*(self._check(a) for a in node.args)) if node.args else set()
        raise TargetError(f"-target {self.expression!r}: {ast.unparse(node)!r} is not allowed (numbers, metric names, "
                          f"+ - * / ** // %, comparisons and np functions only)")

    def _eval(self, node, metrics):
        if isinstance(node, ast.Constant):
            return np.float64(node.value)
        if isinstance(node, ast.Name):
            return np.float64(metrics[node.id])
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, metrics), self._eval(node.right, metrics))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, metrics))
        if isinstance(node, ast.Compare):
            return _COMPARE[type(node.ops[0])](self._eval(node.left, metrics),
                                               self._eval(node.comparators[0], metrics))
        return NUMPY_FUNCTIONS[node.func.attr](*(self._eval(a, metrics) for a in node.args))

    def __call__(self, metrics: dict) -> float:
        with np.errstate(all="ignore"):
            try:
                return float(self._eval(self._tree, metrics))
            except (TypeError, ValueError, OverflowError) as err:  # e.g. np.clip(acc): a wrong number of arguments
                raise TargetError(f"cannot evaluate -target {self.expression!r}: {err}") from None

    def evaluate(self, entries: list[dict], available: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """Values for every entry that has all metrics and a finite target, and the mask of those entries.

        ``available`` is the set of metric names the cache knows; an unknown name fails with that list, and so does
        a target that takes one value on every entry (there is nothing to learn).
        """
        unknown = [n for n in self.names if n not in available]
        if unknown:
            raise TargetError(f"-target {self.expression!r} uses unknown metric(s) {', '.join(unknown)}; "
                              f"this cache has: {', '.join(sorted(available))}")
        keep = np.array([all(e.get(n) is not None for n in self.names) for e in entries], dtype=bool)
        values = np.array([self(e) for e, k in zip(entries, keep) if k], dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            keep[np.flatnonzero(keep)[~finite]] = False
            values = values[finite]
        if len(values) > 1 and values.min() == values.max():
            raise TargetError(f"-target {self.expression!r} is {values[0]:g} on all {len(values)} networks that have "
                              f"it: a constant has nothing to learn; choose a target that varies")
        return values, keep

    def file_tag(self) -> str:
        """The expression as a file-name fragment, as the paper names checkpoints ('acc/lat' -> 'acc_div_lat')."""
        tag = self.expression
        for old, new in (("/", "_div_"), (">=", "_gte_"), ("<=", "_lte_"), (">", "_gt_"), ("<", "_lt_")):
            tag = tag.replace(old, new)
        return "".join(c for c in tag if c.isalnum() or c == "_")
