"""Actors: one per realised node, plus one per run that coordinates the run's steps.

An actor's state is a record in the state store (`ActorState.snapshot()`); the worker that owns
the actor's partition keeps it cached while it owns it and commits every change under its
fence. Messages are `Envelope`s of plain data (see `ztdp.runtime.mailbox`), one kind each:

  apply {resource, target}    make the resource as desired
  delete {resource, target}   remove what was made for it
  observe {}                  compare what exists with what was desired, repair or report
  reconcile {}                apply the last desired state again
  step {run, actor, step, environment}   carry out one step of a run (policy checked first)
  block {run, error}          a step of a run will not run: the actor says why
  advance {node, status, error}   to a run's coordinator (node `run/<id>`): a step finished
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from ztdp.providers import Resource, Target

RUN_PREFIX = "run/"
RUNS_REMEMBERED = 8  # finished steps an actor remembers, to answer a redelivered step again


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


class StepHooks(Protocol):
    """What the host asks the layer above about a step; injected, never sent in a message."""

    async def target(
        self, step: Mapping[str, Any], environment: Mapping[str, Any] | None
    ) -> tuple[Resource, Target]:
        """The node's resource and where to realise it. `environment` is the environment's
        data when the run recorded it (it was deleted since); else the graph says."""
        ...

    async def check(self, actor: str, step: Mapping[str, Any]) -> str | None:
        """Why policy refuses the step now, or None if it may go on."""
        ...

    async def resolve(self, resource: Resource, target: Target) -> Resource:
        """`resource` as a provider call (apply, observe) gets it: its secrets' values in
        `Resource.secrets`, read now and never kept (snapshots do not encode them)."""
        ...

    async def generated(
        self, resource: Resource, target: Target, secrets: Mapping[str, str]
    ) -> None:
        """Keep the values a provider generated for `resource` (`Observation.secrets`)."""
        ...


def encode_resource(r: Resource) -> dict[str, Any]:
    """What is kept of a resource: never its `secrets` (handed over for one call only)."""
    return {
        "node": r.node,
        "kind": r.kind,
        "name": r.name,
        "application": r.application,
        "desired": dict(r.desired),
        "depends_on": list(r.depends_on),
    }


def decode_resource(raw: Mapping[str, Any]) -> Resource:
    return Resource(
        node=raw["node"],
        kind=raw["kind"],
        name=raw["name"],
        application=raw["application"],
        desired=dict(raw["desired"]),
        depends_on=tuple(raw["depends_on"]),
    )


def encode_target(t: Target) -> dict[str, Any]:
    """What is kept of a target: the environment's own section, never the merged settings
    (they may hold the server's credentials); they are derived again where used."""
    return {"environment": t.environment, "reconcile": t.reconcile, "spec": dict(t.spec)}


def decode_target(raw: Mapping[str, Any]) -> Target:
    """A kept target, its settings not yet merged with the configured default (the
    supervisor does that before each provider call)."""
    if "spec" not in raw:  # kept before provider sections: {"environment", "settings", "defaults"}
        spec = {k: v for k, v in raw.get("settings", {}).items() if k != "reconcile"}
        reconcile = raw.get("settings", {}).get("reconcile", "repair")
        return Target(environment=raw["environment"], settings=spec, reconcile=reconcile, spec=spec)
    spec = dict(raw["spec"])
    return Target(
        environment=raw["environment"], settings=spec, reconcile=raw["reconcile"], spec=spec
    )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


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
    # run id -> [status, error] of the steps it finished, newest last
    steps_done: dict[str, list[Any]] = field(default_factory=dict)

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

    def snapshot(self) -> dict[str, Any]:
        """The record committed to the state store (JSON-able)."""
        return {
            **self.view(),
            "desired": self.desired,
            "resource": None if self.resource is None else encode_resource(self.resource),
            "target": None if self.target is None else encode_target(self.target),
            "steps_done": self.steps_done,
        }

    @classmethod
    def from_snapshot(cls, raw: Mapping[str, Any]) -> ActorState:
        return cls(
            node=raw["node"],
            provider=raw["provider"],
            status=Status(raw["status"]),
            desired=raw["desired"],
            observed=raw["observed"],
            generation=raw["generation"],
            observed_generation=raw["observed_generation"],
            last_error=raw["last_error"],
            message=raw["message"],
            restarts=raw["restarts"],
            resource=None if raw["resource"] is None else decode_resource(raw["resource"]),
            target=None if raw["target"] is None else decode_target(raw["target"]),
            updated_at=_time(raw["updated_at"]) or datetime.now(UTC),
            since=_time(raw["since"]),
            steps_done=dict(raw.get("steps_done") or {}),
        )

    def remember(self, run: str, status: str, error: str | None) -> None:
        self.steps_done[run] = [status, error]
        while len(self.steps_done) > RUNS_REMEMBERED:
            self.steps_done.pop(next(iter(self.steps_done)))


def run_node(run_id: str) -> str:
    """The node of a run's coordinator."""
    return f"{RUN_PREFIX}{run_id}"
