"""CEL expressions in policies: held to a static budget when a policy is written.

An expression is user input that runs inside every deploy it selects, in the API's event loop
and inside the catalog's atomic write. When the policy is created or updated
(`compile_expression`) its length, the size and depth of its parse tree (cel-python evaluates
by recursion) and its comprehension macros (a macro in another's body multiplies their costs)
are held to `Limits`. Over them, the policy is refused with a 422 naming the limit and the
measured value; a policy stored before is denied, not evaluated.

The limits are part of the policy language, the same in every process sharing a graph (a
policy one API process accepts must evaluate the same in another), so they are constants here
rather than settings; tests may pass their own `Limits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from ztdp.errors import InvalidInput

FIELD = "spec.rule.expression"

# The comprehension macros: each evaluates its body once per element of a list or map.
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# cel-python's `reduce` extension carries an accumulator from one element to the next, so
# `r + r` doubles a value per element: its cost is exponential in the list's length.
FORBIDDEN_MACROS = frozenset({"reduce"})


@dataclass(frozen=True, slots=True)
class Limits:
    """The budget an expression is held to; the defaults are ZTDP's (docs/policies.md)."""

    length: int = 1024
    """Characters of source: real policies are a line or two; bounds the parse's time."""
    nodes: int = 1000
    """Nodes of the parse tree (about 0.7 per character of ordinary CEL, 5 per character of
    a list literal of small numbers): the cost of evaluating it once."""
    depth: int = 200
    """Levels of the parse tree. cel-python evaluates by recursion, about four Python frames
    a level; a pair of parentheses adds 10 levels, each term of an `&&` or `+` chain one."""
    comprehensions: int = 4
    """Comprehension macros in the expression; chained ones each walk a whole list."""
    comprehension_nesting: int = 1
    """Comprehension macros inside one another's body; 1: none inside another."""


LIMITS = Limits()

# Creating the environment also raises the recursion limit to 2,500, which `Limits.depth`
# relies on: cel-python does it on purpose for CEL's nesting minimums.
_CEL = celpy.Environment()


class _Refused(Exception):
    """The expression does not parse or is over its static budget.

    `reason` completes "the expression ..."; `limit` names the limit broken, with its maximum
    and the measured value, for the problem's `limit` member (None for a syntax error).
    """

    def __init__(
        self, reason: str, limit: str | None = None, maximum: int = 0, measured: int = 0
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = (
            None if limit is None else {"name": limit, "maximum": maximum, "measured": measured}
        )


# --- the static budget ---------------------------------------------------------------------


def compile_expression(expression: str, *, limits: Limits = LIMITS) -> None:
    """Refuse an expression that does not parse or is over budget, naming its field."""
    try:
        _checked(expression, limits)
    except _Refused as exc:
        raise InvalidInput(f"{FIELD} {exc.reason}", field=FIELD, limit=exc.limit) from None


@lru_cache(maxsize=1024)
def _checked(expression: str, limits: Limits) -> lark.Tree[Any]:
    """The parse tree of an expression within the static budget; raise `_Refused` otherwise.

    Cached: every deploy evaluates the same few expressions, and parsing costs more than most
    evaluations. Refusals are not cached (lru_cache does not keep exceptions).
    """
    if len(expression) > limits.length:
        raise _Refused(
            f"is {len(expression)} characters long, over the limit of {limits.length}",
            "length",
            limits.length,
            len(expression),
        )
    try:
        tree = _CEL.compile(expression)
    except CELParseError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise _Refused(f"is not valid CEL: {first_line}") from None
    except RecursionError:
        raise _Refused("nests too deeply to parse") from None
    except Exception as exc:  # lark raises more than CELParseError wraps (UnexpectedEOF, ...)
        raise _Refused(f"is not valid CEL: {type(exc).__name__}: {exc}") from None
    _measure(tree, limits)
    return tree


def _measure(tree: lark.Tree[Any], limits: Limits) -> None:
    """Walk the parse tree without recursion (its depth is what is being checked)."""
    count = 0
    deepest = 0
    macros = 0
    nesting = 0
    # (node, depth, comprehensions around it whose body it is in)
    stack: list[tuple[lark.Tree[Any], int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, around = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        children = node.children
        name = _macro_name(node)
        if name in FORBIDDEN_MACROS:
            raise _Refused(
                f"uses {name}(), which ZTDP does not allow: its accumulator can grow a value "
                "exponentially",
            )
        if name in COMPREHENSIONS:
            macros += 1
            nesting = max(nesting, around + 1)
            # children: [target, method name, arguments]; only the arguments run per element
            target, *_, arguments = children
            if isinstance(target, lark.Tree):
                stack.append((target, depth + 1, around))
            if isinstance(arguments, lark.Tree) and arguments is not target:
                stack.append((arguments, depth + 1, around + 1))
            continue
        stack.extend((c, depth + 1, around) for c in children if isinstance(c, lark.Tree))
    if deepest > limits.depth:
        raise _Refused(
            f"nests {deepest} levels deep in its parse tree, over the limit of {limits.depth} "
            "(a pair of parentheses adds 10 levels)",
            "depth",
            limits.depth,
            deepest,
        )
    if count > limits.nodes:
        raise _Refused(
            f"has {count} nodes in its parse tree, over the limit of {limits.nodes}",
            "nodes",
            limits.nodes,
            count,
        )
    if macros > limits.comprehensions:
        raise _Refused(
            f"uses {macros} comprehension macros ({', '.join(sorted(COMPREHENSIONS))}), over "
            f"the limit of {limits.comprehensions}",
            "comprehensions",
            limits.comprehensions,
            macros,
        )
    if nesting > limits.comprehension_nesting:
        raise _Refused(
            f"nests comprehension macros {nesting} deep, over the limit of "
            f"{limits.comprehension_nesting}: a macro in another's body runs once per element "
            "of the outer one's list",
            "comprehension_nesting",
            limits.comprehension_nesting,
            nesting,
        )


def _macro_name(node: lark.Tree[Any]) -> str | None:
    """The method of a `target.method(...)` call, which is how CEL writes its macros."""
    if node.data != "member_dot_arg" or len(node.children) < 2:
        return None
    method = node.children[1]
    return method.value if isinstance(method, lark.Token) else None


# --- evaluation ----------------------------------------------------------------------------


def evaluate(
    expression: str,
    activation: Mapping[str, Any],
    *,
    message: str = "",
    limits: Limits = LIMITS,
) -> tuple[bool, str]:
    """Evaluate an expression over JSON-like variables: (passed, reason)."""
    try:
        tree = _checked(expression, limits)
    except _Refused as exc:
        # A policy stored before the budget existed, or under larger limits.
        return False, f"expression {exc.reason}; it was not evaluated"
    try:
        variables = {name: json_to_cel(value) for name, value in activation.items()}
        result = _CEL.program(tree).evaluate(variables)
    except CELEvalError as exc:
        return False, f"expression failed to evaluate: {_cel_error(exc)}"
    if not isinstance(result, celpy.celtypes.BoolType):
        return False, f"expression returned {type(result).__name__}, not a bool"
    if result:
        return True, f"{expression} is true"
    return False, message or f"{expression} is false"


def _cel_error(exc: CELEvalError) -> str:
    return str(exc.args[0]) if exc.args else str(exc)
