"""Ownership of actors among workers, in one process over the memory backends: shares, hand
over, fencing and failover of a run. (tests/test_distributed.py does it with processes.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from tests.test_runtime import FakeProvider, Hooks, apply, plan_step, registry, run_of
from ztdp.errors import Fenced
from ztdp.events import EventFilter, MemoryEventBus
from ztdp.runtime import StartRefused, Status, Supervisor
from ztdp.runtime.mailbox import MemoryMailbox
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore, PutActor

SETTINGS = Settings(
    partitions=8,
    lease_ttl=0.3,
    step_timeout=5,
    retry_backoff=0.01,
    observe_interval=0,
)


class Shared:
    """What workers of one installation share: the state store, mailboxes and event bus."""

    def __init__(self) -> None:
        self.state = MemoryStateStore()
        self.mailbox = MemoryMailbox(SETTINGS.partitions)
        self.events = MemoryEventBus()
        self.kube = FakeProvider("kubernetes", delay=0.02)

    def worker(self, name: str, *, exclusive: bool = False) -> Supervisor:
        supervisor = Supervisor(
            providers=registry(self.kube),
            state=self.state,
            events=self.events,
            mailbox=self.mailbox,
            settings=SETTINGS,
            exclusive=exclusive,
            member=name,
        )
        supervisor.hooks = Hooks()
        return supervisor


async def eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 5) -> None:
    with anyio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110 - leases are renewed on a clock
            await anyio.sleep(0.02)


async def test_a_worker_that_joins_takes_its_share_and_one_that_stops_hands_over() -> None:
    shared = Shared()
    a, b = shared.worker("a"), shared.worker("b")
    async with a:
        assert a.owned == list(range(8))
        async with b:

            async def halves() -> bool:
                return len(a.owned) == 4 and len(b.owned) == 4

            await eventually("an even share", halves)
            assert sorted(a.owned + b.owned) == list(range(8))
            assert await a.owners() == {"a": a.owned, "b": b.owned}
        # b stopped cleanly: it released its leases, a takes them at its next round
        with anyio.fail_after(SETTINGS.lease_ttl):
            while len(a.owned) < 8:  # noqa: ASYNC110
                await anyio.sleep(0.02)


async def test_a_write_under_a_lost_lease_is_refused_and_the_worker_lets_go() -> None:
    shared = Shared()
    a = shared.worker("a")
    async with a:
        fence = a._ownership.fences[3]
        # Behind a's back (as if it had been paused past its lease): the lease is taken over.
        await shared.state.release(fence)
        taken = await shared.state.acquire(3, "b", ttl=60)
        assert taken is not None and taken.token > fence.token
        with pytest.raises(Fenced, match="a no longer holds partition 3"):
            await shared.state.commit([PutActor("n", {"late": True})], fence=fence)
        assert await shared.state.actor("n") is None

        async def let_go() -> bool:
            return 3 not in a.owned

        await eventually("a to give partition 3 up", let_go)


async def test_a_second_exclusive_runtime_is_refused_at_start() -> None:
    shared = Shared()
    async with shared.worker("a", exclusive=True):
        with pytest.raises(StartRefused, match=r"another ZTDP process \(a\) runs actors"):
            async with shared.worker("b", exclusive=True):
                pass


async def test_a_run_goes_on_when_the_worker_running_it_leaves_in_the_middle() -> None:
    shared = Shared()
    shared.kube.delay = 0.05
    a, b = shared.worker("a"), shared.worker("b")
    waves = [{"index": i, "steps": [plan_step(f"n{i}-{j}") for j in range(10)]} for i in range(4)]
    for i in range(1, 4):
        for j, step in enumerate(waves[i]["steps"]):
            step["depends_on"] = [f"n{i - 1}-{j}"]
    run = run_of(waves)
    flt = EventFilter(run=run.id, type="run.finished")
    async with shared.events.subscribe(flt) as finished, b:
        async with a:

            async def shared_out() -> bool:
                return len(a.owned) == 4 and len(b.owned) == 4

            await eventually("an even share", shared_out)
            await a.start_run(run, waves)
            with anyio.fail_after(5):
                while len(shared.kube.applied) < 10:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            a_had = a.owned
        assert a_had  # a did part of the work and left with steps in flight
        with anyio.fail_after(10):
            await finished.receive()
    recorded = await shared.state.run(run.id)
    assert recorded.status == "Succeeded"
    assert {s.status for s in recorded.steps} == {"Ready"}
    assert sorted(shared.kube.live) == sorted(s["node"] for w in waves for s in w["steps"])


async def test_a_partition_taken_again_while_its_last_tenure_stops_waits_for_it() -> None:
    """Fenced on a write, a worker lets the partition go; if its next round takes it again
    before the old consumer has left, the new one waits instead of crashing the worker."""
    shared = Shared()
    a = shared.worker("a")
    async with a:
        fence = a._ownership.fences[3]
        await shared.state.release(fence)  # as if it had expired: b takes it, then gives it up
        taken = await shared.state.acquire(3, "b", ttl=60)
        assert taken is not None
        await shared.state.release(taken)
        node = next(
            n for n in (f"deployment/a/s{i}@dev" for i in range(100)) if a.partition(n) == 3
        )

        async def back() -> bool:
            return 3 in a.owned and a._ownership.fences[3].token > taken.token

        await eventually("a to hold partition 3 again", back)
        state = await apply(a, node)  # its new consumer works
    assert state.status is Status.READY
