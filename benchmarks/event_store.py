"""Events per second appended by the PostgreSQL event store, beside raw asyncpg in the same run.

Every side writes the same N events (run.step events with a realistic body) in batches of
BATCH, the size the NATS feed appends, into a table of the same definition (the store's own:
the same columns, unique id and indexes), each side in a fresh table:

- store:        `PostgresEventStore.append` (an advisory lock per batch, one `INSERT ... SELECT
                FROM unnest(...) ON CONFLICT (id) DO NOTHING`, ordered sequence numbers);
- raw COPY:     `copy_records_to_table` of the same rows, no idempotence, no lock;
- raw executemany: `INSERT` of the same rows with `executemany`, no idempotence, no lock.

The figure is the median of ROUNDS rounds, the sides interleaved. Goal: store / raw >= 0.5
against each baseline.

Run: `python benchmarks/event_store.py [N]` (default 50,000) with a PostgreSQL at
ZTDP_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres, where it
creates and drops a database of its own), on the loop ZTDP_EVENT_LOOP names (uvloop by
default), as `ztdp serve` runs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ztdp.cli.process import loop_factory
from ztdp.events import Event, make_event
from ztdp.settings import Settings
from ztdp_eventstore_postgres import PostgresEventStore

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
BATCH = 256
ROUNDS = 3
URL = os.environ.get("ZTDP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COLUMNS = ["id", "origin", "origin_seq", "type", "subject", "actor", "run", "time", "data"]


def events(n: int) -> list[Event]:
    run = uuid.uuid4().hex
    return [
        make_event(
            "run.step",
            subject=f"deployment/app{i % 100}/svc{i % 1000}@dev",
            run=run,
            actor="token:ci",
            data={
                "node": f"deployment/app{i % 100}/svc{i % 1000}@dev",
                "action": "update",
                "status": "Ready",
                "error": None,
                "provider": "kubernetes",
                "attempt": 1,
            },
        )
        for i in range(n)
    ]


def rows(batch: list[Event]) -> list[tuple[object, ...]]:
    return [
        (
            e.id,
            e.origin,
            e.sequence,
            e.type,
            e.subject,
            e.actor,
            e.run,
            datetime.fromtimestamp(e.time, UTC),
            json.dumps(dict(e.data), separators=(",", ":")),
        )
        for e in batch
    ]


def batches(items: list[Event]) -> list[list[Event]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


async def timed(work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return N / (time.perf_counter() - start)


async def round_(db: str, schema_n: int, data: list[Event]) -> dict[str, float]:
    rates: dict[str, float] = {}
    chunks = batches(data)

    store = await PostgresEventStore.connect(f"{db}?schema=store{schema_n}")
    try:

        async def through_store() -> None:
            for chunk in chunks:
                await store.append(chunk)

        rates["store"] = await timed(through_store)
    finally:
        await store.aclose()

    # The raw sides write into tables of the very same definition (made by the store).
    for side in ("copy", "executemany"):
        rates[side] = await raw_side(db, f"{side}{schema_n}", side, chunks)
    return rates


async def raw_side(db: str, schema: str, side: str, chunks: list[list[Event]]) -> float:
    made = await PostgresEventStore.connect(f"{db}?schema={schema}")
    await made.aclose()
    prepared = [rows(chunk) for chunk in chunks]  # encoded as the store encodes them, untimed
    sql = (
        f"INSERT INTO {schema}.ztdp_events ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
    )
    conn = await asyncpg.connect(db)
    try:

        async def raw() -> None:
            for records in prepared:
                if side == "copy":
                    await conn.copy_records_to_table(
                        "ztdp_events", records=records, columns=COLUMNS, schema_name=schema
                    )
                else:
                    await conn.executemany(sql, records)

        return await timed(raw)
    finally:
        await conn.close()


async def main() -> None:
    admin = await asyncpg.connect(URL)
    name = f"ztdp_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name}")
    db = URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        results: dict[str, list[float]] = {"store": [], "copy": [], "executemany": []}
        for n in range(ROUNDS):
            for side, rate in (await round_(db, n, events(N))).items():
                results[side].append(rate)
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    median = {side: statistics.median(rates) for side, rates in results.items()}
    print(f"{N:,} events in batches of {BATCH}, median of {ROUNDS} rounds (events/s)")
    for side, rate in median.items():
        print(f"  {side:<24}{rate:12,.0f}")
    print(f"ratio store / raw COPY:        {median['store'] / median['copy']:.2f} (goal >= 0.5)")
    print(
        f"ratio store / raw executemany: {median['store'] / median['executemany']:.2f} "
        "(goal >= 0.5)"
    )
    print(f"event loop: {Settings().event_loop}")


if __name__ == "__main__":
    loop = loop_factory(Settings().event_loop)()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
