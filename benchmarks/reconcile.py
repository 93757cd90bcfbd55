"""Reconciliation figures (issue 11): 10,000 observed actors with a 30 s resync.

1. CPU of idle reconciliation: the process's CPU time over two resync intervals with nothing
   changing, as a share of one core. Goal < 20 %. Beside it, the same process over an
   equal window with the same 10,000 actors and reconciliation off (its floor: the loop,
   lease renewals).
2. Drift repaired within 2 s of the notification: an outside edit of one node, notified by the
   provider's watch, until its `drift.repaired` event; 50 nodes one after another, with the
   10,000 actors in place. Goal: every one < 2 s.

In one process on the memory backends (the embedded default), with a provider that keeps its
objects in memory and notifies edits (the outer boundary), on the loop `ztdp serve` runs on.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

sys.path.insert(0, str(Path(__file__).parent))

from ztdp.cli.process import loop_factory, settle_heap
from ztdp.events import EventFilter, MemoryEventBus
from ztdp.providers import Change, Observation, ProviderInfo, ProviderRegistry, Resource, Target
from ztdp.runtime import Supervisor
from ztdp.runtime.mailbox import MemoryMailbox
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore

ACTORS, RESYNC, DRIFTS = 10_000, 30.0, 50


class WatchedMemoryProvider:
    """Objects in a dict; `edit` changes one behind ZTDP's back and notifies the watches."""

    kind = "kubernetes"

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.watches: list[MemoryObjectSendStream[Change]] = []
        self.observed = 0

    async def validate(self, *, resource: Resource) -> None:
        return None

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            {"path": k, "before": observed.get(k), "after": v}
            for k, v in desired.items()
            if observed.get(k) != v
        ]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.live[resource.node] = dict(resource.desired)
        return Observation(state=dict(resource.desired), health="Ready")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        self.observed += 1
        state = self.live.get(resource.node)
        return None if state is None else Observation(state=state, health="Ready")

    async def delete(self, *, resource: Resource, target: Target) -> None:
        self.live.pop(resource.node, None)

    async def health(self, *, resource: Resource, target: Target) -> str:
        return "Ready"

    async def aclose(self) -> None:
        return None

    @asynccontextmanager
    async def watch(self, *, target: Target) -> AsyncIterator[Any]:
        send, receive = anyio.create_memory_object_stream[Change](1000)
        self.watches.append(send)
        try:
            async with receive:
                yield receive
        finally:
            self.watches.remove(send)
            send.close()

    async def edit(self, node: str) -> None:
        self.live[node]["image"] = "evil:latest"
        for stream in self.watches:
            await stream.send(Change(node=node, event="modified"))


def node(i: int) -> str:
    return f"deployment/app-{i // 100}/svc-{i % 100}@dev"


async def populate(sup: Supervisor, events: MemoryEventBus) -> None:
    """ACTORS actors, each applied once and Ready."""
    last = node(ACTORS - 1)
    async with events.subscribe(EventFilter(node=last, type="actor.status")) as seen:
        for i in range(ACTORS):
            desired = {"version": "1.0.0", "image": f"svc-{i}:1.0.0", "replicas": 1}
            resource = Resource(node(i), "deployment", f"svc-{i % 100}", f"app-{i // 100}", desired)
            await sup.apply(resource, Target("dev"), provider="kubernetes")
        with anyio.fail_after(120):
            while (await seen.receive())["data"]["status"] != "Ready":
                pass


async def idle_cpu(reconcile: bool) -> tuple[float, int]:
    """Share of one core the process used over two resync intervals, nothing changing."""
    provider, events = WatchedMemoryProvider(), MemoryEventBus()
    settings = Settings(observe_interval=RESYNC if reconcile else 0, step_timeout=60)
    sup = Supervisor(
        providers=_registry(provider),
        state=MemoryStateStore(),
        events=events,
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    async with sup:
        await populate(sup, events)
        settle_heap()
        provider.observed = 0
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(2 * RESYNC)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return share, provider.observed


async def drift_repairs() -> list[float]:
    provider, events = WatchedMemoryProvider(), MemoryEventBus()
    settings = Settings(observe_interval=RESYNC, step_timeout=60)
    sup = Supervisor(
        providers=_registry(provider),
        state=MemoryStateStore(),
        events=events,
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    latencies = []
    async with sup:
        await populate(sup, events)
        while not provider.watches:  # noqa: ASYNC110  (the watch starts with the first target)
            await anyio.sleep(0.01)
        for k in range(DRIFTS):
            target = node(k * (ACTORS // DRIFTS))
            async with events.subscribe(EventFilter(node=target, type="drift.repaired")) as done:
                start = time.perf_counter()
                await provider.edit(target)
                with anyio.fail_after(30):
                    await done.receive()
                latencies.append(time.perf_counter() - start)
            assert provider.live[target]["image"] != "evil:latest"
    return latencies


def _registry(provider: WatchedMemoryProvider) -> ProviderRegistry:
    reg = ProviderRegistry()
    reg.register(provider, ProviderInfo("kubernetes", "benchmarks", "benchmarks", "0"))
    return reg


async def main() -> None:
    floor, _ = await idle_cpu(reconcile=False)
    share, observed = await idle_cpu(reconcile=True)
    print(
        f"idle reconciliation, {ACTORS:,} actors, {RESYNC:.0f} s resync: {share:.1%} of one core "
        f"over {2 * RESYNC:.0f} s ({observed:,} observations; goal < 20 %); "
        f"the same process with reconciliation off: {floor:.1%}"
    )
    latencies = await drift_repairs()
    print(
        f"drift repaired after the notification, {DRIFTS} edits among {ACTORS:,} actors: "
        f"median {statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms "
        f"(goal < 2 s each)"
    )


if __name__ == "__main__":
    loop = Settings().event_loop
    print(f"event loop: {loop}")
    anyio.run(main, backend_options={"loop_factory": loop_factory(loop)})
