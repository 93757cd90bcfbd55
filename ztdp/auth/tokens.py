"""API tokens issued by ZTDP: shown once, stored as salted hashes, revocable, expiring.

A token reads `ztdp_<id>_<secret>`. The id finds the record; the secret is checked against
its salted SHA-256 in constant time. Tokens are 256-bit random, so a fast hash is enough
(a slow password hash would only slow every request); the salt keeps equal secrets apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from ztdp.auth.identity import Grant, Identity, Role
from ztdp.contracts import SYSTEM_PRINCIPAL
from ztdp.errors import NotFound, Unauthenticated
from ztdp.redis_client import DEFAULT_TIMEOUT, connect, reachable

_TOKEN = re.compile(r"^ztdp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class TokenInfo(BaseModel):
    """What the API shows of a token: never its secret or hash."""

    id: str
    name: str = Field(description="the identity the token authenticates as")
    grants: list[Grant]
    created_at: datetime
    created_by: str = Field(description="the principal that issued it, e.g. 'token:admin'")
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = Field(default=None, description="the principal that revoked it")


class TokenRecord(TokenInfo):
    salt: str
    hash: str

    def info(self) -> TokenInfo:
        return TokenInfo.model_validate(self.model_dump(exclude={"salt", "hash"}))


class TokenStore(Protocol):
    async def put(self, record: TokenRecord) -> None: ...

    async def get(self, token_id: str) -> TokenRecord | None: ...

    async def all(self) -> list[TokenRecord]: ...

    async def aclose(self) -> None: ...


class MemoryTokenStore:
    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}

    async def put(self, record: TokenRecord) -> None:
        self._records[record.id] = record

    async def get(self, token_id: str) -> TokenRecord | None:
        return self._records.get(token_id)

    async def all(self) -> list[TokenRecord]:
        return list(self._records.values())

    async def aclose(self) -> None:
        return None


class RedisTokenStore:
    """Token records in one hash; Redis being unreachable raises `BackendUnavailable`."""

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._redis = client
        self._key = f"{prefix}:auth:tokens"

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, timeout: float = DEFAULT_TIMEOUT
    ) -> RedisTokenStore:
        return cls(connect(url, timeout=timeout), prefix=prefix)

    async def put(self, record: TokenRecord) -> None:
        with reachable("token store"):
            await self._redis.hset(self._key, record.id, record.model_dump_json())

    async def get(self, token_id: str) -> TokenRecord | None:
        with reachable("token store"):
            raw = await self._redis.hget(self._key, token_id)
        return None if raw is None else TokenRecord.model_validate_json(raw)

    async def all(self) -> list[TokenRecord]:
        with reachable("token store"):
            raw = await self._redis.hgetall(self._key)
        return [TokenRecord.model_validate(json.loads(v)) for v in raw.values()]

    async def aclose(self) -> None:
        await self._redis.aclose()


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class Tokens:
    """Issue, verify and revoke tokens."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def issue(
        self, *, name: str, grants: list[Grant], ttl: timedelta, by: str
    ) -> tuple[TokenInfo, str]:
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        now = datetime.now(UTC)
        record = TokenRecord(
            id=token_id,
            name=name,
            grants=grants,
            created_at=now,
            created_by=by,
            expires_at=now + ttl,
            salt=salt,
            hash=_digest(salt, secret),
        )
        await self.store.put(record)
        return record.info(), f"ztdp_{token_id}_{secret}"

    async def verify(self, token: str) -> Identity:
        match = _TOKEN.match(token)
        if match is None:
            raise Unauthenticated("the bearer token is not a ZTDP token")
        token_id, secret = match.groups()
        record = await self.store.get(token_id)
        if record is None or not hmac.compare_digest(record.hash, _digest(record.salt, secret)):
            raise Unauthenticated("the bearer token is not valid")
        if record.revoked_at is not None:
            raise Unauthenticated(f"token {token_id} was revoked")
        if record.expires_at <= datetime.now(UTC):
            raise Unauthenticated(f"token {token_id} expired at {record.expires_at.isoformat()}")
        return Identity(
            name=record.name, grants=tuple(record.grants), source="token", token_id=token_id
        )

    async def revoke(self, token_id: str, *, by: str) -> TokenInfo:
        record = await self.store.get(token_id)
        if record is None:
            raise NotFound(f"token {token_id} does not exist")
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": datetime.now(UTC), "revoked_by": by})
            await self.store.put(record)
        return record.info()

    async def get(self, token_id: str) -> TokenInfo:
        record = await self.store.get(token_id)
        if record is None:
            raise NotFound(f"token {token_id} does not exist")
        return record.info()

    async def list(self) -> list[TokenInfo]:
        return sorted((r.info() for r in await self.store.all()), key=lambda t: t.created_at)

    async def bootstrap_admin(self) -> str | None:
        """On the first start with authentication on, issue an admin token; else None."""
        if await self.store.all():
            return None
        _, secret = await self.issue(
            name="admin",
            grants=[Grant(role=Role.PLATFORM_ADMIN)],
            ttl=timedelta(days=365),
            by=SYSTEM_PRINCIPAL,
        )
        return secret
