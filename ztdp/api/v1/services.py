"""Services of an application, their versions, dependencies and deploys."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from ztdp.api.access import (
    READ,
    path_app,
    path_app_and_body_owner,
    path_app_and_version_owner,
    path_service_and_body_owner,
    team,
)
from ztdp.api.keys import CATALOG, RUNTIME
from ztdp.api.problems import Problem
from ztdp.api.routing import Reply
from ztdp.api.v1.common import (
    DELETED,
    DRY_RUN,
    READ_ERRORS,
    WRITE,
    deleted,
    deletes,
    flag,
    if_match,
    param,
    router,
)
from ztdp.catalog import DeployResult
from ztdp.contracts import (
    DependencyRequest,
    DeployRequest,
    Service,
    ServiceVersion,
    ServiceVersionIn,
)
from ztdp.errors import NotFound
from ztdp.graph import EdgeType, NodeKind, node_id
from ztdp.graph.model import op_to_json
from ztdp.planner import Plan


class DeployAccepted(DeployResult):
    run: str = Field(description="the run realising the deploy: /v1/runs/{run}")


class DeployPreview(DeployResult):
    """A deploy asked as a dry run: what would happen; nothing changed."""

    dry_run: bool = True
    changes: list[dict[str, Any]] = Field(description="the graph changes the deploy would make")
    plan: Plan | None = Field(description="the plan the deploy would run; none if it is denied")


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
    return 201, await request.app[CATALOG].create_service(param(request, "app"), body)


@router.add(
    "GET",
    "/v1/applications/{app}/services",
    "List an application's services",
    tag="services",
    responses={200: list[Service], **READ_ERRORS},
    access=READ,
)
async def list_services(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_services(param(request, "app"))


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}",
    "Read a service",
    tag="services",
    responses={200: Service, **READ_ERRORS},
    access=READ,
)
async def get_service(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_service(param(request, "app"), param(request, "svc"))


@router.add(
    "PUT",
    "/v1/applications/{app}/services/{svc}",
    "Change a service",
    tag="services",
    body=Service,
    responses={200: Service, **WRITE},
    if_match=True,
    access=team("change this service", path_service_and_body_owner),
)
async def update_service(request: web.Request, body: Service) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_service(
        param(request, "app"), param(request, "svc"), body, if_match=if_match(request)
    )


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
    return 201, await catalog.create_version(param(request, "app"), param(request, "svc"), body)


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/versions",
    "List a service's versions",
    tag="versions",
    responses={200: list[ServiceVersion], **READ_ERRORS},
    access=READ,
)
async def list_versions(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_versions(
        param(request, "app"), param(request, "svc")
    )


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
        param(request, "app"), param(request, "svc"), param(request, "version")
    )


# What was deployed as 1.0.0 must stay 1.0.0: a change is a new version (docs/api.md).
router.refuse(
    "PUT",
    "/v1/applications/{app}/services/{svc}/versions/{version}",
    "versions are immutable: a version cannot be changed once created; "
    "create a new version (POST .../versions) and deploy it",
)


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/versions/{version}/deploy",
    "Deploy a version to an environment, if policy allows",
    tag="versions",
    body=DeployRequest,
    responses={202: DeployAccepted, 200: DeployPreview, 403: Problem, **WRITE},
    query=(DRY_RUN,),
    access=team("deploy this application", path_app),
)
async def deploy_version(request: web.Request, body: DeployRequest) -> Reply:
    names = param(request, "app"), param(request, "svc"), param(request, "version")
    runtime = request.app[RUNTIME]
    if flag(request, "dry_run"):
        result, batch, plan = await runtime.preview_deploy(*names, body.environment)
        return 200, DeployPreview(
            deployment=result.deployment,
            decision=result.decision,
            changes=[op_to_json(op) for op in batch],
            plan=plan,
        )
    result, run = await runtime.deploy(*names, body.environment)
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
    app = param(request, "app")
    deps = await request.app[CATALOG].add_dependency(
        app, param(request, "svc"), body.application or app, body.service
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
    return 200, await request.app[CATALOG].dependencies(
        param(request, "app"), param(request, "svc")
    )


deletes(
    "delete_service",
    "/v1/applications/{app}/services/{svc}",
    NodeKind.SERVICE,
    "Delete a service; its versions with ?cascade=true",
    tag="services",
    access=team("delete services of this application", path_app),
)


deletes(
    "delete_version",
    "/v1/applications/{app}/services/{svc}/versions/{version}",
    NodeKind.VERSION,
    "Delete a version (undeploying it where it is deployed)",
    tag="versions",
    access=team("delete versions of this application", path_app),
)


@router.add(
    "GET",
    "/v1/applications/{app}/services/{svc}/dependencies/{dep_app}/{dep_svc}",
    "Read one dependency of a service on another ('application/service')",
    tag="services",
    responses={200: DependencyRequest, **READ_ERRORS},
    access=READ,
)
async def get_dependency(request: web.Request, body: None) -> Reply:
    dep_app, dep_svc = param(request, "dep_app"), param(request, "dep_svc")
    deps = await request.app[CATALOG].dependencies(param(request, "app"), param(request, "svc"))
    if f"{dep_app}/{dep_svc}" not in deps:
        raise NotFound(f"service {param(request, 'svc')} does not use service {dep_app}/{dep_svc}")
    return 200, DependencyRequest(application=dep_app, service=dep_svc)


@router.add(
    "DELETE",
    "/v1/applications/{app}/services/{svc}/dependencies/{dep_app}/{dep_svc}",
    "Remove a dependency of a service on another",
    tag="services",
    responses=DELETED,
    query=(DRY_RUN,),
    access=team("change this application", path_app),
)
async def delete_dependency(request: web.Request, body: None) -> Reply:
    app, svc = param(request, "app"), param(request, "svc")
    dep_app, dep_svc = param(request, "dep_app"), param(request, "dep_svc")
    removed = await request.app[CATALOG].remove_edge(
        node_id(NodeKind.SERVICE, app, svc),
        node_id(NodeKind.SERVICE, dep_app, dep_svc),
        EdgeType.USES,
        f"dependency of service {svc} on {dep_app}/{dep_svc}",
        dry_run=flag(request, "dry_run"),
    )
    return await deleted(request, removed)
