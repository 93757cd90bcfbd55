"""Submitting a set of contracts: create or update each, idempotently (docs/api.md).

Each contract is authorized by the access rule of the route that writes it alone (creating,
updating, linking, deploying), evaluated for that route's path parameters and body, so this
endpoint has no rules of its own. The whole set is first applied to a scratch copy of the
graph: a contract that is invalid, refused or contradicts the graph refuses the whole set
before anything is written. A dry run stops there and answers what the set would do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ztdp.api.access import Access, cascade_guard
from ztdp.api.keys import CATALOG, RUNTIME, identity_of
from ztdp.api.problems import Problem, validation_problem
from ztdp.api.routing import Reply, validate_strictly
from ztdp.api.v1.common import DRY_RUN, flag, router
from ztdp.api.v1.resources import ResourceBody
from ztdp.catalog.catalog import Catalog
from ztdp.catalog.guard import guarded
from ztdp.contracts import (
    AllowedEnvironments,
    Application,
    DependencyRequest,
    DeployRequest,
    DnsLabel,
    Environment,
    Policy,
    SemVer,
    Service,
    ServiceVersionIn,
)
from ztdp.contracts.base import Strict
from ztdp.errors import Conflict, InvalidInput, NotFound, ZtdpError
from ztdp.graph import EdgeType, Graph, NodeKind, node_id
from ztdp.planner import Plan
from ztdp.policy import Decision, allowed_environments
from ztdp.runtime import Runtime

MAX_CONTRACTS = 500
T = TypeVar("T")


# --- relations, as contracts of their own ---------------------------------------------------


class DeploymentContract(Strict):
    """`kind: Deployment`: a version of a service deployed to an environment (policy-checked)."""

    application: DnsLabel
    service: DnsLabel
    version: SemVer
    environment: DnsLabel


class AllowedEnvironmentsContract(Strict):
    """`kind: AllowedEnvironments`: where an application may run (replaces the list)."""

    application: DnsLabel
    environments: AllowedEnvironments


class ResourceLinkContract(Strict):
    """`kind: ResourceLink`: a resource linked to an application and used by its services."""

    application: DnsLabel
    resource: DnsLabel
    services: Annotated[list[DnsLabel], Field(max_length=256)] = Field(default_factory=list)


class ServiceRef(Strict):
    application: DnsLabel
    service: DnsLabel


class DependencyContract(Strict):
    """`kind: Dependency`: a service of an application uses another service."""

    application: DnsLabel
    service: DnsLabel
    uses: ServiceRef


class VersionContract(ServiceVersionIn):
    """`kind: ServiceVersion`: a version's body, and the service it belongs to."""

    application: DnsLabel
    service: DnsLabel


# In the order they are applied, whatever their order in the set: what a contract names
# exists before it (a resource link after the services that use the resource).
KINDS: dict[str, Any] = {
    "Environment": Environment,
    "ResourceType": ResourceBody,
    "Application": Application,
    "AllowedEnvironments": AllowedEnvironmentsContract,
    "Resource": ResourceBody,
    "Service": Service,
    "ResourceLink": ResourceLinkContract,
    "Dependency": DependencyContract,
    "ServiceVersion": VersionContract,
    "Policy": Policy,
    "Deployment": DeploymentContract,
}
_ADAPTERS = {kind: TypeAdapter(tp) for kind, tp in KINDS.items()}
_ORDER = {kind: i for i, kind in enumerate(KINDS)}
# The flat kinds carry no `kind` field of their own: it is taken off before validation.
_ENVELOPED = {"Environment", "ResourceType", "Application", "Resource", "Service", "Policy"}

Action = Literal["created", "updated", "unchanged", "deployed", "denied"]


class Outcome(BaseModel):
    index: int = Field(description="the contract's position in the submitted list")
    kind: str
    name: str = Field(description="what the contract names, e.g. 'checkout/api' or '1.2.0'")
    action: Action = Field(
        description="created, updated, unchanged, deployed; or, in a dry run, denied: a "
        "Deployment that policy refuses (without dry run, the set is refused with 403)"
    )
    decision: Decision | None = Field(default=None, description="a Deployment's decision")
    run: str | None = Field(default=None, description="the run a Deployment started")


