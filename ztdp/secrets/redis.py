"""Secret records in Redis, shared by every process of an installation.

Layout under the key prefix P:

  P:secrets:<application>:<environment>   hash name -> record (JSON: metadata, sealed value)
  P:secrets:scopes                        set of "<application>:<environment>" holding any

Application and environment names are DNS labels, so ':' cannot occur in them. Replacing a
record is a compare-and-set script (the rotation that read an older record loses and retries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import redis.asyncio as aioredis

from ztdp.redis_client import DEFAULT_TIMEOUT, connect, reachable

WHAT = "secret store"

_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""
_REPLACE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class RedisRecords:
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._redis = client
        self._prefix = f"{prefix}:secrets:"
        self._scopes = f"{prefix}:secrets:scopes"
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, timeout: float = DEFAULT_TIMEOUT) -> RedisRecords:
        return cls(connect(url, timeout=timeout), prefix=prefix)

    def _key(self, application: str, environment: str) -> str:
        return f"{self._prefix}{application}:{environment}"

    async def get(self, application: str, environment: str, name: str) -> str | None:
        with reachable(WHAT):
            raw = await self._redis.hget(self._key(application, environment), name)
        return cast(str | None, raw)

    async def scope(self, application: str, environment: str) -> dict[str, str]:
        with reachable(WHAT):
            raw = await self._redis.hgetall(self._key(application, environment))
        return cast(dict[str, str], raw)

    async def everything(self) -> AsyncIterator[tuple[str, str, str, str]]:
        with reachable(WHAT):
            scopes = cast(set[str], await self._redis.smembers(self._scopes))
        for scope in sorted(scopes):
            app, env = scope.split(":", 1)
            for name, raw in sorted((await self.scope(app, env)).items()):
                yield app, env, name, raw

    async def create(self, application: str, environment: str, name: str, record: str) -> bool:
        keys = [self._key(application, environment), self._scopes]
        with reachable(WHAT):
            done = await self._create(
                keys=keys, args=[name, record, f"{application}:{environment}"]
            )
        return bool(done)

    async def replace(
        self, application: str, environment: str, name: str, old: str, new: str
    ) -> bool:
        with reachable(WHAT):
            done = await self._replace(
                keys=[self._key(application, environment)], args=[name, old, new]
            )
        return bool(done)

    async def remove(self, application: str, environment: str, name: str) -> bool:
        with reachable(WHAT):
            removed = await self._redis.hdel(self._key(application, environment), name)
        return bool(removed)

    async def aclose(self) -> None:
        await self._redis.aclose()
