"""The embedded default event store: this process's memory, kept by age only.

Nothing is evicted for being one too many: a busy caller's writes cannot push anyone's
earlier events out. Memory grows with the retention window (`ZTDP_EVENT_RETENTION_DAYS`); an
installation that keeps much, or must keep it across restarts, uses a durable store
(`ZTDP_EVENT_STORE=postgres`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter

from ztdp.events.bus import Event
from ztdp.events.store import CHANGED, EventPage, EventQuery

_SEQ = itemgetter(0)


class MemoryEventStore:
    def __init__(self) -> None:
        self._head = 0  # the last sequence given out
        self._events: list[tuple[int, Event]] = []  # by sequence
        self._by_node: dict[str, list[tuple[int, Event]]] = {}  # the same, per subject
        self._ids: set[str] = set()
        # graph id -> (revisions in order, the change event of each)
        self._changes: dict[str, tuple[list[int], dict[int, Event]]] = {}

    async def append(self, events: Sequence[Event]) -> int:
        return self.add(events)

    def add(self, events: Sequence[Event]) -> int:
        """`append`, for a caller that cannot await (a bus's follower)."""
        new = 0
        for event in events:
            if event.id in self._ids:
                continue
            self._ids.add(event.id)
            self._head += 1
            self._events.append((self._head, event))
            self._by_node.setdefault(event.subject, []).append((self._head, event))
            new += 1
            if event.type == CHANGED:
                revisions, by_revision = self._changes.setdefault(event.origin, ([], {}))
                if event.sequence not in by_revision:
                    bisect.insort(revisions, event.sequence)
                by_revision[event.sequence] = event
        return new

    async def query(self, query: EventQuery) -> EventPage:
        limit, found = query.limit, []
        if limit <= 0:
            return EventPage([], self._head if query.after is None else query.after)
        events = self._events if query.node is None else self._by_node.get(query.node, [])
        if query.after is None:  # the newest `limit`, oldest first
            for _, event in reversed(events):
                if query.matches(event):
                    found.append(event)
                    if len(found) == limit:
                        break
            found.reverse()
            return EventPage(found, self._head)
        start = bisect.bisect_right(events, query.after, key=_SEQ)
        for sequence, event in events[start:]:
            if query.matches(event):
                found.append(event)
                if len(found) == limit:
                    return EventPage(found, sequence)
        return EventPage(found, max(self._head, query.after))

    async def changes(self, *, graph: str, since: int, limit: int) -> list[Event]:
        revisions, by_revision = self._changes.get(graph, ([], {}))
        start = bisect.bisect_right(revisions, since)
        return [by_revision[r] for r in revisions[start : start + max(limit, 0)]]

    async def prune(self, *, before: datetime) -> int:
        cutoff = before.timestamp()
        kept = [(s, e) for s, e in self._events if e.time >= cutoff]
        removed = len(self._events) - len(kept)
        if not removed:
            return 0
        self._events = kept
        self._ids = {e.id for _, e in kept}
        self._by_node = {}
        for item in kept:
            self._by_node.setdefault(item[1].subject, []).append(item)
        for graph, (revisions, by_revision) in list(self._changes.items()):
            for revision in [r for r, e in by_revision.items() if e.time < cutoff]:
                del by_revision[revision]
            revisions[:] = [r for r in revisions if r in by_revision]
            if not revisions:
                del self._changes[graph]
        return removed

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