class Submission(BaseModel):
    dry_run: bool
    revision: int = Field(description="the graph revision after the set (or, dry, before it)")
    results: list[Outcome] = Field(description="one per contract, in the order applied")
    runs: list[str] = Field(description="the runs the Deployments started: /v1/runs/{id}")
    changes: list[dict[str, Any]] = Field(
        description="the graph changes the set made (or would make), operation by operation"
    )
    plans: list[Plan] = Field(
        description="dry run: per environment a Deployment or a changed application touches, "
        "the plan that would realise the set there"
    )


Contracts = Annotated[
    list[dict[str, Any]],
    Field(
        max_length=MAX_CONTRACTS,
        description=f"at most {MAX_CONTRACTS} contracts, each with a `kind`: " + ", ".join(KINDS),
    ),
]


@dataclass
class _Contract:
    index: int
    kind: str
    body: Any

    @property
    def where(self) -> str:
        return f"body[{self.index}]"


def _parse(items: list[dict[str, Any]]) -> list[_Contract]:
    """Every contract validated as its kind, in the order they are applied."""
    parsed = []
    for i, item in enumerate(items):
        kind = item.get("kind")
        if kind not in KINDS:
            raise InvalidInput(
                f"body[{i}].kind: must be one of {', '.join(KINDS)}", field=f"body[{i}].kind"
            )
        data = item if kind in _ENVELOPED else {k: v for k, v in item.items() if k != "kind"}
        try:
            body = validate_strictly(_ADAPTERS[kind], json.dumps(data).encode())
        except ValidationError as exc:
            raise _Invalid(validation_problem(exc, prefix=f"body[{i}]")) from None
        parsed.append(_Contract(i, kind, body))
    return sorted(parsed, key=lambda c: (_ORDER[c.kind], c.index))


