"""Reconciliation: provider watches make an actor observe at once; what a process owns is
observed from the moment it owns it, restarts included (issue 11, items 1 and 2).

In one process over the memory backends, with a test provider that offers notifications
(the outer boundary); the Kubernetes provider's own watches are tested against the
emulator in plugins/ztdp-kubernetes/tests/test_k8s_watch.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from tests.test_runtime import FakeProvider, Hooks, registry, send_apply
from ztdp.events import EventFilter, MemoryEventBus
from ztdp.providers import Change, Observation, Resource, Target, Watching
from ztdp.runtime import Supervisor
from ztdp.runtime.mailbox import MemoryMailbox
from ztdp.runtime.supervisor import SWEEP_BATCH
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore

# Reconciliation on, its periodic resync out of the way: only watches and takeovers observe.
SETTINGS = Settings(observe_interval=3600, step_timeout=5, retry_backoff=0.01, partitions=4)
NODE = "deployment/a/s@dev"


class WatchedProvider(FakeProvider):
    """A provider that notifies changes the test makes "outside" ZTDP; health as told."""

    def __init__(self) -> None:
        super().__init__("kubernetes")
        self.health_now = "Ready"
        self.watches: list[MemoryObjectSendStream[Change]] = []
        self.watching = anyio.Event()

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        seen = await super().apply(resource=resource, target=target)
        return Observation(state=seen.state, health=self.health_now)  # type: ignore[arg-type]

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        state = self.live.get(resource.node)
        if state is None:
            return None
        return Observation(state=state, health=self.health_now)  # type: ignore[arg-type]

    @asynccontextmanager
    async def watch(self, *, target: Target) -> AsyncIterator[Any]:
        send, receive = anyio.create_memory_object_stream[Change](100)
        self.watches.append(send)
        self.watching.set()
        try:
            async with receive:
                yield receive
        finally:
            self.watches.remove(send)
            send.close()

    async def change(self, node: str, event: Any = "modified") -> None:
        await self.watching.wait()
        for stream in self.watches:
            await stream.send(Change(node=node, event=event))


def worker(
    provider: WatchedProvider, state: MemoryStateStore, events: MemoryEventBus
) -> Supervisor:
    supervisor = Supervisor(
        providers=registry(provider),
        state=state,
        events=events,
        mailbox=MemoryMailbox(SETTINGS.partitions),
        settings=SETTINGS,
    )
    supervisor.hooks = Hooks()
    return supervisor


async def until(events: MemoryEventBus, node: str, type_: str, **data: Any) -> dict[str, Any]:
    """The next event of `type_` about `node` whose data has `data`, within 2 s."""
    async with events.subscribe(EventFilter(node=node, type=type_)) as stream:
        with anyio.fail_after(2):
            while True:
                event = await stream.receive()
                if all(event["data"].get(k) == v for k, v in data.items()):
                    return event  # type: ignore[no-any-return]


def test_the_test_provider_offers_watches() -> None:
    assert isinstance(WatchedProvider(), Watching)


async def test_a_status_change_notified_by_the_provider_reaches_the_actor_at_once() -> None:
    provider, events = WatchedProvider(), MemoryEventBus()
    provider.health_now = "Progressing"  # rolling out
    async with worker(provider, MemoryStateStore(), events) as supervisor:
        async with events.subscribe(EventFilter(node=NODE, type="actor.status")) as seen:
            await send_apply(supervisor, NODE)
            with anyio.fail_after(2):
                while (await seen.receive())["data"]["status"] != "Progressing":
                    pass
        provider.health_now = "Ready"  # the rollout finished: the provider's watch says so
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.change, NODE)
            await until(events, NODE, "actor.status", status="Ready")


async def test_an_outside_edit_notified_by_the_provider_is_repaired_at_once() -> None:
    provider, events = WatchedProvider(), MemoryEventBus()
    async with worker(provider, MemoryStateStore(), events) as supervisor:
        await send_apply(supervisor, NODE, "1")
        await until(events, NODE, "actor.status", status="Ready")
        provider.live[NODE]["version"] = "evil"  # edited behind ZTDP's back
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.change, NODE)
            repaired = until(events, NODE, "drift.repaired")
            await repaired
    assert provider.live[NODE]["version"] == "1"


async def test_after_a_restart_an_outside_deletion_is_noticed_and_repaired() -> None:
    """The first process applied and stopped; the world changed while nobody ran; the next
    process observes what it owns as it takes it, without anyone applying anything."""
    provider, events, state = WatchedProvider(), MemoryEventBus(), MemoryStateStore()
    async with worker(provider, state, events) as first:
        await send_apply(first, NODE, "1")
        await until(events, NODE, "actor.status", status="Ready")
    del provider.live[NODE]  # deleted while no process ran
    restarted = worker(provider, state, events)
    async with events.subscribe(EventFilter(node=NODE, type="drift")) as drift, restarted:
        with anyio.fail_after(2):
            detected = await drift.receive()
            assert detected["type"] == "io.ztdp.drift.detected"
            assert detected["data"]["missing"] is True
            assert (await drift.receive())["type"] == "io.ztdp.drift.repaired"
    assert provider.live[NODE] == {"version": "1"}


class GatedProvider(WatchedProvider):
    """Observations wait at a gate, counting how many are under way at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.gate.set()  # open until a test closes it
        self.observing = self.most = self.observed = 0
        self.expected = 0
        self.crowded = anyio.Event()  # as many under way as a sweep may have
        self.all_observed = anyio.Event()

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        self.observing += 1
        self.most = max(self.most, self.observing)
        if self.observing >= SWEEP_BATCH:
            self.crowded.set()
        try:
            await self.gate.wait()
            return await super().observe(resource=resource, target=target)
        finally:
            self.observing -= 1
            self.observed += 1
            if self.observed == self.expected:
                self.all_observed.set()


