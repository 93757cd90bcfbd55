"""Who is calling, API tokens, and the audit trail of changes."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ztdp.api.access import (
    READ,
    admin,
)
from ztdp.api.keys import AUTH, CATALOG, EVENTS, SETTINGS, identity_of
from ztdp.api.problems import Problem
from ztdp.api.routing import Query, Reply
from ztdp.api.v1.common import NEXT_PAGE, READ_ERRORS, WRITE, next_page, param, router
from ztdp.auth import Grant, TokenInfo
from ztdp.contracts.base import Owner
from ztdp.errors import NotFound
from ztdp.graph.store import Change


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Owner = Field(description="the identity the token authenticates as, e.g. 'alice'")
    grants: list[Grant] = Field(min_length=1, max_length=32)
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, description="default: the token_ttl_days setting"
    )


class IssuedToken(BaseModel):
    token: TokenInfo
    secret: str = Field(description="shown this once; only a salted hash is kept")


class WhoAmI(BaseModel):
    name: str
    principal: str = Field(description="the name as changes and events record it")
    source: str
    grants: list[Grant]
    token_id: str | None


@router.add(
    "POST",
    "/v1/tokens",
    "Issue an API token (its secret is shown once)",
    tag="auth",
    body=TokenRequest,
    responses={201: IssuedToken, **WRITE},
    access=admin("issue tokens"),
)
async def issue_token(request: web.Request, body: TokenRequest) -> Reply:
    days = body.expires_in_days or request.app[SETTINGS].token_ttl_days
    info, secret = await request.app[AUTH].tokens.issue(
        name=body.name,
        grants=body.grants,
        ttl=timedelta(days=days),
        by=identity_of(request).principal,
    )
    return 201, IssuedToken(token=info, secret=secret)


@router.add(
    "GET",
    "/v1/tokens",
    "List tokens (never their secrets)",
    tag="auth",
    responses={200: list[TokenInfo]},
    access=admin("list tokens"),
)
async def list_tokens(request: web.Request, body: None) -> Reply:
    return 200, [t.model_dump(mode="json") for t in await request.app[AUTH].tokens.list()]


@router.add(
    "GET",
    "/v1/tokens/{id}",
    "Read a token's metadata",
    tag="auth",
    responses={200: TokenInfo, **READ_ERRORS},
    access=admin("read tokens"),
)
async def get_token(request: web.Request, body: None) -> Reply:
    """A revoked token is gone, as DELETE promised: 404 (GET /v1/tokens keeps listing it,
    with who revoked it when, for the audit trail)."""
    return 200, _unrevoked(await request.app[AUTH].tokens.get(param(request, "id")))


@router.add(
    "DELETE",
    "/v1/tokens/{id}",
    "Revoke a token",
    tag="auth",
    responses={200: TokenInfo, **READ_ERRORS},
    access=admin("revoke tokens"),
)
async def revoke_token(request: web.Request, body: None) -> Reply:
    """The token stops authenticating at once; from then on it is gone here (404) and listed
    as revoked by GET /v1/tokens."""
    tokens = request.app[AUTH].tokens
    _unrevoked(await tokens.get(param(request, "id")))
    return 200, await tokens.revoke(param(request, "id"), by=identity_of(request).principal)


def _unrevoked(token: TokenInfo) -> TokenInfo:
    if token.revoked_at is not None:
        revoked = token.model_dump(mode="json", include={"revoked_at", "revoked_by"})
        raise NotFound(
            f"token {token.id} was revoked at {revoked['revoked_at']} by "
            f"{revoked['revoked_by']}; GET /v1/tokens still lists it",
            **revoked,
        )
    return token


@router.add(
    "GET",
    "/v1/whoami",
    "The caller's identity and roles",
    tag="auth",
    responses={200: WhoAmI},
    access=READ,
)
async def whoami(request: web.Request, body: None) -> Reply:
    me = identity_of(request)
    return 200, WhoAmI(
        name=me.name,
        principal=me.principal,
        source=me.source,
        grants=list(me.grants),
        token_id=me.token_id,
    )


@router.add(
    "GET",
    "/v1/changes",
    "Committed changes to the graph, with who made them, oldest first, paged",
    tag="system",
    responses={200: list[Change], 422: Problem},
    access=READ,
    headers=NEXT_PAGE,
    query=(
        Query("since", "only changes after this revision", pattern=r"^[0-9]{1,12}$"),
        Query("limit", "at most this many (default 100, at most 1000)", pattern=r"^[0-9]{1,4}$"),
    ),
)
async def list_changes(request: web.Request, body: None) -> Reply:
    """Kept in the event store, by age (`ZTDP_EVENT_RETENTION_DAYS`), however many there are.
    The `Link` header's next page continues after the last revision answered."""
    since = int(request.query.get("since", 0))
    limit = min(int(request.query.get("limit", 100)), 1000)
    await request.app[EVENTS].sync()  # the changes this process made or saw are in the store
    changes = await request.app[CATALOG].changes(since=since, limit=limit)
    last = changes[-1].revision if changes else since
    return 200, next_page(request, changes, since=last)
