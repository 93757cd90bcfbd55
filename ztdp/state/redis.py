"""The state store in Redis: shared by every process of a deployment, survives restarts.

Layout under the key prefix P (all keys start with `P:state:`):

  P:state:actors               hash node -> the actor's snapshot (JSON)
  P:state:actor-partition      hash node -> partition its snapshot is filed under
  P:state:partition:<p>        set of the nodes filed under partition p
  P:state:observed:<env>       hash node -> ObservedResource (JSON), one hash per environment
  P:state:run:<id>             hash of the run's own fields, each a JSON value, and
                               `step_order`: the JSON list of its step nodes, in order
  P:state:run-steps:<id>       hash node -> RunStep (JSON): a step write touches its field only
  P:state:run-plan:<id>        the plan `create_run` was given (JSON)
  P:state:runs                 sorted set of run ids, scored by creation (P:state:run-seq)
  P:state:run-seq              counter numbering runs in the order they were created
  P:state:lease:<p>            "<owner> <token>" of partition p's lease, expiring (PX) with it
  P:state:token:<p>            the last token handed out for partition p (INCR: only grows)
  P:state:leases               set of the partitions ever leased (where `holders` looks)
  P:state:members              sorted set of workers, scored by when they expire (ms, Redis TIME)
  P:state:partitions           the installation's number of partitions (set once)

Every check-and-write is one Lua script, so it is atomic: `commit` applies its writes only if
the fence's lease key still holds "<owner> <token>", `acquire` takes a free lease and numbers
it, `renew` and `release` compare before they extend or delete. Values are JSON-encoded here
and reach the scripts as strings: decoding them in Lua (cjson) would turn [] into {}.

The scripts name some keys they build from the prefix rather than receiving them as KEYS (a
run's keys when trimming, the partition set a node leaves), so the store needs one Redis
server, not a Redis Cluster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

import redis.asyncio as aioredis

from ztdp.errors import Fenced, NotFound
from ztdp.redis_client import DEFAULT_TIMEOUT, connect, reachable
from ztdp.state.base import (
    DeleteObserved,
    Fence,
    ObservedResource,
    PutActor,
    PutObserved,
    PutRun,
    PutStep,
    Write,
)
from ztdp.state.runs import Run, RunStep

WHAT = "state store"

# KEYS: lease, actors, actor-partition, the fence's partition set.
# ARGV: "<owner> <token>", the fence's partition, partition key prefix, then the writes, each
# an op and its three arguments (unused ones empty): flat, so that no document is encoded
# twice nor decoded in Lua.
_COMMIT = """
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then return {0, lease or ''} end
for i = 4, #ARGV, 4 do
  local op, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'actor' then
    redis.call('HSET', KEYS[2], a, b)
    local old = redis.call('HGET', KEYS[3], a)
    if old and old ~= ARGV[2] then redis.call('SREM', ARGV[3] .. old, a) end
    redis.call('HSET', KEYS[3], a, ARGV[2])
    redis.call('SADD', KEYS[4], a)
  elseif op == 'observe' then
    redis.call('HSET', a, b, c)
  elseif op == 'unobserve' then
    redis.call('HDEL', a, b)
  elseif op == 'step' then
    if redis.call('HEXISTS', a, b) == 1 then redis.call('HSET', a, b, c) end
  elseif op == 'run' then
    if redis.call('EXISTS', a) == 1 then
      redis.call('HSET', a, 'status', b, 'finished_at', c)
    end
  end
end
return {1, ''}
"""

# KEYS: run, run-steps, run-plan, runs, run-seq.
# ARGV: run id, keep_runs, plan, fields [[name, JSON]], steps [[node, JSON]], key prefixes of
# run, run-steps, run-plan (for the runs trimmed).
_CREATE_RUN = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for _, kv in ipairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], kv[1], kv[2]) end
for _, kv in ipairs(cjson.decode(ARGV[5])) do redis.call('HSET', KEYS[2], kv[1], kv[2]) end
redis.call('SET', KEYS[3], ARGV[3])
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[1])
end
local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[2])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[4], 0, excess - 1)) do
    redis.call('DEL', ARGV[6] .. old, ARGV[7] .. old, ARGV[8] .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, excess - 1)
end
return excess
"""

# KEYS: lease, token counter, leased partitions. ARGV: owner, ttl (ms), partition.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return token
"""

# KEYS: leases. ARGV: ttl (ms), then "<owner> <token>" of each lease. Returns 1 or 0 each.
_RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    renewed[i] = redis.call('PEXPIRE', key, ARGV[1])
  else
    renewed[i] = 0
  end
end
return renewed
"""

