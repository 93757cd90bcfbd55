"""A provider for the tests that run several ZTDP processes: it realises `recording`
resources as entries in Redis, and records every apply there, so that a test can see what
every process did: which nodes were applied, how often, and whether two applies of one node
ever overlapped (one process's apply still running when another's started).

It is not installed: the tests put this directory (the package and its dist-info, which
declares the entry point) on the path of the processes that use it (tests/cluster.py).

Configured by environment variables, read when the plugin is loaded:
  ZTDP_RECORDING_REDIS   the Redis to record in (unset: this process's memory only)
  ZTDP_RECORDING_PREFIX  key prefix (a test's own)
  ZTDP_RECORDING_DELAY   seconds each apply takes (default 0)

Keys: <prefix>:live (hash node -> desired JSON), <prefix>:applies (list of nodes, one per
finished apply), <prefix>:observes (list of nodes, one per observation), <prefix>:overlaps
(list of nodes applied concurrently with themselves), <prefix>:applying:<node> (held while
an apply runs).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import redis.asyncio as aioredis

from ztdp.providers import Observation, Resource, Target

# KEYS: live, observes. ARGV: node. Returns the node's live state (or nil), recording the call.
_OBSERVE = """
redis.call('RPUSH', KEYS[2], ARGV[1])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class RecordingProvider:
    kind = "recording"

    def __init__(self) -> None:
        url = os.environ.get("ZTDP_RECORDING_REDIS")
        self._prefix = os.environ.get("ZTDP_RECORDING_PREFIX", "ztdp-recording")
        self._delay = float(os.environ.get("ZTDP_RECORDING_DELAY", "0"))
        # A blocking pool: thousands of calls at once (a takeover) wait for a connection
        # instead of failing with "Too many connections".
        self._redis = (
            None
            if url is None
            else aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    url, decode_responses=True, max_connections=64, timeout=30
                )
            )
        )
        self._live: dict[str, str] = {}
        if self._redis is not None:
            self._observe = self._redis.register_script(_OBSERVE)
        self._me = uuid.uuid4().hex

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
        state = json.dumps(dict(resource.desired), sort_keys=True)
        if self._redis is None:
            await anyio.sleep(self._delay)
            self._live[resource.node] = state
            return Observation(state=dict(resource.desired), health="Ready")
        p, node = self._prefix, resource.node
        # Held while this apply runs; expires by itself if the process dies in the middle.
        hold = max(1000, int(self._delay * 5000))
        if not await self._redis.set(f"{p}:applying:{node}", self._me, nx=True, px=hold):
            await self._redis.rpush(f"{p}:overlaps", node)
        await anyio.sleep(self._delay)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{p}:live", node, state)
            pipe.rpush(f"{p}:applies", node)
            pipe.delete(f"{p}:applying:{node}")
            await pipe.execute()
        return Observation(state=dict(resource.desired), health="Ready")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        if self._redis is None:
            state = self._live.get(resource.node)
        else:  # the observation is recorded in the same round trip (a script costs less
            # client CPU than a pipeline, which was a third of a takeover's)
            p = self._prefix
            state = await self._observe(keys=[f"{p}:live", f"{p}:observes"], args=[resource.node])
        return None if state is None else Observation(state=json.loads(state), health="Ready")

    async def delete(self, *, resource: Resource, target: Target) -> None:
        if self._redis is None:
            self._live.pop(resource.node, None)
        else:
            await self._redis.hdel(f"{self._prefix}:live", resource.node)

    async def health(self, *, resource: Resource, target: Target) -> str:
        return "Ready"

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
