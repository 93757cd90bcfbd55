"""Which state store, mailboxes and event bus a process uses, and the combinations refused.

Chosen by settings; the distributed ones are imported only when chosen. A combination under
which two processes would act on the same nodes from different knowledge is refused at start
with the reason, instead of letting them undo each other's work.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from ztdp.events import EventBus, EventStore, EventStoreInfo, MemoryEventBus, MemoryEventStore
from ztdp.events.keeper import EventKeeper
from ztdp.events.plugins import open_event_store
from ztdp.runtime.mailbox import Mailbox, MemoryMailbox
from ztdp.runtime.ownership import StartRefused
from ztdp.settings import Settings
from ztdp.state import StateStore, open_state_store


@dataclass(frozen=True, slots=True)
class Backends:
    state: StateStore
    mailbox: Mailbox
    events: EventBus
    event_store: EventStore
    event_store_info: EventStoreInfo
    # The event store's background work (pruning; the feed from NATS): enter it in a task
    # that lives as long as the process serves, and leave it before the backends close.
    event_keeper: EventKeeper


def check(settings: Settings) -> None:
    """Refuse settings under which processes would fight, naming the way out."""
    if settings.graph_store == "redis" and settings.state_store == "memory":
        raise StartRefused(
            "ZTDP_STATE_STORE=memory with ZTDP_GRAPH_STORE=redis: processes sharing the graph "
            "would each know only what they realised themselves and repair each other's work; "
            "unset ZTDP_STATE_STORE (it follows the graph store) or set it to redis"
        )
    if settings.mailbox == "nats" and settings.state_backend == "memory":
        raise StartRefused(
            "ZTDP_MAILBOX=nats needs a shared state store: set ZTDP_STATE_STORE=redis (or "
            "ZTDP_GRAPH_STORE=redis), so that the worker that takes an actor over knows its state"
        )
    if settings.mailbox == "nats" and settings.event_backend == "memory":
        raise StartRefused(
            "ZTDP_EVENT_BUS=memory with ZTDP_MAILBOX=nats: each worker would keep its events to "
            "itself and the API would miss them; unset ZTDP_EVENT_BUS or set it to nats"
        )
    if settings.actors == "off" and settings.mailbox == "memory":
        raise StartRefused(
            "ZTDP_ACTORS=off with in-process mailboxes: nothing would ever run the actors; "
            "set ZTDP_MAILBOX=nats and run `ztdp worker`s, or leave ZTDP_ACTORS on"
        )


@asynccontextmanager
async def open_backends(
    settings: Settings, *, state: StateStore | None = None, queries: bool = True
) -> AsyncIterator[Backends]:
    """The backends the settings name, opened; closed when the context ends. A `state`
    passed in is the caller's to close. `queries=False`: this process answers no queries of
    the events (a `ztdp worker`): a store in its memory is not filled from NATS, and its
    NATS event bus only publishes."""
    check(settings)
    async with AsyncExitStack() as opened:
        if state is None:
            state = open_state_store(settings)
            opened.push_async_callback(state.aclose)
        mailbox: Mailbox
        if settings.mailbox == "nats":
            from ztdp.runtime.mailbox.nats import NatsMailbox

            mailbox = await NatsMailbox.connect(
                settings.nats_url,
                prefix=settings.nats_prefix,
                partitions=settings.partitions,
                ack_wait=settings.ack_wait,
            )
        else:
            mailbox = MemoryMailbox(settings.partitions)
        opened.push_async_callback(mailbox.aclose)
        event_store, info = await open_event_store(settings)
        opened.push_async_callback(event_store.aclose)
        events: EventBus
        feed = None
        if settings.event_backend == "nats":
            from ztdp.events.nats import NatsEventBus

            if isinstance(event_store, MemoryEventStore):  # each API process keeps every event
                # A worker answers no queries: it only publishes, and its store stays empty
                # (a share of the events in it would be a wrong history, not a short one).
                bus = await NatsEventBus.connect(
                    settings.nats_url,
                    prefix=settings.nats_prefix,
                    sink=event_store.add if queries else None,
                    follow=queries,
                )
            else:  # one store for the installation, fed once through a shared consumer
                bus = await NatsEventBus.connect(
                    settings.nats_url, prefix=settings.nats_prefix, follow=queries
                )
                feed = partial(bus.feed, event_store, durable=feed_consumer(settings))
            events = bus
        else:
            events = MemoryEventBus(store=event_store)
        opened.push_async_callback(events.aclose)
        keeper = EventKeeper(
            event_store,
            retention=timedelta(days=settings.event_retention_days),
            interval=settings.event_prune_interval,
            feed=feed,
        )
        yield Backends(state, mailbox, events, event_store, info, keeper)


def feed_consumer(settings: Settings) -> str:
    """The durable NATS consumer feeding the event store: one per store name, so that a newly
    chosen store is fed from the start of the stream rather than from where another stopped."""
    return f"{settings.nats_prefix}_store_{re.sub(r'[^A-Za-z0-9_-]', '_', settings.event_store)}"
