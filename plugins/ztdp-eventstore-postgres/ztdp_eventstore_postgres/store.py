"""ZTDP's events in PostgreSQL, on asyncpg.

One table, `<schema>.ztdp_events`: `seq` (bigserial: the cursor), the event's id (unique:
appending is `INSERT ... ON CONFLICT (id) DO NOTHING`), its attributes as indexed columns and
its data as JSONB (or, for data JSONB cannot hold, a string with a NUL character, as `json`
text in `data_json`: the event is kept as it was rather than refused). It is created at start
if missing (every statement is `IF NOT EXISTS`, under an advisory lock, so processes starting
together agree).

Appends take a transaction-scoped advisory lock, so sequence numbers are committed in the
order they are drawn: a reader that sees event n sees every event before it, and a cursor
never skips an event committed late. A batch is one statement over arrays (`unnest`), the
lock included: one round trip and one transaction whatever its size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ztdp.errors import BackendUnavailable, InvalidInput
from ztdp.events import Event, EventPage, EventQuery
from ztdp.settings import Settings

log = logging.getLogger("ztdp.events.postgres")

CHANGED = "io.ztdp.graph.changed"
LOCK = 0x5A544450_0001  # pg_advisory_xact_lock key of appends ("ZTDP", 1)
MIGRATION_LOCK = 0x5A544450_0002

# What asyncpg raises when the server cannot be reached or went away.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {t} (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    origin text NOT NULL,
    origin_seq bigint NOT NULL,
    type text NOT NULL,
    subject text NOT NULL,
    actor text NOT NULL,
    run text,
    time timestamptz NOT NULL,
    data jsonb,
    data_json json,
    CHECK ((data IS NULL) <> (data_json IS NULL))
);
CREATE INDEX IF NOT EXISTS ztdp_events_subject ON {t} (subject, seq);
CREATE INDEX IF NOT EXISTS ztdp_events_run ON {t} (run, seq) WHERE run IS NOT NULL;
CREATE INDEX IF NOT EXISTS ztdp_events_type ON {t} (type text_pattern_ops, seq);
CREATE INDEX IF NOT EXISTS ztdp_events_actor ON {t} (actor, seq);
CREATE INDEX IF NOT EXISTS ztdp_events_time ON {t} (time);
CREATE INDEX IF NOT EXISTS ztdp_events_changes ON {t} (origin, origin_seq)
    WHERE type = 'io.ztdp.graph.changed';
"""

