"""CEL expressions in policies: compiled when a policy is written, evaluated per transition."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from ztdp.errors import InvalidInput

FIELD = "spec.rule.expression"

_CEL = celpy.Environment()


@lru_cache(maxsize=1024)
def _program(expression: str) -> Any:
    return _CEL.program(_CEL.compile(expression))


def compile_expression(expression: str) -> None:
    """Refuse a CEL expression that does not parse, naming the rule field."""
    try:
        _program(expression)
    except CELParseError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise InvalidInput(f"{FIELD} is not valid CEL: {first_line}", field=FIELD) from None


def evaluate(
    expression: str, activation: Mapping[str, Any], *, message: str = ""
) -> tuple[bool, str]:
    """Evaluate an expression over JSON-like variables: (passed, reason)."""
    try:
        result = _program(expression).evaluate(json_to_cel(dict(activation)))
    except CELParseError as exc:
        return False, f"expression does not parse: {exc}"
    except CELEvalError as exc:
        return False, f"expression failed to evaluate: {exc.args[0] if exc.args else exc}"
    if isinstance(result, CELEvalError):
        return False, f"expression failed to evaluate: {result.args[0] if result.args else result}"
    if not isinstance(result, celpy.celtypes.BoolType):
        return False, f"expression returned {type(result).__name__}, not a bool"
    if result:
        return True, f"{expression} is true"
    return False, message or f"{expression} is false"
