"""CEL expressions on their own: the static budget and how evaluation turns out."""

from __future__ import annotations

import celpy.evaluation
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
    deepest = "(" * 19 + "true" + ")" * 19
    cel.compile_expression(deepest)
    assert cel.evaluate(deepest, VARIABLES) == (True, f"{deepest} is true")


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


# --- the evaluation budget -----------------------------------------------------------------

OVER = "expression exceeded the evaluation budget of {} steps (per decision)"


def cost(expression: str, variables: dict[str, object] = VARIABLES) -> int:
    """The fewest steps an expression evaluates within."""
    low, high = 1, 1_000_000
    while low < high:
        steps = (low + high) // 2
        _, reason = cel.evaluate(expression, variables, limits=cel.Limits(steps=steps))
        low, high = (steps + 1, high) if reason == OVER.format(steps) else (low, steps)
    return low


def test_a_node_costs_a_step_and_binding_the_variables_ten() -> None:
    # `true` is ten nodes deep: expr, conditionalor, ..., primary, literal
    assert cel.evaluate("true", VARIABLES, limits=cel.Limits(steps=20)) == (True, "true is true")
    assert cel.evaluate("true", VARIABLES, limits=cel.Limits(steps=19)) == (False, OVER.format(19))


def test_a_comprehension_pays_for_each_element() -> None:
    # per element: its ten nodes in the list, binding `x`, and the ten nodes of the body
    assert cost("[1, 2, 3, 4].all(x, true)") - cost("[1, 2, 3].all(x, true)") == 30


def test_applying_an_operator_costs_eight_steps_more_than_its_nodes() -> None:
    # `!true` adds two nodes to `true`: the `!` and the `unary` it applies to
    assert cost("!true") - cost("true") == 2 + 8


def test_growing_a_string_pays_for_its_size_and_stops_before_memory_runs_out() -> None:
    # 32 KiB times 8 per map: 16 MiB after three; the budget stops it in the second
    eight = " + ".join(["x"] * 8)
    expression = f"[s].map(x, {eight}).map(x, {eight}).map(x, {eight}).size() == 1"
    variables = {"s": "a" * 32768}
    cel.compile_expression(expression)
    assert cel.evaluate(expression, variables) == (False, OVER.format(cel.LIMITS.steps))


def test_recursing_too_deep_is_a_denial() -> None:
    unbounded = cel.Limits(length=10_000, nodes=100_000, depth=100_000)
    deep = "(" * 400 + "true" + ")" * 400
    passed, reason = cel.evaluate(deep, VARIABLES, limits=unbounded)
    assert (passed, reason) == (False, "expression failed to evaluate: it nests too deeply")


def test_any_exception_is_a_denial_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(text: str, fragment: str) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setitem(celpy.evaluation.base_functions, "endsWith", broken)
    passed, reason = cel.evaluate('transition.version.endsWith(".0")', VARIABLES)
    assert (passed, reason) == (False, "expression failed to evaluate: RuntimeError: a bug")
    assert "CEL expression 'transition.version.endsWith(\".0\")' raised" in caplog.text


def test_the_expressions_of_one_decision_share_one_budget() -> None:
    expression = "[1, 2, 3, 4, 5].all(x, x > 0)"
    steps = cost(expression)
    shared = cel.StepBudget(steps + steps // 2)
    assert cel.evaluate(expression, VARIABLES, budget=shared)[0] is True
    passed, reason = cel.evaluate(expression, VARIABLES, budget=shared)
    assert passed is False and reason.startswith("expression exceeded the evaluation budget")
