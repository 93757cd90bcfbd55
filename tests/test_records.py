"""Actor records loaded many per round trip (ztdp/runtime/records.py): what a takeover's
thousands of activations load at once costs one `StateStore.actors` call per turn of the
event loop, and a record that cannot be read spoils only itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis

from tests.ports import free_port
from ztdp.errors import BackendUnavailable
from ztdp.runtime.records import RecordLoader
from ztdp.state import Fence, MemoryStateStore, PutActor, StateStore
from ztdp.state.redis import RedisStateStore


class CountingStore(MemoryStateStore):
    """The memory store, counting the calls that load records."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def actor(self, node: str) -> dict[str, Any] | None:
        self.calls.append(("actor", 1))
        return await super().actor(node)

    async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.calls.append(("actors", len(nodes)))
        return await super().actors(nodes)


async def seeded(store: StateStore, count: int) -> list[str]:
    fence = await store.acquire(0, "w1", ttl=30)
    assert isinstance(fence, Fence)
    nodes = [f"n{i}" for i in range(count)]
    await store.commit([PutActor(n, {"node": n}) for n in nodes], fence=fence)
    return nodes


async def load_all(loader: RecordLoader, nodes: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def one(node: str) -> None:
        found[node] = await loader.get(node)

    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(one, node)
    return found


async def test_records_asked_for_at_once_are_loaded_in_one_call() -> None:
    store = CountingStore()
    nodes = await seeded(store, 300)

    found = await load_all(RecordLoader(store), [*nodes, "never-written"])

    assert found == {**{n: {"node": n} for n in nodes}, "never-written": None}
    assert store.calls == [("actors", 301)]


async def test_records_asked_for_one_after_another_are_loaded_one_by_one() -> None:
    store = CountingStore()
    nodes = await seeded(store, 3)
    loader = RecordLoader(store)

    assert [await loader.get(n) for n in nodes] == [{"node": n} for n in nodes]
    assert store.calls == [("actors", 1)] * 3


async def test_a_record_that_cannot_be_read_spoils_only_itself(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    try:
        nodes = await seeded(store, 20)
        client = aioredis.Redis.from_url(redis_url)
        await client.hset(f"{redis_prefix}:state:actors", "n7", "{not json")  # type: ignore[misc]
        await client.aclose()
        errors: list[str] = []
        found: dict[str, Any] = {}
        loader = RecordLoader(store)

        async def one(node: str) -> None:
            try:
                found[node] = await loader.get(node)
            except ValueError:
                errors.append(node)

        async with anyio.create_task_group() as tg:
            for node in nodes:
                tg.start_soon(one, node)

        assert errors == ["n7"]
        assert found == {n: {"node": n} for n in nodes if n != "n7"}
    finally:
        await store.aclose()


async def test_those_who_joined_a_batch_whose_first_was_cancelled_load_alone() -> None:
    store = CountingStore()
    nodes = await seeded(store, 3)
    loader = RecordLoader(store)
    found: dict[str, Any] = {}
    scope = anyio.CancelScope()

    async def first() -> None:
        with scope:
            found[nodes[0]] = await loader.get(nodes[0])

    async def other(node: str) -> None:
        found[node] = await loader.get(node)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)  # opens the batch and waits a turn for others to join ...
        tg.start_soon(other, nodes[1])
        tg.start_soon(other, nodes[2])
        await anyio.lowlevel.checkpoint()  # ... which they do
        scope.cancel()  # before its call

    assert scope.cancelled_caught
    assert found == {n: {"node": n} for n in nodes[1:]}
    assert sorted(store.calls) == [("actor", 1), ("actor", 1)]


@pytest.mark.parametrize("count", [1, 2])
async def test_a_loader_is_reusable_after_a_batch(count: int) -> None:
    store = CountingStore()
    nodes = await seeded(store, count)
    loader = RecordLoader(store)
    assert await load_all(loader, nodes) == {n: {"node": n} for n in nodes}
    assert await load_all(loader, nodes) == {n: {"node": n} for n in nodes}
    assert store.calls == [("actors", count), ("actors", count)]


async def test_an_outage_during_a_shared_load_is_everyones_answer_at_once() -> None:
    """The store away mid-takeover: every activation of the batch pauses on the one failed
    call instead of each asking a dead Redis again and waiting out its own timeout."""

    class Counting(RedisStateStore):
        calls = 0

        async def actor(self, node: str) -> dict[str, Any] | None:
            Counting.calls += 1
            return await super().actor(node)

        async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
            Counting.calls += 1
            return await super().actors(nodes)

    # Nothing listens on this port: the connection is refused.
    store = Counting.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="x", timeout=0.5)
    loader = RecordLoader(store)
    outcomes: list[str] = []

    async def one(node: str) -> None:
        try:
            await loader.get(node)
        except BackendUnavailable as exc:
            outcomes.append(exc.detail)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, f"n{i}")
    finally:
        await store.aclose()
    assert len(outcomes) == 50 and "unreachable" in outcomes[0]
    assert Counting.calls == 1
