"""The failed-authentication limiter's contract, on memory and on real Redis; client addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import ip_network

import pytest

from ztdp.auth import ClientAddresses, FailureLimiter, MemoryFailureLimiter, RedisFailureLimiter
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


# --- who the client is ---------------------------------------------------------------------

PROXIES = ClientAddresses([ip_network("10.0.0.0/8"), ip_network("2001:db8::1/128")])


def test_without_trusted_proxies_forwarded_for_is_ignored() -> None:
    assert ClientAddresses([]).client("10.0.0.5", ["203.0.113.9"]) == "10.0.0.5"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert PROXIES.client("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"


def test_behind_trusted_proxies_the_client_is_the_last_untrusted_hop() -> None:
    # the client wrote 192.0.2.66 itself; the first proxy appended what it saw, 203.0.113.9
    assert PROXIES.client("10.0.0.5", ["192.0.2.66, 203.0.113.9, 10.1.1.1"]) == "203.0.113.9"
    assert PROXIES.client("10.0.0.5", ["192.0.2.66", "203.0.113.9:5123, 10.1.1.1"]) == (
        "203.0.113.9"
    )
    assert PROXIES.client("2001:db8::1", ["[2001:db8::7]:443"]) == "2001:db8::7"


def test_clients_behind_one_proxy_are_told_apart() -> None:
    assert PROXIES.client("10.0.0.5", ["203.0.113.1"]) != PROXIES.client(
        "10.0.0.5", ["203.0.113.2"]
    )


def test_only_trusted_hops_name_the_farthest_one() -> None:
    assert PROXIES.client("10.0.0.5", ["10.2.2.2, 10.1.1.1"]) == "10.2.2.2"
    assert PROXIES.client("10.0.0.5", []) == "10.0.0.5"


def test_no_peer_address_is_one_unknown_client() -> None:
    assert PROXIES.client(None, ["203.0.113.9"]) == "unknown"
