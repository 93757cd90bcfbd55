"""Who may call each endpoint: declared once per route, enforced by the route interceptor.

A rule names what the caller needs (`read`, `admin`, a `team`, an `approver`) and how to find
the team or environment the request touches (from the path or the validated body). No handler
checks permissions itself, so an endpoint added later is covered by declaring its rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from ztdp.api.keys import CATALOG
from ztdp.auth import Identity
from ztdp.errors import Forbidden

TeamsOf = Callable[[web.Request, Any], Awaitable[set[str]]]
Need = Literal["public", "read", "admin", "team", "approver"]


@dataclass(frozen=True)
class Access:
    need: Need
    what: str = "do this"
    teams: TeamsOf | None = None
    environment: Callable[[Any], str] | None = None
    # Let a body pick a stricter rule (a ResourceType needs admin, a Resource a team).
    refine: Callable[[Any], Access] | None = None

    async def authorize(self, request: web.Request, identity: Identity, body: Any) -> None:
        if identity.source == "anonymous":
            return  # authentication is off: there is nobody to tell apart
        if self.refine is not None:
            await self.refine(body).authorize(request, identity, body)
            return
        match self.need:
            case "public" | "read":
                return  # any authenticated identity reads
            case "admin":
                identity.require_admin(self.what)
            case "team":
                assert self.teams is not None
                identity.require_team(await self.teams(request, body), self.what)
            case "approver":
                assert self.environment is not None
                env = self.environment(body)
                identity.require_approver(env, self.what)
                approver = getattr(getattr(body, "spec", None), "approver", None)
                if approver != identity.principal:
                    raise Forbidden(
                        f"{identity.name} may only approve as itself, not as {approver}"
                    )


PUBLIC = Access("public")
READ = Access("read")


def admin(what: str) -> Access:
    return Access("admin", what)


def team(what: str, teams: TeamsOf) -> Access:
    return Access("team", what, teams=teams)


# --- where the team comes from ---------------------------------------------------------------


async def _owner(request: web.Request, app: str) -> set[str]:
    owner = await request.app[CATALOG].owner_of(app)
    return set() if owner is None else {owner}  # a missing application is the handler's 404


async def path_app(request: web.Request, body: Any) -> set[str]:
    """The team owning the application in the path."""
    return await _owner(request, request.match_info["app"])


async def body_owner(request: web.Request, body: Any) -> set[str]:
    """The team the body names as owner."""
    return {body.metadata.owner}


async def path_app_and_body_owner(request: web.Request, body: Any) -> set[str]:
    """Changing an application: its current team and the team it would belong to."""
    return await path_app(request, body) | {body.metadata.owner}


async def subject_app(request: web.Request, body: Any) -> set[str]:
    """The team owning the application of the version a check is about."""
    return await _owner(request, body.spec.subject.application)
