"""Which worker runs which actors: leases on partitions, shared fairly among live workers.

Every worker says it is alive (`StateStore.join`) and holds leases on partitions, renewing
them every sixth of their time to live. Each aims at its share, ceil(partitions / live
workers): a worker over its share gives partitions up (after stopping their work), one under
it takes free ones. A worker that dies stops renewing; its leases expire after `lease_ttl` and
the others take its partitions at their next round. A lease's token is the fence of every
write made under it, so a worker that lost a lease without noticing (paused, cut off) has its
late writes refused.

With in-process mailboxes (`exclusive`), messages cannot reach another process: one worker
must own every partition, and a second one is refused at start instead of fighting.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio

from ztdp.errors import BackendUnavailable, ZtdpError
from ztdp.state import Fence, StateStore

log = logging.getLogger("ztdp.runtime.ownership")

ROUNDS_PER_TTL = 6  # lease rounds per lease time to live: two calls each, cheap


class StartRefused(ZtdpError):
    """Starting would make two processes fight over the same actors: change the settings."""

    title = "Start refused"


class Ownership:
    def __init__(
        self,
        state: StateStore,
        *,
        member: str,
        partitions: int,
        ttl: float,
        exclusive: bool,
        take: Callable[[Fence], Awaitable[None]],
        drop: Callable[[int], Awaitable[None]],
    ) -> None:
        self._state = state
        self.member = member
        self._partitions = partitions
        self._ttl = ttl
        self.exclusive = exclusive
        self._take = take  # start working on a partition under this fence
        self._drop = drop  # stop working on a partition (and wait until it has stopped)
        self.fences: dict[int, Fence] = {}
        self.stopping = False  # set at shutdown: renew, but neither take nor rebalance
        self._held_since: dict[int, float] = {}  # when each lease was last taken or renewed

    async def start(self) -> None:
        """Join; in exclusive mode, refuse if another process runs actors on this store."""
        recorded = await self._state.partitions(self._partitions)
        if recorded != self._partitions:
            raise StartRefused(
                f"this installation spreads its actors over {recorded} partitions and this "
                f"process over {self._partitions}: a node would belong to two owners at once; "
                f"set ZTDP_PARTITIONS={recorded}"
            )
        members = await self._state.join(self.member, ttl=self._ttl)
        if not self.exclusive:
            await self.round()  # its share of what is free now; the rest as others let go
            return
        # A process that was killed is still a member until its entry expires: wait that out.
        with anyio.move_on_after(self._ttl + 0.5):
            while [m for m in members if m != self.member]:
                await anyio.sleep(self._ttl / 4)
                members = await self._state.join(self.member, ttl=self._ttl)
        others = [m for m in members if m != self.member]
        if others:
            raise StartRefused(
                f"another ZTDP process ({others[0]}) runs actors on this state store with "
                "in-process mailboxes (ZTDP_MAILBOX=memory); a second one would act on the same "
                "nodes without seeing its messages. Share the work through NATS "
                "(ZTDP_MAILBOX=nats), or stop the other process first"
            )
        # Every partition, including those a killed predecessor held until they expire.
        with anyio.move_on_after(self._ttl + 1.0):
            while len(self.fences) < self._partitions:
                await self._acquire_free(self._partitions)
                if len(self.fences) < self._partitions:
                    await anyio.sleep(self._ttl / 4)
        if len(self.fences) < self._partitions:
            raise StartRefused(
                f"could not take every partition of the actors within {self._ttl + 1:g} s: "
                "another process holds them; with in-process mailboxes only one may run"
            )

    async def run(self) -> None:
        """Renew, rebalance and take over, every sixth of the lease's time to live: a dead
        worker's partitions are taken at most that long after its leases ran out."""
        while True:
            await anyio.sleep(self._ttl / ROUNDS_PER_TTL)
            try:
                await self.round()
            except BackendUnavailable as exc:
                log.warning("ownership: %s", exc.detail)
            await self._let_expired_go()

    async def _let_expired_go(self) -> None:
        """Stop working on partitions whose leases could not be renewed in time (the store is
        away from here): by now another worker may hold them, and nothing here may act on
        their nodes any more, fenced writes or not (a provider call is not fenced)."""
        limit = time.monotonic() - self._ttl * 0.8
        for partition, since in list(self._held_since.items()):
            if since < limit and partition in self.fences:
                log.warning(
                    "could not renew the lease on partition %d in time; letting it go", partition
                )
                self.fences.pop(partition, None)
                self._held_since.pop(partition, None)
                await self._drop(partition)

    async def round(self) -> None:
        members = await self._state.join(self.member, ttl=self._ttl)
        # Every lease is renewed before any lost one is dropped: stopping a partition's work
        # takes time, and waiting for it first could let the other leases run out too.
        # All in one round trip: one at a time, each waited its turn on a busy event loop.
        fences = list(self.fences.values())
        asked = time.monotonic()  # the leases run from before the call, not after it
        renewed = await self._state.renew(fences, ttl=self._ttl)
        lost = []
        for fence in fences:
            partition = fence.partition
            if partition in renewed:
                if self.fences.get(partition) is fence:
                    self._held_since[partition] = asked
            else:
                log.warning("lost the lease on partition %d", partition)
                if self.fences.get(partition) is fence:
                    self.fences.pop(partition, None)  # a fenced write may have let it go
                    self._held_since.pop(partition, None)
                lost.append(partition)
        for partition in lost:
            await self._drop(partition)
        if self.stopping:
            return  # keep what it holds while it finishes, take nothing new
        share = self._partitions if self.exclusive else self.share(members)
        if len(self.fences) > share:
            for partition in sorted(self.fences)[share:]:
                await self.give_up(partition)
        elif len(self.fences) < share:
            await self._acquire_free(share)

    def share(self, members: list[str]) -> int:
        return math.ceil(self._partitions / max(1, len(members)))

    async def _acquire_free(self, share: int) -> None:
        holders = await self._state.holders()
        free = [p for p in range(self._partitions) if p not in holders]
        for partition in free:
            if len(self.fences) >= share:
                return
            asked = time.monotonic()
            fence = await self._state.acquire(partition, self.member, ttl=self._ttl)
            if fence is not None:
                self.fences[partition] = fence
                self._held_since[partition] = asked
                await self._take(fence)

    async def give_up(self, partition: int) -> None:
        """Stop working on a partition, then release it for another worker to take at once."""
        fence = self.fences.pop(partition, None)
        self._held_since.pop(partition, None)
        await self._drop(partition)
        if fence is not None:
            await self._state.release(fence)

    async def stop(self) -> None:
        """Give every partition up and leave (a clean shutdown: no one waits for expiry)."""
        for partition in list(self.fences):
            try:
                await self.give_up(partition)
            except BackendUnavailable:
                self.fences.pop(partition, None)  # it expires by itself
        with contextlib.suppress(BackendUnavailable):
            await self._state.leave(self.member)
