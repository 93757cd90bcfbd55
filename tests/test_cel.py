"""CEL expressions on their own: the static budget and how evaluation turns out."""

from __future__ import annotations

import pytest

from ztdp.errors import InvalidInput
from ztdp.policy import cel

VARIABLES = {"transition": {"environment": "prod", "version": "1.0.0"}}


def refusal(expression: str, limits: cel.Limits = cel.LIMITS) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        cel.compile_expression(expression, limits=limits)
    assert caught.value.field == "spec.rule.expression"
    return caught.value


def test_a_pair_of_parentheses_adds_ten_levels_to_the_parse_tree() -> None:
    assert refusal("(" * 20 + "true" + ")" * 20).extensions["limit"] == {
        "name": "depth",
        "maximum": 200,
        "measured": 210,
    }
    cel.compile_expression("(" * 19 + "true" + ")" * 19)


def test_chained_comprehensions_are_not_nested() -> None:
    cel.compile_expression("[1, 2].map(x, x * 2).filter(y, y > 2).all(z, z == 4)")
    cel.compile_expression("[1].exists(x, x == 1) && [2].exists(y, y == 2)")


def test_a_comprehension_anywhere_in_another_ones_body_is_nested() -> None:
    limit = refusal("[1].all(x, x > 0 && [x].map(y, y).size() == 1)").extensions["limit"]
    assert limit == {"name": "comprehension_nesting", "maximum": 1, "measured": 2}


def test_a_larger_nesting_limit_admits_nested_comprehensions() -> None:
    cel.compile_expression(
        "[1].all(x, [2].all(y, y > x))", limits=cel.Limits(comprehension_nesting=2)
    )


def test_unparsable_expressions_are_refused_with_the_parser_message() -> None:
    for expression in ("1 +", "(1", '"open', "a..b"):
        detail = refusal(expression).detail
        assert detail.startswith("spec.rule.expression is not valid CEL: "), detail


def test_an_expression_stored_over_the_budget_is_denied_without_evaluation() -> None:
    # e.g. a policy written before the budget existed
    passed, reason = cel.evaluate("(" * 100 + "true" + ")" * 100, VARIABLES)
    assert not passed
    assert reason == (
        "expression nests 1010 levels deep in its parse tree, over the limit of 200 (a pair of "
        "parentheses adds 10 levels); it was not evaluated"
    )
