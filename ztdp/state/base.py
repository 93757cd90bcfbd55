"""Observed state: what providers last saw of each realised node.

Actors write it after every apply and observation; the planner compares desired state with it,
so updates, no-ops and deletions follow by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True, frozen=True)
class ObservedResource:
    """A plain record rather than a model: actors write one per step, from checked fields."""

    node: str  # realised node id, e.g. deployment/checkout/checkout-api@dev
    kind: str
    application: str
    environment: str
    source: str = ""  # the graph node it realised
    provider: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)


class StateStore(Protocol):
    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]: ...

    async def put(self, resource: ObservedResource) -> None: ...

    async def delete(self, node: str) -> None: ...

    async def aclose(self) -> None: ...
