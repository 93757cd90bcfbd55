"""Actor records loaded many per round trip.

A takeover activates thousands of actors within a moment, each loading its record first:
one `StateStore.actor` call each made the store's client the largest cost of a failover.
The activations that ask within the same turn of the event loop share one `actors` call.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from ztdp.errors import BackendUnavailable
from ztdp.state import StateStore


class _Batch:
    __slots__ = ("done", "found", "nodes", "outage")

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.found: dict[str, dict[str, Any]] | None = None  # None: the shared call failed
        self.outage: str | None = None  # why the store could not be reached, if that was why
        self.done = anyio.Event()


class RecordLoader:
    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._open: _Batch | None = None  # still taking nodes: its call is not made yet

    async def get(self, node: str) -> dict[str, Any] | None:
        """The node's record, None if it has none."""
        batch = self._open
        if batch is not None:
            batch.nodes.append(node)
            await batch.done.wait()
        else:
            batch = self._open = _Batch()
            batch.nodes.append(node)
            try:
                await anyio.lowlevel.checkpoint()  # the others asking now join this batch
                self._open = None
                batch.found = await self._state.actors(batch.nodes)
            except BackendUnavailable as exc:
                batch.outage = exc.detail  # everyone's answer: no need to ask again, alone
            except Exception:
                pass  # each asks alone below, and gets its own answer or error
            finally:
                if self._open is batch:
                    self._open = None  # cancelled before its call: nobody joins it any more
                batch.done.set()
        if batch.outage is not None:
            raise BackendUnavailable(batch.outage)
        if batch.found is None:
            return await self._state.actor(node)
        return batch.found.get(node)
