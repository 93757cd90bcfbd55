"""A `postgres` resource as a database and a LOGIN role of its own, on asyncpg.

The node `resource/<name>@<env>` gets a database and a role, both named
`database_name(prefix, env, name)`, on the server its environment names
(`spec.providers.postgres.url`). The role owns the database and is the only role (besides
superusers) that may connect to it: `CONNECT` and `TEMPORARY` are revoked from `PUBLIC`.

Ownership: both objects carry a `COMMENT` holding `{"ztdp.io/node": <node>, ...}`; the
provider changes or drops only objects whose comment names the node at hand, so it never
adopts or drops another team's database or role of the same name. A database without a
comment owned by the node's own role is one a concurrent apply has just created: it is
finished, not refused.

Password: `Resource.secrets["password"]` when the core has one (apply is then idempotent);
none means "none yet, or rotation asked", and a new one is generated. The role's password is
set as a SCRAM verifier, so the password itself never reaches the server's statement text.
The outputs are `Observation.secrets == {"password": ..., "url": ...}`.

No `Watching`: nothing notifies a change to a database or a role, so the core polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import asyncpg
from asyncpg import exceptions as pgx

from ztdp.errors import PermanentError, TemporaryError
from ztdp.planner import diff as field_diff
from ztdp.providers import Health, Observation, Resource, Target
from ztdp_postgres.names import (
    database_name,
    new_password,
    quote_ident,
    quote_literal,
    scram_verifier,
)
from ztdp_postgres.settings import PostgresSettings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Conn = PoolConnectionProxy[asyncpg.Record]  # an admin connection, lent by a pool


KIND = "postgres"
MARK = "ztdp.io/node"
LOCK_CLASS = 0x5A54_5047  # first key of the advisory locks of this provider ("ZTPG")

# What a retry may fix: the server unreachable, going away, starting, full or busy.
_TEMPORARY = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    pgx.PostgresConnectionError,
    pgx.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now, ...
    pgx.InsufficientResourcesError,  # 53300 too many connections, disk full, ...
    pgx.TransactionRollbackError,  # 40001 serialization failure, 40P01 deadlock
    pgx.ObjectInUseError,  # 55006 e.g. the template database is being accessed
    pgx.LockNotAvailableError,
)
# Login refused as the application's role: what `observe` reports as Degraded.
_LOGIN_REFUSED = (
    pgx.InvalidAuthorizationSpecificationError,  # 28000, 28P01 wrong password
    pgx.InsufficientPrivilegeError,  # 42501 no CONNECT on the database
    pgx.InvalidCatalogNameError,  # 3D000 the database is gone
)
# A concurrent CREATE of the same name: unique_violation when both got past the check.
_DUPLICATE = (pgx.DuplicateDatabaseError, pgx.DuplicateObjectError, pgx.UniqueViolationError)


@dataclass(frozen=True)
class _Found:
    """A database or role of the node's name as the server has it."""

    mark: dict[str, Any] | None  # its ZTDP comment, if it has one
    owner: str | None = None  # a database's owner
    public: bool = False  # a database PUBLIC (every role) may connect to


@dataclass(frozen=True)
class _Server:
    """What the provider needs to know of a server and its admin role, asked once."""

    version: int  # server_version_num, e.g. 150004
    superuser: bool


def _scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _mark(comment: str | None) -> dict[str, Any] | None:
    if not comment:
        return None
    try:
        mark = json.loads(comment)
    except ValueError:
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get(MARK), str) else None


