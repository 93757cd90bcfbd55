"""State stores: `memory` (embedded default) and `redis` (shared); observed state, actor
snapshots, runs and leases (see `base`)."""

from __future__ import annotations

from ztdp.settings import Settings
from ztdp.state.base import (
    DeleteObserved,
    Fence,
    ObservedResource,
    PutActor,
    PutObserved,
    PutRun,
    PutStep,
    StateStore,
    Write,
    partition_of,
)
from ztdp.state.memory import MemoryStateStore
from ztdp.state.runs import Run, RunStep, StepStatus, Trigger


def open_state_store(settings: Settings) -> StateStore:
    """The state store `settings.state_backend` names (Redis is imported only when used)."""
    if settings.state_backend == "redis":
        from ztdp.state.redis import RedisStateStore

        return RedisStateStore.from_url(
            settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
        )
    return MemoryStateStore()


__all__ = [
    "DeleteObserved",
    "Fence",
    "MemoryStateStore",
    "ObservedResource",
    "PutActor",
    "PutObserved",
    "PutRun",
    "PutStep",
    "Run",
    "RunStep",
    "StateStore",
    "StepStatus",
    "Trigger",
    "Write",
    "open_state_store",
    "partition_of",
]
