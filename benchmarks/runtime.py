"""Runtime figures, each against a baseline measured in the same process.

1. Apply makespan of a generated 1,000-node plan of depth 10 with a provider taking 20 ms per
   apply, divided by the critical path (10 x 20 ms). Goal <= 1.2 with unbounded parallelism;
   also with parallelism 10 against the ideal for that limit (1,000 x 20 ms / 10). Beside it,
   the event loop's own floor: the same plan as bare asyncio tasks (its timers alone overshoot
   each 20 ms sleep by a fraction of a millisecond).
2. Messages per second through actor mailboxes (encoded, partitioned, handled by the actor and
   acknowledged), beside a bare anyio memory stream. Goal >= 0.5 (set when a message was an
   object passed by reference; it now crosses the wire format, see the printed figure).
3. Memory per idle actor with 100,000 actors: its record in the memory state store with its
   observed state. Goal < 5 KB.

It runs as `ztdp serve` does: on the loop ZTDP_EVENT_LOOP names (uvloop by default) and with the
start-up heap frozen (ztdp.cli.process).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _providers import registry

from ztdp.cli.process import loop_factory, settle_heap
from ztdp.events import Event, EventFilter, MemoryEventBus
from ztdp.providers import Resource, Target
from ztdp.runtime import Run, Supervisor
from ztdp.runtime.mailbox import MemoryMailbox
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore

NODES, DEPTH, APPLY = 1_000, 10, 0.020


class NullBus(MemoryEventBus):
    """Events are kept as the runtime keeps them; the end of a run is timed here."""

    finished_at = 0.0

    async def publish(self, event: Event) -> None:
        if event.type == "io.ztdp.run.finished":
            self.finished_at = time.perf_counter()
        await super().publish(event)


class Hooks:
    async def target(self, step: Any, environment: Any) -> tuple[Resource, Target]:
        return Resource(step["node"], "deployment", step["node"], "a", step["desired"]), Target(
            "dev"
        )

    async def check(self, actor: str, step: Any) -> None:
        return None


def supervisor(seconds: float, parallelism: int, events: NullBus | None = None) -> Supervisor:
    settings = Settings(apply_parallelism=parallelism, observe_interval=0, step_timeout=60)
    sup = Supervisor(
        providers=registry(seconds),
        state=MemoryStateStore(),
        events=events or NullBus(),
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    sup.hooks = Hooks()
    return sup


def plan() -> list[dict[str, Any]]:
    width = NODES // DEPTH
    waves = []
    for level in range(DEPTH):
        steps = []
        for i in range(width):
            deps = [f"n{level - 1}-{(i + k) % width}" for k in range(3)] if level else []
            steps.append(
                {
                    "node": f"n{level}-{i}",
                    "source": "",
                    "kind": "deployment",
                    "action": "create",
                    "provider": "kubernetes",
                    "depends_on": deps,
                    "desired": {"version": "1"},
                }
            )
        waves.append({"index": level, "steps": steps})
    return waves


async def makespan(parallelism: int) -> float:
    waves = plan()
    run = Run.from_plan(waves, trigger="apply", environment="dev", actor="bench")
    events = NullBus()
    sup = supervisor(APPLY, parallelism, events)
    async with sup:
        start = time.perf_counter()
        await sup.start_run(run, waves)
    # Leaving the supervisor drained it, so the run is done; its end was timed as it happened,
    # not after the supervisor stopped.
    assert (await sup.state.run(run.id)).status == "Succeeded"
    return events.finished_at - start


async def mailbox_rate(messages: int = 100_000) -> tuple[float, float]:
    # Baseline: a bare anyio memory stream of the same size, one consumer.
    send, receive = anyio.create_memory_object_stream[object](64)

    async def consume() -> None:
        async with receive:
            async for _ in receive:
                pass

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        async with send:
            for _ in range(messages):
                # the same enqueue as the actor mailbox: no yield while there is room
                try:
                    send.send_nowait(None)
                except anyio.WouldBlock:
                    await send.send(None)
    bare = messages / (time.perf_counter() - start)

    sup = supervisor(0, 0)
    node = "deployment/a/s@dev"  # an actor with nothing to observe: each message is handled
    async with sup:
        async with sup.events.subscribe(EventFilter(node=node, type="actor.status")) as seen:
            start = time.perf_counter()
            for _ in range(messages - 1):
                await sup.tell(node, "observe")
            await sup.tell(node, "block", {"run": "bench", "error": "last"})  # says when done
            await seen.receive()
        actors = messages / (time.perf_counter() - start)
    return actors, bare


async def memory_per_actor(count: int = 100_000) -> float:
    sup = supervisor(0, 0)
    async with sup:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        last = f"deployment/app-{(count - 1) // 100}/svc-{(count - 1) % 100}@dev"
        async with sup.events.subscribe(EventFilter(node=last, type="actor.status")) as seen:
            for i in range(count):
                node = f"deployment/app-{i // 100}/svc-{i % 100}@dev"
                resource = Resource(
                    node,
                    "deployment",
                    f"svc-{i % 100}",
                    f"app-{i // 100}",
                    {
                        "version": "1.0.0",
                        "image": f"svc-{i}:1.0.0",
                        "config_ref": "",
                        "port": 8080,
                        "public": False,
                    },
                )
                await sup.apply(resource, Target("dev"), provider="kubernetes")
            while (await seen.receive())["data"]["status"] != "Ready":
                pass
        while any([await sup.mailbox.pending(p) for p in range(sup.mailbox.partitions)]):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        sup._events = NullBus()  # events are history, not actor state
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return (after - before) / count


async def floor_makespan() -> float:
    """The event loop's own floor: the plan as bare asyncio tasks, made before the clock
    starts, each waiting for its dependencies' events and then sleeping as long as the
    provider. No actors, policy, events or records; only the loop's timers and wake-ups."""
    waves = plan()
    done = {s["node"]: asyncio.Event() for w in waves for s in w["steps"]}
    go = asyncio.Event()

    async def step(node: str, deps: list[str]) -> None:
        await go.wait()
        for dep in deps:
            await done[dep].wait()
        await asyncio.sleep(APPLY)
        done[node].set()

    tasks = [
        asyncio.create_task(step(s["node"], s["depends_on"])) for w in waves for s in w["steps"]
    ]
    await asyncio.sleep(0)  # every task is waiting
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