class PostgresProvider:
    """The `postgres` provider (see the module)."""

    kind = KIND
    settings_model = PostgresSettings
    # What it generates (Observation.secrets); the core injects `url` into using services.
    outputs = ("password", "url")

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str | None], asyncpg.Pool] = {}
        self._lock = asyncio.Lock()
        self._servers: dict[tuple[str, str | None], _Server] = {}

    # -- the seam --------------------------------------------------------------------------

    async def validate(self, *, resource: Resource) -> None:
        if resource.kind != "resource":
            raise PermanentError(
                f"{resource.node}: the postgres provider realises resources, not {resource.kind}"
            )
        if resource.desired.get("type") != KIND:
            raise PermanentError(f"{resource.node}: desired.type must be 'postgres'")
        if not resource.name.strip() or "\x00" in resource.name:
            raise PermanentError(f"{resource.node}: a resource needs a name without NUL")
        ref = resource.desired.get("config_ref")
        if ref is not None and not isinstance(ref, str):
            raise PermanentError(f"{resource.node}: desired.config_ref must be a string")

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [dict(c) for c in field_diff(observed, desired)]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        await self.validate(resource=resource)
        settings = PostgresSettings.from_target(target.settings)
        name = self._name(settings, target, resource)
        password = _secrets(resource).get("password") or new_password()
        verifier = scram_verifier(password)
        mark = self._comment(resource)
        async with self._admin(settings, resource, password, lock=name) as conn:
            role = await self._role(conn, name)
            if role is None:
                try:
                    async with conn.transaction():  # the role and its mark, together
                        await conn.execute(
                            f"CREATE ROLE {quote_ident(name)} LOGIN "
                            f"PASSWORD {quote_literal(verifier)}"
                        )
                        await conn.execute(
                            f"COMMENT ON ROLE {quote_ident(name)} IS {quote_literal(mark)}"
                        )
                except _DUPLICATE:  # a concurrent apply made it: check whose it is below
                    role = await self._role(conn, name)
                    self._check_owned(resource, "role", name, role)
                    await self._set_password(conn, name, verifier)
            else:
                self._check_owned(resource, "role", name, role)
                await self._set_password(conn, name, verifier)
            server = await self._server(conn, settings)
            if not server.superuser:
                # An admin with CREATEROLE but not superuser (a managed server's usual "master
                # user") may make a database owned by a role, and drop it, only as a member of
                # that role.
                await conn.execute(f"GRANT {quote_ident(name)} TO CURRENT_USER")
            database = await self._database(conn, name)
            if database is None:
                # CREATE DATABASE cannot run in a transaction: its mark follows; a concurrent
                # apply's database is finished the same way.
                with contextlib.suppress(*_DUPLICATE):
                    await conn.execute(
                        f"CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(name)}"
                    )
                database = await self._database(conn, name)
                if database is None:  # created and dropped meanwhile: a retry sorts it out
                    raise TemporaryError(f"{resource.node}: database {name} vanished while made")
            self._check_owned(resource, "database", name, database, role_ours=True)
            if database.owner != name:
                await conn.execute(
                    f"ALTER DATABASE {quote_ident(name)} OWNER TO {quote_ident(name)}"
                )
            if database.mark != json.loads(mark):
                await conn.execute(
                    f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(mark)}"
                )
            await conn.execute(f"REVOKE ALL ON DATABASE {quote_ident(name)} FROM PUBLIC")
        return self._observation(resource, settings, name, password, "Ready", "")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        settings = PostgresSettings.from_target(target.settings)
        name = self._name(settings, target, resource)
        password = _secrets(resource).get("password")
        async with self._admin(settings, resource, password) as conn:
            role = await self._role(conn, name)
            database = await self._database(conn, name)
        if role is None and database is None:
            return None
        problems = []
        for what, found in (("role", role), ("database", database)):
            if found is None:
                problems.append(f"{what} {name} is missing")
            elif found.mark is None or found.mark.get(MARK) != resource.node:
                problems.append(f"{what} {name} exists but is not {resource.node}'s")
            elif found.public:  # someone granted it back: every role may connect
                problems.append(f"{what} {name} is open to PUBLIC (CONNECT granted)")
        if problems:  # an empty state: the planner sees every field to apply
            return Observation(state={}, health="Degraded", message="; ".join(problems))
        assert database is not None and database.mark is not None
        state = {"type": KIND, "config_ref": database.mark.get("config_ref")}
        if password is None:  # nothing to log in with: existence is all that can be seen
            return Observation(
                state=state,
                health="Ready",
                message=f"database {name} and role {name} exist (login not checked: no "
                "password known; an apply without one sets a new one)",
            )
        refused = await self._login(settings, resource, name, password)
        if refused:
            return Observation(state=state, health="Degraded", message=refused)
        return self._observation(resource, settings, name, password, "Ready", "", state=state)

    async def health(self, *, resource: Resource, target: Target) -> Health:
        settings = PostgresSettings.from_target(target.settings)
        name = self._name(settings, target, resource)
        password = _secrets(resource).get("password")
        if password is None:  # the role's password unknown: the server at least answers
            async with self._admin(settings, resource, None) as conn:
                await conn.fetchval("SELECT 1")
            return "Ready"
        return "Degraded" if await self._login(settings, resource, name, password) else "Ready"

    async def delete(self, *, resource: Resource, target: Target) -> None:
        settings = PostgresSettings.from_target(target.settings)
        name = self._name(settings, target, resource)
        async with self._admin(settings, resource, None, lock=name) as conn:
            database = await self._database(conn, name)
            role = await self._role(conn, name)
            if role is not None:
                self._check_owned(resource, "role", name, role, dropping=True)
            if database is not None:
                self._check_owned(
                    resource, "database", name, database, dropping=True, role_ours=role is not None
                )
            if database is not None:
                # WITH (FORCE) ends the applications' sessions (Postgres 13 and later).
                server = await self._server(conn, settings)
                force = " WITH (FORCE)" if server.version >= 130000 else ""
                if not force:
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        name,
                    )
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")
            if role is not None:
                await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")

    async def aclose(self) -> None:
        async with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _name(settings: PostgresSettings, target: Target, resource: Resource) -> str:
        return database_name(settings.prefix, target.environment, resource.name)

    @staticmethod
    def _comment(resource: Resource) -> str:
        return json.dumps(
            {MARK: resource.node, "config_ref": resource.desired.get("config_ref")},
            sort_keys=True,
        )

    def _observation(
        self,
        resource: Resource,
        settings: PostgresSettings,
        name: str,
        password: str,
        health: Health,
        message: str,
        *,
        state: Mapping[str, Any] | None = None,
    ) -> Observation:
        url = f"postgresql://{name}:{quote(password, safe='')}@{settings.app_host}/{name}"
        return Observation(
            state=dict(state)
            if state is not None
            else {"type": KIND, "config_ref": resource.desired.get("config_ref")},
            health=health,
            message=message or f"database {name} owned by role {name} on {settings.app_host}",
            secrets={"password": password, "url": url},
        )

    @staticmethod
    def _check_owned(
        resource: Resource,
        what: str,
        name: str,
        found: _Found | None,
        *,
        dropping: bool = False,
        role_ours: bool = False,
    ) -> None:
        """Refuse an object whose mark does not name the node. An unmarked database owned by
        the node's own role (`role_ours`: checked already) is the node's: what a crash or a
        concurrent apply leaves between `CREATE DATABASE` and its `COMMENT`."""
        if found is None:
            raise TemporaryError(f"{resource.node}: {what} {name} vanished meanwhile")
        node = found.mark.get(MARK) if found.mark else None
        if node == resource.node:
            return
        if node is None and what == "database" and found.owner == name and role_ours:
            return
        owner = f"node {node}" if node else "no ZTDP node (it was not made by ZTDP)"
        verb = "drop" if dropping else "take over"
        raise PermanentError(
            f"{resource.node}: {what} {name} belongs to {owner}: refusing to {verb} it"
        )

    @staticmethod
    async def _role(conn: _Conn, name: str) -> _Found | None:
        row = await conn.fetchrow(
            "SELECT shobj_description(oid, 'pg_authid') AS comment FROM pg_roles "
            "WHERE rolname = $1",
            name,
        )
        return None if row is None else _Found(mark=_mark(row["comment"]))

    @staticmethod
    async def _database(conn: _Conn, name: str) -> _Found | None:
        row = await conn.fetchrow(
            "SELECT shobj_description(oid, 'pg_database') AS comment, "
            "pg_get_userbyid(datdba) AS owner, "
            "has_database_privilege('public', oid, 'CONNECT') AS public "
            "FROM pg_database WHERE datname = $1",
            name,
        )
        if row is None:
            return None
        return _Found(mark=_mark(row["comment"]), owner=row["owner"], public=row["public"])

    @staticmethod
    async def _set_password(conn: _Conn, name: str, verifier: str) -> None:
        await conn.execute(
            f"ALTER ROLE {quote_ident(name)} LOGIN PASSWORD {quote_literal(verifier)}"
        )

    async def _server(self, conn: _Conn, settings: PostgresSettings) -> _Server:
        key = (settings.url, settings.admin_password())
        if key not in self._servers:
            row = await conn.fetchrow(
                "SELECT current_setting('server_version_num')::int AS version, "
                "rolsuper AS superuser FROM pg_roles WHERE rolname = current_user"
            )
            assert row is not None
            self._servers[key] = _Server(version=row["version"], superuser=row["superuser"])
        return self._servers[key]

    async def _pool(self, settings: PostgresSettings) -> asyncpg.Pool:
        key = (settings.url, settings.admin_password())
        async with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = await asyncpg.create_pool(
                    settings.url,
                    password=settings.admin_password(),
                    min_size=0,
                    max_size=settings.pool_size,
                    timeout=settings.connect_timeout,
                    command_timeout=60,
                )
                self._pools[key] = pool
            return pool

    @asynccontextmanager
    async def _admin(
        self,
        settings: PostgresSettings,
        resource: Resource,
        password: str | None,
        *,
        lock: str | None = None,
    ) -> AsyncIterator[_Conn]:
        """An admin connection of the server's pool, every failure classed and scrubbed.

        With `lock`, the connection holds the advisory lock of that name meanwhile: applies
        and deletes of one node, from any worker, take turns (concurrent `ALTER ROLE`s or
        `COMMENT`s of one object fail with "tuple concurrently updated" otherwise).
        """
        secrets = (password, settings.admin_password())
        where = f"{resource.node}: postgres at {settings.host_port}"
        try:
            pool = await self._pool(settings)
            async with pool.acquire(timeout=settings.connect_timeout) as conn:
                if lock is None:
                    yield conn
                    return
                await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS, lock)
                try:
                    yield conn
                finally:  # the pool's reset unlocks too, should this not run
                    await conn.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, lock
                    )
        except (PermanentError, TemporaryError):
            raise
        except _TEMPORARY as exc:
            raise TemporaryError(
                _scrub(f"{where} is unavailable: {type(exc).__name__}: {exc}", secrets),
                retry_after=2.0,
            ) from None
        except (asyncpg.PostgresError, ValueError) as exc:
            raise PermanentError(
                _scrub(f"{where} refused: {type(exc).__name__}: {exc}", secrets)
            ) from None

    async def _login(
        self, settings: PostgresSettings, resource: Resource, name: str, password: str
    ) -> str:
        """Log in as the node's role to its database: "" if it works, else why not."""
        try:
            conn = await asyncpg.connect(
                settings.url,
                user=name,
                password=password,
                database=name,
                timeout=settings.connect_timeout,
            )
        except _LOGIN_REFUSED as exc:
            reason = _scrub(f"{type(exc).__name__}: {exc}", (password, settings.admin_password()))
            return f"role {name} cannot log in to database {name}: {reason}"
        except _TEMPORARY as exc:
            raise TemporaryError(
                _scrub(
                    f"{resource.node}: postgres at {settings.host_port} is unavailable: "
                    f"{type(exc).__name__}: {exc}",
                    (password, settings.admin_password()),
                ),
                retry_after=2.0,
            ) from None
        except asyncpg.PostgresError as exc:
            reason = _scrub(f"{type(exc).__name__}: {exc}", (password, settings.admin_password()))
            return f"role {name} cannot log in to database {name}: {reason}"
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return ""


def _secrets(resource: Resource) -> Mapping[str, str]:
    return getattr(resource, "secrets", None) or {}
