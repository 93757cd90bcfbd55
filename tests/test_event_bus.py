"""The event-bus contract: the same tests against the memory bus and the NATS JetStream bus,
then what only a bus shared by several processes must do (NATS): agree on one order, replay,
deduplicate, and say so when NATS is down and carry on when it is back."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import nats
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from cloudevents.core.formats.json import JSONFormat
from nats.js.errors import NotFoundError

from tests.nats_server import NatsServer
from ztdp.errors import BackendUnavailable
from ztdp.events import Event, EventBus, EventFilter, MemoryEventBus, make_event
from ztdp.events.nats import NatsEventBus
from ztdp.events.store import EventQuery
from ztdp.runtime.backends import open_backends
from ztdp.settings import Settings

OpenBus = Callable[..., Awaitable[EventBus]]
Stream = MemoryObjectReceiveStream[dict[str, Any]]
WAIT = 5.0  # seconds an event may take to arrive before the test fails


async def delete_stream(url: str, prefix: str) -> None:
    """Free what the stream reserved on the session server's disk."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(f"{prefix}_EVENTS")
    except NotFoundError:
        pass
    finally:
        await nc.close()


@asynccontextmanager
async def nats_buses(url: str, prefix: str) -> AsyncIterator[OpenBus]:
    """Opens NATS buses on one prefix, as the processes of one installation; closes them and
    deletes their stream afterwards."""
    opened: list[EventBus] = []

    async def open_(**options: Any) -> EventBus:
        opened.append(await NatsEventBus.connect(url, prefix=prefix, **options))
        return opened[-1]

    try:
        yield open_
    finally:
        for bus in opened:
            await bus.aclose()
        await delete_stream(url, prefix)


@pytest.fixture(params=["memory", "nats"])
async def open_bus(request: pytest.FixtureRequest) -> AsyncIterator[OpenBus]:
    """Opens buses of one kind, closed after the test."""
    if request.param == "nats":
        url, prefix = request.getfixturevalue("nats_url"), request.getfixturevalue("nats_prefix")
        async with nats_buses(url, prefix) as open_nats:
            yield open_nats
        return
    opened: list[EventBus] = []

    async def open_memory(**options: Any) -> EventBus:
        opened.append(MemoryEventBus(**options))
        return opened[-1]

    yield open_memory
    for bus in opened:
        await bus.aclose()


@pytest.fixture
async def bus(open_bus: OpenBus) -> EventBus:
    return await open_bus()


@pytest.fixture
async def nats_bus(nats_url: str, nats_prefix: str) -> AsyncIterator[OpenBus]:
    async with nats_buses(nats_url, nats_prefix) as open_:
        yield open_


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    """A NATS server of this test's own, to kill and start again."""
    server = NatsServer().start()
    yield server
    server.stop()
    shutil.rmtree(server.store, ignore_errors=True)


async def publish_all(bus: EventBus, *events: Event) -> list[Event]:
    for event in events:
        await bus.publish(event)
    return list(events)


async def receive(stream: Stream, count: int) -> list[dict[str, Any]]:
    received = []
    with anyio.fail_after(WAIT):
        for _ in range(count):
            received.append(await stream.receive())
    return received


def step(subject: str, run: str | None = None, **data: Any) -> Event:
    return make_event("run.step", subject=subject, data=data, run=run)


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


# The contract, for every bus.


async def test_query_answers_the_published_events_oldest_first_as_they_were(
    bus: EventBus,
) -> None:
    published = await publish_all(
        bus,
        step("app/a", run="r1", n=1),
        make_event("actor.status", subject="app/b", data={"status": "Ready"}, actor="alice"),
        step("app/a", run="r2", nested={"list": [1, "two", None], "ok": True}),
    )
    assert await bus.query(EventFilter(), limit=100) == [e.cloudevent() for e in published]


async def test_query_filters_by_node_run_and_type_prefix(bus: EventBus) -> None:
    a1, b, a2, status = await publish_all(
        bus,
        step("app/a", run="r1"),
        step("app/b", run="r1"),
        step("app/a", run="r2"),
        make_event("actor.status", subject="app/a", data={}),
    )
    assert ids(await bus.query(EventFilter(node="app/a"), limit=10)) == [a1.id, a2.id, status.id]
    assert ids(await bus.query(EventFilter(run="r1"), limit=10)) == [a1.id, b.id]
    assert ids(await bus.query(EventFilter(type="actor"), limit=10)) == [status.id]
    assert ids(await bus.query(EventFilter(type="run.step", node="app/a"), limit=10)) == [
        a1.id,
        a2.id,
    ]
    assert await bus.query(EventFilter(type="drift"), limit=10) == []


