"""The state store in this process's memory: the embedded default, and the reference for the
contract suite. Leases work as in Redis, so several workers in one process can share it."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ztdp.errors import Fenced, NotFound
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
from ztdp.state.runs import Run


class MemoryStateStore:
    def __init__(self, *, keep_runs: int = 1000) -> None:
        self._observed: dict[tuple[str, str], ObservedResource] = {}  # (environment, node)
        self._actors: dict[str, dict[str, Any]] = {}
        self._partitions: dict[int, set[str]] = {}
        self._runs: dict[str, Run] = {}
        self._plans: dict[str, dict[str, dict[str, Any]]] = {}
        self._step_index: dict[str, dict[str, int]] = {}  # run -> node -> index of its step
        self._keep_runs = keep_runs
        self._leases: dict[int, tuple[str, int, float]] = {}  # owner, token, expires
        self._tokens: dict[int, int] = {}
        self._members: dict[str, float] = {}
        self._partition_count: int | None = None

    # --- observed --------------------------------------------------------------------------

    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]:
        return {
            node: v
            for (env, node), v in self._observed.items()
            if env == environment and application in (None, v.application)
        }

    # --- actors ----------------------------------------------------------------------------
    # Snapshots and plans are deep copies both ways, as they would be through Redis: a caller
    # changing a nested value must not change what the store holds without a commit.

    async def actor(self, node: str) -> dict[str, Any] | None:
        snapshot = self._actors.get(node)
        return None if snapshot is None else copy.deepcopy(snapshot)

    async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {n: copy.deepcopy(self._actors[n]) for n in nodes if n in self._actors}

    async def nodes(self, partition: int) -> list[str]:
        return sorted(self._partitions.get(partition, ()))

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, run: Run, plan: Mapping[str, Mapping[str, Any]]) -> None:
        self._runs[run.id] = run.model_copy(deep=True)
        self._plans[run.id] = {n: copy.deepcopy(dict(p)) for n, p in plan.items()}
        self._step_index[run.id] = {s.node: i for i, s in enumerate(run.steps)}
        while len(self._runs) > self._keep_runs:
            oldest = next(iter(self._runs))
            del self._runs[oldest], self._plans[oldest], self._step_index[oldest]

    async def run(self, run_id: str) -> Run:
        try:
            return self._runs[run_id].model_copy(deep=True)
        except KeyError:
            raise NotFound(f"run {run_id} does not exist") from None

    async def run_plan(self, run_id: str) -> dict[str, dict[str, Any]]:
        try:
            return copy.deepcopy(self._plans[run_id])
        except KeyError:
            raise NotFound(f"run {run_id} does not exist") from None

    async def runs(self, *, limit: int) -> list[Run]:
        if limit <= 0:
            return []
        return [r.model_copy(deep=True) for r in list(self._runs.values())[-limit:]]

    # --- fenced writes ---------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], *, fence: Fence) -> None:
        held = self._leases.get(fence.partition)
        if held is None or held[:2] != (fence.owner, fence.token) or held[2] < time.monotonic():
            raise Fenced(
                f"{fence.owner} no longer holds partition {fence.partition} "
                f"(lease {fence.token}); write refused"
            )
        for w in writes:
            match w:
                case PutActor(node=node, snapshot=snapshot):
                    self._actors[node] = copy.deepcopy(dict(snapshot))
                    for members in self._partitions.values():
                        members.discard(node)
                    self._partitions.setdefault(fence.partition, set()).add(node)
                case PutObserved(resource=resource):
                    self._observed[resource.environment, resource.node] = resource
                case DeleteObserved(node=node, environment=environment):
                    self._observed.pop((environment, node), None)
                case PutStep(run=run_id, step=step):
                    index = self._step_index.get(run_id, {}).get(step.node)
                    if index is not None:
                        self._runs[run_id].steps[index] = step.model_copy()
                case PutRun(run=new):
                    run = self._runs.get(new.id)
                    if run is not None:
                        run.status, run.finished_at = new.status, new.finished_at

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, partition: int, owner: str, *, ttl: float) -> Fence | None:
        now = time.monotonic()
        held = self._leases.get(partition)
        if held is not None and held[2] >= now:
            return None
        token = self._tokens[partition] = self._tokens.get(partition, 0) + 1
        self._leases[partition] = (owner, token, now + ttl)
        return Fence(partition, owner, token)

    async def renew(self, fence: Fence, *, ttl: float) -> bool:
        now = time.monotonic()
        held = self._leases.get(fence.partition)
        if held is None or held[:2] != (fence.owner, fence.token) or held[2] < now:
            return False
        self._leases[fence.partition] = (fence.owner, fence.token, now + ttl)
        return True

    async def release(self, fence: Fence) -> None:
        held = self._leases.get(fence.partition)
        if held is not None and held[:2] == (fence.owner, fence.token):
            del self._leases[fence.partition]

    async def holders(self) -> dict[int, str]:
        now = time.monotonic()
        return {p: h[0] for p, h in self._leases.items() if h[2] >= now}

    async def join(self, member: str, *, ttl: float) -> list[str]:
        now = time.monotonic()
        self._members[member] = now + ttl
        return sorted(m for m, until in self._members.items() if until >= now)

    async def leave(self, member: str) -> None:
        self._members.pop(member, None)

    async def partitions(self, count: int) -> int:
        if self._partition_count is None:
            self._partition_count = count
        return self._partition_count

    # ---------------------------------------------------------------------------------------

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
