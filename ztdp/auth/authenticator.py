"""From an Authorization header to an Identity, with failed attempts rate limited per client."""

from __future__ import annotations

import math
import time
from collections import deque

from ztdp.auth.identity import ANONYMOUS, Identity
from ztdp.auth.oidc import OidcVerifier
from ztdp.auth.tokens import Tokens
from ztdp.errors import RateLimited, Unauthenticated

MAX_TRACKED_CLIENTS = 10_000


class FailureLimiter:
    """At most `limit` failed authentications per client in a sliding `window` (seconds)."""

    def __init__(self, *, limit: int, window: float) -> None:
        self._limit, self._window = limit, window
        self._failures: dict[str, deque[float]] = {}

    def check(self, client: str) -> None:
        failures = self._failures.get(client)
        if not failures:
            return
        now = time.monotonic()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if len(failures) >= self._limit:
            retry = max(1, math.ceil(failures[0] + self._window - now))
            raise RateLimited(
                f"{len(failures)} failed authentications from {client} in the last "
                f"{self._window:.0f} s; retry in {retry} s",
                retry_after=retry,
            )

    def failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= MAX_TRACKED_CLIENTS:
            self._failures.pop(next(iter(self._failures)))  # forget the oldest client
        self._failures.setdefault(client, deque(maxlen=self._limit)).append(time.monotonic())


class Authenticator:
    def __init__(
        self, tokens: Tokens, *, oidc: OidcVerifier | None, enabled: bool, limiter: FailureLimiter
    ) -> None:
        self.tokens = tokens
        self.enabled = enabled
        self._oidc = oidc
        self._limiter = limiter

    async def authenticate(self, authorization: str | None, *, client: str) -> Identity:
        if not self.enabled:
            return ANONYMOUS
        self._limiter.check(client)
        try:
            return await self._verify(authorization)
        except Unauthenticated:
            self._limiter.failed(client)
            raise

    async def _verify(self, authorization: str | None) -> Identity:
        if not authorization:
            raise Unauthenticated("this endpoint needs an Authorization: Bearer token")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        if credential.startswith("ztdp_"):
            return await self.tokens.verify(credential)
        if self._oidc is not None and credential.count(".") == 2:
            return await self._oidc.verify(credential)
        raise Unauthenticated("the bearer token is neither a ZTDP token nor an accepted JWT")