_COLUMNS = "id, origin, origin_seq, type, subject, actor, run, time, data, data_json"
# What queries read: the data as JSON text, from whichever column holds it.
_READ = (
    "id, origin, origin_seq, type, subject, actor, run, time, "
    "coalesce(data::text, data_json::text) AS data"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _event(row: asyncpg.Record) -> Event:
    return Event(
        row["type"],
        row["subject"],
        json.loads(row["data"]),
        row["actor"],
        row["run"],
        row["time"].timestamp(),
        row["origin_seq"],
        row["origin"],
    )


def _redacted(url: str) -> str:
    """`url` without its password, to name it in an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> tuple[str, str]:
    """The DSN asyncpg takes and the schema: `?schema=` is this store's, not a server setting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "public")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresEventStore:
    """An `ztdp.events.EventStore` in PostgreSQL; open it with `await connect(url)`."""

    def __init__(self, pool: asyncpg.Pool, *, url: str, schema: str) -> None:
        self._pool = pool
        self._url = _redacted(url)
        self._schema = _ident(schema)
        self._table = f"{self._schema}.ztdp_events"
        t = self._table
        # One statement, so one transaction and one round trip: the lock is taken before the
        # first row is numbered and held until the statement commits.
        self._append_sql = f"""
            WITH appending AS (SELECT pg_advisory_xact_lock({LOCK}))
            INSERT INTO {t} ({_COLUMNS})
            SELECT {_COLUMNS} FROM appending, unnest(
                $1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[], $9::jsonb[], $10::json[]
            ) WITH ORDINALITY AS batch({_COLUMNS}, n)
            ORDER BY n
            ON CONFLICT (id) DO NOTHING"""
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109  (a limit for every call, for the store's life)
        min_size: int = 1,
        max_size: int = 4,
    ) -> PostgresEventStore:
        """Connect, and create the schema, the table and its indexes if missing.

        `url` is a PostgreSQL URL (`postgresql://user@host:5432/db`); `?schema=name` puts
        the table in that schema (created if missing; default `public`). Raises
        `BackendUnavailable` naming the server when it does not answer within `timeout`.
        """
        dsn, schema = split_url(url)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                command_timeout=timeout * 2,
            )
        except _UNREACHABLE as exc:
            raise BackendUnavailable(
                f"event store: PostgreSQL at {_redacted(url)} unreachable: {exc!r}"
            ) from exc
        except asyncpg.PostgresError as exc:  # a wrong database or user, say
            raise InvalidInput(
                f"event store: PostgreSQL at {_redacted(url)} refused the connection: {exc}"
            ) from exc
        store = cls(pool, url=url, schema=schema)
        try:
            await store._migrate()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def _migrate(self) -> None:
        ddl = _SCHEMA.format(s=self._schema, t=self._table)
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(ddl)

    def _connection(self) -> Any:
        return _Guarded(self._pool, self._url)

    async def append(self, events: Sequence[Event]) -> int:
        unique: dict[str, Event] = {}
        for event in events:
            unique.setdefault(event.id, event)
        if not unique:
            return 0
        batch = list(unique.values())
        data = [json.dumps(dict(e.data), separators=(",", ":")) for e in batch]
        args = (
            [e.id for e in batch],
            [e.origin for e in batch],
            [e.sequence for e in batch],
            [e.type for e in batch],
            [e.subject for e in batch],
            [e.actor for e in batch],
            [e.run for e in batch],
            [datetime.fromtimestamp(e.time, UTC) for e in batch],
            [None if "\\u0000" in d else d for d in data],
            [d if "\\u0000" in d else None for d in data],
        )
        async with self._connection() as conn:
            status = await conn.execute(self._append_sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    async def query(self, query: EventQuery) -> EventPage:
        where, args = [], []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.node is not None:
            where.append(f"subject = {arg(query.node)}")
        if query.run is not None:
            where.append(f"run = {arg(query.run)}")
        if query.type is not None:
            where.append(f"type LIKE {arg(_like_prefix('io.ztdp.' + query.type))}")
        if query.actor is not None:
            where.append(f"actor = {arg(query.actor)}")
        if query.since is not None:
            where.append(f"time >= {arg(query.since)}")
        if query.until is not None:
            where.append(f"time < {arg(query.until)}")
        newest = query.after is None
        if not newest:
            where.append(f"seq > {arg(query.after)}")
        limit = arg(max(query.limit, 0))
        order = "DESC" if newest else "ASC"
        conditions = " AND ".join(where) or "true"
        # One statement, so one snapshot: the head is the newest sequence this page saw.
        sql = f"""
            SELECT h.head, p.* FROM (SELECT coalesce(max(seq), 0) AS head FROM {self._table}) h
            LEFT JOIN LATERAL (
                SELECT seq, {_READ} FROM {self._table} WHERE {conditions}
                ORDER BY seq {order} LIMIT {limit}
            ) p ON true"""
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *args)
        head = rows[0]["head"] if rows else 0
        found = sorted((r for r in rows if r["seq"] is not None), key=lambda r: r["seq"])
        events = [_event(r) for r in found]
        if newest:
            return EventPage(events, head)
        if query.limit > 0 and len(found) == query.limit:
            return EventPage(events, found[-1]["seq"])
        return EventPage(events, max(head, query.after or 0))

    async def changes(self, *, graph: str, since: int, limit: int) -> list[Event]:
        sql = f"""
            SELECT {_READ} FROM {self._table}
            WHERE type = '{CHANGED}' AND origin = $1 AND origin_seq > $2
            ORDER BY origin_seq LIMIT $3"""
        async with self._connection() as conn:
            rows = await conn.fetch(sql, graph, since, max(limit, 0))
        return [_event(r) for r in rows]

    async def prune(self, *, before: datetime) -> int:
        async with self._connection() as conn:
            status = await conn.execute(f"DELETE FROM {self._table} WHERE time < $1", before)
        return int(status.rsplit(" ", 1)[-1])

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()


class _Guarded:
    """A pooled connection whose connection failures are `BackendUnavailable`."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._acquired: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._acquired = self._pool.acquire()
            return await self._acquired.__aenter__()  # type: ignore[no-any-return]
        except _UNREACHABLE as exc:
            raise BackendUnavailable(
                f"event store: PostgreSQL at {self._url} unreachable: {exc!r}"
            ) from exc

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._acquired.__aexit__(*exc_info)
        except _UNREACHABLE as exc:
            log.debug("releasing a connection to %s: %r", self._url, exc)
        failure = exc_info[1]
        if isinstance(failure, _UNREACHABLE):
            raise BackendUnavailable(
                f"event store: PostgreSQL at {self._url} unreachable: {failure!r}"
            ) from failure


async def open_store(url: str | None, settings: Settings) -> PostgresEventStore:
    """The `postgres` entry point: `ZTDP_EVENT_STORE_URL` names the database."""
    if not url:
        raise InvalidInput(
            "ZTDP_EVENT_STORE=postgres needs ZTDP_EVENT_STORE_URL, e.g. "
            "postgresql://ztdp@127.0.0.1:5432/ztdp",
            field="event_store_url",
        )
    return await PostgresEventStore.connect(url)
