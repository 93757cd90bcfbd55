"""The event bus: every change, decision, run and status change as a CloudEvents 1.0 event."""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ztdp.contracts import SYSTEM_PRINCIPAL

SOURCE = "/ztdp"


_PROCESS = os.urandom(8).hex()  # event ids are this process's prefix and a sequence number
_sequence = itertools.count(1)


def _new_process_prefix() -> None:
    """A forked child is another event source: without its own prefix it would repeat its
    parent's ids, and a bus that deduplicates by id (NATS) would drop its events."""
    global _PROCESS, _sequence
    _PROCESS = os.urandom(8).hex()
    _sequence = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process_prefix)


class Event(NamedTuple):
    """An event as it was recorded; `cloudevent()` is its CloudEvents 1.0 structured form.

    Recording is on the hot path (a run records several per step), so it only notes the
    facts; the CloudEvents document is rendered when someone reads the event.
    """

    type: str  # full type, e.g. io.ztdp.run.step
    subject: str
    data: Mapping[str, Any]
    actor: str
    run: str | None
    time: float  # seconds since the epoch
    sequence: int
    origin: str  # the recording process's random prefix

    @property
    def id(self) -> str:
        # unique per source, as CloudEvents requires: a random per-process prefix and a count
        return f"{self.origin}-{self.sequence:012x}"

    @classmethod
    def from_cloudevent(cls, event: Mapping[str, Any]) -> Event:
        """The event whose `cloudevent()` is `event`, as read back from a transport or store.

        Raises ValueError for anything else (another source, a foreign id, a missing or extra
        attribute): what renders differently was not recorded by ZTDP.
        """
        try:
            origin, _, count = event["id"].rpartition("-")
            recorded = cls(
                type=event["type"],
                subject=event["subject"],
                data=dict(event["data"]),
                actor=event["actor"],
                run=event.get("runid"),
                time=datetime.fromisoformat(event["time"]).timestamp(),
                sequence=int(count, 16),
                origin=origin,
            )
            same = recorded.cloudevent() == event
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a ZTDP event ({exc!r}): {_excerpt(event)}") from exc
        if not same:
            raise ValueError(f"not a ZTDP event (it would not render alike): {_excerpt(event)}")
        return recorded

    def cloudevent(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": SOURCE,
            "type": self.type,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z"),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "actor": self.actor,
        }
        if self.run is not None:
            event["runid"] = self.run
        event["data"] = dict(self.data)
        return event


def _excerpt(event: object) -> str:
    text = repr(event)
    return text if len(text) <= 200 else f"{text[:200]}..."


def make_event(
    type_: str,
    *,
    subject: str,
    data: Mapping[str, Any],
    actor: str = SYSTEM_PRINCIPAL,
    run: str | None = None,
) -> Event:
    """Record an event of type `io.ztdp.<type_>`.

    The extensions `actor` and `runid` of its CloudEvents form say who and which run. `data`
    must not change afterwards: it is rendered when the event is read. The tests read every
    kind back with the CloudEvents SDK to prove the format.
    """
    return Event(
        f"io.ztdp.{type_}",
        subject,
        bounded(data),
        actor,
        run,
        time.time(),
        next(_sequence),
        _PROCESS,
    )


MAX_TEXT = 8192  # characters of one string in an event's data
MAX_ITEMS = 1000  # items of one list in an event's data


