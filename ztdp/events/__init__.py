"""Events: CloudEvents 1.0 on a pluggable bus (memory, or NATS JetStream in
`ztdp.events.nats`), kept in a pluggable event store (`ztdp.events.store`)."""

from ztdp.events.bus import (
    Event,
    EventBus,
    EventFilter,
    MemoryEventBus,
    make_change_event,
    make_event,
)
from ztdp.events.memory_store import MemoryEventStore
from ztdp.events.plugins import EventStoreInfo, open_event_store
from ztdp.events.store import EventPage, EventQuery, EventStore

__all__ = [
    "Event",
    "EventBus",
    "EventFilter",
    "EventPage",
    "EventQuery",
    "EventStore",
    "EventStoreInfo",
    "MemoryEventBus",
    "MemoryEventStore",
    "make_change_event",
    "make_event",
    "open_event_store",
]
