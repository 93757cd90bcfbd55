"""The v1 REST API: thin handlers that call the catalog; routes as in DESIGN.md."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

import anyio
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ztdp import __version__
from ztdp.api.access import (
    PUBLIC,
    READ,
    Access,
    admin,
    body_owner,
    path_app,
    path_app_and_body_owner,
    path_app_and_resource,
    path_app_and_version_owner,
    recorder,
    team,
)
from ztdp.api.keys import AUTH, CATALOG, EVENTS, GRAPH_CACHE, RUNTIME, SETTINGS, identity_of
from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import Query, Reply, Router
from ztdp.auth import Grant, TokenInfo
from ztdp.catalog import Deployment, DeployResult
from ztdp.contracts import (
    AllowedEnvironments,
    Application,
    Approval,
    Check,
    DependencyRequest,
    DeployRequest,
    Environment,
    Policy,
    Resource,
    ResourceLinkRequest,
    ResourceType,
    Service,
    ServiceVersion,
    ServiceVersionIn,
    TransitionRequest,
)
from ztdp.contracts.base import Owner
from ztdp.events import EventFilter
from ztdp.graph.store import Change
from ztdp.planner import Plan
from ztdp.policy import Decision, Transition
from ztdp.runtime import Run

router = Router()


def _resource_access(body: Any) -> Access:
    if isinstance(body, ResourceType):
        return admin("create resource types")
    if body.spec.shared:
        return admin("create shared resources")
    return team("create resources for that team", body_owner)


def _approval_env(body: Any) -> str:
    return str(body.spec.environment)


READ_ERRORS = {404: Problem}
WRITE = {400: Problem, 404: Problem, 409: Problem, 413: Problem, 422: Problem}


def _resource_kind(value: Any) -> str:
    kind = value.get("kind", "Resource") if isinstance(value, dict) else getattr(value, "kind", "")
    return "ResourceType" if str(kind).replace("_", "").lower() == "resourcetype" else "Resource"


ResourceBody = Annotated[
    Annotated[Resource, Tag("Resource")] | Annotated[ResourceType, Tag("ResourceType")],
    Discriminator(_resource_kind),
]


class ApplyResult(BaseModel):
    environment: str
    run: str = Field(description="follow it at /v1/runs/{run}")
    plan: Plan


class DeployAccepted(DeployResult):
    run: str = Field(description="the run realising the deploy: /v1/runs/{run}")


class Status(BaseModel):
    version: str
    authentication: Literal["on", "off"]
    graph_store: str
    revision: int
    nodes: dict[str, int] = Field(description="number of nodes per kind")
    edges: int


class Health(BaseModel):
    status: str


def _p(request: web.Request, name: str) -> str:
    return request.match_info[name]


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        shown = ascii(raw[:40]) + ("..." if len(raw) > 40 else "")
        raise BadRequest(f'If-Match header {shown} is not a revision number such as "12"')
    return int(value)


# --- applications --------------------------------------------------------------------------


@router.add(
    "GET",
    "/v1/applications/schema",
    "JSON Schema of an application",
    tag="applications",
    responses={200: dict[str, Any]},
    access=READ,
)
async def application_schema(request: web.Request, body: None) -> Reply:
    return 200, Application.model_json_schema(by_alias=True)


@router.add(
    "POST",
    "/v1/applications",
    "Create an application",
    tag="applications",
    body=Application,
    responses={201: Application, **WRITE},
    access=team("create applications for that team", body_owner),
)
async def create_application(request: web.Request, body: Application) -> Reply:
    return 201, await request.app[CATALOG].create_application(body)


@router.add(
    "GET",
    "/v1/applications",
    "List applications",
    tag="applications",
    responses={200: list[Application]},
    access=READ,
)
async def list_applications(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_applications()


@router.add(
    "GET",
    "/v1/applications/{app}",
    "Read an application",
    tag="applications",
    responses={200: Application, **READ_ERRORS},
    access=READ,
)
async def get_application(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_application(_p(request, "app"))


@router.add(
    "PUT",
    "/v1/applications/{app}",
    "Update an application",
    tag="applications",
    body=Application,
    responses={200: Application, **WRITE},
    if_match=True,
    access=team("change this application", path_app_and_body_owner),
)
async def update_application(request: web.Request, body: Application) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_application(
        _p(request, "app"), body, if_match=_if_match(request)
    )


# --- services and versions -----------------------------------------------------------------


@router.add(
    "GET",
    "/v1/applications/{app}/services/schema",
    "JSON Schema of a service",
    tag="services",
    responses={200: dict[str, Any]},
    access=READ,
)
async def service_schema(request: web.Request, body: None) -> Reply:
    return 200, Service.model_json_schema(by_alias=True)


@router.add(
    "POST",
    "/v1/applications/{app}/services",
    "Create a service of an application",
    tag="services",
    body=Service,
    responses={201: Service, **WRITE},
    access=team("add services to this application", path_app_and_body_owner),
)
async def create_service(request: web.Request, body: Service) -> Reply:
    return 201, await request.app[CATALOG].create_service(_p(request, "app"), body)


@router.add(
    "GET",
    "/v1/applications/{app}/services",
    "List an application's services",
    tag="services",
    responses={200: list[Service], **READ_ERRORS},
    access=READ,
)
async def list_services(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_services(_p(request, "app"))


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}",
    "Read a service",
    tag="services",
    responses={200: Service, **READ_ERRORS},
    access=READ,
)
async def get_service(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_service(_p(request, "app"), _p(request, "svc"))


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/versions",
    "Create a service version",
    tag="versions",
    body=ServiceVersionIn,
    responses={201: ServiceVersion, **WRITE},
    access=team("add versions to this application", path_app_and_version_owner),
)
async def create_version(request: web.Request, body: ServiceVersionIn) -> Reply:
    catalog = request.app[CATALOG]
    return 201, await catalog.create_version(_p(request, "app"), _p(request, "svc"), body)


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/versions",
    "List a service's versions",
    tag="versions",
    responses={200: list[ServiceVersion], **READ_ERRORS},
    access=READ,
)
async def list_versions(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_versions(_p(request, "app"), _p(request, "svc"))


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/versions/{version}",
    "Read a version",
    tag="versions",
    responses={200: ServiceVersion, **READ_ERRORS},
    access=READ,
)
async def get_version(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.get_version(
        _p(request, "app"), _p(request, "svc"), _p(request, "version")
    )


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/versions/{version}/deploy",
    "Deploy a version to an environment, if policy allows",
    tag="versions",
    body=DeployRequest,
    responses={202: DeployAccepted, 403: Problem, **WRITE},
    access=team("deploy this application", path_app),
)
async def deploy_version(request: web.Request, body: DeployRequest) -> Reply:
    result, run = await request.app[RUNTIME].deploy(
        _p(request, "app"), _p(request, "svc"), _p(request, "version"), body.environment
    )
    return 202, DeployAccepted(deployment=result.deployment, decision=result.decision, run=run.id)


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/dependencies",
    "Declare that a service uses another service",
    tag="services",
    body=DependencyRequest,
    responses={200: list[str], **WRITE},
    access=team("change this application", path_app),
)
async def add_dependency(request: web.Request, body: DependencyRequest) -> Reply:
    app = _p(request, "app")
    deps = await request.app[CATALOG].add_dependency(
        app, _p(request, "svc"), body.application or app, body.service
    )
    return 200, deps


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/dependencies",
    "List the services a service uses, as 'application/service'",
    tag="services",
    responses={200: list[str], **READ_ERRORS},
    access=READ,
)
async def list_dependencies(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].dependencies(_p(request, "app"), _p(request, "svc"))


# --- environments --------------------------------------------------------------------------


@router.add(
    "POST",
    "/v1/environments",
    "Create an environment",
    tag="environments",
    body=Environment,
    responses={201: Environment, **WRITE},
    access=admin("create environments"),
)
async def create_environment(request: web.Request, body: Environment) -> Reply:
    return 201, await request.app[CATALOG].create_environment(body)


@router.add(
    "GET",
    "/v1/environments",
    "List environments",
    tag="environments",
    responses={200: list[Environment]},
    access=READ,
)
async def list_environments(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_environments()


@router.add(
    "GET",
    "/v1/environments/{env}/deployments",
    "List what is deployed to an environment",
    tag="environments",
    responses={200: list[Deployment], **READ_ERRORS},
    access=READ,
)
async def list_deployments(request: web.Request, body: None) -> Reply:
    env = _p(request, "env")
    deployments = await request.app[CATALOG].deployments(env)
    runtime = request.app[RUNTIME]
    for d in deployments:
        d.status = runtime.status_of(f"deployment/{d.application}/{d.service}@{env}").value
    return 200, deployments


@router.add(
    "GET",
    "/v1/applications/{app}/environments/allowed",
    "List the environments an application may deploy to",
    tag="environments",
    responses={200: list[str], **READ_ERRORS},
    access=READ,
)
async def get_allowed(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].allowed(_p(request, "app"))


@router.add(
    "POST",
    "/v1/applications/{app}/environments/allowed",
    "Add environments to an application's allowed list",
    tag="environments",
    body=AllowedEnvironments,
    responses={200: list[str], **WRITE},
    access=admin("change where applications may run"),
)
async def add_allowed(request: web.Request, body: list[str]) -> Reply:
    return 200, await request.app[CATALOG].set_allowed(_p(request, "app"), body, replace=False)


@router.add(
    "PUT",
    "/v1/applications/{app}/environments/allowed",
    "Replace an application's allowed environments",
    tag="environments",
    body=AllowedEnvironments,
    responses={200: list[str], **WRITE},
    access=admin("change where applications may run"),
)
async def replace_allowed(request: web.Request, body: list[str]) -> Reply:
    return 200, await request.app[CATALOG].set_allowed(_p(request, "app"), body, replace=True)


@router.add(
    "POST",
    "/v1/applications/{app}/environments/{env}/allowed",
    "Allow an application in one environment",
    tag="environments",
    responses={200: list[str], **WRITE},
    access=admin("change where applications may run"),
)
async def allow_one(request: web.Request, body: None) -> Reply:
    env = _p(request, "env")
    catalog = request.app[CATALOG]
    return 200, await catalog.set_allowed(
        _p(request, "app"), [env], replace=False, field="path.env"
    )


# --- resources -----------------------------------------------------------------------------


@router.add(
    "POST",
    "/v1/resources",
    "Create a resource, or a resource type (kind ResourceType)",
    tag="resources",
    body=ResourceBody,
    responses={201: Resource | ResourceType, **WRITE},
    access=Access("team", refine=_resource_access),
)
async def create_resource(request: web.Request, body: Resource | ResourceType) -> Reply:
    return 201, await request.app[CATALOG].create_resource(body)


@router.add(
    "GET",
    "/v1/resources",
    "List resource types and resources",
    tag="resources",
    responses={200: list[Resource | ResourceType]},
    access=READ,
)
async def list_resources(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_resources()


@router.add(
    "POST",
    "/v1/applications/{app}/resources/{res}",
    "Give an application a resource",
    tag="resources",
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_application_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_application_resource(_p(request, "app"), _p(request, "res"))


@router.add(
    "GET",
    "/v1/applications/{app}/resources",
    "List an application's resources",
    tag="resources",
    responses={200: list[Resource], **READ_ERRORS},
    access=READ,
)
async def list_application_resources(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].application_resources(_p(request, "app"))


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/resources",
    "Let a service use one of its application's resources",
    tag="resources",
    body=ResourceLinkRequest,
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource_body(request: web.Request, body: ResourceLinkRequest) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_service_resource(
        _p(request, "app"), _p(request, "svc"), body.resource, field="resource"
    )


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/resources",
    "List the resources a service uses",
    tag="resources",
    responses={200: list[Resource], **READ_ERRORS},
    access=READ,
)
async def list_service_resources(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].service_resources(_p(request, "app"), _p(request, "svc"))


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/resources/{res}",
    "Let a service use one of its application's resources",
    tag="resources",
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_service_resource(
        _p(request, "app"), _p(request, "svc"), _p(request, "res")
    )


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/resources/{res}",
    "Read a resource a service uses",
    tag="resources",
    responses={200: Resource, **READ_ERRORS},
    access=READ,
)
async def get_service_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.service_resource(
        _p(request, "app"), _p(request, "svc"), _p(request, "res")
    )


# --- policies, checks, approvals -----------------------------------------------------------


@router.add(
    "POST",
    "/v1/policies",
    "Create a policy",
    tag="policies",
    body=Policy,
    responses={201: Policy, **WRITE},
    access=admin("create policies"),
)
async def create_policy(request: web.Request, body: Policy) -> Reply:
    return 201, await request.app[CATALOG].create_policy(body)


@router.add(
    "GET",
    "/v1/policies",
    "List policies",
    tag="policies",
    responses={200: list[Policy]},
    access=READ,
)
async def list_policies(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_policies()


@router.add(
    "GET",
    "/v1/policies/{id}",
    "Read a policy",
    tag="policies",
    responses={200: Policy, **READ_ERRORS},
    access=READ,
)
async def get_policy(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_policy(_p(request, "id"))


@router.add(
    "PUT",
    "/v1/policies/{id}",
    "Update a policy",
    tag="policies",
    body=Policy,
    responses={200: Policy, **WRITE},
    if_match=True,
    access=admin("change policies"),
)
async def update_policy(request: web.Request, body: Policy) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_policy(_p(request, "id"), body, if_match=_if_match(request))


@router.add(
    "POST",
    "/v1/policies/evaluate",
    "Evaluate a deploy against policy without making it",
    tag="policies",
    body=TransitionRequest,
    responses={200: Decision, **WRITE},
    access=READ,
)
async def evaluate_policies(request: web.Request, body: TransitionRequest) -> Reply:
    # Evaluated as if the caller asked for the deploy: its own approvals do not count.
    transition = Transition(**body.model_dump(), actor=identity_of(request).principal)
    return 200, await request.app[RUNTIME].evaluate(transition)


@router.add(
    "POST",
    "/v1/checks",
    "Record a check result for a version",
    tag="policies",
    body=Check,
    responses={201: Check, **WRITE},
    access=recorder("record checks of this application"),
)
async def create_check(request: web.Request, body: Check) -> Reply:
    return 201, await request.app[CATALOG].put_check(body, create=True)


@router.add(
    "GET",
    "/v1/checks",
    "List check results",
    tag="policies",
    responses={200: list[Check]},
    access=READ,
)
async def list_checks(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_checks()


@router.add(
    "GET",
    "/v1/checks/{name}",
    "Read a check result",
    tag="policies",
    responses={200: Check, **READ_ERRORS},
    access=READ,
)
async def get_check(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_check(_p(request, "name"))


@router.add(
    "PUT",
    "/v1/checks/{name}",
    "Update a check result (e.g. to succeeded)",
    tag="policies",
    body=Check,
    responses={200: Check, **WRITE},
    if_match=True,
    access=recorder("record checks of this application"),
)
async def update_check(request: web.Request, body: Check) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.put_check(
        body, create=False, name=_p(request, "name"), if_match=_if_match(request)
    )


@router.add(
    "POST",
    "/v1/approvals",
    "Approve a deploy for an approval policy",
    tag="policies",
    body=Approval,
    responses={201: Approval, **WRITE},
    access=Access("approver", "approve deploys there", environment=_approval_env),
)
async def create_approval(request: web.Request, body: Approval) -> Reply:
    return 201, await request.app[CATALOG].create_approval(body)


@router.add(
    "GET",
    "/v1/approvals",
    "List approvals",
    tag="policies",
    responses={200: list[Approval]},
    access=READ,
)
async def list_approvals(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_approvals()


@router.add(
    "GET",
    "/v1/approvals/{name}",
    "Read an approval",
    tag="policies",
    responses={200: Approval, **READ_ERRORS},
    access=READ,
)
async def get_approval(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_approval(_p(request, "name"))


# --- plans, graph, status ------------------------------------------------------------------


@router.add(
    "GET",
    "/v1/applications/{app}/plan",
    "Preview the plan of an application",
    tag="plans",
    responses={200: Plan, **READ_ERRORS, 422: Problem},
    query=(
        Query(
            "environment",
            "plan the realisation in this environment; "
            "without it, order the application's own graph",
        ),
    ),
    access=READ,
)
async def get_plan(request: web.Request, body: None) -> Reply:
    env = request.query.get("environment")
    return 200, await request.app[RUNTIME].plan(_p(request, "app"), env)


@router.add(
    "POST",
    "/v1/apply",
    "Apply the plan of every application in an environment",
    tag="plans",
    responses={202: ApplyResult, **READ_ERRORS, 422: Problem},
    query=(Query("env", "the environment to apply", required=True),),
    access=admin("apply plans"),
)
async def apply(request: web.Request, body: None) -> Reply:
    plan, run = await request.app[RUNTIME].apply(request.query["env"])
    return 202, ApplyResult(environment=run.environment, run=run.id, plan=plan)


@router.add(
    "GET",
    "/v1/graph",
    "The whole intent graph",
    tag="system",
    responses={200: dict[str, Any]},
    access=READ,
)
async def get_graph(request: web.Request, body: None) -> Reply:
    graph = await request.app[CATALOG].graph()
    cache = request.app[GRAPH_CACHE]
    if cache.get("revision") != graph.revision:
        cache["body"] = json.dumps(graph.to_dict()).encode()
        cache["revision"] = graph.revision
    return 200, cache["body"]


@router.add(
    "GET", "/v1/status", "Control-plane status", tag="system", responses={200: Status}, access=READ
)
async def get_status(request: web.Request, body: None) -> Reply:
    graph = await request.app[CATALOG].graph()
    return 200, Status(
        version=__version__,
        authentication="on" if request.app[AUTH].enabled else "off",
        graph_store=request.app[SETTINGS].graph_store,
        revision=graph.revision,
        nodes=graph.counts(),
        edges=graph.edge_count(),
    )


@router.add(
    "GET",
    "/v1/healthz",
    "Liveness and store reachability",
    tag="system",
    responses={200: Health, 503: Problem},
    access=PUBLIC,
)
async def healthz(request: web.Request, body: None) -> Reply:
    await request.app[CATALOG].ping()
    return 200, Health(status="ok")


# --- identities, tokens and the audit trail ------------------------------------------------


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
    return 200, await request.app[AUTH].tokens.get(_p(request, "id"))


@router.add(
    "DELETE",
    "/v1/tokens/{id}",
    "Revoke a token",
    tag="auth",
    responses={200: TokenInfo, **READ_ERRORS},
    access=admin("revoke tokens"),
)
async def revoke_token(request: web.Request, body: None) -> Reply:
    tokens = request.app[AUTH].tokens
    return 200, await tokens.revoke(_p(request, "id"), by=identity_of(request).principal)


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
    "Committed changes to the graph, with who made them",
    tag="system",
    responses={200: list[Change], 422: Problem},
    access=READ,
    query=(
        Query("since", "only changes after this revision", pattern=r"^[0-9]{1,12}$"),
        Query("limit", "at most this many (default 100, at most 1000)", pattern=r"^[0-9]{1,4}$"),
    ),
)
async def list_changes(request: web.Request, body: None) -> Reply:
    since = int(request.query.get("since", 0))
    limit = min(int(request.query.get("limit", 100)), 1000)
    return 200, await request.app[CATALOG].changes(since=since, limit=limit)


# --- runs, events, providers ---------------------------------------------------------------


class ProviderView(BaseModel):
    kind: str
    entry_point: str
    distribution: str
    version: str


@router.add(
    "GET",
    "/v1/runs",
    "Runs of this process, newest last",
    tag="runs",
    responses={200: list[Run]},
    access=READ,
)
async def list_runs(request: web.Request, body: None) -> Reply:
    return 200, [r.model_dump(mode="json") for r in request.app[RUNTIME].runs.list()]


@router.add(
    "GET",
    "/v1/runs/{id}",
    "A run and the status of each step",
    tag="runs",
    responses={200: Run, **READ_ERRORS},
    access=READ,
)
async def get_run(request: web.Request, body: None) -> Reply:
    return 200, request.app[RUNTIME].runs.get(_p(request, "id"))


@router.add(
    "GET",
    "/v1/events",
    "CloudEvents, filtered; with 'Accept: text/event-stream', a live Server-Sent Events stream",
    tag="runs",
    responses={200: list[dict[str, Any]], 422: Problem},
    access=READ,
    query=(
        Query("node", "only events about this node (the CloudEvents subject)", pattern=None),
        Query("run", "only events of this run", pattern=r"^[0-9a-f]{32}$"),
        Query(
            "type",
            "only types starting with io.ztdp.<type>, e.g. run or actor.status",
            pattern=r"^[a-z_.]{1,64}$",
        ),
        Query("limit", "at most this many (default 100, at most 10000)", pattern=r"^[0-9]{1,5}$"),
    ),
)
async def list_events(request: web.Request, body: None) -> Reply:
    q = request.query
    flt = EventFilter(node=q.get("node"), run=q.get("run"), type=q.get("type"))
    bus = request.app[EVENTS]
    if "text/event-stream" in request.headers.get("Accept", ""):
        return 200, await _stream_events(request, bus, flt)
    limit = min(int(q.get("limit", 100)), 10_000)
    return 200, await bus.query(flt, limit=limit)


async def _stream_events(request: web.Request, bus: Any, flt: EventFilter) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        async with bus.subscribe(flt) as events:
            while True:
                with anyio.move_on_after(15) as heartbeat:
                    event = await events.receive()
                if heartbeat.cancelled_caught:
                    await response.write(b": keep-alive\n\n")
                    continue
                payload = json.dumps(event)
                await response.write(
                    f"id: {event['id']}\nevent: {event['type']}\ndata: {payload}\n\n".encode()
                )
    except (ConnectionResetError, anyio.EndOfStream, anyio.ClosedResourceError):
        pass  # the client left, or the bus dropped a subscriber that fell behind
    return response


@router.add(
    "GET",
    "/v1/providers",
    "Installed provider plugins and where they come from",
    tag="system",
    responses={200: list[ProviderView]},
    access=READ,
)
async def list_providers(request: web.Request, body: None) -> Reply:
    infos = request.app[RUNTIME].supervisor.providers.info()
    return 200, [
        ProviderView(
            kind=i.kind, entry_point=i.entry_point, distribution=i.distribution, version=i.version
        )
        for i in infos
    ]
