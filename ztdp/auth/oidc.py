"""Optional OIDC: JWTs from a company's identity provider, verified against its published keys.

Roles come from one claim (default `ztdp_roles`), a list of strings:
`platform-admin`, `viewer`, `developer:<team>`, `ci:<team>[:<check>,<check>...]`,
`approver:<env>[,<env>...]`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from pydantic import ValidationError

from ztdp.auth.identity import Grant, Identity, Role
from ztdp.errors import BackendUnavailable, Forbidden, Unauthenticated

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


def grants_from_claim(values: Any) -> tuple[Grant, ...]:
    if not isinstance(values, list):
        return ()
    grants = []
    for value in values:
        if not isinstance(value, str):
            continue
        role, _, scope = value.partition(":")
        try:
            if role == Role.DEVELOPER:
                grants.append(Grant(role=Role.DEVELOPER, team=scope))
            elif role == Role.CI:
                team, _, checks = scope.partition(":")
                grants.append(
                    Grant(role=Role.CI, team=team, checks=checks.split(",") if checks else [])
                )
            elif role == Role.APPROVER:
                grants.append(Grant(role=Role.APPROVER, environments=scope.split(",")))
            elif role in (Role.PLATFORM_ADMIN, Role.VIEWER) and not scope:
                grants.append(Grant(role=Role(role)))
        except ValidationError:
            continue  # a malformed role grants nothing
    return tuple(grants)


class OidcVerifier:
    def __init__(
        self, *, issuer: str, audience: str, jwks_url: str, roles_claim: str, name_claim: str
    ) -> None:
        self._issuer, self._audience = issuer, audience
        self._roles_claim, self._name_claim = roles_claim, name_claim
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    async def verify(self, token: str) -> Identity:
        try:
            # PyJWKClient fetches keys with urllib: keep that off the event loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            # The provider's outage, not a bad credential: the client should retry, not re-login.
            raise BackendUnavailable(f"cannot fetch the identity provider's keys: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer JWT is not valid: {exc}") from None
        name = claims.get(self._name_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the JWT has no {self._name_claim!r} claim")
        identity = Identity(
            name=name, grants=grants_from_claim(claims.get(self._roles_claim)), source="oidc"
        )
        if not identity.grants:
            # Authenticated but entitled to nothing: refused, not read-only, because an
            # identity provider issues JWTs to people ZTDP was never meant to serve.
            raise Forbidden(
                f"{identity.principal} has no ZTDP role: the JWT's {self._roles_claim!r} claim "
                "grants none of platform-admin, viewer, developer:<team>, ci:<team>, approver:<env>"
            )
        return identity
