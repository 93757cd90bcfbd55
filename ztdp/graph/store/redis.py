"""The graph in Redis: survives restarts and is shared by several API processes.

Layout under the key prefix P:
  P:graph:rev    the revision (an integer)
  P:graph:nodes  hash node id -> {"kind", "data"} as JSON
  P:graph:edges  hash JSON [source, type, target] -> edge data as JSON
  P:graph:log    stream of committed batches, entry id "<revision>-1"
  P:graph:id     the graph's id (random hex, set once; gone with the graph if Redis is emptied)

A Lua script checks the revision and applies a batch in one step, so writes are atomic and
optimistic. Each process keeps the graph in memory and catches up by replaying the log
(or reloading everything if the log was trimmed past its revision).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ztdp.errors import BackendUnavailable, StaleRevision
from ztdp.graph.model import (
    DeleteNode,
    EdgeType,
    Graph,
    NodeKind,
    Op,
    PutEdge,
    PutNode,
    op_from_json,
    op_to_json,
)
from ztdp.graph.store.base import Change
from ztdp.redis_client import DEFAULT_TIMEOUT, connect

LOG_MAX_LENGTH = 10_000

_COMMIT = """
local rev = tonumber(redis.call('GET', KEYS[1]) or '0')
if rev ~= tonumber(ARGV[1]) then return {0, rev} end
-- Values arrive already encoded: decoding them here would turn [] into {}.
for _, w in ipairs(cjson.decode(ARGV[2])) do
  local hash = KEYS[2]
  if w[1] == 'e' then hash = KEYS[3] end
  if w[3] == cjson.null then redis.call('HDEL', hash, w[2])
  else redis.call('HSET', hash, w[2], w[3]) end
end
local new = rev + 1
redis.call('SET', KEYS[1], new)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], new .. '-1', 'ops', ARGV[3],
           'actor', ARGV[5], 'at', ARGV[6])
return {1, new}
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _writes(batch: Sequence[Op]) -> list[tuple[str, str, str | None]]:
    """The hash writes of a batch: ("n" | "e", field, encoded value or None to delete)."""
    out: list[tuple[str, str, str | None]] = []
    for op in batch:
        if isinstance(op, PutNode):
            out.append(("n", op.id, _dumps({"kind": op.kind.value, "data": op.data})))
        elif isinstance(op, DeleteNode):
            out.append(("n", op.id, None))
        else:
            key = _dumps([op.source, op.type.value, op.target])
            out.append(("e", key, _dumps(op.data) if isinstance(op, PutEdge) else None))
    return out


class RedisGraphStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._syncing = anyio.Lock()
        self._redis = client
        self._keys = [f"{prefix}:graph:{k}" for k in ("rev", "nodes", "edges", "log")]
        self._commit = client.register_script(_COMMIT)
        self._id_key = f"{prefix}:graph:id"
        self._id: str | None = None
        self._graph = Graph()
        self._loaded = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, timeout: float = DEFAULT_TIMEOUT
    ) -> RedisGraphStore:
        return cls(connect(url, timeout=timeout), prefix=prefix)

    async def read(self) -> Graph:
        try:
            rev = int(await self._redis.get(self._keys[0]) or 0)
            if not self._loaded or rev != self._graph.revision:
                # One reload or catch-up at a time: concurrent readers (a worker's first steps)
                # wait for it instead of each loading the whole graph again.
                async with self._syncing:
                    rev = int(await self._redis.get(self._keys[0]) or 0)
                    if not self._loaded or rev < self._graph.revision:
                        await self._reload()
                    elif rev > self._graph.revision:
                        await self._catch_up()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"graph store: Redis unreachable: {exc}") from exc
        return self._graph

    async def commit(
        self, ops: Sequence[Op], *, expected_revision: int, actor: str = "anonymous"
    ) -> int:
        graph = await self.read()
        if expected_revision != graph.revision:
            raise StaleRevision(
                f"graph is at revision {graph.revision}, the write expected {expected_revision}"
            )
        batch = graph.expand(ops)
        graph.check(batch)
        log = _dumps([op_to_json(op) for op in batch])
        try:
            ok, rev = await self._commit(
                keys=self._keys,
                args=[
                    expected_revision,
                    _dumps(_writes(batch)),
                    log,
                    LOG_MAX_LENGTH,
                    actor,
                    datetime.now(UTC).isoformat(),
                ],
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"graph store: Redis unreachable: {exc}") from exc
        if not ok:
            raise StaleRevision(
                f"graph is at revision {rev}, the write expected {expected_revision}"
            )
        if self._graph.revision == expected_revision:
            self._graph.apply(batch, int(rev))
        return int(rev)

    async def identity(self) -> str:
        if self._id is None:
            try:
                await self._redis.set(self._id_key, os.urandom(8).hex(), nx=True)
                found = await self._redis.get(self._id_key)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise BackendUnavailable(f"graph store: Redis unreachable: {exc}") from exc
            self._id = found.decode() if isinstance(found, bytes) else str(found)
        return self._id

    async def changes(self, *, since: int, limit: int) -> list[Change]:
        try:
            entries = await self._redis.xrange(
                self._keys[3], min=f"{since + 1}-1", max="+", count=limit
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"graph store: Redis unreachable: {exc}") from exc
        return [
            Change(
                revision=int(entry_id.split("-", 1)[0]),
                actor=fields.get("actor", "unknown"),
                at=fields.get("at") or datetime.now(UTC),
                ops=json.loads(fields["ops"]),
            )
            for entry_id, fields in cast(list[tuple[str, dict[str, str]]], entries)
        ]

    async def _catch_up(self) -> None:
        start = self._graph.revision + 1
        entries = await self._redis.xrange(self._keys[3], min=f"{start}-1", max="+")
        if not entries or entries[0][0] != f"{start}-1":
            await self._reload()  # the log was trimmed past our revision
            return
        for entry_id, fields in cast(list[tuple[str, dict[str, str]]], entries):
            self._graph.apply(
                [op_from_json(raw) for raw in json.loads(fields["ops"])],
                int(entry_id.split("-", 1)[0]),
            )

    async def _reload(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys[0])
            pipe.hgetall(self._keys[1])
            pipe.hgetall(self._keys[2])
            rev, nodes, edges = await pipe.execute()
        graph = Graph()
        ops: list[Op] = []
        for nid, raw in nodes.items():
            doc: dict[str, Any] = json.loads(raw)
            ops.append(PutNode(nid, NodeKind(doc["kind"]), doc["data"]))
        for key, raw in edges.items():
            source, etype, target = json.loads(key)
            ops.append(PutEdge(source, target, EdgeType(etype), json.loads(raw) or {}))
        graph.apply(ops, int(rev or 0))
        self._graph = graph
        self._loaded = True
        self._id = None  # a graph reloaded may be another one (Redis emptied): ask again

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable(f"graph store: Redis unreachable: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()


__all__ = ["RedisGraphStore"]
