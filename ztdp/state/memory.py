"""The state store in this process's memory: the embedded default, and the reference for the
contract suite. Leases work as in Redis, so several workers in one process can share it."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

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
from ztdp.state.runs import Run, RunStep

# Made once: json.dumps makes an encoder at every call that sets an option. No check for
# circular references: what is written came from JSON-able records, and encoding one costs
# two commits a step.
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class MemoryStateStore:
    def __init__(self, *, keep_runs: int = 1000) -> None:
        self._observed: dict[tuple[str, str], ObservedResource] = {}  # (environment, node)
        # Actors, runs and plans are held encoded, as Redis holds them: a caller changing a
        # value it wrote or read cannot change what the store holds without a commit, and
        # encoding once is far cheaper than deep copies both ways.
        self._actors: dict[str, str] = {}  # node -> snapshot (JSON)
        self._partitions: dict[int, set[str]] = {}
        self._runs: dict[str, dict[str, Any]] = {}  # run -> its own fields, JSON-able
        self._steps: dict[str, dict[str, str]] = {}  # run -> node -> RunStep (JSON), in order
        self._plans: dict[str, str] = {}  # run -> plan (JSON)
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

    async def actor(self, node: str) -> dict[str, Any] | None:
        snapshot = self._actors.get(node)
        return None if snapshot is None else cast(dict[str, Any], json.loads(snapshot))

    async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {n: json.loads(self._actors[n]) for n in nodes if n in self._actors}

    async def nodes(self, partition: int) -> list[str]:
        return sorted(self._partitions.get(partition, ()))

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, run: Run, plan: Mapping[str, Mapping[str, Any]]) -> None:
        self._runs[run.id] = run.model_dump(mode="json", exclude={"steps"})
        self._steps[run.id] = {s.node: s.model_dump_json() for s in run.steps}
        self._plans[run.id] = _dumps({n: dict(p) for n, p in plan.items()})
        while len(self._runs) > self._keep_runs:
            oldest = next(iter(self._runs))
            del self._runs[oldest], self._steps[oldest], self._plans[oldest]

    def _run(self, run_id: str) -> Run:
        steps = [RunStep.model_validate_json(s) for s in self._steps[run_id].values()]
        return Run.model_validate({**self._runs[run_id], "steps": steps})

    async def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            raise NotFound(f"run {run_id} does not exist")
        return self._run(run_id)

    async def run_plan(self, run_id: str) -> dict[str, dict[str, Any]]:
        try:
            return cast(dict[str, dict[str, Any]], json.loads(self._plans[run_id]))
        except KeyError:
            raise NotFound(f"run {run_id} does not exist") from None

    async def runs(self, *, limit: int) -> list[Run]:
        if limit <= 0:
            return []
        return [self._run(r) for r in list(self._runs)[-limit:]]

    # --- fenced writes ---------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], *, fence: Fence) -> None:
        held = self._leases.get(fence.partition)
        if held is None or held[:2] != (fence.owner, fence.token) or held[2] < time.monotonic():
            raise Fenced(
                f"{fence.owner} no longer holds partition {fence.partition} "
                f"(lease {fence.token}); write refused"
            )
        # Encoded first, applied after: a value that cannot be encoded writes nothing.
        encoded = [
            _dumps(dict(w.snapshot))
            if type(w) is PutActor
            else w.step.model_dump_json()
            if type(w) is PutStep
            else None
            for w in writes
        ]
        for w, doc in zip(writes, encoded, strict=True):
            if type(w) is PutActor:
                self._actors[w.node] = cast(str, doc)
                filed = self._partitions.setdefault(fence.partition, set())
                if w.node not in filed:
                    for members in self._partitions.values():
                        members.discard(w.node)
                    filed.add(w.node)
            elif type(w) is PutStep:
                steps = self._steps.get(w.run)
                if steps is not None and w.step.node in steps:
                    steps[w.step.node] = cast(str, doc)
            elif type(w) is PutObserved:
                self._observed[w.resource.environment, w.resource.node] = w.resource
            elif type(w) is DeleteObserved:
                self._observed.pop((w.environment, w.node), None)
            elif type(w) is PutRun:
                run = self._runs.get(w.run.id)
                if run is not None:
                    run.update(w.run.model_dump(mode="json", include={"status", "finished_at"}))

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, partition: int, owner: str, *, ttl: float) -> Fence | None:
        now = time.monotonic()
        held = self._leases.get(partition)
        if held is not None and held[2] >= now:
            return None
        token = self._tokens[partition] = self._tokens.get(partition, 0) + 1
        self._leases[partition] = (owner, token, now + ttl)
        return Fence(partition, owner, token)

    async def renew(self, fences: Sequence[Fence], *, ttl: float) -> set[int]:
        now = time.monotonic()
        renewed = set()
        for fence in fences:
            held = self._leases.get(fence.partition)
            if held is None or held[:2] != (fence.owner, fence.token) or held[2] < now:
                continue
            self._leases[fence.partition] = (fence.owner, fence.token, now + ttl)
            renewed.add(fence.partition)
        return renewed

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
