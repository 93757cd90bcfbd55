"""Secrets: values per application and environment, encrypted at rest (AES-256-GCM), in
memory (embedded default) or in Redis (shared). See `base` for the seam, `crypto` for the
encryption and keyring, docs/secrets.md for operating it (keys and their rotation)."""

from __future__ import annotations

import logging

from ztdp.errors import InvalidInput
from ztdp.secrets.base import SecretInfo, SecretStore
from ztdp.secrets.crypto import Keyring, SecretUnreadable, decode_key, key_id, new_key
from ztdp.secrets.memory import MemoryRecords
from ztdp.secrets.records import EncryptedSecretStore
from ztdp.settings import Settings

log = logging.getLogger("ztdp.secrets")


def keyring(settings: Settings) -> Keyring:
    """The configured keys; without `ZTDP_SECRETS_KEY`, a key made for this process alone,
    which only a store that dies with the process (memory) may use."""
    older = [decode_key(k.get_secret_value(), "ZTDP_SECRETS_KEYS") for k in settings.secrets_keys]
    if settings.secrets_key is not None and settings.secrets_key.get_secret_value():
        return Keyring(
            decode_key(settings.secrets_key.get_secret_value(), "ZTDP_SECRETS_KEY"), older
        )
    if settings.secrets_backend != "memory":
        raise InvalidInput(
            f"the secret store is {settings.secrets_backend} but ZTDP_SECRETS_KEY is not set: "
            "secrets kept there must outlive this process, so their key must be configured "
            "(32 random bytes in base64); refusing to start",
            field="ZTDP_SECRETS_KEY",
        )
    log.warning(
        "ZTDP_SECRETS_KEY is not set: secrets are encrypted with a key made for this process "
        "only; they are lost when it stops (as is the memory secret store)"
    )
    return Keyring(new_key(), older)


def open_secret_store(settings: Settings) -> SecretStore:
    """The secret store `settings.secrets_backend` names (Redis imported only when used)."""
    keys = keyring(settings)
    if settings.secrets_backend == "redis":
        from ztdp.secrets.redis import RedisRecords

        return EncryptedSecretStore(
            RedisRecords.from_url(
                settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
            ),
            keys,
        )
    return EncryptedSecretStore(MemoryRecords(), keys)


__all__ = [
    "EncryptedSecretStore",
    "Keyring",
    "MemoryRecords",
    "SecretInfo",
    "SecretStore",
    "SecretUnreadable",
    "decode_key",
    "key_id",
    "new_key",
    "open_secret_store",
]
