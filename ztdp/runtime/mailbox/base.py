"""The mailbox seam: how messages reach actors, in whatever process owns them.

Messages are `Envelope`s of plain data that survive the wire. Actors are spread over
`partitions` (see `ztdp.state.partition_of`); a worker consumes the partitions it holds the
lease of. A delivery is acknowledged only after its actor handled it; one that is not (the
worker died, or gave the partition up) is delivered again, to whoever consumes the partition
next. Per partition, and so per actor, deliveries come in the order they were sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to one actor.

    `id` is its idempotency key: a message sent again with the same id within the
    mailbox's duplicate window is dropped. `deadline` (seconds since the epoch) is when the
    sender stops caring; `headers` carry the trace context and the caller.
    """

    node: str
    kind: str  # apply | delete | observe | reconcile | step | block | advance
    body: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "node": self.node,
                "kind": self.kind,
                "body": self.body,
                "deadline": self.deadline,
                "headers": self.headers,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        return cls(
            node=raw["node"],
            kind=raw["kind"],
            body=raw["body"],
            id=raw["id"],
            deadline=raw["deadline"],
            headers=raw["headers"],
        )

    def expired(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline


class Delivery(Protocol):
    envelope: Envelope
    redelivered: bool  # delivered before and not acknowledged: a previous handler may have died

    async def ack(self) -> None:
        """Handled: never deliver it again."""
        ...

    async def nack(self, delay: float = 0.0) -> None:
        """Not handled: deliver it again after `delay` seconds."""
        ...

    async def in_progress(self) -> None:
        """Still being handled: do not redeliver yet (a heartbeat for long steps)."""
        ...


class Mailbox(Protocol):
    partitions: int

    async def send(self, envelope: Envelope, *, partition: int) -> None:
        """Queue a message durably: once this returns, it survives the sender's crash."""
        ...

    def consume(self, partition: int) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """The partition's deliveries, in order, until the context is left.

        Leaving it with deliveries unacknowledged makes them deliverable again (a memory
        mailbox at once, NATS after its ack wait). One consumer per partition at a time: the
        caller holds the partition's lease.
        """
        ...

    async def pending(self, partition: int) -> int:
        """Messages of the partition not yet acknowledged (queued or being handled)."""
        ...

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the backing service cannot be reached."""
        ...

    async def aclose(self) -> None: ...
