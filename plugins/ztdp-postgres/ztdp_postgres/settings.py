"""The provider's settings section: `spec.providers.postgres` of an environment, over the
configured default `ZTDP_PROVIDERS__POSTGRES__...`.

A password may come inside the URL or apart (`password`), from the server's configuration only:
an environment's own section is readable by every viewer, so a password there is refused. It is
kept apart from the URL, as a `SecretStr`, so the URL the model keeps, shows and puts in
messages never carries it. A dump (`model_dump`, which the core hands over as `Target.settings`
and never persists) carries the password's value: the provider needs it to connect.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    model_validator,
)

from ztdp.errors import PermanentError

SCHEMES = ("postgresql", "postgres")


class PostgresSettings(BaseModel):
    """Where a `postgres` resource's database and role are made, and how applications reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(
        description="admin connection URL of the server (a role that may create databases "
        "and roles), e.g. postgresql://postgres@127.0.0.1:5432/postgres",
        examples=["postgresql://postgres@db.internal:5432/postgres"],
    )
    password: SecretStr | None = Field(
        default=None, description="the admin role's password, if the URL does not carry it"
    )
    host_for_apps: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+$",
        description="host[:port] written into the URL given to applications (default: the "
        "admin URL's), for servers applications reach under another name",
    )
    prefix: str = Field(
        default="ztdp",
        pattern=r"^[a-z][a-z0-9_]{0,19}$",
        description="start of every database and role name this provider makes",
    )
    pool_size: int = Field(default=4, ge=1, le=50, description="admin connections per server")
    connect_timeout: float = Field(default=5.0, gt=0, le=120, description="seconds")

    @model_validator(mode="before")
    @classmethod
    def _password_apart(cls, data: Any, info: ValidationInfo) -> Any:
        """Take a password out of the URL into `password` (a URL's and an explicit one must
        agree); check the URL's form without ever repeating it in an error."""
        spec = (info.context or {}).get("spec") or {}
        if spec.get("password") is not None or _has_password(spec.get("url")):
            raise ValueError(
                "a password belongs in the server's configuration (ZTDP_PROVIDERS__POSTGRES__"
                "PASSWORD), not in the environment's spec, which every viewer can read"
            )
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        try:
            parts = urlsplit(data["url"])
            port = parts.port
        except ValueError:
            raise ValueError("url: not a valid URL") from None
        if parts.scheme not in SCHEMES:
            raise ValueError("url: the scheme must be postgresql:// or postgres://")
        if not parts.hostname:
            raise ValueError("url: a host is required")
        if parts.password is None:
            return data
        given = data.get("password")
        given = given.get_secret_value() if isinstance(given, SecretStr) else given
        embedded = unquote(parts.password)
        if given is not None and given != embedded:
            raise ValueError("url and password give two different passwords")
        user = parts.username or ""
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{user}@{host}" if user else host
        if port is not None:
            netloc += f":{port}"
        return {**data, "url": urlunsplit(parts._replace(netloc=netloc)), "password": embedded}

    @field_serializer("password", when_used="unless-none")
    def _reveal(self, password: SecretStr) -> str:
        return password.get_secret_value()

    @property
    def host_port(self) -> str:
        """The admin URL's host:port (5432 when it names none)."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"{host}:{parts.port or 5432}"

    @property
    def app_host(self) -> str:
        return self.host_for_apps or self.host_port

    def admin_password(self) -> str | None:
        return self.password.get_secret_value() if self.password else None

    @classmethod
    def from_target(cls, settings: Any) -> PostgresSettings:
        """Validate a target's settings, as a `PermanentError` naming the fields (never their
        values: one of them may be a password)."""
        if isinstance(settings, cls):
            return settings
        try:
            return cls.model_validate(dict(settings or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False, include_context=False)
            )
            raise PermanentError(
                f"postgres provider settings are invalid: {problems}",
                errors=[
                    {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_input=False, include_url=False)
                ],
            ) from None


def _has_password(url: Any) -> bool:
    try:
        return isinstance(url, str) and urlsplit(url).password is not None
    except ValueError:
        return False
