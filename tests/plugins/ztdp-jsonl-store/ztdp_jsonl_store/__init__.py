"""An event store of a compliance team's own, for the tests: every new event is also written
as one line of CloudEvents JSON to the file `ZTDP_EVENT_STORE_URL` names (an append-only
audit log); queries are answered from memory.

It is not installed: the tests put this directory (the package and its dist-info, which
declares the entry point) on the path of the processes that use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ztdp.events import Event, MemoryEventStore
from ztdp.settings import Settings


class JsonLinesStore(MemoryEventStore):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._written: set[str] = set()

    async def append(self, events: Sequence[Event]) -> int:
        new = [e for e in dict((e.id, e) for e in events).values() if e.id not in self._written]
        with self._path.open("a") as log:
            for event in new:
                log.write(json.dumps(event.cloudevent()) + "\n")
        self._written.update(e.id for e in new)
        return await super().append(events)


def open_store(url: str | None, settings: Settings) -> JsonLinesStore:
    if not url:
        raise ValueError("ZTDP_EVENT_STORE_URL must name the audit log file")
    return JsonLinesStore(Path(url))
