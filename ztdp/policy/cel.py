"""CEL expressions in policies: bounded when a policy is written, budgeted when evaluated.

An expression is user input that runs inside every deploy it selects, in the API's event loop
and inside the catalog's atomic write. So it is held to two budgets:

- a static one when the policy is created or updated (`compile_expression`): its length, the
  size and depth of its parse tree (cel-python evaluates by recursion) and its comprehension
  macros (a macro in another's body multiplies their costs). Over it, the policy is refused
  with a 422 naming the limit and the measured value.
- a dynamic one for each evaluation (`evaluate`): every node of the parse tree visited costs a
  step, binding a macro's variable costs some more, and operations whose time grows with their
  operands (concatenation, comparison, membership, string searches) are charged for their
  operands' sizes. Evaluation stops at the budget, so its time is bounded whatever the data.

`evaluate` never raises: a refused, failing or over-budget expression is a failed policy with
its reason. The limits are part of the policy language, the same in every process sharing a
graph (a policy one API process accepts must evaluate the same in another), so they are
constants here rather than settings; tests may pass their own `Limits`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import (
    Activation,
    CELEvalError,
    Context,
    Evaluator,
    Result,
    base_functions,
)

from ztdp.errors import InvalidInput

log = logging.getLogger("ztdp.policy")

FIELD = "spec.rule.expression"

# The comprehension macros: each evaluates its body once per element of a list or map.
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# cel-python's `reduce` extension carries an accumulator from one element to the next, so
# `r + r` doubles a value per element: its cost is exponential in the list's length.
FORBIDDEN_MACROS = frozenset({"reduce"})


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets an expression is held to; the defaults are ZTDP's (docs/policies.md).

    The static limits are checked when a policy is written, the others at each evaluation.
    Within the static ones a parse tree has at most `nodes` nodes, each visited once unless a
    comprehension runs it per element: only comprehensions and large operands (a version's
    `env` holds up to 256 values of 32 KiB) can run out of `steps`.
    """

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
    steps: int = 2_000
    """Evaluation steps of one decision, shared by every expression policy it consults:
    nodes visited and the charges below. 2 to 6 us each on a 2-core machine, so a decision
    holds the event loop for some 12 ms at worst (benchmarks/cel_budget.py); a realistic
    policy (a few comparisons, a comprehension over a version's tags) takes 20 to 500."""
    operator_steps: int = 8
    """Steps charged on top of its node for applying an operator (`&&`, `==`, `+`, `!`, ...):
    cel-python builds typing generics on each one, some 20 to 25 us."""
    binding_steps: int = 10
    """Steps charged for binding variables (once per element in a macro): it clones the
    activation, which costs about as much as ten nodes."""
    string_unit: int = 256
    """Characters or bytes of a string operand that cost one more step (C-speed work)."""


LIMITS = Limits()

# Operations whose time grows with their operands; each is charged for their sizes.
_SIZED_OPERATIONS = (
    "_+_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_in_",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
)

# Parse-tree rules that apply an operator when they have two children (else they pass their
# one child's value up), and method calls (macros are charged per element instead).
_OPERATORS = frozenset(
    {"conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary"}
)
_CALLS = frozenset({"member_dot_arg"})


@lru_cache(maxsize=1)
def _cel() -> celpy.Environment:
    """The CEL environment, made at the first expression rather than at import: building its
    parser is a tenth of a second of every start, most of which never see an expression.

    Creating it also raises the recursion limit to 2,500, which `Limits.depth` relies on:
    cel-python does it on purpose for CEL's nesting minimums; every use goes through here."""
    return celpy.Environment()


class _OverBudget(Exception):
    """An evaluation used its whole step budget; it stops and its policy fails."""

    def __init__(self, steps: int) -> None:
        super().__init__(
            f"expression exceeded the evaluation budget of {steps} steps (per decision)"
        )
        self.steps = steps


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
        tree = _cel().compile(expression)
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


# --- the evaluation budget -----------------------------------------------------------------


