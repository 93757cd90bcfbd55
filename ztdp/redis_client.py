"""How ZTDP talks to Redis: short timeouts, one quick retry, outages as `BackendUnavailable`.

redis-py's defaults retry a failed command ten times with backoff, each attempt waiting up to
its connect timeout: against an unreachable Redis a request would hang for many seconds. ZTDP
answers 503 at once instead and lets the client retry. The one retry covers a pooled
connection that died while Redis restarted; it is for connection errors only, because a
command that timed out may have run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ztdp.errors import BackendUnavailable

DEFAULT_TIMEOUT = 2.0  # seconds; the `redis_timeout` setting
MAX_CONNECTIONS = 64  # per client

# What an unreachable, restarting (LOADING is a ConnectionError) or stalled Redis raises.
UNREACHABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


def connect(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> aioredis.Redis:
    """A client that gives up after `timeout` seconds to connect or to wait for an answer.

    Its pool makes a caller wait (up to `timeout`) for one of its `MAX_CONNECTIONS`
    connections instead of failing when all are busy, as a burst of commits would make them.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        decode_responses=True,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1, (RedisConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)


# Answers of a Redis that is there but cannot take writes for now: a replica after a failover
# (READONLY), full (OOM), without its master or replicas, loading, or a cluster moving slots.
# redis-py turns some of them into classes of their own (a script's error keeps the text only).
UNAVAILABLE_ANSWERS = ("READONLY", "OOM", "MASTERDOWN", "NOREPLICAS", "LOADING", "TRYAGAIN")
CANNOT_SERVE = (ReadOnlyError, OutOfMemoryError, TryAgainError, ClusterDownError)


@contextmanager
def reachable(what: str) -> Iterator[None]:
    """Turn Redis being unreachable, or answering that it cannot serve for now, into
    `BackendUnavailable` naming `what` needed it (503: retry later), not an error of ours."""
    try:
        yield
    except UNREACHABLE as exc:
        raise BackendUnavailable(f"{what}: Redis unreachable: {exc}") from exc
    except ResponseError as exc:
        if not isinstance(exc, CANNOT_SERVE) and not str(exc).startswith(UNAVAILABLE_ANSWERS):
            raise
        raise BackendUnavailable(f"{what}: Redis cannot serve now: {exc}") from exc
