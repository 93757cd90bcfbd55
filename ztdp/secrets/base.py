"""The secret store seam: values per application and environment, encrypted at rest.

A secret is named within its application and environment and has a version that grows by one
at every rotation. Reads of metadata never carry the value; `value` is the one call that
returns it, for the runtime handing resolved values to a provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown of a secret: everything but its value."""

    application: str
    environment: str
    name: str
    version: int
    created_at: str
    updated_at: str
    created_by: str
    updated_by: str
    # The node whose provider generated the value (e.g. resource/orders-db@dev), or None.
    generated_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "environment": self.environment,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
            "updated_by": self.updated_by,
            "generated_by": self.generated_by,
        }


class SecretStore(Protocol):
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
        """Create a secret at version 1; `AlreadyExists` if it exists."""
        ...

    async def rotate(
        self, *, application: str, environment: str, name: str, value: str, actor: str
    ) -> SecretInfo:
        """Replace the value; the version grows by one. `NotFound` if it does not exist."""
        ...

    async def value(self, *, application: str, environment: str, name: str) -> str:
        """The decrypted value; `NotFound`, or `SecretUnreadable` if no key decrypts it."""
        ...

    async def info(self, *, application: str, environment: str, name: str) -> SecretInfo:
        """One secret's metadata; `NotFound` if it does not exist."""
        ...

    async def list(self, *, application: str, environment: str) -> list[SecretInfo]:
        """The metadata of the scope's secrets, by name."""
        ...

    async def delete(self, *, application: str, environment: str, name: str) -> None:
        """Remove a secret; `NotFound` if it does not exist."""
        ...

    async def purge(self, *, match: Callable[[SecretInfo], bool]) -> int:
        """Delete every secret `match` selects (of a deleted application, environment or
        resource); the number deleted."""
        ...

    async def reencrypt(self) -> int:
        """Encrypt every value with the current key (after a key rotation); the number
        rewritten. Versions do not change: the value is the same."""
        ...

    async def aclose(self) -> None: ...
