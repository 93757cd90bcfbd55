"""Principals: identities as ZTDP records them, each source of identities in its own namespace.

A principal is `token:<name>` (an API token ZTDP issued), `oidc:<subject>` (a JWT from the
identity provider), `system:ztdp` (ZTDP itself) or `anonymous` (everyone, when authentication
is off). Changes, events, tokens and approvals record principals, so an OIDC subject named
`admin` is never the token `admin`, and nobody can pose as ZTDP.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints

SYSTEM_PRINCIPAL: Final = "system:ztdp"
"""ZTDP itself: what it seeds and records on its own."""

ANONYMOUS_PRINCIPAL: Final = "anonymous"
"""Every caller while authentication is off."""

_NAME = r"[A-Za-z0-9][A-Za-z0-9._@-]*"  # a token's name (the Owner pattern)
# An OIDC subject is the provider's: any visible ASCII (`auth0|123`, `repo:org/x:ref:...`).
PRINCIPAL_PATTERN: Final = rf"^(?:token:{_NAME}|oidc:[!-~]+|{_NAME})$"


def principal_of(name: str) -> str:
    """The principal a name means: a name without a source is a token's (`token:<name>`)."""
    return name if name.startswith(("token:", "oidc:")) else f"token:{name}"


Principal = Annotated[
    str,
    StringConstraints(min_length=1, max_length=261, pattern=PRINCIPAL_PATTERN),
    AfterValidator(principal_of),
    Field(
        description="an identity: 'oidc:<subject>' or 'token:<name>'; a plain name means "
        "'token:<name>' and is stored so",
        examples=["oidc:alice", "token:release-bot"],
    ),
]
