"""Mailboxes in this process's memory, behaving as the NATS ones do.

Every message is encoded when sent and decoded when delivered (as Dramatiq's StubBroker
does), so the unit tests prove that every message survives the wire; ids are deduplicated
within a window; unacknowledged deliveries are delivered again.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from ztdp.runtime.mailbox.base import Envelope

DUPLICATE_WINDOW = 120.0  # seconds, as JetStream's default


@dataclass(slots=True)
class _Queued:
    data: bytes
    sequence: int
    deliveries: int = 0
    not_before: float = 0.0  # monotonic time of a delayed redelivery


@dataclass(slots=True)
class _Partition:
    queue: deque[_Queued] = field(default_factory=deque)
    unacked: dict[int, _Queued] = field(default_factory=dict)
    wake: anyio.Event = field(default_factory=anyio.Event)
    consumed: bool = False

    def notify(self) -> None:
        self.wake.set()
        self.wake = anyio.Event()


class MemoryDelivery:
    __slots__ = ("_item", "_partition", "_settled", "envelope", "redelivered")

    def __init__(self, partition: _Partition, item: _Queued) -> None:
        self._partition, self._item = partition, item
        self.envelope = Envelope.decode(item.data)
        self.redelivered = item.deliveries > 1
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._partition.unacked.pop(self._item.sequence, None)

    async def nack(self, delay: float = 0.0) -> None:
        if not self._settled:
            self._settled = True
            if self._partition.unacked.pop(self._item.sequence, None) is not None:
                self._item.not_before = time.monotonic() + delay
                _requeue(self._partition, [self._item])

    async def in_progress(self) -> None:
        return None  # nothing redelivers a memory delivery behind its handler's back


def _requeue(partition: _Partition, items: list[_Queued]) -> None:
    """Back to the queue in send order, ahead of what came after them (as redeliveries are)."""
    merged = sorted([*items, *partition.queue], key=lambda q: q.sequence)
    partition.queue = deque(merged)
    partition.notify()


class MemoryMailbox:
    def __init__(self, partitions: int = 16) -> None:
        self.partitions = partitions
        self._parts = [_Partition() for _ in range(partitions)]
        self._sequence = 0
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> when sent

    async def send(self, envelope: Envelope, *, partition: int) -> None:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now - DUPLICATE_WINDOW:
            self._seen.popitem(last=False)
        if envelope.id in self._seen:
            return  # a duplicate: dropped, as JetStream drops a repeated Nats-Msg-Id
        self._seen[envelope.id] = now
        self._sequence += 1
        part = self._parts[partition]
        part.queue.append(_Queued(envelope.encode(), self._sequence))
        part.notify()
        # A send over a network yields; so does this one, so that a sender in a loop does not
        # starve the receivers (and the lease renewals) of its own process.
        await anyio.lowlevel.checkpoint()

    @asynccontextmanager
    async def consume(self, partition: int) -> AsyncIterator[AsyncIterator[MemoryDelivery]]:
        part = self._parts[partition]
        if part.consumed:
            raise RuntimeError(f"partition {partition} already has a consumer")
        part.consumed = True
        try:
            yield self._deliveries(part)
        finally:
            part.consumed = False
            if part.unacked:  # its consumer left without settling them: deliver them again
                items = list(part.unacked.values())
                part.unacked.clear()
                _requeue(part, items)

    async def _deliveries(self, part: _Partition) -> AsyncIterator[MemoryDelivery]:
        while True:
            now = time.monotonic()
            item = next((q for q in part.queue if q.not_before <= now), None)
            if item is None:
                wake = part.wake
                delays = [q.not_before - now for q in part.queue]
                with anyio.move_on_after(min(delays) if delays else None):
                    await wake.wait()
                continue
            part.queue.remove(item)
            item.deliveries += 1
            part.unacked[item.sequence] = item
            yield MemoryDelivery(part, item)

    async def pending(self, partition: int) -> int:
        part = self._parts[partition]
        return len(part.queue) + len(part.unacked)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
