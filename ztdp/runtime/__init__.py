"""The runtime: actors per realised node, a supervisor, runs."""

from ztdp.runtime.actor import ActorState, Status
from ztdp.runtime.runs import Run, RunStep, RunStore
from ztdp.runtime.service import Runtime
from ztdp.runtime.supervisor import ShuttingDown, Supervisor

__all__ = [
    "ActorState",
    "Run",
    "RunStep",
    "RunStore",
    "Runtime",
    "ShuttingDown",
    "Status",
    "Supervisor",
]