async def main() -> None:
    settle_heap()  # as `ztdp serve` does once started
    ideal = DEPTH * APPLY
    runs, floors = [], []
    for _ in range(7):  # interleaved, median of 7: this machine is noisy
        runs.append(await makespan(0))
        floors.append(await floor_makespan())
    unbounded, floor = statistics.median(runs), statistics.median(floors)
    print(
        f"makespan, unbounded parallelism: {unbounded:.3f} s (median of 7); critical path "
        f"{ideal:.3f} s; ratio {unbounded / ideal:.2f} (goal <= 1.2; runs: "
        f"{', '.join(f'{r / ideal:.2f}' for r in runs)})"
    )
    print(
        f"  the event loop's floor, the same plan as bare asyncio tasks: {floor:.3f} s; "
        f"ratio {floor / ideal:.2f}"
    )
    bounded = await makespan(10)
    ideal10 = NODES * APPLY / 10
    print(
        f"makespan, parallelism 10:        {bounded:.3f} s; ideal {ideal10:.3f} s; "
        f"ratio {bounded / ideal10:.2f}"
    )
    actors, bare = await mailbox_rate()
    print(
        f"messages/s through an actor mailbox: {actors:,.0f}; bare anyio stream: {bare:,.0f}; "
        f"ratio {actors / bare:.2f} (goal >= 0.5)"
    )
    per_actor = await memory_per_actor()
    print(
        f"memory per idle actor (100,000, state and observed state included): "
        f"{per_actor / 1024:.2f} KB (goal < 5 KB)"
    )


if __name__ == "__main__":
    # On the event loop `ztdp serve` runs on (ZTDP_EVENT_LOOP), so the figures are a server's.
    loop = Settings().event_loop
    print(f"event loop: {loop}")
    anyio.run(main, backend_options={"loop_factory": loop_factory(loop)})
