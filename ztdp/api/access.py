"""Who may call each endpoint: declared once per route, enforced by the route interceptor.

A rule names what the caller needs (`read`, `admin`, a `team`, an `approver`, a check
`recorder`) and how to find the teams a request touches, from the path, the validated body and
the graph. No handler checks permissions itself, so an endpoint added later is covered by
declaring its rule.

Rules that depend on what is stored (who owns an application, a resource, a check) are not
decided once before the handler runs: they become a write guard (`ztdp.catalog.guard`) that
the catalog evaluates inside every attempt of its atomic write, on the graph the write commits
against. A request racing another team's create can therefore never land in what that team
owns. The route interceptor also runs the guard once on the current graph first, so a refused
request fails fast and a rule is enforced even if a handler ends up writing nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from ztdp.auth import Identity
from ztdp.catalog.guard import ChangeGuard, WriteGuard
from ztdp.catalog.ownership import owning_team
from ztdp.contracts import principal_of
from ztdp.errors import Forbidden
from ztdp.graph import Graph, NodeKind, node_id

TeamsOf = Callable[[web.Request, Any, Graph], set[str]]
Need = Literal["public", "read", "admin", "team", "approver", "recorder", "withdraw"]


@dataclass(frozen=True)
class Access:
    need: Need
    what: str = "do this"
    teams: TeamsOf | None = None
    environment: Callable[[Any], str] | None = None
    # Let a body pick a stricter rule (a ResourceType needs admin, a Resource a team).
    refine: Callable[[Any], Access] | None = None

    def guard(self, request: web.Request, identity: Identity, body: Any) -> WriteGuard | None:
        """Check what needs no stored state now; return what must be checked on the graph."""
        if identity.source == "anonymous":
            return None  # authentication is off: there is nobody to tell apart
        if self.refine is not None:
            return self.refine(body).guard(request, identity, body)
        match self.need:
            case "public" | "read":
                return None  # any authenticated identity reads
            case "admin":
                identity.require_admin(self.what)
                return None
            case "team":
                assert self.teams is not None
                identity.require_writer(self.what)  # a viewer never writes, whatever exists
                teams = self.teams

                def team_guard(graph: Graph) -> None:
                    identity.require_team(teams(request, body, graph), self.what)

                return None if identity.is_admin else team_guard
            case "recorder":
                if identity.is_admin:
                    return None
                name = body.metadata.name if body is not None else request.match_info["name"]
                return _check_guard(identity, name, body, self.what)
            case "withdraw":
                return None if identity.is_admin else _withdraw_guard(identity, request, self.what)
            case "approver":
                assert self.environment is not None
                env = self.environment(body)
                identity.require_approver(env, self.what)
                approver = getattr(getattr(body, "spec", None), "approver", None)
                if approver != identity.principal:
                    raise Forbidden(
                        f"{identity.name} may only approve as itself ({identity.principal}), "
                        f"not as {approver}"
                    )
                return None


PUBLIC = Access("public")
READ = Access("read")


def admin(what: str) -> Access:
    return Access("admin", what)


def team(what: str, teams: TeamsOf) -> Access:
    return Access("team", what, teams=teams)


# --- where the teams come from -------------------------------------------------------------


def _owner(graph: Graph, app: str) -> set[str]:
    data = graph.data(node_id(NodeKind.APPLICATION, app))
    # A missing application is the handler's 404; the writer check already refused viewers.
    return set() if data is None else {str(data["metadata"]["owner"])}


def path_app(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """The team owning the application in the path."""
    return _owner(graph, request.match_info["app"])


def body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """The team the body names as owner."""
    return {body.metadata.owner}


def path_app_and_body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Changing an application, or adding to it: its team and the team the body names."""
    return path_app(request, body, graph) | {body.metadata.owner}


def path_app_and_version_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Adding a version: the application's team and the owner the flat version body names."""
    return path_app(request, body, graph) | {body.owner}


def _resource_teams(graph: Graph, res: str) -> set[str]:
    data = graph.data(node_id(NodeKind.RESOURCE, res))
    if data is None or data.get("spec", {}).get("shared"):
        return set()  # missing: the handler's 404; shared: the platform team lent it to all
    return {str(data["metadata"]["owner"])}


def path_app_and_resource(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Linking a resource: the application's team and the resource's, unless it is shared."""
    res = request.match_info.get("res") or body.resource
    return path_app(request, body, graph) | _resource_teams(graph, res)


def _check_guard(identity: Identity, name: str, body: Any, what: str) -> WriteGuard:
    """A check is declared `pending` by its team; any result is recorded by CI or an admin.

    Both the stored check (on update) and the body are authorized: the team of every
    application either one is about, and a recorder grant for the check's name whenever the
    stored or the new status is a result, so a team can neither mark its own checks
    succeeded nor wipe a failure (deleting one, `body` None, is judged on the stored check
    alone). A check belongs to its subject's application; its `metadata.owner` is
    informative (often the CI system).
    """
    if not identity.teams and not identity.records_any_check:
        raise Forbidden(f"{identity.name} may not {what}: it has no developer or ci grant")

    def check_guard(graph: Graph) -> None:
        stored = graph.data(node_id(NodeKind.CHECK, name))
        specs = [] if body is None else [body.spec.model_dump(mode="json")]
        if stored is not None:
            specs.append(stored["spec"])
        apps = {spec["subject"]["application"] for spec in specs}
        teams = set().union(*(_owner(graph, app) for app in apps))
        checks = {spec["check"] for spec in specs}
        if any(spec["status"] != "pending" for spec in specs):
            for check in checks:
                identity.require_recorder(teams, check, what)
        elif not all(identity.records(t, c) for t in teams for c in checks):
            identity.require_team(teams, what)  # declaring: the team, or CI as above

    return check_guard


def recorder(what: str) -> Access:
    """Checks: a team declares them, only a CI identity (or an admin) records a result."""
    return Access("recorder", what)


def withdraw(what: str) -> Access:
    """An approval is withdrawn by the approver who gave it, or by a platform-admin."""
    return Access("withdraw", what)


def _withdraw_guard(identity: Identity, request: web.Request, what: str) -> WriteGuard:
    name = request.match_info["name"]

    def withdraw_guard(graph: Graph) -> None:
        stored = graph.data(node_id(NodeKind.APPROVAL, name))
        if stored is None:
            return  # the handler's 404
        approver = str(stored["spec"].get("approver", ""))
        if principal_of(approver) != identity.principal:
            raise Forbidden(
                f"{identity.name} may not {what}: approval {name} was given by {approver}"
            )

    return withdraw_guard


def cascade_guard(identity: Identity) -> ChangeGuard | None:
    """What a cascade takes with it is authorized like a write of each of those objects."""
    if identity.source == "anonymous" or identity.is_admin:
        return None

    def changes_guard(graph: Graph, nodes: Collection[str]) -> None:
        teams = {owning_team(graph, n) or "(none)" for n in nodes}
        identity.require_team(teams, "delete or change what depends on it (a cascade)")

    return changes_guard
