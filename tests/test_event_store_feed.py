"""Feeding the event store from the NATS event stream: one durable consumer shared by the
processes, each event stored once, nothing lost while the store is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

import anyio
import pytest

from ztdp.errors import BackendUnavailable
from ztdp.events import Event, EventQuery, MemoryEventStore, make_event
from ztdp.events.keeper import EventKeeper
from ztdp.events.nats import NatsEventBus

WAIT = 10.0


class CountingStore(MemoryEventStore):
    """A shared store that counts every append call's events, and can be down."""

    def __init__(self) -> None:
        super().__init__()
        self.offered = 0
        self.down = False

    async def append(self, events: Sequence[Event]) -> int:
        if self.down:
            raise BackendUnavailable("store down for the test")
        self.offered += len(events)
        return await super().append(events)


@asynccontextmanager
async def feeding(url: str, prefix: str, store: CountingStore) -> AsyncIterator[NatsEventBus]:
    """A process's bus, feeding `store` through the shared consumer while the block runs."""
    bus = await NatsEventBus.connect(url, prefix=prefix, timeout=2.0)
    try:
        feed = partial(bus.feed, store, durable=f"{prefix}_store_test")
        async with EventKeeper(store, retention=timedelta(days=90), interval=3600, feed=feed):
            yield bus
    finally:
        await bus.aclose()


async def stored(store: CountingStore, count: int) -> list[Event]:
    with anyio.fail_after(WAIT):
        while True:
            page = await store.query(EventQuery(after=0, limit=100_000))
            if len(page.events) >= count:
                return page.events
            await anyio.sleep(0.02)


async def test_two_processes_feed_one_store_each_event_once(
    nats_url: str, nats_prefix: str
) -> None:
    store = CountingStore()
    async with (
        feeding(nats_url, nats_prefix, store) as one,
        feeding(nats_url, nats_prefix, store) as two,
    ):
        published = []
        for n in range(300):
            event = make_event("run.step", subject=f"app/{n % 7}", data={"n": n})
            await (one if n % 2 else two).publish(event)
            published.append(event.id)
        await one.sync()
        await two.sync()
        found = await stored(store, 300)  # after sync, without waiting
    assert sorted(e.id for e in found) == sorted(published)
    assert store.offered == 300  # a work queue: no event went to both processes


async def test_events_published_while_the_store_is_down_land_once_when_it_is_back(
    nats_url: str, nats_prefix: str
) -> None:
    store = CountingStore()
    async with feeding(nats_url, nats_prefix, store) as bus:
        store.down = True
        down = [make_event("run.step", subject="app/a", data={"n": n}) for n in range(20)]
        for event in down:
            await bus.publish(event)  # the stream has them: publishing does not fail
        await anyio.sleep(0.3)
        store.down = False
        found = await stored(store, 20)
    assert [e.id for e in found] == [e.id for e in down]


async def test_a_new_feed_starts_at_the_beginning_of_the_stream(
    nats_url: str, nats_prefix: str
) -> None:
    bus = await NatsEventBus.connect(nats_url, prefix=nats_prefix)
    try:
        before = [make_event("run.step", subject="app/a", data={"n": n}) for n in range(5)]
        for event in before:
            await bus.publish(event)
    finally:
        await bus.aclose()
    store = CountingStore()
    async with feeding(nats_url, nats_prefix, store):
        found = await stored(store, 5)
    assert [e.id for e in found] == [e.id for e in before]


@pytest.mark.parametrize("stop_after", [1, 3])
async def test_a_feeder_that_stops_leaves_the_rest_to_the_others(
    nats_url: str, nats_prefix: str, stop_after: int
) -> None:
    store = CountingStore()
    async with feeding(nats_url, nats_prefix, store) as staying:
        async with feeding(nats_url, nats_prefix, store) as leaving:
            for n in range(stop_after * 10):
                await leaving.publish(make_event("run.step", subject="app/a", data={"n": n}))
        for n in range(10):  # the other process's feed carries on alone
            await staying.publish(make_event("run.step", subject="app/b", data={"n": n}))
        found = await stored(store, stop_after * 10 + 10)
    assert len({e.id for e in found}) == stop_after * 10 + 10


async def test_a_process_store_in_memory_gets_every_event_of_the_stream_from_its_follower(
    nats_url: str, nats_prefix: str
) -> None:
    first = await NatsEventBus.connect(nats_url, prefix=nats_prefix)
    try:
        early = [make_event("run.step", subject="app/a", data={"n": n}) for n in range(8)]
        for event in early:
            await first.publish(event)
        mine = MemoryEventStore()
        later = await NatsEventBus.connect(nats_url, prefix=nats_prefix, keep=2, sink=mine.add)
        try:  # it replays the whole stream into the store, not just its last `keep`
            page = await mine.query(EventQuery(after=0, limit=100))
            assert [e.id for e in page.events] == [e.id for e in early]
            new = make_event("run.step", subject="app/b", data={})
            await first.publish(new)
            await later.publish(make_event("run.step", subject="app/c", data={}))
            page = await mine.query(EventQuery(after=page.cursor, limit=100))
            assert [e.subject for e in page.events] == ["app/b", "app/c"]
        finally:
            await later.aclose()
    finally:
        await first.aclose()


class PickyStore(CountingStore):
    """A store that can never take events about `app/poison`."""

    async def append(self, events: Sequence[Event]) -> int:
        if any(e.subject == "app/poison" for e in events):
            raise ValueError("this store cannot take that")
        return await super().append(events)


async def test_an_event_the_store_can_never_take_does_not_stop_the_feed(
    nats_url: str, nats_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PickyStore()
    async with feeding(nats_url, nats_prefix, store) as bus:
        subjects = ["app/a", "app/poison", "app/b"] + [f"app/{n}" for n in range(5)]
        for subject in subjects:
            await bus.publish(make_event("run.step", subject=subject, data={}))
        found = await stored(store, len(subjects) - 1)
    assert [e.subject for e in found] == [s for s in subjects if s != "app/poison"]
    assert "cannot take event" in caplog.text
