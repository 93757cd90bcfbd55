"""Runs: one execution of a plan, with the status of each of its steps."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from ztdp.errors import NotFound

StepStatus = Literal[
    "Pending", "Progressing", "Ready", "Degraded", "Failed", "Blocked", "Deleted", "Unchanged"
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

    _by_node: dict[str, RunStep] = PrivateAttr(default_factory=dict)

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
        if len(self._by_node) != len(self.steps):
            self._by_node = {s.node: s for s in self.steps}
        return self._by_node[node]


class RunStore:
    """Runs of this process, newest last (the last `keep`)."""

    def __init__(self, keep: int = 1000) -> None:
        self._runs: dict[str, Run] = {}
        self._keep = keep

    def add(self, run: Run) -> None:
        self._runs[run.id] = run
        while len(self._runs) > self._keep:
            self._runs.pop(next(iter(self._runs)))

    def get(self, run_id: str) -> Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"run {run_id} does not exist") from None

    def list(self) -> list[Run]:
        return list(self._runs.values())
