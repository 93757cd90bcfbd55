"""A file-backed event store on the standard library's SQLite: the embedded default made
durable, with nothing to install or run (`ZTDP_EVENT_STORE=sqlite`).

`ZTDP_EVENT_STORE_URL` is the file (`/var/lib/ztdp/events.db` or `sqlite:///...`; default
`ztdp-events.db` in the working directory). Every call runs in a worker thread
(`anyio.to_thread`), one at a time on one connection, so the event loop never waits on the
disk. SQLite lets one writer at a time commit, so sequence numbers (`AUTOINCREMENT`: never
reused, even after a prune) commit in order, as cursors need. Processes on one host may share
the file (write-ahead log; a writer waits up to `BUSY_TIMEOUT` for another).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ztdp.errors import BackendUnavailable
from ztdp.events.bus import Event
from ztdp.events.store import CHANGED, EventPage, EventQuery
from ztdp.settings import Settings

T = TypeVar("T")
BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's
DEFAULT_PATH = "ztdp-events.db"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ztdp_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    origin_seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    actor TEXT NOT NULL,
    run TEXT,
    time_us INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ztdp_events_subject ON ztdp_events (subject, seq);
CREATE INDEX IF NOT EXISTS ztdp_events_run ON ztdp_events (run, seq) WHERE run IS NOT NULL;
CREATE INDEX IF NOT EXISTS ztdp_events_actor ON ztdp_events (actor, seq);
CREATE INDEX IF NOT EXISTS ztdp_events_time ON ztdp_events (time_us);
CREATE INDEX IF NOT EXISTS ztdp_events_changes ON ztdp_events (origin, origin_seq)
    WHERE type = 'io.ztdp.graph.changed';
"""
_COLUMNS = "id, origin, origin_seq, type, subject, actor, run, time_us, data"


def _micros(when: datetime) -> int:
    """Microseconds since the epoch: times are kept, compared and rendered to the microsecond."""
    return (when - _EPOCH) // _MICRO


def _event(row: tuple[Any, ...]) -> Event:
    _id, origin, origin_seq, type_, subject, actor, run, time_us, data = row
    return Event(type_, subject, json.loads(data), actor, run, time_us / 1e6, origin_seq, origin)


class SqliteEventStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = anyio.Lock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path) -> SqliteEventStore:
        """Open (and create if missing) the store in `path`."""
        store = cls(Path(path))
        await store._call(store._open)
        return store

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def _call(self, work: Callable[[], T]) -> T:
        async with self._lock:
            try:
                return await anyio.to_thread.run_sync(work)
            except sqlite3.OperationalError as exc:  # locked too long, disk full, unreadable
                raise BackendUnavailable(f"event store: SQLite file {self._path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise anyio.ClosedResourceError
        return self._db

    async def append(self, events: Sequence[Event]) -> int:
        rows = [
            (
                e.id,
                e.origin,
                e.sequence,
                e.type,
                e.subject,
                e.actor,
                e.run,
                _micros(datetime.fromtimestamp(e.time, UTC)),
                json.dumps(dict(e.data), separators=(",", ":")),
            )
            for e in events
        ]
        if not rows:
            return 0

        def work() -> int:
            db = self._conn()
            before = db.total_changes
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    f"INSERT OR IGNORE INTO ztdp_events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            return db.total_changes - before

        return await self._call(work)

    async def query(self, query: EventQuery) -> EventPage:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("subject", query.node), ("run", query.run), ("actor", query.actor)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.type is not None:
            prefix = f"io.ztdp.{query.type}"
            where.append("substr(type, 1, ?) = ?")
            args += [len(prefix), prefix]
        if query.since is not None:
            where.append("time_us >= ?")
            args.append(_micros(query.since))
        if query.until is not None:
            where.append("time_us < ?")
            args.append(_micros(query.until))
        newest = query.after is None
        if not newest:
            where.append("seq > ?")
            args.append(query.after)
        conditions = " AND ".join(where) or "1"
        sql = (
            f"SELECT seq, {_COLUMNS} FROM ztdp_events WHERE {conditions} "
            f"ORDER BY seq {'DESC' if newest else 'ASC'} LIMIT ?"
        )
        args.append(max(query.limit, 0))

        def work() -> tuple[int, list[tuple[Any, ...]]]:
            db = self._conn()
            with db:  # one read transaction: the head and the page of one snapshot
                db.execute("BEGIN")
                head = db.execute("SELECT coalesce(max(seq), 0) FROM ztdp_events").fetchone()[0]
                return int(head), db.execute(sql, args).fetchall()

        head, rows = await self._call(work)
        rows.sort(key=lambda r: int(r[0]))
        events = [_event(r[1:]) for r in rows]
        if newest:
            return EventPage(events, head)
        if query.limit > 0 and len(rows) == query.limit:
            return EventPage(events, int(rows[-1][0]))
        return EventPage(events, max(head, query.after or 0))

    async def changes(self, *, graph: str, since: int, limit: int) -> list[Event]:
        sql = (
            f"SELECT {_COLUMNS} FROM ztdp_events WHERE type = '{CHANGED}' AND origin = ? "
            "AND origin_seq > ? ORDER BY origin_seq LIMIT ?"
        )
        rows = await self._call(
            lambda: self._conn().execute(sql, (graph, since, max(limit, 0))).fetchall()
        )
        return [_event(r) for r in rows]

    async def prune(self, *, before: datetime) -> int:
        def work() -> int:
            with self._conn() as db:
                return db.execute(
                    "DELETE FROM ztdp_events WHERE time_us < ?", (_micros(before),)
                ).rowcount

        return await self._call(work)

    async def ping(self) -> None:
        await self._call(lambda: self._conn().execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await anyio.to_thread.run_sync(db.close)


async def open_sqlite(url: str | None, settings: Settings) -> SqliteEventStore:
    """The built-in `sqlite` store: `url` is the file, optionally as `sqlite:///path`."""
    path = (url or DEFAULT_PATH).removeprefix("sqlite://")
    return await SqliteEventStore.open(path)
