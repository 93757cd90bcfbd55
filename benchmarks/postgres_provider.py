"""Database-and-role pairs per second provisioned by the postgres provider, beside raw asyncpg.

Each side makes N databases one after the other and then removes them, on the same server,
through one admin connection pool:

- provider: `PostgresProvider.apply` of N `postgres` resources (a role with a SCRAM password,
            its database, ownership comments, `REVOKE ... FROM PUBLIC`, an advisory lock per
            node) and then `delete` of each (`DROP DATABASE ... WITH (FORCE)`, `DROP ROLE`);
- raw:      `CREATE DATABASE` then `DROP DATABASE` of N names, nothing else.

The figure is the median of ROUNDS rounds, the sides interleaved. Goal: provider / raw >= 0.5
(the provider does more per pair: a role, its password, the marks; the database's creation,
a copy of the template, dominates both).

Run: `python benchmarks/postgres_provider.py [N]` (default 30) with a PostgreSQL at
ZTDP_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres); every name
starts with a prefix of the run's own, and whatever carries it is dropped at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ztdp.cli.process import loop_factory
from ztdp.providers import Resource, Target
from ztdp.settings import Settings
from ztdp_postgres import PostgresProvider, quote_ident

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ROUNDS = 3
URL = os.environ.get("ZTDP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = f"zb{uuid.uuid4().hex[:8]}"


async def provider_side(round_: int) -> float:
    provider = PostgresProvider()
    target = Target(environment=f"r{round_}", settings={"url": URL, "prefix": PREFIX})
    resources = [
        Resource(
            node=f"resource/db{i}@r{round_}",
            kind="resource",
            name=f"db{i}",
            application="bench",
            desired={"type": "postgres", "config_ref": "v1"},
        )
        for i in range(N)
    ]
    try:
        start = time.perf_counter()
        for r in resources:
            await provider.apply(resource=r, target=target)
        for r in resources:
            await provider.delete(resource=r, target=target)
        return N / (time.perf_counter() - start)
    finally:
        await provider.aclose()


async def raw_side(round_: int) -> float:
    pool = await asyncpg.create_pool(URL, min_size=0, max_size=4)
    names = [quote_ident(f"{PREFIX}_raw{round_}_{i}") for i in range(N)]
    try:
        start = time.perf_counter()
        async with pool.acquire() as conn:
            for name in names:
                await conn.execute(f"CREATE DATABASE {name}")
            for name in names:
                await conn.execute(f"DROP DATABASE {name}")
        return N / (time.perf_counter() - start)
    finally:
        await pool.close()


async def cleanup() -> None:
    conn = await asyncpg.connect(URL)
    try:
        pattern = PREFIX + "%"
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", pattern
        ):
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        for (name,) in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", pattern
        ):
            await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
    finally:
        await conn.close()


async def main() -> None:
    rates: dict[str, list[float]] = {"provider": [], "raw": []}
    try:
        await raw_side(99)  # warm-up: the template's pages, the catalogs
        for r in range(ROUNDS):
            rates["raw"].append(await raw_side(r))
            rates["provider"].append(await provider_side(r))
    finally:
        await cleanup()
    median = {side: statistics.median(values) for side, values in rates.items()}
    print(f"{N} databases made then removed per side, median of {ROUNDS} rounds (pairs/s)")
    print(f"  provider (database + role, apply then delete)  {median['provider']:8.1f}")
    print(f"  raw asyncpg CREATE DATABASE / DROP DATABASE     {median['raw']:8.1f}")
    print(f"ratio provider / raw: {median['provider'] / median['raw']:.2f} (goal >= 0.5)")
    print(f"event loop: {Settings().event_loop}")


if __name__ == "__main__":
    loop = loop_factory(Settings().event_loop)()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