async def test_a_limit_gives_the_newest_matching_events_oldest_first(bus: EventBus) -> None:
    events = await publish_all(bus, *(step("app/a", n=n) for n in range(10)))
    await bus.publish(step("app/other"))
    newest = await bus.query(EventFilter(node="app/a"), limit=3)
    assert ids(newest) == [e.id for e in events[-3:]]


async def test_a_bus_keeps_only_its_last_events(open_bus: OpenBus) -> None:
    bus = await open_bus(keep=5)
    events = await publish_all(bus, *(step("app/a", n=n) for n in range(8)))
    assert ids(await bus.query(EventFilter(), limit=100)) == [e.id for e in events[-5:]]


async def test_a_subscriber_receives_new_matching_events_and_no_others(bus: EventBus) -> None:
    await bus.publish(step("app/a", n="before"))
    async with bus.subscribe(EventFilter(node="app/a")) as stream:
        first, _, second = await publish_all(
            bus, step("app/a", n=1), step("app/b", n=2), step("app/a", n=3)
        )
        assert await receive(stream, 2) == [first.cloudevent(), second.cloudevent()]
        await bus.publish(make_event("actor.status", subject="app/b", data={}))
        marker = await publish_all(bus, step("app/a", n="marker"))
        assert ids(await receive(stream, 1)) == [marker[0].id]  # nothing came in between


async def test_a_subscriber_filters_by_run_and_type(bus: EventBus) -> None:
    async with (
        bus.subscribe(EventFilter(run="r1")) as by_run,
        bus.subscribe(EventFilter(type="actor")) as by_type,
    ):
        in_run, status, _ = await publish_all(
            bus,
            step("app/a", run="r1"),
            make_event("actor.status", subject="app/a", data={}),
            step("app/a", run="r2"),
        )
        marker = make_event("actor.marker", subject="x", data={}, run="r1")
        await bus.publish(marker)
        assert ids(await receive(by_run, 2)) == [in_run.id, marker.id]
        assert ids(await receive(by_type, 2)) == [status.id, marker.id]


async def test_a_slow_subscriber_is_dropped_rather_than_blocking_publishers(
    open_bus: OpenBus,
) -> None:
    bus = await open_bus(buffer=3)
    async with (
        bus.subscribe(EventFilter()) as slow,
        bus.subscribe(EventFilter()) as reading,
    ):
        received: list[dict[str, Any]] = []
        with anyio.fail_after(WAIT):
            for n in range(10):
                await bus.publish(step("app/a", n=n))
                received += await receive(reading, 1)
        assert [e["data"]["n"] for e in received] == list(range(10))
        assert [e["data"]["n"] for e in await receive(slow, 3)] == [0, 1, 2]
        with anyio.fail_after(WAIT), pytest.raises(anyio.EndOfStream):
            await slow.receive()


async def test_closing_the_bus_ends_its_subscribers_streams(open_bus: OpenBus) -> None:
    bus = await open_bus()
    async with bus.subscribe(EventFilter()) as stream:
        await bus.aclose()
        with anyio.fail_after(WAIT), pytest.raises(anyio.EndOfStream):
            await stream.receive()
    await bus.aclose()  # twice is harmless


async def test_every_event_is_valid_cloudevents_json(bus: EventBus) -> None:
    async with bus.subscribe(EventFilter()) as stream:
        published = await publish_all(
            bus,
            step("app/a", run="0123456789abcdef0123456789abcdef", n=1),
            make_event("change.applied", subject="app/b", data={"ops": []}, actor="token:ci"),
        )
        streamed = await receive(stream, 2)
    fmt = JSONFormat()
    for event, queried, live in zip(
        published, await bus.query(EventFilter(), limit=10), streamed, strict=True
    ):
        assert queried == live
        parsed = fmt.read(None, json.dumps(queried).encode())
        assert parsed.get_specversion() == "1.0"
        assert parsed.get_id() == event.id
        assert parsed.get_source() == "/ztdp"
        assert parsed.get_type() == event.type
        assert parsed.get_subject() == event.subject
        time = parsed.get_time()
        assert time is not None and abs(time.timestamp() - event.time) < 1e-5
        assert parsed.get_extension("actor") == event.actor
        assert parsed.get_extension("runid") == event.run
        assert parsed.get_data() == dict(event.data)


async def test_event_ids_are_unique(bus: EventBus) -> None:
    await publish_all(bus, *(step(f"app/{n % 3}") for n in range(300)))
    found = ids(await bus.query(EventFilter(), limit=1000))
    assert len(found) == len(set(found)) == 300


