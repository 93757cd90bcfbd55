"""Actors: one per realised node, handling its mailbox one message at a time.

An actor's state is a small record that lives as long as the node. It has a mailbox, and a
worker task draining it, only while it has messages (a virtual actor, as in Orleans): 100,000
idle actors cost their records and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import anyio

from ztdp.providers import Resource, Target
from ztdp.runtime.runs import Run, RunStep

# A step is refused by the caller's check (policy) with a reason, or allowed with None.
StepCheck = Callable[[Run, Mapping[str, Any]], Awaitable[str | None]]
# The node's resource and target, for a plan step.
StepTarget = Callable[[Mapping[str, Any]], Awaitable[tuple[Resource, Target]]]


class Status(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    DRIFTED = "Drifted"  # differs from its desired state in a report-only environment
    FAILED = "Failed"
    BLOCKED = "Blocked"
    DELETING = "Deleting"
    DELETED = "Deleted"


@dataclass(slots=True)
class ActorState:
    node: str
    provider: str | None
    status: Status = Status.PENDING
    desired: dict[str, Any] | None = None
    observed: dict[str, Any] | None = None
    generation: int = 0
    observed_generation: int = 0
    last_error: str | None = None
    message: str = ""
    restarts: int = 0
    resource: Resource | None = None
    target: Target | None = None
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    since: datetime | None = None  # when it took its current status (promotion reads it)

    def view(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "provider": self.provider,
            "status": self.status.value,
            "generation": self.generation,
            "observed_generation": self.observed_generation,
            "last_error": self.last_error,
            "message": self.message,
            "restarts": self.restarts,
            "observed": self.observed,
            "updated_at": self.updated_at.isoformat(),
            "since": self.since.isoformat() if self.since else None,
        }


@dataclass(slots=True)
class Reply:
    """How a sender learns the outcome of one message: wait for it, or be called back."""

    on_done: Callable[[], None] | None = None  # e.g. free a parallelism slot at once
    status: Status | None = None
    error: str | None = None
    finished: bool = False
    _event: anyio.Event | None = None  # made only if someone waits

    async def wait(self) -> None:
        if not self.finished:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

    def finish(self, status: Status, error: str | None = None) -> None:
        self.status, self.error, self.finished = status, error, True
        if self._event is not None:
            self._event.set()
        if self.on_done is not None:
            self.on_done()


@dataclass(slots=True)
class _ResourceMessage:
    resource: Resource
    target: Target
    run: str | None = None
    reply: Reply | None = None


@dataclass(slots=True)
class Apply(_ResourceMessage):
    """Make the resource as desired."""


@dataclass(slots=True)
class Delete(_ResourceMessage):
    """Remove what was made for the resource."""


@dataclass(slots=True)
class Observe:
    reply: Reply | None = None


@dataclass(slots=True)
class Reconcile:
    reply: Reply | None = None


@dataclass(slots=True)
class Step:
    """Carry out one step of a run: check it against policy just before, then do it.

    The actor records the outcome in `record`, the run's record of the step.
    """

    run: Run
    record: RunStep
    step: Mapping[str, Any]  # the plan's step
    check: StepCheck
    target: StepTarget
    reply: Reply | None = None


Message = Apply | Delete | Observe | Reconcile | Step
