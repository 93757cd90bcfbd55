"""The runtime: actors per realised node, a supervisor per process, runs in the state store."""

from ztdp.runtime.actor import ActorState, Status
from ztdp.runtime.ownership import StartRefused
from ztdp.runtime.runs import Run, RunStep
from ztdp.runtime.service import Runtime
from ztdp.runtime.supervisor import ShuttingDown, Supervisor

__all__ = [
    "ActorState",
    "Run",
    "RunStep",
    "Runtime",
    "ShuttingDown",
    "StartRefused",
    "Status",
    "Supervisor",
]
