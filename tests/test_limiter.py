"""The failed-authentication limiter's contract, on memory and on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ztdp.auth import FailureLimiter, MemoryFailureLimiter, RedisFailureLimiter
from ztdp.redis_client import connect

LIMIT, WINDOW = 3, 60.0


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[FailureLimiter]:
    """The same test against every limiter."""
    made: FailureLimiter
    if request.param == "memory":
        made = MemoryFailureLimiter(limit=LIMIT, window=WINDOW, clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        made = RedisFailureLimiter(
            connect(url), prefix=prefix, limit=LIMIT, window=WINDOW, clock=clock
        )
    yield made
    await made.aclose()


async def test_failures_within_the_limit_pass_and_the_next_is_refused(
    limiter: FailureLimiter, clock: Clock
) -> None:
    for _ in range(LIMIT):
        assert await limiter.failed("192.0.2.1") is None
        clock.now += 1
    assert await limiter.failed("192.0.2.1") == WINDOW - LIMIT  # until the first one expires


async def test_clients_are_counted_apart(limiter: FailureLimiter) -> None:
    for _ in range(LIMIT):
        assert await limiter.failed("192.0.2.1") is None
    assert await limiter.failed("192.0.2.1") is not None
    assert await limiter.failed("192.0.2.2") is None


async def test_the_window_slides(limiter: FailureLimiter, clock: Clock) -> None:
    for _ in range(LIMIT):
        assert await limiter.failed("192.0.2.1") is None
    clock.now += WINDOW / 2
    assert await limiter.failed("192.0.2.1") == WINDOW / 2
    clock.now += WINDOW / 2
    # the first three expired; the refused one half a window ago still counts
    assert await limiter.failed("192.0.2.1") is None
    assert await limiter.failed("192.0.2.1") is None
    assert await limiter.failed("192.0.2.1") == WINDOW / 2


async def test_a_client_that_keeps_failing_stays_refused(
    limiter: FailureLimiter, clock: Clock
) -> None:
    for _ in range(LIMIT):
        await limiter.failed("192.0.2.1")
    for _ in range(4 * LIMIT):  # two windows, failing twice as often as the limit allows
        clock.now += WINDOW / (2 * LIMIT)
        assert await limiter.failed("192.0.2.1") is not None


async def test_retry_after_is_at_least_a_second(limiter: FailureLimiter, clock: Clock) -> None:
    for _ in range(LIMIT):
        await limiter.failed("192.0.2.1")
    clock.now += WINDOW - 0.01
    assert await limiter.failed("192.0.2.1") == 1
