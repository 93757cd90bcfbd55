"""Many round trips at once (a run's step messages and events): bounded, and a failure is
raised as itself, so that `except BackendUnavailable` pauses the message instead of an
exception group dropping it as a bug."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ztdp.errors import BackendUnavailable
from ztdp.runtime.supervisor import AT_ONCE, _at_once


async def test_at_most_a_batch_at_once_and_every_item_done() -> None:
    done: list[int] = []
    flying = most = 0

    async def do(item: int) -> None:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await anyio.sleep(0.001)
        flying -= 1
        done.append(item)

    await _at_once(list(range(300)), do, concurrently=True)
    assert sorted(done) == list(range(300))
    assert most == AT_ONCE


async def test_an_outage_is_raised_as_itself_and_the_rest_is_cancelled() -> None:
    started: list[int] = []

    async def do(item: int) -> None:
        started.append(item)
        if item == 3:
            raise BackendUnavailable("NATS went away")
        await anyio.sleep(10)

    with anyio.fail_after(5), pytest.raises(BackendUnavailable, match="NATS went away"):
        await _at_once(list(range(200)), do, concurrently=True)
    assert len(started) <= AT_ONCE


async def test_in_order_when_not_concurrent() -> None:
    done: list[int] = []

    async def do(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        done.append(item)

    await _at_once([3, 1, 2], do, concurrently=False)
    assert done == [3, 1, 2]
