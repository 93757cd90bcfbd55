"""The event store with `ztdp serve` as real processes: a store plugin from a distribution of
its own, the same answers across a restart on Redis and PostgreSQL, and several processes on
NATS feeding one store, each event once."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest

from tests.cluster import shared_env
from tests.conftest import REPO, ServerProcess, free_port
from tests.test_serve import call, one_line, redis_env, serve_fails

JSONL_STORE = REPO / "tests" / "plugins" / "ztdp-jsonl-store"


def ok(url: str, method: str = "GET", body: Any = None) -> Any:
    code, answer = call(url, method, body)
    assert code in (200, 201, 202), (code, answer)
    return answer


def with_link(url: str) -> tuple[Any, str | None]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read()), resp.headers.get("Link")


def writes(base: str, names: list[str]) -> None:
    for name in names:
        ok(f"{base}/v1/environments", "POST", {"metadata": {"name": name}, "spec": {}})
    ok(
        f"{base}/v1/applications",
        "POST",
        {"metadata": {"name": f"app-{names[0]}", "owner": "team-x"}, "spec": {"tags": []}},
    )
    ok(f"{base}/v1/applications/app-{names[0]}/environments/allowed", "PUT", names)


def evaluate(base: str, app: str) -> None:
    """A service and a version of `app`, and a policy evaluation of its deploy to dev."""
    ok(
        f"{base}/v1/applications/{app}/services",
        "POST",
        {"metadata": {"name": "api"}, "spec": {"application": app, "port": 80, "public": True}},
    )
    ok(
        f"{base}/v1/applications/{app}/services/api/versions",
        "POST",
        {"version": "1.0.0", "config_ref": "c"},
    )
    ok(
        f"{base}/v1/policies/evaluate",
        "POST",
        {"application": app, "service": "api", "version": "1.0.0", "environment": "dev"},
    )


def test_a_store_plugin_of_a_distribution_of_its_own_receives_every_event(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    server = ServerProcess(
        {
            "PYTHONPATH": str(JSONL_STORE),
            "ZTDP_GRAPH_STORE": "memory",
            "ZTDP_EVENT_STORE": "jsonl",
            "ZTDP_EVENT_STORE_URL": str(log),
        }
    ).start()
    try:
        assert ok(f"{server.url}/v1/status")["event_store"] == "jsonl"
        writes(server.url, ["dev", "prod"])
        evaluate(server.url, "app-dev")
        served = ok(f"{server.url}/v1/events?after=0&limit=10000")
    finally:
        out = server.stop()
    assert "event store jsonl" in out
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert logged == served  # every event, once, in order, as the API renders it
    assert {"io.ztdp.graph.changed", "io.ztdp.policy.decision"} <= {e["type"] for e in logged}


def test_a_missing_store_plugin_is_one_line_naming_it() -> None:
    code, out = serve_fails({"ZTDP_EVENT_STORE": "audit"})
    assert code == 1
    assert one_line(out).startswith(
        "ztdp serve: ZTDP_EVENT_STORE=audit: no event store plugin 'audit' is installed"
    )


def test_an_unreachable_postgres_store_is_one_line_naming_it() -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/ztdp"
    code, out = serve_fails({"ZTDP_EVENT_STORE": "postgres", "ZTDP_EVENT_STORE_URL": url})
    assert code == 1
    line = one_line(out)
    assert "event store: PostgreSQL at postgresql://postgres:***@127.0.0.1:" in line
    assert "secret" not in out


QUERIES = [
    "/v1/events?after=0&limit=10000",
    "/v1/events",
    "/v1/events?type=graph.changed&limit=3",
    "/v1/events?type=policy&actor=anonymous",
    "/v1/events?node=environment/dev",
    "/v1/events?after=2&limit=2",
    "/v1/changes",
    "/v1/changes?since=2&limit=2",
]


@pytest.mark.redis
@pytest.mark.parametrize("store", ["postgres", "sqlite"])
def test_events_and_changes_are_the_same_after_a_restart_on_redis(
    redis_url: str, redis_prefix: str, store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("postgres_url") if store == "postgres" else str(tmp_path / "e.db")
    env = {
        **redis_env(redis_url, redis_prefix),
        "ZTDP_AUTH": "off",
        "ZTDP_EVENT_STORE": store,
        "ZTDP_EVENT_STORE_URL": url,
    }
    first = ServerProcess(env).start()
    try:
        writes(first.url, ["dev", "prod"])
        evaluate(first.url, "app-dev")
        before = {q: with_link(first.url + q) for q in QUERIES}
    finally:
        first.stop()
    second = ServerProcess(env).start()
    try:
        after = {q: with_link(second.url + q) for q in QUERIES}
    finally:
        second.stop()
    assert after == before
    everything = before["/v1/events?after=0&limit=10000"][0]
    assert len(everything) == 8 and len(before["/v1/changes"][0]) == 7
    assert [c["revision"] for c in before["/v1/changes?since=2&limit=2"][0]] == [3, 4]
    assert before["/v1/changes?since=2&limit=2"][1] == '</v1/changes?since=4&limit=2>; rel="next"'


async def store_ids(url: str) -> list[str]:
    from ztdp_eventstore_postgres.store import split_url

    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT id FROM "{schema}".ztdp_events ORDER BY seq')
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def stream_ids(url: str, prefix: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"{prefix}.events.>", stream=f"{prefix}_EVENTS")
        found: list[str] = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except nats.errors.TimeoutError:
                return found
            for msg in msgs:
                found.append(json.loads(msg.data)["id"])
                await msg.ack()
    finally:
        await nc.close()


@pytest.mark.redis
def test_two_processes_on_nats_feed_every_event_once_into_postgres(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str, postgres_url: str
) -> None:
    env = shared_env(
        redis_url,
        redis_prefix,
        nats_url,
        nats_prefix,
        ZTDP_EVENT_STORE="postgres",
        ZTDP_EVENT_STORE_URL=postgres_url,
    )
    a = ServerProcess(env).start()
    b = ServerProcess({**env, "ZTDP_ACTORS": "off"}).start()
    try:
        for n in range(10):
            writes((a if n % 2 else b).url, [f"e{n}x", f"e{n}y"])
            mine = ok(f"{a.url}/v1/events?node=environment/e{n}y") if n % 2 else None
            assert mine is None or len(mine) == 1  # a query right after a write finds it
        deadline = time.monotonic() + 20
        while True:
            published = asyncio.run(stream_ids(nats_url, nats_prefix))
            stored = asyncio.run(store_ids(postgres_url))
            if sorted(stored) == sorted(published) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(published) == len(set(published)) == 41  # seeded type, 10 x 4 writes
        assert sorted(stored) == sorted(published)
        assert ok(f"{a.url}/v1/events?after=0&limit=10000") == ok(
            f"{b.url}/v1/events?after=0&limit=10000"
        )
        assert [e["id"] for e in ok(f"{a.url}/v1/events?after=0&limit=10000")] == stored
    finally:
        a.stop()
        b.stop()
