"""A capacity limit shared fairly by the partitions of a process.

The process-wide bound on messages handled at once (`ZTDP_ACTOR_CONCURRENCY`) is taken by
the actors of every partition the process owns. With one first-come, first-served queue, a
takeover's partitions were served one after another: the first partition's backlog of
thousands of messages queued before the last partition's first one, which then waited
seconds to start (a run coordinator there with it). Here each partition waits in a queue of
its own and a freed slot goes to the next partition in turn that has a waiter: every
partition handles from the start, each at its share of the bound.
"""

from __future__ import annotations

from collections import deque

import anyio


class FairLimiter:
    """At most `total` holders at once; while some wait, each freed slot goes to the next
    key (partition) in turn that has waiters, its oldest waiter first."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"a limit of {total} lets nothing run")
        self.total = total
        self.borrowed = 0
        # Keys with waiters, in turn order: the key served goes to the back.
        self._waiting: dict[int, deque[anyio.Event]] = {}

    def acquire_nowait(self) -> None:
        """Take a slot if one is free and nobody waits; raises anyio.WouldBlock if not."""
        if self.borrowed >= self.total or self._waiting:
            raise anyio.WouldBlock
        self.borrowed += 1

    async def acquire(self, key: int) -> None:
        """Take a slot, waiting in `key`'s queue for one if none is free."""
        try:
            self.acquire_nowait()
        except anyio.WouldBlock:
            pass
        else:
            return
        granted = anyio.Event()
        queue = self._waiting.setdefault(key, deque())
        queue.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # handed the slot as it was cancelled: hand it on
                self.release()
            else:
                queue.remove(granted)
                if not queue and self._waiting.get(key) is queue:
                    del self._waiting[key]
            raise

    def release(self) -> None:
        """Give a slot back: to the next key's oldest waiter, or free."""
        if self.borrowed <= 0:  # a release without an acquire would let one more in
            raise RuntimeError("released a slot of a FairLimiter that nobody holds")
        if not self._waiting:
            self.borrowed -= 1
            return
        key = next(iter(self._waiting))
        queue = self._waiting.pop(key)
        granted = queue.popleft()
        if queue:
            self._waiting[key] = queue  # to the back of the turn
        granted.set()  # the slot passes to it: `borrowed` stays

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())
