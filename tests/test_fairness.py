"""The process-wide handler limit shared in turn by partitions (ztdp/runtime/fairness.py)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from ztdp.runtime.fairness import FairLimiter


async def test_no_more_than_the_limit_hold_at_once() -> None:
    limit = FairLimiter(3)
    holding = most = 0

    async def hold(key: int) -> None:
        nonlocal holding, most
        await limit.acquire(key)
        holding += 1
        most = max(most, holding)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        holding -= 1
        limit.release()

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(hold, i % 4)
    assert most == 3
    assert (limit.borrowed, limit.waiting) == (0, 0)


async def test_a_freed_slot_goes_to_the_next_partition_in_turn_not_the_oldest_waiter() -> None:
    """Partition 0's backlog queued first does not keep partition 1 waiting behind it all."""
    limit = FairLimiter(1)
    limit.acquire_nowait()
    order: list[str] = []

    async def wait(key: int, name: str) -> None:
        await limit.acquire(key)
        order.append(name)
        limit.release()

    async with anyio.create_task_group() as tg:
        for name in ("a1", "a2", "a3"):
            tg.start_soon(wait, 0, name)
        for name in ("b1", "b2"):
            tg.start_soon(wait, 1, name)
        tg.start_soon(wait, 2, "c1")
        await wait_until(lambda: limit.waiting == 6)
        limit.release()
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]


async def test_nobody_takes_a_free_slot_past_those_waiting() -> None:
    limit = FairLimiter(1)
    limit.acquire_nowait()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limit.acquire, 0)
        await wait_until(lambda: limit.waiting == 1)
        with pytest.raises(anyio.WouldBlock):
            limit.acquire_nowait()
        limit.release()  # handed to the waiter
    assert limit.borrowed == 1
    with pytest.raises(anyio.WouldBlock):
        limit.acquire_nowait()
    limit.release()
    limit.acquire_nowait()


async def test_a_cancelled_waiter_leaves_its_queue_and_a_slot_handed_to_it_goes_on() -> None:
    limit = FairLimiter(1)
    limit.acquire_nowait()
    got: list[int] = []

    async def wait(key: int, scope: anyio.CancelScope) -> None:
        with scope:
            await limit.acquire(key)
            got.append(key)
            limit.release()

    with anyio.fail_after(5):  # a slot lost with the cancelled waiter: key 2 never runs
        async with anyio.create_task_group() as tg:
            gone = anyio.CancelScope()
            tg.start_soon(wait, 0, gone)
            await wait_until(lambda: limit.waiting == 1)
            gone.cancel()  # while waiting: it leaves the queue
            await wait_until(lambda: limit.waiting == 0)

            late, last = anyio.CancelScope(), anyio.CancelScope()
            tg.start_soon(wait, 1, late)
            await wait_until(lambda: limit.waiting == 1)
            tg.start_soon(wait, 2, last)
            await wait_until(lambda: limit.waiting == 2)
            late.cancel()  # key 1 is cancelled, and before it wakes up...
            limit.release()  # ...the slot is handed to it: it passes it on to key 2
    assert got == [2]
    assert (limit.borrowed, limit.waiting) == (0, 0)


async def wait_until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not check():
            await anyio.lowlevel.checkpoint()


def test_a_release_without_an_acquire_is_refused() -> None:
    limit = FairLimiter(1)
    with pytest.raises(RuntimeError, match="nobody holds"):
        limit.release()
    limit.acquire_nowait()
    limit.release()
    assert limit.borrowed == 0