def evaluate(
    expression: str,
    activation: Mapping[str, Any],
    *,
    message: str = "",
    limits: Limits = LIMITS,
    budget: StepBudget | None = None,
) -> tuple[bool, str]:
    """Evaluate an expression over JSON-like variables: (passed, reason); never raises.

    Synchronous on purpose: it runs inside the catalog's atomic write, and the step budget
    bounds how long it holds the event loop.
    """
    try:
        tree = _checked(expression, limits)
    except _Refused as exc:
        # A policy stored before the budget existed, or under larger limits.
        return False, f"expression {exc.reason}; it was not evaluated"
    try:
        result = _run(tree, activation, limits, budget or StepBudget(limits.steps))
    except _OverBudget as exc:
        return False, str(exc)
    except CELEvalError as exc:
        return False, f"expression failed to evaluate: {_cel_error(exc)}"
    except RecursionError:
        return False, "expression failed to evaluate: it nests too deeply"
    except Exception as exc:
        # cel-python promises CELEvalError for ordinary problems; anything else is its bug or
        # ours, so it is logged with its traceback as well as denied.
        log.warning("CEL expression %r raised", expression, exc_info=True)
        return False, f"expression failed to evaluate: {type(exc).__name__}: {exc}"
    if not isinstance(result, celpy.celtypes.BoolType):
        return False, f"expression returned {type(result).__name__}, not a bool"
    if result:
        return True, f"{expression} is true"
    return False, message or f"{expression} is false"


def _cel_error(exc: CELEvalError) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


class StepBudget:
    """The steps left to one decision, shared by its expressions and their nested evaluators."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise _OverBudget(self.limit)


class StepBudgetedEvaluator(Evaluator):
    """cel-python's interpreter, spending from the meter as it goes.

    A step for every parse-tree node visited, `operator_steps` more for each operator or
    method applied, `binding_steps` for each binding of variables. Every node is reached
    either through `visit` (the root, macro bodies, the branches of `?:`) or through
    `visit_children`, so counting in both counts each visit once.
    """

    def __init__(
        self, ast: lark.Tree[Any], activation: Activation, meter: StepBudget, limits: Limits
    ) -> None:
        super().__init__(ast, activation)
        self._meter = meter
        self._limits = limits
        self._binding_steps = limits.binding_steps
        self._operator_steps = limits.operator_steps

    def sub_evaluator(self, ast: lark.Tree[Any]) -> Evaluator:
        # macros evaluate their bodies in a sub-evaluator: it must spend from the same budget
        return StepBudgetedEvaluator(ast, self.activation, self._meter, self._limits)

    def evaluate(self, context: Context | None = None) -> celpy.celtypes.Value:
        if context is not None:
            # binding variables (once per element in a macro) clones the activation: it costs
            # as much as several nodes
            self._meter.spend(self._binding_steps)
        return super().evaluate(context)

    def visit(self, tree: lark.Tree[Any]) -> Result:
        self._meter.spend(1)
        value: Result = super().visit(tree)
        return value

    def visit_children(self, tree: lark.Tree[Any]) -> list[Result]:
        children = tree.children
        steps = sum(1 for c in children if isinstance(c, lark.Tree))
        if tree.data in _CALLS or (len(children) == 2 and tree.data in _OPERATORS):
            steps += self._operator_steps  # `a op b`, `op a` or `a.f(b)`, not a lone operand
        self._meter.spend(steps)
        return super().visit_children(tree)


def _run(
    tree: lark.Tree[Any], variables: Mapping[str, Any], limits: Limits, meter: StepBudget
) -> celpy.celtypes.Value:
    meter.spend(0)  # a budget spent by earlier expressions of the decision stops this one
    functions = {name: _charged(base_functions[name], meter, limits) for name in _SIZED_OPERATIONS}
    cel = _cel()
    activation = Activation(annotations=cel.annotations, package=cel.package, functions=functions)
    evaluator = StepBudgetedEvaluator(tree, activation, meter, limits)
    return evaluator.evaluate({name: json_to_cel(value) for name, value in variables.items()})


def _charged(
    function: Callable[..., Result], meter: StepBudget, limits: Limits
) -> Callable[..., Result]:
    """`function`, first charging for the size of its operands.

    A list's element or a map's entry costs a step (cel-python compares them in Python, 0.5 to
    6 us each); `string_unit` characters or bytes cost a step. Sizes are charged before the
    call, so an oversized concatenation stops before it allocates; operands were paid for
    when they were built, so a value cannot double its size without paying for it.
    """

    def charged(*args: Any) -> Result:
        meter.spend(sum(_size_steps(a, limits) for a in args))
        return function(*args)

    charged.__name__ = function.__name__
    return charged


def _size_steps(value: Any, limits: Limits) -> int:
    if isinstance(value, str | bytes):
        return len(value) // limits.string_unit
    if isinstance(value, list | dict):  # cel-python's ListType and MapType
        return len(value)
    return 0