def test_a_forked_process_records_events_under_ids_of_its_own() -> None:
    """A forked worker shares the parent's memory; its ids must not repeat the parent's."""
    parent = [make_event("x", subject="s", data={}).id for _ in range(3)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its ids and leave at once
        try:
            child = [make_event("x", subject="s", data={}).id for _ in range(3)]
            os.write(write, json.dumps(child).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert not set(child) & set(parent)
    assert child[0].rsplit("-", 1)[0] != parent[0].rsplit("-", 1)[0]
    assert not set(child) & {make_event("x", subject="s", data={}).id for _ in range(5)}


def test_an_event_read_back_renders_the_same_document() -> None:
    event = step("app/a", run="r1", nested={"a": [1, 2.5, None, "x"]})
    document = json.loads(json.dumps(event.cloudevent()))
    assert Event.from_cloudevent(document).cloudevent() == event.cloudevent()
    for broken in (
        {**document, "id": "not-an-id"},
        {**document, "source": "/elsewhere"},
        {**document, "unknown": 1},
        {k: v for k, v in document.items() if k != "actor"},
    ):
        with pytest.raises(ValueError, match="not a ZTDP event"):
            Event.from_cloudevent(broken)


# A bus shared by processes: NATS only.


async def test_two_processes_see_each_others_events_in_the_same_order(
    nats_bus: OpenBus,
) -> None:
    one, two = await nats_bus(), await nats_bus()
    async with one.subscribe(EventFilter()) as at_one, two.subscribe(EventFilter()) as at_two:
        published: list[Event] = []

        async def publish_from(bus: EventBus, name: str) -> None:
            for n in range(25):
                event = step(f"app/{name}", n=n)
                published.append(event)
                await bus.publish(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_from, one, "one")
            tg.start_soon(publish_from, two, "two")
        seen_at_one, seen_at_two = await receive(at_one, 50), await receive(at_two, 50)
    assert ids(seen_at_one) == ids(seen_at_two)
    assert sorted(ids(seen_at_one)) == sorted(e.id for e in published)
    assert await one.query(EventFilter(), limit=100) == seen_at_one
    assert await two.query(EventFilter(), limit=100) == seen_at_one
    for name in ("one", "two"):  # each publisher's own events in the order it published them
        mine = [e["data"]["n"] for e in seen_at_one if e["subject"] == f"app/{name}"]
        assert mine == list(range(25))


async def test_a_process_started_later_replays_the_last_events(nats_bus: OpenBus) -> None:
    first = await nats_bus()
    events = await publish_all(first, *(step("app/a", n=n) for n in range(6)))
    later = await nats_bus(keep=4)  # its query answers at once: no waiting
    assert await later.query(EventFilter(), limit=100) == [e.cloudevent() for e in events[-4:]]
    everything = await nats_bus()
    assert ids(await everything.query(EventFilter(), limit=100)) == [e.id for e in events]
    async with later.subscribe(EventFilter()) as stream:  # and follows what comes next
        new = await publish_all(first, step("app/a", n="new"))
        assert ids(await receive(stream, 1)) == [new[0].id]


async def test_a_process_that_only_publishes_is_heard_by_those_that_follow(
    nats_bus: OpenBus,
) -> None:
    """A worker's bus (follow=False): its events reach the others, in the stream's order,
    and it refuses queries rather than answering them from nothing."""
    api, worker = await nats_bus(), await nats_bus(follow=False)
    async with api.subscribe(EventFilter()) as stream:
        events = await publish_all(worker, *(step("app/w", n=n) for n in range(5)))
        mine = await publish_all(api, step("app/api"))
        assert ids(await receive(stream, 6)) == [e.id for e in [*events, *mine]]
    with pytest.raises(RuntimeError, match="only publishes"):
        await worker.query(EventFilter(), limit=10)
    with pytest.raises(RuntimeError, match="only publishes"):
        worker.subscribe(EventFilter())
    with pytest.raises(ValueError, match="follow=True"):
        await nats_bus(follow=False, sink=lambda events: None)


async def test_a_worker_with_a_memory_store_neither_follows_nor_feeds_on_the_events(
    nats_url: str, nats_prefix: str
) -> None:
    """A worker (queries=False) with the default store: no share of the events in its memory
    (a history with gaps would pass a promotion's min_ready early), and no durable consumer
    left on the stream; an API process (queries=True) keeps every event."""
    settings = Settings(
        event_bus="nats", event_store="memory", nats_url=nats_url, nats_prefix=nats_prefix
    )
    async with (
        open_backends(settings, queries=False) as worker,
        open_backends(settings, queries=True) as api,
        worker.event_keeper,
    ):
        events = await publish_all(worker.events, *(step("app/w", n=n) for n in range(3)))
        with anyio.fail_after(WAIT):
            while len((await api.event_store.query(EventQuery(limit=10))).events) < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert (await worker.event_store.query(EventQuery(limit=10))).events == []
        nc = await nats.connect(nats_url)
        try:
            consumers = await nc.jetstream().consumers_info(f"{nats_prefix}_EVENTS")
        finally:
            await nc.close()
        assert not [c for c in consumers if c.config.durable_name], consumers
        assert [e.id for e in (await api.event_store.query(EventQuery(limit=10))).events] == [
            e.id for e in events
        ]
    await delete_stream(nats_url, nats_prefix)


async def test_an_event_published_twice_appears_once(nats_bus: OpenBus) -> None:
    one, two = await nats_bus(), await nats_bus()
    twice = step("app/a", n="twice")
    async with one.subscribe(EventFilter()) as stream:
        await one.publish(twice)
        await one.publish(twice)  # a retry after a lost acknowledgement, say
        await two.publish(twice)  # or another process
        marker = await publish_all(two, step("app/a", n="marker"))
        assert ids(await receive(stream, 2)) == [twice.id, marker[0].id]
    for bus in (one, two):
        assert ids(await bus.query(EventFilter(), limit=10)) == [twice.id, marker[0].id]


async def test_messages_on_the_stream_that_are_no_events_are_skipped(
    nats_bus: OpenBus, nats_url: str, nats_prefix: str
) -> None:
    bus = await nats_bus()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish(f"{nats_prefix}.events.run.step", b"not json")
        await js.publish(f"{nats_prefix}.events.run.step", b'{"specversion": "1.0"}')
    finally:
        await nc.close()
    event = step("app/a")
    await bus.publish(event)
    assert ids(await bus.query(EventFilter(), limit=10)) == [event.id]
    later = await nats_bus()
    assert ids(await later.query(EventFilter(), limit=10)) == [event.id]


async def test_connecting_to_nats_that_is_down_fails_fast_naming_it() -> None:
    server = NatsServer()  # never started: nothing listens on its port
    with anyio.fail_after(WAIT), pytest.raises(BackendUnavailable, match=server.url):
        await NatsEventBus.connect(server.url, prefix="down", timeout=1.0)


async def test_publishing_while_nats_is_down_raises_backend_unavailable(
    own_nats: NatsServer,
) -> None:
    bus = await NatsEventBus.connect(own_nats.url, prefix="outage", timeout=1.0)
    try:
        await bus.publish(step("app/a", n="before"))
        own_nats.kill()
        with anyio.fail_after(3), pytest.raises(BackendUnavailable, match=own_nats.url):
            await bus.publish(step("app/a", n="during"))
        assert [e["data"]["n"] for e in await bus.query(EventFilter(), limit=10)] == ["before"]
    finally:
        await bus.aclose()


async def publish_when_back(bus: EventBus, event: Event) -> None:
    """Publish as a caller would that retries while NATS is unavailable."""
    with anyio.fail_after(20):
        while True:
            try:
                return await bus.publish(event)
            except BackendUnavailable:
                await anyio.sleep(0.1)


async def test_after_nats_restarts_publishing_works_and_subscribers_keep_receiving(
    own_nats: NatsServer,
) -> None:
    one = await NatsEventBus.connect(own_nats.url, prefix="restart", timeout=1.0)
    two = await NatsEventBus.connect(own_nats.url, prefix="restart", timeout=1.0)
    try:
        async with one.subscribe(EventFilter()) as at_one, two.subscribe(EventFilter()) as at_two:
            before = step("app/a", n="before")
            await one.publish(before)
            assert ids(await receive(at_two, 1)) == [before.id]
            own_nats.kill()
            own_nats.start()  # the same port and store: the stream is still there
            after = step("app/a", n="after")
            await publish_when_back(one, after)
            from_two = step("app/a", n="from two")
            await publish_when_back(two, from_two)
            expected = [before.id, after.id, from_two.id]
            assert ids(await receive(at_one, 3)) == expected
            assert ids(await receive(at_two, 2)) == expected[1:]
            for bus in (one, two):
                assert ids(await bus.query(EventFilter(), limit=10)) == expected
    finally:
        await one.aclose()
        await two.aclose()


async def test_an_event_larger_than_the_transport_takes_is_still_recorded(bus: EventBus) -> None:
    """A graph change of a batch near the body limit, say: the record of what happened is
    kept (NATS refuses payloads over 1 MB; its largest fields are then left out, saying so)."""
    big = make_event(
        "graph.changed", subject="application/a", data={"revision": 7, "ops": ["x" * 4000] * 400}
    )
    assert len(json.dumps(big.cloudevent())) > 1_100_000
    await bus.publish(big)
    [stored] = await bus.query(EventFilter(node="application/a"), limit=10)
    assert (stored["id"], stored["type"], stored["data"]["revision"]) == (big.id, big.type, 7)
    if isinstance(bus, NatsEventBus):
        assert stored["data"]["ops"].startswith("(omitted: ")
    else:
        assert stored["data"] == big.cloudevent()["data"]
