"""The mailbox seam: how messages reach an actor. Bounded: a full mailbox makes senders wait."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class Mailbox(Protocol, Generic[T]):
    async def send(self, message: T) -> None:
        """Queue a message; waits while the mailbox is full (backpressure).

        With room in the mailbox it must not yield to other tasks before the message is in.
        """
        ...

    def receive_nowait(self) -> T:
        """The next message; raises anyio.WouldBlock when the mailbox is empty."""
        ...

    def close(self) -> None: ...
