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
ROOM = 32  # messages sent, over all partitions, between two sends that yield


@dataclass(slots=True)
class _Queued:
    data: bytes
    sequence: int
    deliveries: int = 0
    not_before: float = 0.0  # monotonic time of a delayed redelivery


@dataclass(slots=True)
class _Partition:
    queue: deque[_Queued] = field(default_factory=deque)  # in send order
    unacked: dict[int, _Queued] = field(default_factory=dict)
    wake: anyio.Event | None = None  # while its consumer waits for mail
    consumed: bool = False

    def notify(self) -> None:
        if self.wake is not None:
            self.wake.set()
            self.wake = None


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
        self._unyielded = 0  # messages sent since a send last yielded
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
        self._unyielded += 1
        if self._unyielded >= ROOM:
            # A sender in a loop must not starve the receivers (and the lease renewals) of its
            # own process: every few messages it lets them run, as a full stream would make
            # it. Not at every one: a yield per send costs a turn of the event loop.
            self._unyielded = 0
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
            queue = part.queue
            if queue and not queue[0].not_before:  # the usual case: the first one is due
                item = queue.popleft()
            else:
                # Redeliveries that wait out a delay keep their place in the order, and what
                # comes after them may go first meanwhile.
                now = time.monotonic()
                index = next((i for i, q in enumerate(queue) if q.not_before <= now), None)
                if index is None:
                    wake = part.wake = anyio.Event()
                    if queue:
                        with anyio.move_on_after(min(q.not_before for q in queue) - now):
                            await wake.wait()
                    else:
                        await wake.wait()
                    continue
                item = queue[index]
                del queue[index]
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
