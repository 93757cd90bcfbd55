"""Observed state kept in this process's memory."""

from __future__ import annotations

from ztdp.state.base import ObservedResource


class MemoryStateStore:
    def __init__(self) -> None:
        self._items: dict[str, ObservedResource] = {}

    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]:
        return {
            k: v
            for k, v in self._items.items()
            if v.environment == environment and application in (None, v.application)
        }

    async def put(self, resource: ObservedResource) -> None:
        self._items[resource.node] = resource

    async def delete(self, node: str) -> None:
        self._items.pop(node, None)

    async def aclose(self) -> None:
        return None