class _Invalid(Exception):
    """A validation error, already answered as a problem naming each field."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


# --- applying a set, to the scratch copy or for real ----------------------------------------


@dataclass
class _Apply:
    request: web.Request
    catalog: Catalog
    real: bool  # False: the scratch copy (validation, or the dry run)
    dry_run: bool

    async def _as(self, operation: str, params: dict[str, str], body: Any) -> Any:
        """Authorize as the route `operation` would; return its write guard."""
        ep = router.endpoint(operation)
        sub = ep.request_for(self.request, params)
        return ep.authorize(sub, identity_of(self.request), body)

    async def write(
        self, operation: str, params: dict[str, str], body: Any, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Write as the route `operation` would: its rule, its guard inside the write."""
        guard = await self._as(operation, params, body)
        with guarded(guard, cascade_guard(identity_of(self.request))):
            return await call()

    async def check(self, operation: str, params: dict[str, str], body: Any) -> None:
        """Authorize what changes nothing as if it were written: a set names only what its
        caller may write."""
        guard = await self._as(operation, params, body)
        if guard is not None:
            guard(await self.catalog.graph())

    async def one(self, c: _Contract) -> Outcome:
        graph = await self.catalog.graph()
        b = c.body.model_copy(deep=True)  # the owner a create fills in is this pass's own
        cat = self.catalog

        def outcome(name: str, action: Action, **more: Any) -> Outcome:
            return Outcome(index=c.index, kind=c.kind, name=name, action=action, **more)

        match c.kind:
            case "Environment" | "Application" | "Policy" | "Resource" | "ResourceType":
                name = b.metadata.name
                create, update, param, nkind = _TOP[c.kind]
                stored = graph.data(node_id(nkind, name))
                if stored is None:
                    await self.write(create, {}, b, lambda: _CREATE[c.kind](cat, b))
                    return outcome(name, "created")
                if _same(stored, b):
                    await self.check(update, {param: name}, b)
                    return outcome(name, "unchanged")
                await self.write(update, {param: name}, b, lambda: _UPDATE[c.kind](cat, name, b))
                return outcome(name, "updated")
            case "Service":
                app, svc = b.spec.application, b.metadata.name
                params = {"app": app, "svc": svc}
                stored = graph.data(node_id(NodeKind.SERVICE, app, svc))
                if stored is None:
                    await self.write(
                        "create_service", {"app": app}, b, lambda: cat.create_service(app, b)
                    )
                    return outcome(f"{app}/{svc}", "created")
                if _same(stored, b):
                    await self.check("update_service", params, b)
                    return outcome(f"{app}/{svc}", "unchanged")
                await self.write(
                    "update_service", params, b, lambda: cat.update_service(app, svc, b)
                )
                return outcome(f"{app}/{svc}", "updated")
            case "ServiceVersion":
                return await self._version(c, b, graph, outcome)
            case "AllowedEnvironments":
                envs = b.environments
                params = {"app": b.application}
                if node_id(NodeKind.APPLICATION, b.application) in graph and set(
                    allowed_environments(graph, b.application)
                ) == set(envs):
                    await self.check("replace_allowed", params, envs)
                    return outcome(b.application, "unchanged")
                await self.write(
                    "replace_allowed",
                    params,
                    envs,
                    lambda: cat.set_allowed(b.application, envs, replace=True),
                )
                return outcome(b.application, "updated")
            case "ResourceLink":
                return await self._link(c, b, graph, outcome)
            case "Dependency":
                name = f"{b.application}/{b.service}"
                uses = f"{b.uses.application}/{b.uses.service}"
                params = {"app": b.application, "svc": b.service}
                req = DependencyRequest(application=b.uses.application, service=b.uses.service)
                sid = node_id(NodeKind.SERVICE, b.application, b.service)
                target = node_id(NodeKind.SERVICE, b.uses.application, b.uses.service)
                if sid in graph and graph.has_edge(sid, target, EdgeType.USES):
                    await self.check("add_dependency", params, req)
                    return outcome(f"{name} -> {uses}", "unchanged")
                await self.write(
                    "add_dependency",
                    params,
                    req,
                    lambda: cat.add_dependency(
                        b.application, b.service, b.uses.application, b.uses.service
                    ),
                )
                return outcome(f"{name} -> {uses}", "created")
            case _:
                return await self._deploy(c, b, graph, outcome)

    async def _version(
        self, c: _Contract, b: VersionContract, graph: Graph, outcome: Callable[..., Outcome]
    ) -> Outcome:
        app, svc = b.application, b.service
        name = f"{app}/{svc}/{b.version}"
        params = {"app": app, "svc": svc}
        body = ServiceVersionIn(**b.model_dump(exclude={"application", "service"}))
        stored = graph.data(node_id(NodeKind.VERSION, app, svc, b.version))
        if stored is None:
            await self.write(
                "create_version", params, body, lambda: self.catalog.create_version(app, svc, body)
            )
            return outcome(name, "created")
        wanted = body.model_dump(mode="json")
        if wanted["owner"] is None:
            del wanted["owner"]  # inherited: whatever is stored
        if not wanted["image"]:
            wanted["image"] = f"{svc}:{b.version.replace('+', '_')}"
        differs = sorted(k for k, v in wanted.items() if stored.get(k) != v)
        if differs:
            raise Conflict(
                f"version {b.version} of service {svc} of application {app} is stored with "
                f"another {', '.join(differs)}: versions are immutable, submit a new version"
            )
        await self.check("create_version", params, body)
        return outcome(name, "unchanged")

    async def _link(
        self, c: _Contract, b: ResourceLinkContract, graph: Graph, outcome: Callable[..., Outcome]
    ) -> Outcome:
        app, res = b.application, b.resource
        app_id, rid = node_id(NodeKind.APPLICATION, app), node_id(NodeKind.RESOURCE, res)
        changed = False
        params = {"app": app, "res": res}
        if graph.has_edge(app_id, rid, EdgeType.OWNS):
            await self.check("link_application_resource", params, None)
        else:
            await self.write(
                "link_application_resource",
                params,
                None,
                lambda: self.catalog.link_application_resource(app, res),
            )
            changed = True
        for svc in b.services:
            sparams = {"app": app, "svc": svc, "res": res}
            if graph.has_edge(node_id(NodeKind.SERVICE, app, svc), rid, EdgeType.USES):
                await self.check("link_service_resource", sparams, None)
                continue
            await self.write(
                "link_service_resource",
                sparams,
                None,
                partial(self.catalog.link_service_resource, app, svc, res),
            )
            changed = True
        return outcome(f"{app}/{res}", "created" if changed else "unchanged")

    async def _deploy(
        self, c: _Contract, b: DeploymentContract, graph: Graph, outcome: Callable[..., Outcome]
    ) -> Outcome:
        app, svc, version, env = b.application, b.service, b.version, b.environment
        name = f"{app}/{svc}/{version}@{env}"
        params = {"app": app, "svc": svc, "version": version}
        req = DeployRequest(environment=env)
        vid = node_id(NodeKind.VERSION, app, svc, version)
        if graph.has_edge(vid, node_id(NodeKind.ENVIRONMENT, env), EdgeType.DEPLOY):
            await self.check("deploy_version", params, req)
            return outcome(name, "unchanged")
        runtime = self.request.app[RUNTIME]
        if self.real:
            result, run = await self.write(
                "deploy_version", params, req, lambda: runtime.deploy(app, svc, version, env)
            )
            return outcome(name, "deployed", decision=result.decision, run=run.id)
        if self.dry_run:  # a refusal is an answer, as for the dry run of one deploy
            preview, _, _ = await self.write(
                "deploy_version",
                params,
                req,
                lambda: self._preview_deploy(runtime, app, svc, version, env),
            )
            if not preview.decision.allowed:
                return outcome(name, "denied", decision=preview.decision)
        result = await self.write(
            "deploy_version",
            params,
            req,
            lambda: self._deploy_with_health(runtime, app, svc, version, env),
        )
        return outcome(name, "deployed", decision=result.decision)

    async def _preview_deploy(
        self, runtime: Runtime, app: str, svc: str, version: str, env: str
    ) -> Any:
        health = await runtime.health(app, svc)
        return await self.catalog.preview_deploy(app, svc, version, env, health=health)

    async def _deploy_with_health(
        self, runtime: Runtime, app: str, svc: str, version: str, env: str
    ) -> Any:
        health = await runtime.health(app, svc)
        return await self.catalog.deploy(app, svc, version, env, health=health)


