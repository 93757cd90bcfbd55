"""The graph-store seam: where the intent graph lives between requests and restarts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from ztdp.graph.model import Graph, Op


class Change(BaseModel):
    """One committed batch: the audit record of a stored change."""

    revision: int
    actor: str
    at: datetime
    ops: list[dict[str, Any]]


class GraphStore(Protocol):
    """Holds the graph; every write is one atomic batch guarded by a revision number.

    `read()` returns the store's current graph. It is shared, not a copy: callers must not
    change it, and must read it again after any `await` if they need the newest state.
    """

    async def read(self) -> Graph: ...

    async def commit(
        self, ops: Sequence[Op], *, expected_revision: int, actor: str = "anonymous"
    ) -> int:
        """Apply `ops` all or nothing if the graph is still at `expected_revision`.

        Returns the new revision. Raises `StaleRevision` if another writer got there first,
        and `InvalidGraphWrite` if the batch would break the graph's rules.
        """
        ...

    async def identity(self) -> str:
        """This graph's id: the same for every process sharing it, different for a graph
        that starts again from nothing (a new memory store, an emptied Redis). Hex digits.
        Its changes are recorded as events under it (`ztdp.events.make_change_event`)."""
        ...

    async def changes(self, *, since: int, limit: int) -> list[Change]:
        """Committed batches after revision `since`, oldest first (as far as kept)."""
        ...

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the backing service cannot be reached."""
        ...

    async def aclose(self) -> None: ...
