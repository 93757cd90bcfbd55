"""The event store's background work in one process: pruning by age and, with NATS, the feed.

`async with EventKeeper(...)` starts both in a task group of its own and stops them when the
block ends; enter and leave it from the same task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ztdp.errors import BackendUnavailable
from ztdp.events.store import EventStore

log = logging.getLogger("ztdp.events")

Feed = Callable[..., Coroutine[Any, Any, None]]  # called with task_status=, as `tg.start` does


class EventKeeper:
    def __init__(
        self,
        store: EventStore,
        *,
        retention: timedelta,
        interval: float,
        feed: Feed | None = None,
    ) -> None:
        self.store = store
        self._retention = retention
        self._interval = interval
        self._feed = feed
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> EventKeeper:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            if self._feed is not None:
                await tg.start(self._feed)
            tg.start_soon(self._prune_periodically)
        except BaseException:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        tg.cancel_scope.cancel()
        # The block's own exception goes on by itself; handed to the task group, anyio would
        # wrap it into an exception group of the keeper's.
        await tg.__aexit__(None, None, None)
        return None

    async def prune(self) -> int:
        """Remove what is older than the retention; how many events that was."""
        removed = await self.store.prune(before=datetime.now(UTC) - self._retention)
        if removed:
            log.info(
                "pruned %d events older than %s from the event store", removed, self._retention
            )
        return removed

    async def _prune_periodically(self) -> None:
        while True:
            try:
                await self.prune()
            except BackendUnavailable as exc:  # it prunes next time: nothing is lost by waiting
                log.warning("cannot prune the event store now: %s", exc.detail)
            await anyio.sleep(self._interval)
