"""`GET /v1/events`, `GET /v1/changes` and a deployment's history, answered from the event
store: filters, paging by cursor over HTTP, bad parameters, and nothing pushed out by count."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from tests.test_runtime import SETTINGS, FakeProvider, deploy, registry
from ztdp.api import create_app
from ztdp.api.app import openapi_document
from ztdp.catalog import Catalog
from ztdp.contracts import Environment
from ztdp.errors import BackendUnavailable
from ztdp.events import Event, EventQuery, MemoryEventBus, MemoryEventStore
from ztdp.graph.store import MemoryGraphStore
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    app = create_app(SETTINGS, providers=registry(FakeProvider("kubernetes")))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client)


async def page(api: Api, path: str) -> tuple[list[Any], str]:
    """A page and the path of the next one, from its `Link: <...>; rel="next"` header."""
    resp = await api.client.get(path)
    assert resp.status == 200, await resp.text()
    found = re.fullmatch(r'<([^>]+)>; rel="next"', resp.headers["Link"])
    assert found is not None, resp.headers["Link"]
    return await resp.json(), found.group(1)


async def environments(api: Api, count: int, prefix: str = "e") -> None:
    for n in range(count):
        await api.environment(f"{prefix}{n}")


async def test_events_page_oldest_first_from_a_cursor_without_gaps_or_repeats(api: Api) -> None:
    await environments(api, 7)
    everything = await api.ok("GET", "/v1/events?type=graph.changed&limit=10000")
    seen: list[Any] = []
    path = "/v1/events?type=graph.changed&after=0&limit=3"
    for _ in range(4):
        events, path = await page(api, path)
        seen += events
    assert len(everything) == 8  # the seeded resource type, then the environments
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    assert parse_qs(urlsplit(path).query)["type"] == ["graph.changed"]  # the filters stay
    await api.environment("later")
    events, _ = await page(api, path)
    assert [e["subject"] for e in events] == ["environment/later"]


async def test_events_without_a_cursor_are_the_newest_and_link_to_what_comes_next(
    api: Api,
) -> None:
    await environments(api, 5)
    newest, path = await page(api, "/v1/events?type=graph.changed&limit=2")
    assert [e["subject"] for e in newest] == ["environment/e3", "environment/e4"]
    assert (await page(api, path))[0] == []
    await api.environment("next")
    assert [e["subject"] for e in (await page(api, path))[0]] == ["environment/next"]


async def test_events_filter_by_node_actor_and_time(api: Api) -> None:
    await environments(api, 2)
    by_node = await api.ok("GET", "/v1/events?node=environment/e1")
    assert [e["type"] for e in by_node] == ["io.ztdp.graph.changed"]
    assert await api.ok("GET", "/v1/events?actor=nobody") == []
    mine = await api.ok("GET", "/v1/events?actor=anonymous&type=graph.changed")
    assert [e["subject"] for e in mine] == ["environment/e0", "environment/e1"]
    stamp = datetime.fromisoformat(by_node[0]["time"])
    just = (stamp + timedelta(microseconds=1)).isoformat().replace("+00:00", "Z")
    assert await api.ok("GET", f"/v1/events?node=environment/e1&since={just}") == []
    assert await api.ok("GET", f"/v1/events?node=environment/e1&until={just}") == by_node
    offset = (
        (stamp - timedelta(seconds=1))
        .astimezone(datetime.now(UTC).astimezone().tzinfo)
        .isoformat()
        .replace("+", "%2B")
    )
    assert await api.ok("GET", f"/v1/events?node=environment/e1&since={offset}") == by_node


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "query.since"),
        ("since=2026-13-01T00:00:00Z", "query.since"),
        ("until=2026-01-01T00:00:00", "query.until"),  # RFC 3339 needs the offset
        ("until=2026-01-01T25:00:00Z", "query.until"),
        ("after=-1", "query.after"),
        ("after=next", "query.after"),
        ("limit=many", "query.limit"),
        ("after=1&after=2", "query.after"),
    ],
)
async def test_bad_event_parameters_are_422_naming_the_parameter(
    api: Api, query: str, field: str
) -> None:
    for path in (
        "/v1/events",
        "/v1/environments/dev/deployments/checkout/api/history",
    ):
        code, problem = await api.call("GET", f"{path}?{query}")
        assert code == 422, problem
        assert problem["errors"][0]["loc"] == field and field.split(".")[1] in problem["detail"]


async def test_changes_page_by_revision_with_a_link_to_the_next(api: Api) -> None:
    await environments(api, 5)
    first, path = await page(api, "/v1/changes?limit=2")
    assert [c["revision"] for c in first] == [1, 2]
    assert parse_qs(urlsplit(path).query) == {"since": ["2"], "limit": ["2"]}
    second, path = await page(api, path)
    assert [c["revision"] for c in second] == [3, 4]
    assert set(second[0]) == {"revision", "actor", "at", "ops"}  # the shape of before
    assert second[0]["ops"][0]["id"] == "environment/e1"
    assert second[0]["actor"] == "anonymous"
    rest, path = await page(api, path)
    assert [c["revision"] for c in rest] == [5, 6]
    assert (await page(api, path))[0] == []


async def test_a_deployments_status_history_comes_from_its_actors_events(api: Api) -> None:
    await api.basic()
    run = await deploy(api, "checkout-api")
    path = "/v1/environments/dev/deployments/checkout/checkout-api/history"
    history, following = await page(api, path)
    assert [h["status"] for h in history] == ["Progressing", "Ready"]
    assert {h["run"] for h in history} == {run["id"]}
    ready = await api.ok("GET", f"/v1/events?type=actor.status&node={run['steps'][0]['node']}")
    assert history[-1]["event"] == ready[-1]["id"]
    assert history[0]["at"] <= history[1]["at"]
    assert await api.ok("GET", f"{path}?limit=1") == history[-1:]
    assert (await page(api, following))[0] == []
    since = history[-1]["at"].replace("+00:00", "Z")
    assert [h["status"] for h in await api.ok("GET", f"{path}?since={since}")] == ["Ready"]
    assert await api.ok("GET", "/v1/environments/dev/deployments/checkout/other/history") == []


@pytest.mark.redis
async def test_a_busy_caller_pushes_no_earlier_change_out(
    redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """10,300 writes by one caller on Redis and PostgreSQL: the first changes are still there
    (the Redis graph log keeps only its last 10,000; the event store keeps by age)."""
    settings = Settings(
        graph_store="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        event_store="postgres",
        event_store_url=postgres_url,
        auth="off",
        observe_interval=0,
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
        api = Api(client)
        await api.environment("dev")
        first = await api.ok("GET", "/v1/changes?limit=2")
        body = {"metadata": {"name": "dev", "owner": "platform-team"}, "spec": {}}
        for n in range(10_300):
            body["spec"] = {"description": f"write {n}"}
            code, answer = await api.call("PUT", "/v1/environments/dev", body)
            assert code == 200, answer
        assert await api.ok("GET", "/v1/changes?limit=2") == first
        last = await api.ok("GET", "/v1/changes?since=10300")
        assert [c["revision"] for c in last] == [10_301, 10_302]
        first_events = await api.ok("GET", "/v1/events?after=0&limit=2")
        assert [e["data"]["revision"] for e in first_events] == [1, 2]


class DownStore(MemoryEventStore):
    """A store that cannot be reached."""

    async def append(self, events: Sequence[Event]) -> int:
        raise BackendUnavailable("event store: down for the test")


def environment(name: str) -> Environment:
    return Environment.model_validate({"metadata": {"name": name, "owner": "platform-team"}})


async def test_a_change_whose_event_the_store_refused_fails_loudly_and_is_recorded_at_start() -> (
    None
):
    graph, state, down = MemoryGraphStore(), MemoryStateStore(), DownStore()
    refusing = Catalog(graph, state, events=MemoryEventBus(store=down), event_store=down)
    with pytest.raises(BackendUnavailable):  # the write answers 503: the caller learns it
        await refusing.create_environment(environment("dev"))
    assert (await graph.read()).revision == 1  # committed all the same
    store = MemoryEventStore()
    restarted = Catalog(graph, state, events=MemoryEventBus(store=store), event_store=store)
    assert await restarted.record_changes() == 1
    assert await restarted.record_changes() == 0  # recorded once, however often started
    [change] = await restarted.changes(since=0, limit=10)
    assert change.revision == 1 and change.ops[0]["id"] == "environment/dev"
    await restarted.create_environment(environment("prod"))
    assert [c.revision for c in await restarted.changes(since=0, limit=10)] == [1, 2]
    [event] = (await store.query(EventQuery(node="environment/dev"))).events
    assert event.id == f"{await graph.identity()}-{1:012x}"


def test_the_document_declares_the_next_page_link_and_the_filters() -> None:
    document = openapi_document()
    for path, query in (
        ("/v1/events", {"node", "run", "type", "actor", "since", "until", "after", "limit"}),
        ("/v1/changes", {"since", "limit"}),
        (
            "/v1/environments/{env}/deployments/{app}/{svc}/history",
            {"since", "until", "after", "limit"},
        ),
    ):
        operation = document["paths"][path]["get"]  # type: ignore[index]
        assert "Link" in operation["responses"]["200"]["headers"]
        assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == query


async def test_the_live_stream_filters_by_actor(api: Api) -> None:
    resp = await api.client.get(
        "/v1/events?actor=anonymous&type=graph", headers={"Accept": "text/event-stream"}
    )
    try:
        await api.environment("dev")
        line = b""
        with anyio.fail_after(5):
            while not line.startswith(b"data: "):
                line = await resp.content.readline()
        assert json.loads(line[6:])["subject"] == "environment/dev"
    finally:
        resp.close()
