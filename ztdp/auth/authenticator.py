"""From an Authorization header to an Identity; failed attempts are limited per client."""

from __future__ import annotations

from collections.abc import Sequence

from ztdp.auth.clients import ClientAddresses
from ztdp.auth.identity import ANONYMOUS, Identity
from ztdp.auth.limiter import FailureLimiter
from ztdp.auth.oidc import OidcVerifier
from ztdp.auth.tokens import Tokens
from ztdp.errors import RateLimited, Unauthenticated


class Authenticator:
    def __init__(
        self,
        tokens: Tokens,
        *,
        oidc: OidcVerifier | None,
        enabled: bool,
        limiter: FailureLimiter,
        clients: ClientAddresses | None = None,
    ) -> None:
        self.tokens = tokens
        self.enabled = enabled
        self._oidc = oidc
        self._limiter = limiter
        self._clients = clients or ClientAddresses(())

    async def authenticate(
        self, authorization: str | None, *, peer: str | None, forwarded_for: Sequence[str] = ()
    ) -> Identity:
        """The caller's identity. A credential is verified before the limiter is consulted, so
        a valid one always passes; only a failed one counts, and over the limit it is 429."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            # No credential is a plain 401: not an attempt, so not counted.
            raise Unauthenticated("this endpoint needs an Authorization: Bearer token")
        try:
            return await self._verify(authorization)
        except Unauthenticated as exc:
            client = self._clients.client(peer, forwarded_for)
            retry = await self._limiter.failed(client)
            if retry is not None:
                raise RateLimited(
                    f"too many failed authentications from {client}; this one ({exc.detail}) "
                    f"is refused: retry in {retry} s",
                    retry_after=retry,
                ) from exc
            raise

    async def _verify(self, authorization: str) -> Identity:
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        if credential.startswith("ztdp_"):
            return await self.tokens.verify(credential)
        if self._oidc is not None and credential.count(".") == 2:
            return await self._oidc.verify(credential)
        raise Unauthenticated("the bearer token is neither a ZTDP token nor an accepted JWT")
