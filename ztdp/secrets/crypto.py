"""AES-256-GCM encryption of secret values, with a keyring so that keys can be rotated.

Each value gets a random 96-bit nonce. The associated data binds the ciphertext to its
application, environment, name and version: a ciphertext copied onto another secret (or
replayed as another version) fails to decrypt instead of handing out the wrong value. Each
record names the id of the key that encrypted it (the first 8 bytes of the key's SHA-256, in
hex: an id is derived, never configured, so it cannot name the wrong key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ztdp.errors import InvalidInput, ZtdpError

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretUnreadable(ZtdpError):
    """A stored secret cannot be decrypted: its key is not configured, or it was tampered with."""

    title = "Secret unreadable"


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def decode_key(text: str, setting: str) -> bytes:
    """A key as configured: base64 of 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{setting} is not base64: give 32 random bytes in base64, e.g. from "
            "`python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'`",
            field=setting,
        ) from None
    if len(key) != KEY_BYTES:
        raise InvalidInput(
            f"{setting} decodes to {len(key)} bytes; an AES-256 key is {KEY_BYTES} bytes",
            field=setting,
        )
    return key


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _aad(application: str, environment: str, name: str, version: int) -> bytes:
    return "\0".join(("ztdp-secret/1", application, environment, name, str(version))).encode()


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: str  # base64
    ciphertext: str  # base64, the GCM tag included


class Keyring:
    """The current key encrypts; it and the older ones decrypt."""

    def __init__(self, current: bytes, older: Iterable[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in older}
        self._keys[self.current_id] = AESGCM(current)

    def seal(
        self, value: str, *, application: str, environment: str, name: str, version: int
    ) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        data = self._keys[self.current_id].encrypt(
            nonce, value.encode(), _aad(application, environment, name, version)
        )
        return Sealed(
            self.current_id, base64.b64encode(nonce).decode(), base64.b64encode(data).decode()
        )

    def open(
        self, sealed: Sealed, *, application: str, environment: str, name: str, version: int
    ) -> str:
        what = f"secret {name} of application {application} in environment {environment}"
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise SecretUnreadable(
                f"{what} was encrypted with key {sealed.key_id}, which is not configured: "
                "add that key to ZTDP_SECRETS_KEYS (older keys) or set it as ZTDP_SECRETS_KEY"
            )
        try:
            plain = aead.decrypt(
                base64.b64decode(sealed.nonce),
                base64.b64decode(sealed.ciphertext),
                _aad(application, environment, name, version),
            )
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretUnreadable(
                f"{what} (version {version}) fails its integrity check: it was altered or "
                "copied from another secret; rotate it to store a new value"
            ) from None
        return plain.decode()
