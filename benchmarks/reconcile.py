"""Reconciliation figures (issue 11): 10,000 observed actors with a 30 s resync.

1. CPU of idle reconciliation: the process's CPU time over two resync intervals with nothing
   changing, as a share of one core. Goal < 20 %. Beside it, the same process over an
   equal window with the same 10,000 actors and reconciliation off (its floor: the loop,
   lease renewals).
2. Drift repaired within 2 s of the notification: an outside edit of one node, notified by the
   provider's watch, until its `drift.repaired` event; 50 nodes one after another, with the
   10,000 actors in place (once the observations that the watch's notifications of their own
   applies caused are done). Goal: every one < 2 s.

In one process on the memory backends (the embedded default), with a provider that keeps its
objects in memory and notifies edits (the outer boundary), on the loop `ztdp serve` runs on.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from ztdp.cli.process import loop_factory, settle_heap
from ztdp.events import EventFilter, MemoryEventBus
from ztdp.providers import ProviderInfo, ProviderRegistry, Resource, Target
from ztdp.runtime import Supervisor
from ztdp.runtime.mailbox import MemoryMailbox
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore
from ztdp.testing import FakeProvider

ACTORS, RESYNC, DRIFTS = 10_000, 30.0, 50
DEV = Target("dev")


def provider() -> FakeProvider:
    """The kit's in-memory provider, in the place of the Kubernetes one: it notifies the
    changes `tamper` makes behind ZTDP's back, as a watch would."""
    return FakeProvider("kubernetes", settings_model=None)


def observations(fake: FakeProvider) -> int:
    return sum(1 for method, _ in fake.calls if method == "observe")


def node(i: int) -> str:
    return f"deployment/app-{i // 100}/svc-{i % 100}@dev"


async def populate(sup: Supervisor, events: MemoryEventBus) -> None:
    """ACTORS actors, each applied once and Ready."""
    last = node(ACTORS - 1)
    async with events.subscribe(EventFilter(node=last, type="actor.status")) as seen:
        for i in range(ACTORS):
            desired = {"version": "1.0.0", "image": f"svc-{i}:1.0.0", "replicas": 1}
            resource = Resource(node(i), "deployment", f"svc-{i % 100}", f"app-{i // 100}", desired)
            await sup.apply(resource, DEV, provider="kubernetes")
        with anyio.fail_after(120):
            while (await seen.receive())["data"]["status"] != "Ready":
                pass


async def idle_cpu(reconcile: bool) -> tuple[float, int]:
    """Share of one core the process used over two resync intervals, nothing changing."""
    fake, events = provider(), MemoryEventBus()
    settings = Settings(observe_interval=RESYNC if reconcile else 0, step_timeout=60)
    sup = Supervisor(
        providers=_registry(fake),
        state=MemoryStateStore(),
        events=events,
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    async with sup:
        await populate(sup, events)
        settle_heap()
        before = observations(fake)
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(2 * RESYNC)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return share, observations(fake) - before


async def drift_repairs() -> list[float]:
    fake, events = provider(), MemoryEventBus()
    settings = Settings(observe_interval=RESYNC, step_timeout=60)
    sup = Supervisor(
        providers=_registry(fake),
        state=MemoryStateStore(),
        events=events,
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    latencies = []
    async with sup:
        await populate(sup, events)
        while not any(method == "watch" for method, _ in fake.calls):  # noqa: ASYNC110
            await anyio.sleep(0.01)  # the watch starts with the first target
        # The watch notified each of the set-up's own applies: the edits start once those
        # observations are done (during that burst of 10,000 an edit waits its turn: ~2.6 s).
        while observations(fake) < ACTORS:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        for k in range(DRIFTS):
            edited = node(k * (ACTORS // DRIFTS))
            async with events.subscribe(EventFilter(node=edited, type="drift.repaired")) as done:
                start = time.perf_counter()
                await fake.tamper(node=edited, target=DEV, state={"image": "evil:latest"})
                with anyio.fail_after(30):
                    await done.receive()
                latencies.append(time.perf_counter() - start)
            assert fake.objects[("dev", edited)].state["image"] != "evil:latest"
    return latencies


def _registry(fake: FakeProvider) -> ProviderRegistry:
    reg = ProviderRegistry()
    reg.register(fake, ProviderInfo("kubernetes", "benchmarks", "benchmarks", "0"))
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
