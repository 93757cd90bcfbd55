"""The event-store seam: where every event and every graph change is kept, by age.

The bus carries events between processes and to live streams; a store keeps them for as long
as the retention setting says and answers queries about them: `GET /v1/events`,
`GET /v1/changes` and a deployment's status history. Stores are plugins (entry-point group
`ztdp.event_stores`, see `ztdp.events.plugins`); `memory` is built in.

Rules every store keeps (tests/test_event_store.py checks them against each one):

- `append` is idempotent on the event id: an event appended again, in the same batch, in
  another batch or from another process at the same time, is stored once. Feeding a store is
  therefore at-least-once delivery made exactly-once.
- every stored event gets the store's own sequence number, the cursor, which only grows:
  an event appended after a page was read has a higher number than every event on it.
- nothing is evicted because of how many events there are: `prune` removes events by age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from ztdp.events.bus import Event

CHANGED = "io.ztdp.graph.changed"


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events, and which page of them.

    Without `after`: the newest `limit` matching events, oldest first (what a person asking
    "what happened lately" wants). With `after`: the oldest `limit` matching events stored
    after cursor `after`, oldest first (what a reader paging through everything wants).
    """

    node: str | None = None  # the CloudEvents subject
    run: str | None = None
    type: str | None = None  # a prefix of the type after "io.ztdp.", e.g. "actor" or "run.step"
    actor: str | None = None
    since: datetime | None = None  # event time >= since (timezone-aware)
    until: datetime | None = None  # event time < until
    after: int | None = None  # a cursor from an earlier page
    limit: int = 100

    def matches(self, event: Event) -> bool:
        """Whether `event` passes every filter (the cursor and the limit aside)."""
        return (
            (self.node is None or event.subject == self.node)
            and (self.run is None or event.run == self.run)
            and (self.type is None or event.type.startswith(f"io.ztdp.{self.type}"))
            and (self.actor is None or event.actor == self.actor)
            and (self.since is None or _at(event) >= self.since)
            and (self.until is None or _at(event) < self.until)
        )


def _at(event: Event) -> datetime:
    """The event's time as it is rendered and stored: to the microsecond."""
    return datetime.fromtimestamp(event.time, UTC)


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events, oldest first, and the cursor to ask for what comes after them.

    `cursor` is the store sequence of the last event on the page when the page is full, else
    the newest sequence the store had when it answered: asking with `after=cursor` then gives
    exactly the matching events stored since, never one twice, never one skipped.
    """

    events: list[Event] = field(default_factory=list)
    cursor: int = 0


@runtime_checkable
class EventStore(Protocol):
    """Keeps events by age and answers queries about them. Every method is async."""

    async def append(self, events: Sequence[Event]) -> int:
        """Store each event whose id is not stored yet; return how many were new.

        All or nothing for one call. Raises `BackendUnavailable` if the store cannot be
        reached: then none of them is stored by this call, and appending again is harmless.
        """
        ...

    async def query(self, query: EventQuery) -> EventPage:
        """The page of matching events `query` asks for (see `EventQuery`)."""
        ...

    async def changes(self, *, graph: str, since: int, limit: int) -> list[Event]:
        """The `io.ztdp.graph.changed` events of graph `graph` (their `origin`) after revision
        `since` (their `sequence`), by revision, at most `limit`."""
        ...

    async def prune(self, *, before: datetime) -> int:
        """Remove events whose time is before `before`; return how many."""
        ...

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the store cannot be reached."""
        ...

    async def aclose(self) -> None:
        """Release connections; calling it again is harmless."""
        ...


REQUIRED_METHODS = ("append", "query", "changes", "prune", "ping", "aclose")
