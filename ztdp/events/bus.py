"""The event bus: every change, decision, run and status change as a CloudEvents 1.0 event."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

SOURCE = "/ztdp"


def make_event(
    type_: str,
    *,
    subject: str,
    data: Mapping[str, Any],
    actor: str = "ztdp",
    run: str | None = None,
) -> dict[str, Any]:
    """A CloudEvents 1.0 event in its structured JSON form.

    `type_` is appended to `io.ztdp.`; the extensions `actor` and `runid` say who and which run.
    Built as a dict on the hot path (a run emits several per step); the tests read every kind
    back with the CloudEvents SDK to prove the format.
    """
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": os.urandom(16).hex(),  # 128 random bits, as a UUID4 has
        "source": SOURCE,
        "type": f"io.ztdp.{type_}",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "subject": subject,
        "datacontenttype": "application/json",
        "actor": actor,
    }
    if run is not None:
        event["runid"] = run
    event["data"] = dict(data)
    return event


@dataclass(frozen=True)
class EventFilter:
    node: str | None = None
    run: str | None = None
    type: str | None = None  # a prefix of the type after "io.ztdp.", e.g. "actor" or "run.step"

    def matches(self, event: Mapping[str, Any]) -> bool:
        return (
            (self.node is None or event.get("subject") == self.node)
            and (self.run is None or event.get("runid") == self.run)
            and (self.type is None or str(event.get("type", "")).startswith(f"io.ztdp.{self.type}"))
        )


class EventBus(Protocol):
    async def publish(self, event: dict[str, Any]) -> None: ...

    async def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]: ...

    def subscribe(self, flt: EventFilter) -> Any:
        """An async context manager yielding an async iterator of matching new events."""
        ...

    async def aclose(self) -> None: ...


class MemoryEventBus:
    """Keeps the last `keep` events and fans new ones out to live subscribers.

    A subscriber that falls `buffer` events behind is dropped (its stream ends) rather than
    slowing every publisher down.
    """

    def __init__(self, *, keep: int = 10_000, buffer: int = 1_000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._subscribers: dict[MemoryObjectSendStream[dict[str, Any]], EventFilter] = {}
        self._buffer = buffer

    async def publish(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        for stream, flt in list(self._subscribers.items()):
            if flt.matches(event):
                try:
                    stream.send_nowait(event)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._subscribers.pop(stream, None)
                    stream.close()

    async def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        found = [e for e in self._events if flt.matches(e)]
        return found[-limit:]

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

    async def aclose(self) -> None:
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()