# KEYS: lease. ARGV: "<owner> <token>".
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS: leased partitions. ARGV: lease key prefix. Returns partition, lease, partition, ...
_HOLDERS = """
local out = {}
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = redis.call('GET', ARGV[1] .. p)
  if lease then out[#out + 1] = p; out[#out + 1] = lease end
end
return out
"""

# KEYS: members. ARGV: member, ttl (ms). Expiry in ms of Redis's clock, so that every
# process's members are compared on one clock.
_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


# Made once: json.dumps makes an encoder at every call that sets an option.
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds, at least one (Redis refuses PX 0)."""
    return max(1, math.ceil(seconds * 1000))


def _lease(fence: Fence) -> str:
    return f"{fence.owner} {fence.token}"


def _fenced(fence: Fence) -> Fenced:
    return Fenced(
        f"{fence.owner} no longer holds partition {fence.partition} "
        f"(lease {fence.token}); write refused"
    )


class RedisStateStore:
    """The shared state store. `client` must decode responses (as `connect` makes it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        keep_runs: int = 1000,
        leases: aioredis.Redis | None = None,
    ) -> None:
        """`leases` (default: `client`) serves the leases and the membership: a client of its
        own keeps their renewals from waiting behind a burst of commits for a connection,
        and the leases from expiring because the worker is busy."""
        self._redis = client
        lease_client = leases or client
        self._lease_redis = lease_client
        self._keep_runs = keep_runs
        p = f"{prefix}:state"
        self._actors = f"{p}:actors"
        self._actor_partition = f"{p}:actor-partition"
        self._partition = f"{p}:partition:"
        self._observed = f"{p}:observed:"
        self._run = f"{p}:run:"
        self._run_steps = f"{p}:run-steps:"
        self._run_plan = f"{p}:run-plan:"
        self._runs = f"{p}:runs"
        self._run_seq = f"{p}:run-seq"
        self._lease = f"{p}:lease:"
        self._token = f"{p}:token:"
        self._leases = f"{p}:leases"
        self._members = f"{p}:members"
        self._partition_count = f"{p}:partitions"
        self._commit = client.register_script(_COMMIT)
        self._create_run = client.register_script(_CREATE_RUN)
        self._acquire = lease_client.register_script(_ACQUIRE)
        self._renew = lease_client.register_script(_RENEW)
        self._release = lease_client.register_script(_RELEASE)
        self._holders = lease_client.register_script(_HOLDERS)
        self._join = lease_client.register_script(_JOIN)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        timeout: float = DEFAULT_TIMEOUT,
        keep_runs: int = 1000,
    ) -> RedisStateStore:
        return cls(
            connect(url, timeout=timeout),
            prefix=prefix,
            keep_runs=keep_runs,
            leases=connect(url, timeout=timeout),
        )

    # --- observed --------------------------------------------------------------------------

    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]:
        with reachable(WHAT):
            raw = cast(dict[str, str], await self._redis.hgetall(self._observed + environment))
        found = {node: ObservedResource(**json.loads(doc)) for node, doc in raw.items()}
        return {node: r for node, r in found.items() if application in (None, r.application)}

    # --- actors ----------------------------------------------------------------------------

    async def actor(self, node: str) -> dict[str, Any] | None:
        with reachable(WHAT):
            raw = cast(str | None, await self._redis.hget(self._actors, node))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not nodes:
            return {}
        with reachable(WHAT):
            raw = cast(list[str | None], await self._redis.hmget(self._actors, list(nodes)))
        return {n: json.loads(doc) for n, doc in zip(nodes, raw, strict=True) if doc is not None}

    async def nodes(self, partition: int) -> list[str]:
        with reachable(WHAT):
            members = cast(set[str], await self._redis.smembers(self._partition + str(partition)))
        return sorted(members)

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, run: Run, plan: Mapping[str, Mapping[str, Any]]) -> None:
        fields = run.model_dump(mode="json", exclude={"steps"})
        meta = [[name, _dumps(value)] for name, value in fields.items()]
        meta.append(["step_order", _dumps([s.node for s in run.steps])])
        steps = [[s.node, s.model_dump_json()] for s in run.steps]
        with reachable(WHAT):
            await self._create_run(
                keys=[
                    self._run + run.id,
                    self._run_steps + run.id,
                    self._run_plan + run.id,
                    self._runs,
                    self._run_seq,
                ],
                args=[
                    run.id,
                    self._keep_runs,
                    _dumps({node: dict(p) for node, p in plan.items()}),
                    _dumps(meta),
                    _dumps(steps),
                    self._run,
                    self._run_steps,
                    self._run_plan,
                ],
            )

    async def run(self, run_id: str) -> Run:
        with reachable(WHAT):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._run + run_id)
                pipe.hgetall(self._run_steps + run_id)
                meta, steps = await pipe.execute()
        if not meta:
            raise NotFound(f"run {run_id} does not exist")
        return _decode_run(meta, steps)

    async def run_plan(self, run_id: str) -> dict[str, dict[str, Any]]:
        with reachable(WHAT):
            raw = cast(str | None, await self._redis.get(self._run_plan + run_id))
        if raw is None:
            raise NotFound(f"run {run_id} does not exist")
        return cast(dict[str, dict[str, Any]], json.loads(raw))

    async def runs(self, *, limit: int) -> list[Run]:
        if limit <= 0:
            return []
        with reachable(WHAT):
            ids = cast(list[str], await self._redis.zrange(self._runs, -limit, -1))
            if not ids:
                return []
            async with self._redis.pipeline(transaction=True) as pipe:
                for run_id in ids:
                    pipe.hgetall(self._run + run_id)
                    pipe.hgetall(self._run_steps + run_id)
                replies = await pipe.execute()
        # A run trimmed between the two round trips has no fields left: skip it.
        return [
            _decode_run(meta, steps)
            for meta, steps in zip(replies[::2], replies[1::2], strict=True)
            if meta
        ]

    # --- fenced writes ---------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], *, fence: Fence) -> None:
        ops: list[str] = []
        for w in writes:
            match w:
                case PutActor(node=node, snapshot=snapshot):
                    ops += ("actor", node, _dumps(dict(snapshot)), "")
                case PutObserved(resource=r):
                    ops += ("observe", self._observed + r.environment, r.node, _dumps(asdict(r)))
                case DeleteObserved(node=node, environment=environment):
                    ops += ("unobserve", self._observed + environment, node, "")
                case PutStep(run=run_id, step=step):
                    ops += ("step", self._run_steps + run_id, step.node, step.model_dump_json())
                case PutRun(run=run):
                    own = run.model_dump(mode="json", include={"status", "finished_at"})
                    ops += (
                        "run",
                        self._run + run.id,
                        _dumps(own["status"]),
                        _dumps(own["finished_at"]),
                    )
        partition = str(fence.partition)
        with reachable(WHAT):
            ok, _held = await self._commit(
                keys=[
                    self._lease + partition,
                    self._actors,
                    self._actor_partition,
                    self._partition + partition,
                ],
                args=[_lease(fence), partition, self._partition, *ops],
            )
        if not ok:
            raise _fenced(fence)

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, partition: int, owner: str, *, ttl: float) -> Fence | None:
        with reachable(WHAT):
            token = await self._acquire(
                keys=[self._lease + str(partition), self._token + str(partition), self._leases],
                args=[owner, _ms(ttl), partition],
            )
        return None if token is None else Fence(partition, owner, int(token))

    async def renew(self, fences: Sequence[Fence], *, ttl: float) -> set[int]:
        if not fences:
            return set()
        with reachable(WHAT):
            done = await self._renew(
                keys=[self._lease + str(f.partition) for f in fences],
                args=[_ms(ttl), *(_lease(f) for f in fences)],
            )
        return {f.partition for f, ok in zip(fences, cast(list[int], done), strict=True) if ok}

    async def release(self, fence: Fence) -> None:
        with reachable(WHAT):
            await self._release(keys=[self._lease + str(fence.partition)], args=[_lease(fence)])

    async def holders(self) -> dict[int, str]:
        with reachable(WHAT):
            flat = cast(list[str], await self._holders(keys=[self._leases], args=[self._lease]))
        # The owner is everything before the last space: owners may contain spaces.
        return {
            int(p): lease.rsplit(" ", 1)[0] for p, lease in zip(flat[::2], flat[1::2], strict=True)
        }

    async def join(self, member: str, *, ttl: float) -> list[str]:
        with reachable(WHAT):
            live = cast(list[str], await self._join(keys=[self._members], args=[member, _ms(ttl)]))
        return sorted(live)

    async def leave(self, member: str) -> None:
        with reachable(WHAT):
            await self._lease_redis.zrem(self._members, member)

    async def partitions(self, count: int) -> int:
        with reachable(WHAT):
            await self._redis.set(self._partition_count, count, nx=True)
            return int(cast(str, await self._redis.get(self._partition_count)))

    # ---------------------------------------------------------------------------------------

    async def ping(self) -> None:
        with reachable(WHAT):
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
        if self._lease_redis is not self._redis:
            await self._lease_redis.aclose()


def _decode_run(meta: Mapping[str, str], steps: Mapping[str, str]) -> Run:
    fields = {name: json.loads(value) for name, value in meta.items()}
    order: list[str] = fields.pop("step_order", [])
    return Run.model_validate(
        {**fields, "steps": [RunStep.model_validate_json(steps[n]) for n in order if n in steps]}
    )


__all__ = ["RedisStateStore"]
