"""The postgres provider against a real server: separation, names, rotation, races, errors."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from pg_support import resource

from tests.ports import free_port
from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers import Observation, Target
from ztdp.providers.settings import resolve as resolve_settings
from ztdp_postgres import PostgresProvider, PostgresSettings, database_name, quote_ident
from ztdp_postgres.names import quote_literal

HOSTILE = [
    'a"; DROP DATABASE {canary}; --',
    "Robert'); DROP ROLE postgres; --",
    "x" * 300,
    "ünïcødé-数据库-🐘",
    "back\\slash'quote\"double",
    "UPPER-Case",
]


@pytest.fixture
async def admin(admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(admin_url, timeout=5)
    yield conn
    await conn.close()


async def login(admin_url: str, user: str, password: str, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        admin_url, user=user, password=password, database=database, timeout=5
    )


async def exists(admin: asyncpg.Connection, name: str) -> tuple[bool, bool]:
    db = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    role = await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", name)
    return db == 1, role == 1


def url_of(observation: Observation) -> tuple[str, str]:
    """The role and database of the URL handed to the application."""
    parts = urlsplit(observation.secrets["url"])
    return parts.username or "", parts.path.lstrip("/")


async def test_two_applications_get_separate_databases_they_cannot_cross(
    provider: PostgresProvider, target: Target, env: str, admin_url: str
) -> None:
    orders = await provider.apply(resource=resource("orders", env, application="a"), target=target)
    billing = await provider.apply(
        resource=resource("billing", env, application="b"), target=target
    )
    (a_role, a_db), (b_role, b_db) = url_of(orders), url_of(billing)
    assert a_db != b_db and a_role != b_role
    conn = await login(admin_url, a_role, orders.secrets["password"], a_db)
    try:
        await conn.execute("CREATE TABLE ledger (amount int); INSERT INTO ledger VALUES (42)")
    finally:
        await conn.close()
    # b's role logs in fine to its own database, and is refused at a's, with or without a's
    # password: CONNECT is revoked from PUBLIC and b's role owns nothing there.
    (await login(admin_url, b_role, billing.secrets["password"], b_db)).terminate()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await login(admin_url, b_role, billing.secrets["password"], a_db)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await login(admin_url, b_role, orders.secrets["password"], a_db)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await login(admin_url, a_role, orders.secrets["password"], b_db)


async def test_apply_twice_is_idempotent_and_keeps_the_known_password(
    provider: PostgresProvider, target: Target, env: str, admin: asyncpg.Connection
) -> None:
    first = await provider.apply(resource=resource("db", env), target=target)
    again = await provider.apply(resource=resource("db", env, secrets=first.secrets), target=target)
    assert again == first and again.secrets == first.secrets
    assert again.state == {"type": "postgres", "config_ref": "v1"}
    seen = await provider.observe(
        resource=resource("db", env, secrets=first.secrets), target=target
    )
    assert seen == first and seen is not None and seen.secrets == first.secrets
    name = url_of(first)[1]
    assert await exists(admin, name) == (True, True)
    assert len(first.secrets["password"]) >= 32
    shown = repr(first) + repr(resource("db", env, secrets=first.secrets)) + first.message
    assert first.secrets["password"] not in shown
    unknown = await provider.observe(resource=resource("db", env), target=target)  # no password
    assert unknown is not None and unknown.state == first.state and unknown.health == "Ready"
    assert "login not checked" in unknown.message and unknown.secrets == {}
    assert (
        await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name
        )
        == name
    )


async def test_a_changed_config_ref_is_observed_and_applied(
    provider: PostgresProvider, target: Target, env: str
) -> None:
    first = await provider.apply(resource=resource("db", env), target=target)
    v2 = resource("db", env, secrets=first.secrets, config_ref="v2")
    seen = await provider.observe(resource=v2, target=target)
    assert seen is not None and seen.state["config_ref"] == "v1"
    assert await provider.diff(desired=v2.desired, observed=seen.state) == [
        {"path": "config_ref", "before": "v1", "after": "v2"}
    ]
    await provider.apply(resource=v2, target=target)
    seen = await provider.observe(resource=v2, target=target)
    assert seen is not None and seen.state == dict(v2.desired)


async def test_rotation_the_new_password_works_and_the_old_one_is_refused(
    provider: PostgresProvider, target: Target, env: str, admin_url: str
) -> None:
    old = await provider.apply(resource=resource("db", env), target=target)
    new = await provider.apply(resource=resource("db", env), target=target)  # no secrets: rotate
    role, db = url_of(new)
    assert new.secrets["password"] != old.secrets["password"]
    (await login(admin_url, role, new.secrets["password"], db)).terminate()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await login(admin_url, role, old.secrets["password"], db)
    stale = await provider.observe(resource=resource("db", env, secrets=old.secrets), target=target)
    assert stale is not None and stale.health == "Degraded"
    assert "cannot log in" in stale.message
    assert old.secrets["password"] not in stale.message
    assert (
        await provider.health(resource=resource("db", env, secrets=old.secrets), target=target)
        == "Degraded"
    )
    assert (
        await provider.health(resource=resource("db", env, secrets=new.secrets), target=target)
        == "Ready"
    )


async def test_delete_then_recreate(
    provider: PostgresProvider, target: Target, env: str, admin: asyncpg.Connection, admin_url: str
) -> None:
    first = await provider.apply(resource=resource("db", env), target=target)
    role, name = url_of(first)
    conn = await login(admin_url, role, first.secrets["password"], name)  # a live session
    await provider.delete(resource=resource("db", env), target=target)
    assert await exists(admin, name) == (False, False)
    assert await provider.observe(resource=resource("db", env), target=target) is None
    await provider.delete(resource=resource("db", env), target=target)  # harmless twice
    conn.terminate()
    again = await provider.apply(resource=resource("db", env), target=target)
    assert url_of(again) == (role, name)
    (await login(admin_url, role, again.secrets["password"], name)).terminate()


async def test_concurrent_applies_of_one_resource_all_succeed(
    target: Target, env: str, admin: asyncpg.Connection
) -> None:
    providers = [PostgresProvider() for _ in range(4)]  # as if four workers applied at once
    try:
        first = await providers[0].apply(resource=resource("warm", env), target=target)
        assert first.health == "Ready"
        secrets = {"password": "p" * 40}
        results = await asyncio.gather(
            *(
                p.apply(resource=resource("race", env, secrets=secrets), target=target)
                for p in providers
            )
        )
    finally:
        for p in providers:
            await p.aclose()
    assert {r.secrets["url"] for r in results} == {results[0].secrets["url"]}
    name = url_of(results[0])[1]
    assert await exists(admin, name) == (True, True)


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_resource_names_are_safely_quoted(
    provider: PostgresProvider,
    target: Target,
    env: str,
    admin: asyncpg.Connection,
    admin_url: str,
    run_prefix: str,
    hostile: str,
) -> None:
    canary = f"{run_prefix}_canary_{env}"
    await admin.execute(f"CREATE DATABASE {quote_ident(canary)}")
    name = hostile.format(canary=canary)
    made = await provider.apply(resource=resource(name, env, config_ref=name), target=target)
    role, db = url_of(made)
    assert db == database_name(run_prefix, env, name) == role
    assert len(db.encode()) <= 63 and db.startswith(f"{run_prefix}_{env}_")
    assert await exists(admin, db) == (True, True)
    assert await exists(admin, canary) == (True, False)  # nothing ran but what was meant
    assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'") == 1
    (await login(admin_url, role, made.secrets["password"], db)).terminate()
    seen = await provider.observe(resource=resource(name, env), target=target)
    assert seen is not None and seen.state == {"type": "postgres", "config_ref": name}
    await provider.delete(resource=resource(name, env), target=target)
    assert await exists(admin, db) == (False, False)


def test_names_are_deterministic_distinct_and_fit() -> None:
    names = {database_name("ztdp", "dev", n) for n in ["a-b", "a_b", "A-B", "x" * 300, "x" * 301]}
    assert len(names) == 5
    assert database_name("ztdp", "dev", "db") == database_name("ztdp", "dev", "db")
    assert database_name("ztdp", "a_b", "c") != database_name("ztdp", "a", "b_c")
    assert all(len(n.encode()) <= 63 for n in names)


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_quoting_means_what_the_server_reads(
    admin: asyncpg.Connection, conforming: str
) -> None:
    await admin.execute(f"SET standard_conforming_strings = {conforming}")
    for text in [*HOSTILE, "'", "\\", "\\'", "''", "$$", "E'\\\\'", '"']:
        assert await admin.fetchval(f"SELECT {quote_literal(text)}::text") == text
        column = text[:20]
        record = await admin.fetchrow(f"SELECT 1 AS {quote_ident(column)}")
        assert record is not None and list(record.keys()) == [column]
    with pytest.raises(PermanentError):
        quote_literal("nul\x00byte")


async def test_refuses_another_teams_database_and_role(
    provider: PostgresProvider,
    target: Target,
    env: str,
    admin: asyncpg.Connection,
    run_prefix: str,
) -> None:
    name = database_name(run_prefix, env, "theirs")
    await admin.execute(f"CREATE DATABASE {quote_ident(name)}")  # made outside ZTDP
    with pytest.raises(PermanentError, match="not made by ZTDP"):
        await provider.apply(resource=resource("theirs", env), target=target)
    with pytest.raises(PermanentError, match="refusing to drop"):
        await provider.delete(resource=resource("theirs", env), target=target)
    assert (await exists(admin, name))[0]
    seen = await provider.observe(resource=resource("theirs", env), target=target)
    assert seen is not None and seen.health == "Degraded" and seen.state == {}
    # A role marked for another node of the same name (another environment's, say).
    mine = await provider.apply(resource=resource("mine", env), target=target)
    other = resource("mine", env)
    impostor = dataclasses.replace(other, node="resource/mine@elsewhere")
    with pytest.raises(PermanentError, match="belongs to node resource/mine@"):
        await provider.delete(resource=impostor, target=target)
    assert await exists(admin, url_of(mine)[1]) == (True, True)


async def test_unreachable_server_is_temporary_and_hides_the_password(
    provider: PostgresProvider, env: str
) -> None:
    secret = "s3cr3t-admin-pw-xyzzy"
    port = free_port()  # nothing listens there
    bad = Target(
        environment=env,
        settings={"url": f"postgresql://postgres:{secret}@127.0.0.1:{port}/postgres"},
    )
    for call in (provider.apply, provider.observe, provider.delete, provider.health):
        with pytest.raises(TemporaryError) as caught:
            await call(resource=resource("db", env, secrets={"password": "q" * 40}), target=bad)
        assert secret not in str(caught.value) and "q" * 40 not in str(caught.value)
        assert str(port) in str(caught.value)


async def test_wrong_admin_password_and_missing_rights_are_permanent(
    provider: PostgresProvider,
    env: str,
    admin: asyncpg.Connection,
    admin_url: str,
    run_prefix: str,
) -> None:
    weak, secret = f"{run_prefix}_weak_{env}", "w" * 40
    await admin.execute(f"CREATE ROLE {weak} LOGIN PASSWORD {quote_literal(secret)}")
    parts = urlsplit(admin_url)
    url = parts._replace(netloc=f"{weak}@{parts.hostname}:{parts.port}").geturl()
    for password, problem in (("not-" + secret, "InvalidPasswordError"), (secret, "Privilege")):
        target = Target(
            environment=env, settings={"url": url, "password": password, "prefix": run_prefix}
        )
        with pytest.raises(PermanentError, match=problem) as caught:
            await provider.apply(resource=resource("db", env), target=target)
        assert password not in str(caught.value) and secret not in str(caught.value)


def test_settings_never_show_a_password() -> None:
    secret = "p%40ss-word-xyzzy"  # "p@ss-word-xyzzy" in the URL, percent-encoded
    s = PostgresSettings.from_target({"url": f"postgresql://admin:{secret}@db:5433/postgres"})
    assert s.admin_password() == "p@ss-word-xyzzy"
    assert s.url == "postgresql://admin@db:5433/postgres" and s.host_port == "db:5433"
    for shown in (repr(s), str(s)):
        assert "xyzzy" not in shown
    # The dump is what the core hands over as Target.settings: the password must survive it.
    assert PostgresSettings.from_target(s.model_dump(mode="json")) == s
    for bad in (
        {"url": f"mysql://admin:{secret}@db/x"},
        {"url": f"postgresql://admin:{secret}@db/x", "password": "another-xyzzy"},
        {"url": f"postgresql://admin:{secret}@db:notaport/x"},
        {"url": f"postgresql://admin:{secret}@db/x", "prefix": "Bad Prefix"},
        {"url": f"postgresql://admin:{secret}@db/x", "surprise": 1},
    ):
        with pytest.raises(PermanentError) as caught:
            PostgresSettings.from_target(bad)
        assert "xyzzy" not in str(caught.value) and "xyzzy" not in repr(caught.value.extensions)
        assert "settings are invalid" in str(caught.value)


async def test_validate_refuses_what_is_not_a_postgres_resource(provider: PostgresProvider) -> None:
    good = resource("db", "dev")
    await provider.validate(resource=good)
    for bad in (
        dataclasses.replace(good, kind="deployment"),
        dataclasses.replace(good, desired={"type": "redis", "config_ref": "v1"}),
        dataclasses.replace(good, name="nul\x00"),
    ):
        with pytest.raises(PermanentError):
            await provider.validate(resource=bad)


async def test_the_core_seam_takes_the_password_from_configuration_only(
    provider: PostgresProvider, env: str, admin_url: str, run_prefix: str
) -> None:
    configured = {"url": admin_url, "password": "configured-xyzzy", "prefix": run_prefix}
    resolved = resolve_settings(
        provider, "postgres", environment=env, configured=configured, spec={}
    )
    assert PostgresSettings.from_target(resolved).admin_password() == "configured-xyzzy"
    spec_host = {"host_for_apps": "db.apps.internal:6432"}
    made = await provider.apply(
        resource=resource("db", env),
        target=Target(
            environment=env,
            settings=resolve_settings(
                provider, "postgres", environment=env, configured=configured, spec=spec_host
            ),
            spec=spec_host,
        ),
    )
    assert "@db.apps.internal:6432/" in made.secrets["url"]
    for spec in (
        {"password": "env-xyzzy"},
        {"url": "postgresql://postgres:env-xyzzy@127.0.0.1/postgres"},
    ):
        with pytest.raises(PermanentError, match="server's configuration") as caught:
            resolve_settings(
                provider, "postgres", environment=env, configured=configured, spec=spec
            )
        assert "xyzzy" not in str(caught.value)


async def admin_role(
    admin: asyncpg.Connection, admin_url: str, name: str, options: str
) -> tuple[str, str]:
    """A role of `options` with a password, and a URL naming it (without the password)."""
    password = "r" * 40
    await admin.execute(f"CREATE ROLE {name} LOGIN {options} PASSWORD {quote_literal(password)}")
    parts = urlsplit(admin_url)
    return parts._replace(netloc=f"{name}@{parts.hostname}:{parts.port}").geturl(), password


async def test_an_admin_with_createrole_but_not_superuser_provisions_and_deletes(
    provider: PostgresProvider,
    env: str,
    admin: asyncpg.Connection,
    admin_url: str,
    run_prefix: str,
) -> None:
    url, password = await admin_role(
        admin, admin_url, f"{run_prefix}_mgr_{env}", "CREATEDB CREATEROLE"
    )
    target = Target(
        environment=env, settings={"url": url, "password": password, "prefix": run_prefix}
    )
    made = await provider.apply(resource=resource("db", env), target=target)
    role, db = url_of(made)
    (await login(admin_url, role, made.secrets["password"], db)).terminate()
    again = await provider.apply(resource=resource("db", env, secrets=made.secrets), target=target)
    assert again == made
    await provider.delete(resource=resource("db", env), target=target)
    assert await exists(admin, db) == (False, False)


async def test_too_many_connections_is_temporary(
    provider: PostgresProvider,
    env: str,
    admin: asyncpg.Connection,
    admin_url: str,
    run_prefix: str,
) -> None:
    url, password = await admin_role(
        admin, admin_url, f"{run_prefix}_full_{env}", "CREATEDB CREATEROLE CONNECTION LIMIT 0"
    )
    target = Target(
        environment=env, settings={"url": url, "password": password, "prefix": run_prefix}
    )
    with pytest.raises(TemporaryError, match="TooManyConnectionsError") as caught:
        await provider.apply(resource=resource("db", env), target=target)
    assert password not in str(caught.value)


async def test_a_database_left_unmarked_by_a_crash_is_finished_or_dropped(
    provider: PostgresProvider, target: Target, env: str, admin: asyncpg.Connection
) -> None:
    """Between `CREATE DATABASE` (outside any transaction) and its `COMMENT` a crash leaves a
    database without a mark, owned by the node's own role: it is the node's, not a stranger's."""
    made = await provider.apply(resource=resource("db", env), target=target)
    name = url_of(made)[1]
    await admin.execute(f"COMMENT ON DATABASE {quote_ident(name)} IS NULL")
    seen = await provider.observe(resource=resource("db", env, secrets=made.secrets), target=target)
    assert seen is not None and seen.health == "Degraded"  # the planner applies again
    await provider.apply(resource=resource("db", env, secrets=made.secrets), target=target)
    seen = await provider.observe(resource=resource("db", env, secrets=made.secrets), target=target)
    assert seen == made
    await admin.execute(f"COMMENT ON DATABASE {quote_ident(name)} IS NULL")
    await provider.delete(resource=resource("db", env), target=target)
    assert await exists(admin, name) == (False, False)


async def test_a_database_opened_to_public_is_degraded_until_applied_again(
    provider: PostgresProvider, target: Target, env: str, admin: asyncpg.Connection
) -> None:
    made = await provider.apply(resource=resource("db", env), target=target)
    name = url_of(made)[1]
    await admin.execute(f"GRANT CONNECT ON DATABASE {quote_ident(name)} TO PUBLIC")
    again = resource("db", env, secrets=made.secrets)
    seen = await provider.observe(resource=again, target=target)
    assert seen is not None and seen.health == "Degraded" and "open to PUBLIC" in seen.message
    assert seen.state == {}  # the planner sees every field to apply
    await provider.apply(resource=again, target=target)
    assert await provider.observe(resource=again, target=target) == made
