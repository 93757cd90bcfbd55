"""Runs: one execution of a plan, with the status of each of its steps.

A run is a record in the state store, not an object of one process: the API creates it, the
run's coordinator and the steps' actors update it (each under its own fence), and any API
process reads it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

StepStatus = Literal[
    "Pending",
    "Queued",  # sent to its actor, not started yet
    "Progressing",  # started: its intent is recorded before the provider is called
    "Ready",
    "Degraded",
    "Failed",
    "Blocked",
    "Deleted",
    "Unchanged",
]


class RunStep(BaseModel):
    node: str
    source: str
    kind: str
    action: str
    provider: str | None
    wave: int
    status: StepStatus = "Pending"
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


Trigger = Literal["deploy", "apply", "delete", "undeploy"]


class Run(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    trigger: Trigger
    environment: str
    application: str | None = None
    actor: str
    status: Literal["Running", "Succeeded", "Failed"] = "Running"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    steps: list[RunStep] = Field(default_factory=list)

    @classmethod
    def from_plan(
        cls,
        waves: Sequence[Mapping[str, Any]],
        *,
        trigger: Trigger,
        environment: str,
        actor: str,
        application: str | None = None,
    ) -> Run:
        """A run with one Pending step for every step of the plan's waves."""
        steps = [
            RunStep(
                node=s["node"],
                source=s["source"],
                kind=s["kind"],
                action=s["action"],
                provider=s["provider"],
                wave=w["index"],
            )
            for w in waves
            for s in w["steps"]
        ]
        return cls(
            trigger=trigger,
            environment=environment,
            application=application,
            actor=actor,
            steps=steps,
        )

    def step(self, node: str) -> RunStep:
        """The step of `node` (a lookup: steps are replaced in place as they are recorded)."""
        return next(s for s in self.steps if s.node == node)
