"""State stores: observed state, actor snapshots, runs and leases (see `base`)."""

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
from ztdp.state.runs import FINISHED, Run, RunStep, StepStatus, Trigger

__all__ = [
    "FINISHED",
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
    "partition_of",
]
