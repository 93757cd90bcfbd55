"""Stored records of secrets, and the encryption every backend shares.

A backend keeps opaque JSON records (metadata plus the sealed value) and offers atomic
create, compare-and-replace and delete; `EncryptedSecretStore` does the rest, so memory and
Redis cannot differ in what they encrypt or how versions grow.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from ztdp.errors import AlreadyExists, Conflict, NotFound
from ztdp.secrets.base import SecretInfo
from ztdp.secrets.crypto import Keyring, Sealed

CAS_RETRIES = 16  # rotations racing on one secret: each retry means another one won


class Records(Protocol):
    """A backend's storage of records, keyed by (application, environment, name)."""

    async def get(self, application: str, environment: str, name: str) -> str | None: ...

    async def scope(self, application: str, environment: str) -> dict[str, str]: ...

    def everything(self) -> AsyncIterator[tuple[str, str, str, str]]:
        """Every (application, environment, name, record)."""
        ...

    async def create(self, application: str, environment: str, name: str, record: str) -> bool:
        """False if it exists."""
        ...

    async def replace(
        self, application: str, environment: str, name: str, old: str, new: str
    ) -> bool:
        """False unless the stored record is still `old`."""
        ...

    async def remove(self, application: str, environment: str, name: str) -> bool: ...

    async def aclose(self) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _info(application: str, environment: str, name: str, rec: dict[str, Any]) -> SecretInfo:
    return SecretInfo(
        application=application,
        environment=environment,
        name=name,
        version=int(rec["version"]),
        created_at=rec["created_at"],
        updated_at=rec["updated_at"],
        created_by=rec["created_by"],
        updated_by=rec["updated_by"],
        generated_by=rec.get("generated_by"),
    )


def _what(application: str, environment: str, name: str) -> str:
    return f"secret {name} of application {application} in environment {environment}"


class EncryptedSecretStore:
    """A `SecretStore` over a backend's records, sealing each value with the keyring."""

    def __init__(self, records: Records, keyring: Keyring) -> None:
        self._records = records
        self._keys = keyring

    def _seal(self, value: str, app: str, env: str, name: str, version: int) -> dict[str, Any]:
        sealed = self._keys.seal(
            value, application=app, environment=env, name=name, version=version
        )
        return asdict(sealed)

    async def put(
        self,
        *,
        application: str,
        environment: str,
        name: str,
        value: str,
        actor: str,
        generated_by: str | None = None,
    ) -> SecretInfo:
        now = _now()
        rec = {
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "created_by": actor,
            "updated_by": actor,
            "generated_by": generated_by,
            "sealed": self._seal(value, application, environment, name, 1),
        }
        if not await self._records.create(application, environment, name, json.dumps(rec)):
            raise AlreadyExists(
                f"{_what(application, environment, name)} already exists: rotate it instead"
            )
        return _info(application, environment, name, rec)

    async def rotate(
        self, *, application: str, environment: str, name: str, value: str, actor: str
    ) -> SecretInfo:
        for _ in range(CAS_RETRIES):
            old = await self._records.get(application, environment, name)
            if old is None:
                raise NotFound(f"{_what(application, environment, name)} does not exist")
            rec = json.loads(old)
            version = int(rec["version"]) + 1
            rec.update(
                version=version,
                updated_at=_now(),
                updated_by=actor,
                sealed=self._seal(value, application, environment, name, version),
            )
            if await self._records.replace(application, environment, name, old, json.dumps(rec)):
                return _info(application, environment, name, rec)
        raise Conflict(
            f"{_what(application, environment, name)} is being rotated by others at the same "
            "time; try again"
        )

    async def _record(self, application: str, environment: str, name: str) -> dict[str, Any]:
        raw = await self._records.get(application, environment, name)
        if raw is None:
            raise NotFound(f"{_what(application, environment, name)} does not exist")
        rec: dict[str, Any] = json.loads(raw)
        return rec

    async def value(self, *, application: str, environment: str, name: str) -> str:
        rec = await self._record(application, environment, name)
        return self._keys.open(
            Sealed(**rec["sealed"]),
            application=application,
            environment=environment,
            name=name,
            version=int(rec["version"]),
        )

    async def info(self, *, application: str, environment: str, name: str) -> SecretInfo:
        return _info(
            application, environment, name, await self._record(application, environment, name)
        )

    async def list(self, *, application: str, environment: str) -> list[SecretInfo]:
        found = await self._records.scope(application, environment)
        return [
            _info(application, environment, name, json.loads(raw))
            for name, raw in sorted(found.items())
        ]

    async def delete(self, *, application: str, environment: str, name: str) -> None:
        if not await self._records.remove(application, environment, name):
            raise NotFound(f"{_what(application, environment, name)} does not exist")

    async def purge(self, *, match: Callable[[SecretInfo], bool]) -> int:
        count = 0
        async for app, env, name, raw in self._records.everything():
            if match(_info(app, env, name, json.loads(raw))):
                count += await self._records.remove(app, env, name)
        return count

    async def reencrypt(self) -> int:
        """Every value not sealed with the current key, sealed again with it."""
        count = 0
        async for app, env, name, raw in self._records.everything():
            rec = json.loads(raw)
            if rec["sealed"]["key_id"] == self._keys.current_id:
                continue
            version = int(rec["version"])
            plain = self._keys.open(
                Sealed(**rec["sealed"]),
                application=app,
                environment=env,
                name=name,
                version=version,
            )
            rec["sealed"] = self._seal(plain, app, env, name, version)
            # Lost to a rotation meanwhile: that one was sealed with the current key already.
            if await self._records.replace(app, env, name, raw, json.dumps(rec)):
                count += 1
        return count

    async def aclose(self) -> None:
        await self._records.aclose()
