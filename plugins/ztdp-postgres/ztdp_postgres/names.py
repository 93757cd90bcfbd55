"""Names and SQL text: the only places where anything reaches a statement's text.

asyncpg binds values as parameters, but utility statements (`CREATE DATABASE`, `CREATE ROLE`,
`ALTER ROLE ... PASSWORD`, `COMMENT ON`) take none: identifiers and literals are written into
the text, always through `quote_ident` and `quote_literal`, which do what the server's own
functions of those names do (the tests compare them with the server's on hostile strings).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from ztdp.errors import PermanentError

IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: Postgres cuts longer identifiers silently
HASH_CHARS = 10  # 50 bits of SHA-256 in lower-case base32: distinct nodes never share a name
SCRAM_ITERATIONS = 4096  # the server's default (scram_iterations)
PASSWORD_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits

_UNSAFE = re.compile(r"[^a-z0-9_]+")


def quote_ident(name: str) -> str:
    """`name` as a quoted SQL identifier: `"` doubled, the whole in double quotes."""
    if "\x00" in name:
        raise PermanentError("an SQL identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """`value` as an SQL string literal, whatever `standard_conforming_strings` says.

    Like the server's `quote_literal`: quotes doubled; with a backslash, the escape-string
    form `E'...'` with backslashes doubled, which means the same under either setting.
    """
    if "\x00" in value:
        raise PermanentError("an SQL string cannot contain a NUL character")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def database_name(prefix: str, environment: str, resource: str) -> str:
    """The name of the database (and of its role) of `resource` in `environment`.

    `{prefix}_{environment}_{resource}` in lower case with anything but `[a-z0-9_]` turned into
    `_`, cut to fit Postgres' 63 bytes, then a hash of the exact pair: the readable part alone
    cannot tell `a_b`/`c` from `a`/`b_c`, `db-1` from `db_1`, or two long names cut alike.
    """
    digest = hashlib.sha256(f"{environment}\x00{resource}".encode()).digest()
    suffix = base64.b32encode(digest).decode().lower()[:HASH_CHARS]
    readable = _UNSAFE.sub("_", f"{prefix}_{environment}_{resource}".lower()).strip("_")
    room = IDENTIFIER_BYTES - HASH_CHARS - 1
    return f"{readable[:room].rstrip('_')}_{suffix}"


def new_password() -> str:
    """A fresh password: 256 random bits, URL-safe (it goes into a connection URL as is)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5802, 7677).

    Sent instead of the password, so that the password itself never reaches the server's
    statement text, its logs (`log_statement`) or `pg_stat_activity`. SASLprep is the
    identity on printable ASCII; other passwords are refused rather than prepared wrongly.
    """
    if not password or not password.isascii() or not password.isprintable():
        raise PermanentError("a database password must be printable ASCII, and not empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
