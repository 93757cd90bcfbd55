"""The provider seam: how a realised node becomes real somewhere (Kubernetes, Postgres, ...).

Every method is async and idempotent: applying twice changes nothing the second time.
Providers raise `TemporaryError` for what a retry may fix (unreachable, busy) and
`PermanentError` for what it cannot (refused spec); anything else counts as permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Health = Literal["Ready", "Progressing", "Degraded"]


@dataclass(frozen=True)
class Target:
    """Where a node is realised: its environment and that environment's provider settings."""

    environment: str
    settings: Mapping[str, Any] = field(default_factory=dict)  # e.g. spec.kubernetes
    defaults: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"kubeconfig": ...}


@dataclass(frozen=True)
class Resource:
    """A realised node as a provider sees it."""

    node: str  # e.g. deployment/checkout/checkout-api@dev
    kind: str  # deployment | resource
    name: str  # the node's own name, e.g. checkout-api (a provider may derive real names)
    application: str
    desired: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    state: Mapping[str, Any]  # the fields the planner compares with the desired state
    health: Health
    message: str = ""


@runtime_checkable
class Provider(Protocol):
    kind: str

    async def validate(self, *, resource: Resource) -> None:
        """Raise PermanentError naming the field if the desired state cannot be realised."""
        ...

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Field-level differences, each `{"path", "before", "after"}`."""
        ...

    async def apply(self, *, resource: Resource, target: Target) -> Observation: ...

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        """What exists now, or None if nothing does."""
        ...

    async def delete(self, *, resource: Resource, target: Target) -> None:
        """Remove what ZTDP created for this node, and nothing else."""
        ...

    async def health(self, *, resource: Resource, target: Target) -> Health: ...

    async def aclose(self) -> None: ...


REQUIRED_METHODS = ("validate", "diff", "apply", "observe", "delete", "health", "aclose")
