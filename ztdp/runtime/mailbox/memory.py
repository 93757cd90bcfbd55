"""A bounded in-memory mailbox on an anyio memory object stream."""

from __future__ import annotations

from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class MemoryMailbox(Generic[T]):
    def __init__(self, size: int) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[T](size)

    async def send(self, message: T) -> None:
        # Enqueue without yielding while there is room: the supervisor relies on a new actor
        # not running (and finding its mailbox empty) before its first message is in.
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            await self._send.send(message)

    def receive_nowait(self) -> T:
        return self._receive.receive_nowait()

    def close(self) -> None:
        self._send.close()
        self._receive.close()