def bounded(value: Any) -> Any:
    """`value` with long strings and lists cut, saying so: an event is a record of what
    happened, and a provider's megabyte-long error or a huge drift must not make it too big to
    publish (NATS refuses messages over its payload limit) or to read."""
    if isinstance(value, str):
        if len(value) <= MAX_TEXT:
            return value
        return f"{value[:MAX_TEXT]}... ({len(value) - MAX_TEXT} more characters)"
    if isinstance(value, Mapping):
        return {k: bounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [bounded(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... ({len(value) - MAX_ITEMS} more)")
        return items
    return value


def make_change_event(
    *, graph: str, revision: int, subject: str, actor: str, data: Mapping[str, Any]
) -> Event:
    """The `io.ztdp.graph.changed` event of revision `revision` of graph `graph`.

    Its id is the graph's id and the revision, not this process's count: a change is one
    event whoever records it and however often, and stores find a graph's changes by it.
    """
    return Event("io.ztdp.graph.changed", subject, data, actor, None, time.time(), revision, graph)


@dataclass(frozen=True)
class EventFilter:
    node: str | None = None
    run: str | None = None
    type: str | None = None  # a prefix of the type after "io.ztdp.", e.g. "actor" or "run.step"
    actor: str | None = None

    def matches(self, event: Event) -> bool:
        return (
            (self.node is None or event.subject == self.node)
            and (self.run is None or event.run == self.run)
            and (self.type is None or event.type.startswith(f"io.ztdp.{self.type}"))
            and (self.actor is None or event.actor == self.actor)
        )


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        """The last `limit` matching events, oldest first, in their CloudEvents form."""
        ...

    def subscribe(self, flt: EventFilter) -> Any:
        """An async context manager yielding a stream of matching new events (CloudEvents)."""
        ...

    async def sync(self) -> None:
        """Wait (bounded) until the event store holds every event this process published or
        saw, so that a query of the store right after a publish finds it."""
        ...

    async def aclose(self) -> None: ...


class EventIndex:
    """The last `keep` events of a bus in its order, and its live subscribers.

    Every bus serves `query` and `subscribe` from one of these, whatever carries its events
    between processes. A subscriber that falls `buffer` events behind is dropped (its stream
    ends) rather than slowing every publisher down.
    """

    def __init__(self, *, keep: int, buffer: int) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._subscribers: dict[MemoryObjectSendStream[dict[str, Any]], EventFilter] = {}
        self._buffer = buffer

    def add(self, event: Event) -> None:
        self._events.append(event)
        if not self._subscribers:
            return
        rendered = None
        for stream, flt in list(self._subscribers.items()):
            if flt.matches(event):
                rendered = rendered or event.cloudevent()
                try:
                    stream.send_nowait(rendered)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._subscribers.pop(stream, None)
                    stream.close()

    def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        found = [e for e in self._events if flt.matches(e)]
        return [e.cloudevent() for e in found[-limit:]]

    @asynccontextmanager
    async def subscribe(
        self, flt: EventFilter
    ) -> AsyncIterator[MemoryObjectReceiveStream[dict[str, Any]]]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](self._buffer)
        self._subscribers[send] = flt
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.pop(send, None)
            send.close()

    def close(self) -> None:
        """End every subscriber's stream."""
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()


class _Store(Protocol):  # what the bus needs of an EventStore (ztdp.events.store imports us)
    async def append(self, events: Sequence[Event]) -> int: ...


class MemoryEventBus:
    """The bus of one process: keeps the last `keep` events and fans new ones out to live
    subscribers (see `EventIndex`).

    With a `store`, publishing appends the event to it first: if the store cannot take it the
    event is not published at all and `publish` raises (`BackendUnavailable`), so a caller
    learns that the event was not recorded instead of the audit trail losing it quietly.
    """

    def __init__(
        self, *, keep: int = 10_000, buffer: int = 1_000, store: _Store | None = None
    ) -> None:
        self._index = EventIndex(keep=keep, buffer=buffer)
        self._store = store

    async def publish(self, event: Event) -> None:
        if self._store is not None:
            await self._store.append((event,))
        self._index.add(event)

    async def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        return self._index.query(flt, limit=limit)

    def subscribe(
        self, flt: EventFilter
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[dict[str, Any]]]:
        return self._index.subscribe(flt)

    async def sync(self) -> None:
        return None  # the store took each event before `publish` returned

    async def aclose(self) -> None:
        self._index.close()