# The top-level kinds: their create and update operations, path parameter and node kind.
_TOP: dict[str, tuple[str, str, str, NodeKind]] = {
    "Environment": ("create_environment", "update_environment", "env", NodeKind.ENVIRONMENT),
    "Application": ("create_application", "update_application", "app", NodeKind.APPLICATION),
    "Policy": ("create_policy", "update_policy", "id", NodeKind.POLICY),
    "Resource": ("create_resource", "update_resource", "res", NodeKind.RESOURCE),
    "ResourceType": ("create_resource", "update_resource", "res", NodeKind.RESOURCE_TYPE),
}
_CREATE: dict[str, Callable[[Catalog, Any], Awaitable[Any]]] = {
    "Environment": Catalog.create_environment,
    "Application": Catalog.create_application,
    "Policy": Catalog.create_policy,
    "Resource": Catalog.create_resource,
    "ResourceType": Catalog.create_resource,
}
_UPDATE: dict[str, Callable[[Catalog, str, Any], Awaitable[Any]]] = {
    "Environment": Catalog.update_environment,
    "Application": Catalog.update_application,
    "Policy": Catalog.update_policy,
    "Resource": Catalog.update_resource,
    "ResourceType": Catalog.update_resource,
}


def _same(stored: dict[str, Any], body: BaseModel) -> bool:
    """Whether an update would change nothing: what the catalog stamps (revision, updated_by)
    and an owner the body leaves out (it keeps the stored one) are not compared."""
    wanted = body.model_dump(mode="json", by_alias=True)
    ignored = {"revision", "updated_by"}
    if wanted["metadata"]["owner"] is None:
        ignored.add("owner")

    def comparable(data: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in data["metadata"].items() if k not in ignored}
        return {**data, "metadata": meta}

    return comparable(stored) == comparable(wanted)


