"""The embedded default: the graph in this process's memory, gone when it stops."""

from __future__ import annotations

from collections.abc import Sequence

from ztdp.errors import StaleRevision
from ztdp.graph.model import Graph, Op


class MemoryGraphStore:
    def __init__(self) -> None:
        self._graph = Graph()

    async def read(self) -> Graph:
        return self._graph

    async def commit(self, ops: Sequence[Op], *, expected_revision: int) -> int:
        graph = self._graph
        if expected_revision != graph.revision:
            raise StaleRevision(
                f"graph is at revision {graph.revision}, the write expected {expected_revision}"
            )
        batch = graph.expand(ops)
        graph.check(batch)
        graph.apply(batch, graph.revision + 1)
        return graph.revision

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
