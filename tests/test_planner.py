"""The planner against observed state: create, update, no-op and delete, in the right order."""

from __future__ import annotations

import networkx as nx
import pytest

from ztdp.errors import DependencyCycle
from ztdp.planner import Desired, diff, generations, make_plan, mark_blocked
from ztdp.state import ObservedResource


def desired(node: str, state: dict[str, object], *deps: str) -> Desired:
    return Desired(node, f"src/{node}", "deployment", "kubernetes", state, list(deps))


def observed(node: str, state: dict[str, object], *deps: str) -> ObservedResource:
    return ObservedResource(
        node=node,
        kind="deployment",
        application="a",
        environment="dev",
        provider="kubernetes",
        state=state,
        depends_on=list(deps),
    )


def actions(plan: object) -> list[list[tuple[str, str]]]:
    return [[(s["node"], s["action"]) for s in w["steps"]] for w in plan.waves]  # type: ignore[attr-defined]


def test_create_update_noop_then_deletes_in_reverse_dependency_order() -> None:
    want = {
        "db": desired("db", {"size": 1}),
        "api": desired("api", {"image": "api:2"}, "db"),
        "web": desired("web", {"image": "web:1"}, "api"),
    }
    seen = {
        "db": observed("db", {"size": 1}),
        "api": observed("api", {"image": "api:1"}),
        "old-cache": observed("old-cache", {"size": 1}),
        "old-worker": observed("old-worker", {"image": "w:1"}, "old-cache"),
    }
    plan = make_plan(want, seen, application="a", environment="dev", revision=7)
    assert actions(plan) == [
        [("db", "noop")],
        [("api", "update")],
        [("web", "create")],
        [("old-worker", "delete")],
        [("old-cache", "delete")],
    ]
    assert plan.summary == {"create": 1, "update": 1, "delete": 2, "noop": 1}
    api_step = plan.waves[1]["steps"][0]
    assert [(c["path"], c["before"], c["after"]) for c in api_step["diff"]] == [
        ("image", "api:1", "api:2")
    ]


def test_independent_steps_share_a_wave() -> None:
    want = {n: desired(n, {}) for n in ("a", "b", "c")}
    want["d"] = desired("d", {}, "a", "b")
    assert actions(make_plan(want, {}, application=None, environment="dev", revision=0)) == [
        [("a", "create"), ("b", "create"), ("c", "create")],
        [("d", "create")],
    ]


def test_a_cycle_names_its_nodes() -> None:
    want = {
        "a": desired("a", {}, "c"),
        "b": desired("b", {}, "a"),
        "c": desired("c", {}, "b"),
        "free": desired("free", {}),
    }
    with pytest.raises(DependencyCycle) as err:
        make_plan(want, {}, application=None, environment="dev", revision=0)
    assert set(err.value.cycle) == {"a", "b", "c"}
    assert "dependency cycle:" in err.value.detail and "free" not in err.value.detail


def test_diff_descends_into_mappings_and_compares_lists_whole() -> None:
    before = {"env": {"A": "1", "B": "2"}, "ports": [80], "same": 1}
    after = {"env": {"A": "1", "B": "3", "C": "4"}, "ports": [80, 443], "same": 1}
    assert [(c["path"], c["before"], c["after"]) for c in diff(before, after)] == [
        ("env.B", "2", "3"),
        ("env.C", None, "4"),
        ("ports", [80], [80, 443]),
    ]


def test_diff_of_removed_fields_and_of_a_create() -> None:
    assert diff({"gone": 1, "same": 2}, {"same": 2}) == [
        {"path": "gone", "before": 1, "after": None}
    ]
    assert diff({}, {"a": {"b": 1}}) == [{"path": "a", "before": None, "after": {"b": 1}}]


@pytest.mark.parametrize("seed", range(5))
def test_generations_equal_networkx_topological_generations(seed: int) -> None:
    dag = nx.gnp_random_graph(200, 0.03, seed=seed, directed=True)
    dag = nx.DiGraph([(u, v) for u, v in dag.edges if u < v])  # keep it acyclic
    dag.add_nodes_from(range(200))
    depends_on = {str(n): [str(p) for p in dag.predecessors(n)] for n in dag}
    expected = [sorted(str(n) for n in g) for g in nx.topological_generations(dag)]
    assert generations(depends_on) == expected


def test_waves_match_networkx_generations_on_a_random_dag() -> None:
    dag = nx.gn_graph(300, seed=4)  # edges point from child to parent: a DAG
    want = {str(n): desired(str(n), {"n": n}, *(str(p) for p in dag.successors(n))) for n in dag}
    plan = make_plan(want, {}, application=None, environment="dev", revision=0)
    position = {s["node"]: w["index"] for w in plan.waves for s in w["steps"]}
    for child, parent in dag.edges:
        assert position[str(parent)] < position[str(child)]
    expected = len(list(nx.topological_generations(dag.reverse())))
    assert len(plan.waves) == expected


def test_blocked_steps_block_what_waits_for_them_as_a_run_would() -> None:
    want = {
        "db": desired("db", {}),
        "api": desired("api", {}, "db"),
        "web": desired("web", {}, "api"),
        "free": desired("free", {}),
    }
    seen = {
        "cache": observed("cache", {}),
        "worker": observed("worker", {}, "cache"),
    }
    plan = make_plan(want, seen, application="a", environment="dev", revision=1)
    assert all(s["blocked_by"] is None for w in plan.waves for s in w["steps"])
    # the deletion of `worker` fails: `cache`, which it uses, is deleted only after it
    mark_blocked(plan, {"db": "no provider 'x' is installed", "worker": "denied", "web": "own"})
    blocked = {s["node"]: s["blocked_by"] for w in plan.waves for s in w["steps"]}
    assert blocked == {
        "db": "no provider 'x' is installed",
        "free": None,
        "api": "blocked by db: no provider 'x' is installed",
        # a step is blocked by what it waits for first, whatever its own reason
        "web": "blocked by api: blocked by db: no provider 'x' is installed",
        "worker": "denied",
        "cache": "blocked by worker: denied",
    }