def _named(exc: ZtdpError, c: _Contract, outcome_name: str) -> ZtdpError:
    """The error of one contract, naming it; a missing object it names is a 422 of the set."""
    detail = f"{c.where} ({c.kind} {outcome_name}): {exc.detail}"
    if isinstance(exc, NotFound):
        return InvalidInput(detail, field=c.where)
    exc.detail = detail
    exc.args = (detail,)
    if isinstance(exc, InvalidInput):
        field = f"{c.where}.{exc.field}" if exc.field else c.where
        exc.field = field
        exc.extensions["field"] = field
        exc.extensions["errors"] = [{"loc": field, "msg": detail, "type": "value_error"}]
    return exc


def _label(c: _Contract) -> str:
    b = c.body
    meta = getattr(b, "metadata", None)
    if meta is not None:
        return str(meta.name)
    return "/".join(
        str(getattr(b, f)) for f in ("application", "service", "resource") if hasattr(b, f)
    )


async def _run(apply: _Apply, contracts: list[_Contract]) -> list[Outcome]:
    results = []
    for c in contracts:
        try:
            results.append(await apply.one(c))
        except ZtdpError as exc:
            raise _named(exc, c, _label(c)) from None
    return results


@router.add(
    "POST",
    "/v1/contracts",
    "Create or update a set of contracts of any kinds",
    tag="contracts",
    body=Contracts,
    responses={200: Submission, 403: Problem, 409: Problem, 413: Problem, 422: Problem},
    query=(DRY_RUN,),
    access=Access("each", "submit contracts"),
)
async def submit_contracts(request: web.Request, body: list[dict[str, Any]]) -> Reply:
    """Idempotent: each contract is created if absent, updated if different, else left
    unchanged, in dependency order whatever the order of the list. The whole set is tried on
    a copy of the graph first: if any contract is invalid (422), not allowed (403) or
    contradicts the graph (409, e.g. a changed version), nothing is written."""
    try:
        contracts = _parse(body)
    except _Invalid as invalid:
        return invalid.response.status, invalid.response
    catalog = request.app[CATALOG]
    dry_run = flag(request, "dry_run")
    before = (await catalog.graph()).revision
    scratch = await catalog.scratch()
    tried = await _run(_Apply(request, scratch, real=False, dry_run=dry_run), contracts)
    if dry_run:
        after = await scratch.graph()
        changes = await scratch.changes(since=before, limit=1_000_000)
        return 200, Submission(
            dry_run=True,
            revision=before,
            results=tried,
            runs=[],
            changes=[op for change in changes for op in change.ops],
            plans=await _plans(request, catalog, after, contracts),
        )
    done = await _run(_Apply(request, catalog, real=True, dry_run=False), contracts)
    changes = await catalog.changes(since=before, limit=1_000_000)
    return 200, Submission(
        dry_run=False,
        revision=(await catalog.graph()).revision,
        results=done,
        runs=[r.run for r in done if r.run is not None],
        changes=[op for change in changes for op in change.ops],
        plans=[],
    )


async def _plans(
    request: web.Request, catalog: Catalog, after: Graph, contracts: list[_Contract]
) -> list[Plan]:
    """Per environment a Deployment names or a named application is deployed to, the plan
    realising the set there (with each step's policy verdict)."""
    apps = {a for c in contracts for a in _applications(c)}
    envs = {c.body.environment for c in contracts if c.kind == "Deployment"}
    for app in apps:
        app_id = node_id(NodeKind.APPLICATION, app)
        if app_id not in after:
            continue
        for sid in after.successors(app_id, EdgeType.OWNS):
            for vid in after.successors(sid, EdgeType.HAS_VERSION):
                envs.update(e.rsplit("/", 1)[1] for e in after.successors(vid, EdgeType.DEPLOY))
    runtime = request.app[RUNTIME]
    return [
        await runtime.preview(await catalog.plan_on(after, env, apps), graph=after)
        for env in sorted(envs)
    ]


def _applications(c: _Contract) -> list[str]:
    b = c.body
    if c.kind == "Application":
        return [b.metadata.name]
    if c.kind == "Service":
        return [b.spec.application]
    app = getattr(b, "application", None)
    return [app] if isinstance(app, str) else []
