"""Observed state: what providers last saw of each realised node.

Until providers exist (issue 3) nothing writes here, so every plan step is a `create`; the
planner still compares against it so that updates, no-ops and deletions follow by themselves.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class ObservedResource(BaseModel):
    node: str = Field(description="realised node id, e.g. deployment/checkout/checkout-api@dev")
    source: str = Field(default="", description="the graph node it realised")
    kind: str
    application: str
    environment: str
    provider: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)


class StateStore(Protocol):
    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]: ...

    async def put(self, resource: ObservedResource) -> None: ...

    async def delete(self, node: str) -> None: ...

    async def aclose(self) -> None: ...
