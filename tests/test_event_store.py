"""The event-store contract: the same tests against the memory store and the PostgreSQL store
(plugins/ztdp-eventstore-postgres, on a real server), then how stores are loaded as plugins."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ztdp.errors import BackendUnavailable, InvalidInput, PluginInvalid
from ztdp.events import (
    Event,
    EventQuery,
    EventStore,
    MemoryEventStore,
    make_change_event,
    make_event,
    open_event_store,
)
from ztdp.events.keeper import EventKeeper
from ztdp.events.sqlite_store import SqliteEventStore
from ztdp.settings import Settings
from ztdp_eventstore_postgres import PostgresEventStore

NOW = time.time()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    opened: EventStore
    if request.param == "memory":
        opened = MemoryEventStore()
    elif request.param == "sqlite":
        opened = await SqliteEventStore.open(tmp_path / "events.db")
    else:
        opened = await PostgresEventStore.connect(request.getfixturevalue("postgres_url"))
    yield opened
    await opened.aclose()


def event(
    subject: str = "app/a",
    type_: str = "run.step",
    *,
    run: str | None = None,
    actor: str = "alice",
    at: float | None = None,
    **data: Any,
) -> Event:
    made = make_event(type_, subject=subject, data=data, actor=actor, run=run)
    return made if at is None else made._replace(time=at)


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


async def everything(store: EventStore, **filters: Any) -> list[Event]:
    page = await store.query(EventQuery(after=0, limit=100_000, **filters))
    return page.events


async def test_events_read_back_as_they_were_recorded(store: EventStore) -> None:
    recorded = [
        event(n=1, nested={"list": [1, 2.5, None, "two"], "ok": True, "text": "ünï €"}),
        event("app/b", "actor.status", run="0123456789abcdef0123456789abcdef", status="Ready"),
        make_change_event(
            graph="00ff00ff00ff00ff", revision=7, subject="environment/dev", actor="bob", data={}
        ),
        # a NUL character (JSONB cannot hold one) and text that looks like its escape
        event(description="a\u0000b", text="\\u0000 is not NUL"),
    ]
    assert await store.append(recorded) == 4
    back = await everything(store)
    assert [e.cloudevent() for e in back] == [e.cloudevent() for e in recorded]
    for e in back:  # and as ZTDP's own events: the id and the attributes render alike
        document = json.loads(json.dumps(e.cloudevent()))
        assert Event.from_cloudevent(document).cloudevent() == document


async def test_an_event_appended_again_is_stored_once(store: EventStore) -> None:
    a, b, c = event(n=1), event(n=2), event(n=3)
    assert await store.append([a, b]) == 2
    assert await store.append([b, c, c]) == 1  # b again, c twice in one batch
    assert await store.append([a]) == 0
    assert await store.append([]) == 0
    assert ids(await everything(store)) == [a.id, b.id, c.id]


async def test_concurrent_appends_of_overlapping_batches_store_each_event_once(
    store: EventStore,
) -> None:
    events = [event(n=n) for n in range(400)]
    stored: list[int] = []

    async def append(start: int) -> None:
        for offset in range(0, 200, 50):  # overlapping windows, from several tasks at once
            stored.append(await store.append(events[start + offset : start + offset + 100]))

    async with anyio.create_task_group() as tg:
        for start in (0, 50, 100, 150, 200):
            tg.start_soon(append, start)
    assert sum(stored) == 400
    found = await everything(store)
    assert len(found) == 400 and set(ids(found)) == set(ids(events))


async def test_queries_filter_by_node_run_type_prefix_and_actor(store: EventStore) -> None:
    run = "0123456789abcdef0123456789abcdef"
    a1, b, a2, status, other = (
        event("app/a", run=run),
        event("app/b", run=run, actor="bob"),
        event("app/a", actor="bob"),
        event("app/a", "actor.status"),
        event("app/a", "run_x.step"),  # `_` is no wildcard: type=run_ must not match `runa`
    )
    await store.append([a1, b, a2, status, other])

    async def found(**filters: Any) -> list[str]:
        return ids(await everything(store, **filters))

    assert await found(node="app/a") == ids([a1, a2, status, other])
    assert await found(run=run) == ids([a1, b])
    assert await found(type="actor") == ids([status])
    assert await found(type="run") == ids([a1, b, a2, other])  # a prefix, as the bus filters
    assert await found(type="run.step") == ids([a1, b, a2])
    assert await found(type="run_") == ids([other])
    assert await found(type="ru%") == []
    assert await found(actor="bob") == ids([b, a2])
    assert await found(actor="bob", node="app/a", type="run.step") == ids([a2])
    assert await found(node="app/none") == []


async def test_queries_filter_by_time_range(store: EventStore) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [event(at=(t0 + timedelta(hours=h)).timestamp(), h=h) for h in range(6)]
    await store.append(events)

    async def hours(**filters: Any) -> list[int]:
        return [e.data["h"] for e in await everything(store, **filters)]

    assert await hours(since=t0 + timedelta(hours=2)) == [2, 3, 4, 5]  # since: inclusive
    assert await hours(until=t0 + timedelta(hours=2)) == [0, 1]  # until: exclusive
    assert await hours(since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=4)) == [1, 2, 3]
    other_zone = datetime(2026, 1, 1, 5, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    assert await hours(since=other_zone) == [5]


async def test_without_a_cursor_a_query_gives_the_newest_matching_events_oldest_first(
    store: EventStore,
) -> None:
    events = [event(n=n) for n in range(10)]
    await store.append(events)
    await store.append([event("app/other")])
    page = await store.query(EventQuery(node="app/a", limit=3))
    assert ids(page.events) == ids(events[-3:])
    assert ids((await store.query(EventQuery(node="app/a"))).events) == ids(events)


async def test_pages_follow_one_another_by_cursor_without_gaps_or_repeats(
    store: EventStore,
) -> None:
    events = [event("app/a" if n % 3 else "app/b", n=n) for n in range(25)]
    await store.append(events)
    seen: list[Event] = []
    cursor, pages = 0, 0
    while True:
        page = await store.query(EventQuery(node="app/a", after=cursor, limit=4))
        assert page.cursor >= cursor  # it only grows
        cursor, pages = page.cursor, pages + 1
        seen += page.events
        if len(page.events) < 4:
            break
    assert ids(seen) == ids([e for e in events if e.subject == "app/a"])
    assert pages == 5  # 16 events: four full pages and an empty one
    assert (await store.query(EventQuery(node="app/a", after=cursor))).events == []
    later = [event("app/b"), event("app/a", n="later")]
    await store.append(later)
    page = await store.query(EventQuery(node="app/a", after=cursor))
    assert ids(page.events) == [later[1].id]  # asked again, it gives what came since


async def test_a_reader_following_concurrent_appends_by_cursor_misses_nothing(
    store: EventStore,
) -> None:
    """Appends commit concurrently; a cursor must never pass an event that commits later."""
    events = [event(n=n) for n in range(600)]
    seen: list[str] = []
    done = anyio.Event()

    async def append(start: int) -> None:
        for offset in range(start, len(events), 120):
            await store.append(events[offset : offset + 20])

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = await store.query(EventQuery(after=cursor, limit=50))
            seen.extend(ids(page.events))
            cursor = page.cursor
            if finished and not page.events:
                return
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        async with anyio.create_task_group() as appenders:
            for start in range(0, 120, 20):
                appenders.start_soon(append, start)
        done.set()
    assert len(seen) == len(set(seen)) == 600


async def test_the_cursor_of_the_newest_events_continues_with_what_comes_next(
    store: EventStore,
) -> None:
    await store.append([event(n=n) for n in range(5)])
    page = await store.query(EventQuery(node="app/none"))
    assert page.events == []
    new = event("app/none")
    await store.append([event(), new])
    assert ids((await store.query(EventQuery(node="app/none", after=page.cursor))).events) == [
        new.id
    ]


async def test_prune_removes_events_older_than_the_cutoff_only(store: EventStore) -> None:
    old = [event(at=NOW - 100 * 86_400, n=n) for n in range(3)]
    old_change = make_change_event(graph="aa", revision=1, subject="x", actor="a", data={})
    old_change = old_change._replace(time=NOW - 100 * 86_400)
    recent = [event(at=NOW - 86_400, n=n) for n in range(2)]
    new_change = make_change_event(graph="aa", revision=2, subject="x", actor="a", data={})
    await store.append([*old, old_change, *recent, new_change])
    cutoff = datetime.fromtimestamp(NOW - 90 * 86_400, UTC)
    assert await store.prune(before=cutoff) == 4
    assert ids(await everything(store)) == ids([*recent, new_change])
    assert ids(await store.changes(graph="aa", since=0, limit=10)) == [new_change.id]
    assert await store.prune(before=cutoff) == 0


async def test_no_count_of_writes_pushes_earlier_events_out(store: EventStore) -> None:
    first = event("app/first")
    await store.append([first])
    busy = [event("app/busy", n=n) for n in range(20_000)]
    for start in range(0, len(busy), 5_000):
        await store.append(busy[start : start + 5_000])
    assert ids((await store.query(EventQuery(node="app/first"))).events) == [first.id]
    page = await store.query(EventQuery(after=0, limit=10_000))
    assert page.events[0].id == first.id and len(page.events) == 10_000
    rest = await store.query(EventQuery(after=page.cursor, limit=20_000))
    assert ids(rest.events) == ids(busy[9_999:])


async def test_changes_are_a_graphs_change_events_by_revision(store: EventStore) -> None:
    def change(graph: str, revision: int) -> Event:
        return make_change_event(
            graph=graph, revision=revision, subject="x", actor="a", data={"revision": revision}
        )

    # processes publish concurrently: revisions may reach the store out of order
    await store.append([change("g1", 2), change("g1", 1), change("g2", 1), event("x")])
    await store.append([change("g1", 3), change("g1", 2)])
    assert [e.sequence for e in await store.changes(graph="g1", since=0, limit=10)] == [1, 2, 3]
    assert [e.sequence for e in await store.changes(graph="g1", since=1, limit=1)] == [2]
    assert [e.origin for e in await store.changes(graph="g2", since=0, limit=10)] == ["g2"]
    assert await store.changes(graph="g3", since=0, limit=10) == []


async def test_ping_answers_and_closing_twice_is_harmless(store: EventStore) -> None:
    await store.ping()
    await store.aclose()
    await store.aclose()


# PostgreSQL only


async def test_an_unreachable_postgres_is_backend_unavailable_naming_it() -> None:
    from tests.conftest import free_port

    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/none"
    with anyio.fail_after(10), pytest.raises(BackendUnavailable) as err:
        await PostgresEventStore.connect(url, timeout=1)
    assert "127.0.0.1" in err.value.detail and "secret" not in err.value.detail


async def test_two_postgres_stores_on_one_schema_share_the_events(postgres_url: str) -> None:
    one = await PostgresEventStore.connect(postgres_url)
    two = await PostgresEventStore.connect(postgres_url)  # the table exists: created once
    try:
        a = event(n=1)
        await one.append([a])
        assert await two.append([a]) == 0
        assert ids(await everything(two)) == [a.id]
    finally:
        await one.aclose()
        await two.aclose()


# Loading stores as plugins


def settings(**values: Any) -> Settings:
    return Settings(**values)


async def test_memory_is_built_in_and_the_default() -> None:
    store, info = await open_event_store(Settings(), eps=[])
    assert isinstance(store, MemoryEventStore)
    assert (info.name, info.distribution) == ("memory", "ztdp")


async def test_the_postgres_store_is_loaded_by_its_entry_point_name(postgres_url: str) -> None:
    store, info = await open_event_store(
        settings(event_store="postgres", event_store_url=postgres_url)
    )
    try:
        assert isinstance(store, PostgresEventStore)
        assert (info.entry_point, info.distribution) == (
            "ztdp_eventstore_postgres:open_store",
            "ztdp-eventstore-postgres",
        )
        await store.ping()
    finally:
        await store.aclose()


async def test_the_postgres_store_needs_its_url() -> None:
    with pytest.raises(InvalidInput, match="ZTDP_EVENT_STORE_URL"):
        await open_event_store(settings(event_store="postgres"))


async def test_a_store_that_is_not_installed_is_named_with_those_that_are() -> None:
    with pytest.raises(PluginInvalid) as err:
        await open_event_store(settings(event_store="audit"), eps=[])
    assert err.value.detail == (
        "ZTDP_EVENT_STORE=audit: no event store plugin 'audit' is installed "
        "(entry-point group ztdp.event_stores; installed: memory, sqlite)"
    )


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, "ztdp.event_stores")


async def test_a_store_plugin_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(PluginInvalid, match=r"plugin 'audit' \(no_such_module:open\) .* imported"):
        await open_event_store(
            settings(event_store="audit"), eps=[entry_point("audit", "no_such_module:open")]
        )


class Incomplete:
    async def append(self, events: Any) -> int:
        return 0

    def query(self, query: Any) -> Any:  # not async
        return None


def open_incomplete(url: str | None, settings: Settings) -> Incomplete:
    return Incomplete()


def open_failing(url: str | None, settings: Settings) -> Incomplete:
    raise RuntimeError("no licence")


async def test_a_store_plugin_missing_methods_is_named_with_what_it_lacks() -> None:
    with pytest.raises(PluginInvalid) as err:
        await open_event_store(
            settings(event_store="audit"),
            eps=[entry_point("audit", f"{__name__}:open_incomplete")],
        )
    assert "does not implement the event store protocol" in err.value.detail
    assert "query, changes, prune, ping, aclose" in err.value.detail


async def test_a_store_plugin_failing_to_open_is_named() -> None:
    with pytest.raises(PluginInvalid, match=r"plugin 'audit' .* failed to open: .*no licence"):
        await open_event_store(
            settings(event_store="audit"), eps=[entry_point("audit", f"{__name__}:open_failing")]
        )


async def test_a_plugin_may_not_take_a_built_in_name() -> None:
    with pytest.raises(PluginInvalid, match="name of a built-in store"):
        await open_event_store(
            Settings(), eps=[entry_point("memory", f"{__name__}:open_incomplete")]
        )


async def test_the_keeper_prunes_by_age_periodically_in_its_own_task_group() -> None:
    store = MemoryEventStore()
    old, new = event(at=NOW - 3 * 86_400), event()
    await store.append([old, new])
    async with EventKeeper(store, retention=timedelta(days=2), interval=0.05):
        await store.append([event(at=NOW - 5 * 86_400, n="late")])  # redelivered after a prune
        with anyio.fail_after(5):
            while len(await everything(store)) > 1:  # noqa: ASYNC110 - polls what a task does
                await anyio.sleep(0.01)
    assert ids(await everything(store)) == [new.id]