async def test_a_sweep_observes_a_bounded_number_of_nodes_at_once_and_reaches_them_all() -> None:
    """Thousands of observations at once kept the loop from renewing leases in time: a
    partition's sweep has at most SWEEP_BATCH in flight, and still observes every node."""
    settings = SETTINGS.model_copy(update={"partitions": 1})
    provider, events, state = GatedProvider(), MemoryEventBus(), MemoryStateStore()
    nodes = [f"deployment/a/s{i}@dev" for i in range(3 * SWEEP_BATCH + 5)]

    def one() -> Supervisor:
        sup = Supervisor(
            providers=registry(provider),
            state=state,
            events=events,
            mailbox=MemoryMailbox(1),
            settings=settings,
        )
        sup.hooks = Hooks()
        return sup

    last = EventFilter(node=nodes[-1], type="actor.status")
    async with one() as first, events.subscribe(last) as seen:
        for node in nodes:
            await send_apply(first, node)
        with anyio.fail_after(5):
            while (await seen.receive())["data"]["status"] != "Ready":
                pass
    provider.gate, provider.observed, provider.most = anyio.Event(), 0, 0
    provider.expected = len(nodes)
    async with one():  # takes the partition over: its sweep starts
        with anyio.fail_after(5):
            await provider.crowded.wait()
        await anyio.wait_all_tasks_blocked()  # anything more the sweep would start, it has
        assert provider.most == SWEEP_BATCH
        provider.gate.set()
        with anyio.fail_after(5):
            await provider.all_observed.wait()
    assert provider.most == SWEEP_BATCH


async def test_an_observation_that_changes_nothing_writes_nothing() -> None:
    """10,000 unchanged actors observed every resync (or taken over at once) would commit
    10,000 identical records; only a change is written, and said."""
    provider, events, state = GatedProvider(), MemoryEventBus(), MemoryStateStore()
    async with worker(provider, state, events) as supervisor:
        await send_apply(supervisor, NODE, "1")
        await until(events, NODE, "actor.status", status="Ready")
        await anyio.wait_all_tasks_blocked()
        before, observed = await state.actor(NODE), provider.observed

        await provider.change(NODE)  # the actor observes: nothing changed
        await anyio.wait_all_tasks_blocked()

        assert provider.observed == observed + 1
        assert await state.actor(NODE) == before
        provider.health_now = "Degraded"
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.change, NODE)
            await until(events, NODE, "actor.status", status="Degraded")
        record = await state.actor(NODE)
        assert record is not None and before is not None
        assert record["status"] == "Degraded" and record["updated_at"] > before["updated_at"]
