"""The embedded default: the graph in this process's memory, gone when it stops."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from ztdp.errors import StaleRevision
from ztdp.graph.model import Graph, Op, op_to_json
from ztdp.graph.store.base import Change

LOG_MAX_LENGTH = 10_000


class MemoryGraphStore:
    def __init__(self, graph: Graph | None = None) -> None:
        # `graph`: start from a copy of another store's graph (a scratch store for a dry run).
        self._graph = Graph() if graph is None else graph
        # (revision, actor, time, batch): the batch's ops are kept as they are and turned into
        # JSON only when read, so a write allocates no copy of its data.
        self._log: deque[tuple[int, str, datetime, Sequence[Op]]] = deque(maxlen=LOG_MAX_LENGTH)
        self._id = os.urandom(8).hex()  # a new graph each time: it starts from nothing

    async def identity(self) -> str:
        return self._id

    async def read(self) -> Graph:
        return self._graph

    async def commit(
        self, ops: Sequence[Op], *, expected_revision: int, actor: str = "anonymous"
    ) -> int:
        graph = self._graph
        if expected_revision != graph.revision:
            raise StaleRevision(
                f"graph is at revision {graph.revision}, the write expected {expected_revision}"
            )
        batch = graph.expand(ops)
        graph.check(batch)
        graph.apply(batch, graph.revision + 1)
        self._log.append((graph.revision, actor, datetime.now(UTC), batch))
        return graph.revision

    async def changes(self, *, since: int, limit: int) -> list[Change]:
        return [
            Change(revision=rev, actor=actor, at=at, ops=[op_to_json(op) for op in batch])
            for rev, actor, at, batch in self._log
            if rev > since
        ][:limit]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
