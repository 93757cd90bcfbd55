"""Failed authentications per client in a sliding window: in memory, or shared through Redis.

Tokens are 256 random bits, so guessing one is hopeless whatever the limit; the limiter bounds
the cost and noise of bad attempts instead (a client that keeps failing is told to wait). It is
consulted only after a credential failed to verify, so it never refuses a valid one.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from ztdp.redis_client import DEFAULT_TIMEOUT, connect, reachable

MAX_TRACKED_CLIENTS = 10_000

Clock = Callable[[], float]


class FailureLimiter(Protocol):
    """Counts failed authentications per client; more than `limit` in `window` s are refused."""

    async def failed(self, client: str) -> int | None:
        """Count one failed authentication of `client`.

        Returns None while the client is within the limit; else the seconds (at least 1) until
        this failure would have been within it. Failures over the limit count too, so a
        client that keeps failing stays refused.
        """
        ...

    async def aclose(self) -> None: ...


def _retry_after(oldest: float, window: float, now: float) -> int:
    return max(1, math.ceil(oldest + window - now))


class MemoryFailureLimiter:
    """One process's count: the `limit` latest failures of each of the latest clients."""

    def __init__(self, *, limit: int, window: float, clock: Clock = time.monotonic) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}

    async def failed(self, client: str) -> int | None:
        now = self._clock()
        failures = self._failures.pop(client, None)  # re-inserted last: the newest client
        if failures is None:
            if len(self._failures) >= MAX_TRACKED_CLIENTS:
                del self._failures[next(iter(self._failures))]  # forget the stalest client
            failures = deque(maxlen=self._limit)
        self._failures[client] = failures
        retry = None
        if len(failures) == self._limit and failures[0] > now - self._window:
            retry = _retry_after(failures[0], self._window, now)
        failures.append(now)
        return retry

    async def aclose(self) -> None:
        return None


# KEYS[1] the client's sorted set of failure times; ARGV now, window, limit, a unique member.
# Keeps only the `limit` latest failures and expires with the window: bounded, self-cleaning.
_FAILED = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local retry = -1
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
  retry = tonumber(oldest[2]) + window - now
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('ZREMRANGEBYRANK', key, 0, -limit - 1)
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return tostring(retry)
"""


class RedisFailureLimiter:
    """The count shared by every API process on one Redis, under `<prefix>:auth:failures:`.

    Times are the API processes' wall clocks: they must agree to well within the window.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        limit: int,
        window: float,
        clock: Clock = time.time,
    ) -> None:
        self._redis = client
        self._prefix = f"{prefix}:auth:failures:"
        self._limit, self._window, self._clock = limit, window, clock
        self._failed = client.register_script(_FAILED)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, limit: int, window: float, timeout: float = DEFAULT_TIMEOUT
    ) -> RedisFailureLimiter:
        return cls(connect(url, timeout=timeout), prefix=prefix, limit=limit, window=window)

    async def failed(self, client: str) -> int | None:
        now = self._clock()
        with reachable("failed-authentication limiter"):
            raw = await self._failed(
                keys=[self._prefix + client],
                args=[repr(now), repr(self._window), self._limit, secrets.token_hex(8)],
            )
        retry = float(raw)
        return None if retry < 0 else max(1, math.ceil(retry))

    async def aclose(self) -> None:
        await self._redis.aclose()
