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

from ztdp.api.keys import SETTINGS, identity_of
from ztdp.auth import Identity
from ztdp.catalog.guard import ChangeGuard, WriteGuard
from ztdp.catalog.ownership import owning_team
from ztdp.contracts import Envelope, principal_of
from ztdp.errors import Forbidden, InvalidInput
from ztdp.graph import Graph, NodeKind, node_id

TeamsOf = Callable[[web.Request, Any, Graph], set[str]]
Need = Literal["public", "read", "admin", "team", "approver", "recorder", "withdraw", "each"]


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
            case "each":
                return None  # a set of objects: each is authorized by the rule of its route
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


# --- owners a body leaves out ---------------------------------------------------------------


def default_owner(identity: Identity, platform_team: str) -> str | None:
    """Who owns a new top-level object that names no owner (docs/api.md, "Owners").

    Never a team the caller is not in: the platform team only for whoever may act for it
    (a platform-admin, or everyone while authentication is off). None when the caller has
    not exactly one team: then the body must name the owner (`owner_required` says why).
    """
    if identity.source == "anonymous" or identity.is_admin:
        return platform_team
    if len(identity.teams) == 1:
        return next(iter(identity.teams))
    return None


def owner_required(identity: Identity) -> InvalidInput:
    why = (
        f"{identity.principal} is a developer of several teams "
        f"({', '.join(sorted(identity.teams))}): say which one owns it"
        if identity.teams
        else f"{identity.principal} is a developer of no team that could own it"
    )
    return InvalidInput(f"metadata.owner: must be given, because {why}", field="metadata.owner")


def resolve_owner(request: web.Request, identity: Identity, body: Any) -> None:
    """Fill in the owner of a new top-level object before anything reads it.

    Only creates (POST): an update that names no owner keeps the stored one, and a service
    takes its application's, both decided by the catalog inside its write, on the graph it
    commits against. The access rules below treat such a missing owner as that inherited one.
    An owner that cannot be defaulted stays missing: the access rule refuses the caller first
    if it may not write at all (403), else the owner is asked for (422).
    """
    if (
        request.method == "POST"
        and isinstance(body, Envelope)
        and not body.OWNER_FROM_PARENT
        and body.metadata.owner is None
    ):
        body.metadata.owner = default_owner(identity, request.app[SETTINGS].platform_team)


# --- where the teams come from -------------------------------------------------------------


def _owner(graph: Graph, app: str) -> set[str]:
    data = graph.data(node_id(NodeKind.APPLICATION, app))
    # A missing application is the handler's 404; the writer check already refused viewers.
    return set() if data is None else {str(data["metadata"]["owner"])}


def path_app(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """The team owning the application in the path."""
    return _owner(graph, request.match_info["app"])


def body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """The team the body names as owner (`resolve_owner` has filled in what it could)."""
    if body.metadata.owner is None:  # never an empty set: that would ask for no team at all
        raise owner_required(identity_of(request))
    return {body.metadata.owner}


def _named_or(owner: str | None, inherited: set[str]) -> set[str]:
    """The owner a body names, or, when it names none, the owner it inherits."""
    return inherited if owner is None else {owner}


def path_app_and_body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Changing an application, or adding a service to it: its team and the body's owner.

    A body without owner inherits the application's (its stored owner, for an update).
    """
    teams = path_app(request, body, graph)
    return teams | _named_or(body.metadata.owner, teams)


def _service_owner(graph: Graph, app: str, svc: str) -> set[str]:
    data = graph.data(node_id(NodeKind.SERVICE, app, svc))
    return set() if data is None else {str(data["metadata"]["owner"])}


def path_app_and_version_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Adding a version: the application's team and the version's owner.

    A version without owner inherits its service's, which may be another team than the
    application's: leaving the owner out asks for no less than naming it.
    """
    app, svc = request.match_info["app"], request.match_info["svc"]
    return path_app(request, body, graph) | _named_or(body.owner, _service_owner(graph, app, svc))


def path_service_and_body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Changing a service: its application's team and the body's owner (or the stored one)."""
    app, svc = request.match_info["app"], request.match_info["svc"]
    stored = _service_owner(graph, app, svc)
    return path_app(request, body, graph) | _named_or(body.metadata.owner, stored)


def _resource_teams(graph: Graph, res: str) -> set[str]:
    data = graph.data(node_id(NodeKind.RESOURCE, res))
    if data is None or data.get("spec", {}).get("shared"):
        return set()  # missing: the handler's 404; shared: the platform team lent it to all
    return {str(data["metadata"]["owner"])}


def path_app_and_resource(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Linking a resource: the application's team and the resource's, unless it is shared."""
    res = request.match_info.get("res") or body.resource
    return path_app(request, body, graph) | _resource_teams(graph, res)


def resource_and_body_owner(request: web.Request, body: Any, graph: Graph) -> set[str]:
    """Changing a resource: its team and the body's owner; `spec.shared` only by an admin.

    Sharing lends a resource to every team and unsharing breaks their links, so a change of
    `spec.shared` either way is the platform team's (admins never reach this function).
    """
    res = request.match_info["res"]
    stored = graph.data(node_id(NodeKind.RESOURCE, res))
    if stored is None:
        return _named_or(body.metadata.owner, set())  # the handler's 404
    if bool(stored["spec"].get("shared")) != body.spec.shared:
        raise Forbidden(
            f"{identity_of(request).principal} may not change spec.shared of resource {res}: "
            "it needs the platform-admin role"
        )
    owner = {str(stored["metadata"]["owner"])}
    return owner | _named_or(body.metadata.owner, owner)


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


PLATFORM_KINDS = frozenset({NodeKind.ENVIRONMENT, NodeKind.POLICY, NodeKind.RESOURCE_TYPE})


def cascade_guard(identity: Identity) -> ChangeGuard | None:
    """What a cascade takes with it is authorized like a write of each of those objects."""
    if identity.source == "anonymous" or identity.is_admin:
        return None

    def changes_guard(graph: Graph, nodes: Collection[str]) -> None:
        what = "delete or change what depends on it (a cascade)"
        # Kinds only a platform-admin writes, whatever team their metadata names.
        platform = sorted(n for n in nodes if graph.kind(n) in PLATFORM_KINDS)
        if platform:
            identity.require_admin(f"{what}: {', '.join(platform)}")
        identity.require_team({owning_team(graph, n) or "(none)" for n in nodes}, what)

    return changes_guard
