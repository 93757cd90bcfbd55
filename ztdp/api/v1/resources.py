"""Resource types, resources, and the links of applications and services to them."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Discriminator, Tag

from ztdp.api.access import (
    READ,
    Access,
    admin,
    body_owner,
    path_app,
    path_app_and_resource,
    resource_and_body_owner,
    team,
)
from ztdp.api.keys import CATALOG, identity_of
from ztdp.api.routing import Reply
from ztdp.api.v1.common import (
    CASCADE,
    DELETED,
    DRY_RUN,
    READ_ERRORS,
    WRITE,
    deleted,
    flag,
    if_match,
    param,
    router,
)
from ztdp.catalog import Linked
from ztdp.catalog.ownership import owning_team
from ztdp.contracts import (
    Resource,
    ResourceLinkRequest,
    ResourceType,
)
from ztdp.errors import Forbidden, NotFound
from ztdp.graph import EdgeType, Graph, NodeKind, node_id


def _resource_access(body: Any) -> Access:
    """Platform-admin for a resource type or a shared resource; else a developer grant of the
    team the body names as owner."""
    if isinstance(body, ResourceType):
        return admin("create resource types")
    if body.spec.shared:
        return admin("create shared resources")
    return team("create resources for that team", body_owner)


def _resource_update_access(body: Any) -> Access:
    """Platform-admin for a resource type or to change spec.shared; else a developer grant of
    the resource's team and of the team the body names as owner."""
    if isinstance(body, ResourceType):
        return admin("change resource types")
    return team("change this resource", resource_and_body_owner)


def _resource_kind(value: Any) -> str:
    kind = value.get("kind", "Resource") if isinstance(value, dict) else getattr(value, "kind", "")
    return "ResourceType" if str(kind).replace("_", "").lower() == "resourcetype" else "Resource"


ResourceBody = Annotated[
    Annotated[Resource, Tag("Resource")] | Annotated[ResourceType, Tag("ResourceType")],
    Discriminator(_resource_kind),
]


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
    "GET",
    "/v1/resources/{res}",
    "Read a resource, or else the resource type of that name",
    tag="resources",
    responses={200: Resource | ResourceType, **READ_ERRORS},
    access=READ,
)
async def get_resource(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_resource(param(request, "res"))


@router.add(
    "PUT",
    "/v1/resources/{res}",
    "Change a resource, or a resource type (kind ResourceType)",
    tag="resources",
    body=ResourceBody,
    responses={200: Resource | ResourceType, **WRITE},
    if_match=True,
    access=Access("team", refine=_resource_update_access),
)
async def update_resource(request: web.Request, body: Resource | ResourceType) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_resource(
        param(request, "res"), body, if_match=if_match(request)
    )


def _linked(linked: Linked) -> Reply:
    return (201 if linked.created else 200), linked.resource


LINKED = {201: Resource, 200: Resource}


@router.add(
    "POST",
    "/v1/applications/{app}/resources/{res}",
    "Give an application a resource (201; 200 if it had it)",
    tag="resources",
    responses={**LINKED, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_application_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return _linked(
        await catalog.link_application_resource(param(request, "app"), param(request, "res"))
    )


@router.add(
    "GET",
    "/v1/applications/{app}/resources",
    "List an application's resources",
    tag="resources",
    responses={200: list[Resource], **READ_ERRORS},
    access=READ,
)
async def list_application_resources(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].application_resources(param(request, "app"))


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/resources",
    "Let a service use one of its application's resources (201; 200 if it did)",
    tag="resources",
    body=ResourceLinkRequest,
    responses={**LINKED, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource_body(request: web.Request, body: ResourceLinkRequest) -> Reply:
    catalog = request.app[CATALOG]
    return _linked(
        await catalog.link_service_resource(
            param(request, "app"), param(request, "svc"), body.resource, field="resource"
        )
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
    return 200, await request.app[CATALOG].service_resources(
        param(request, "app"), param(request, "svc")
    )


@router.add(
    "POST",
    "/v1/applications/{app}/services/{svc}/resources/{res}",
    "Let a service use one of its application's resources (201; 200 if it did)",
    tag="resources",
    responses={**LINKED, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return _linked(
        await catalog.link_service_resource(
            param(request, "app"), param(request, "svc"), param(request, "res")
        )
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
        param(request, "app"), param(request, "svc"), param(request, "res")
    )


def _resource_team(request: web.Request, body: None, graph: Graph) -> set[str]:
    """The team of the resource named; a resource type is the platform's, whatever its owner
    (platform-admins never reach this rule)."""
    res = request.match_info["res"]
    owner = owning_team(graph, node_id(NodeKind.RESOURCE, res))
    if owner is not None:
        return {owner}
    if node_id(NodeKind.RESOURCE_TYPE, res) in graph:
        raise Forbidden(
            f"{identity_of(request).name} may not delete resource type {res}: "
            "it needs the platform-admin role"
        )
    return set()  # the handler's 404


@router.add(
    "DELETE",
    "/v1/resources/{res}",
    "Delete a resource (or a resource type); its links with ?cascade=true",
    tag="resources",
    responses=DELETED,
    query=(CASCADE, DRY_RUN),
    access=team("delete this resource", _resource_team),
)
async def delete_resource(request: web.Request, body: None) -> Reply:
    catalog, res = request.app[CATALOG], param(request, "res")
    graph = await catalog.graph()
    kind = NodeKind.RESOURCE_TYPE
    if node_id(NodeKind.RESOURCE, res) in graph or node_id(kind, res) not in graph:
        kind = NodeKind.RESOURCE  # a resource first; neither: its 404
    removed = await catalog.delete(
        kind, res, cascade=flag(request, "cascade"), dry_run=flag(request, "dry_run")
    )
    return await deleted(request, removed)


@router.add(
    "GET",
    "/v1/applications/{app}/resources/{res}",
    "Read a resource of an application",
    tag="resources",
    responses={200: Resource, **READ_ERRORS},
    access=READ,
)
async def get_application_resource(request: web.Request, body: None) -> Reply:
    app, res = param(request, "app"), param(request, "res")
    for data in await request.app[CATALOG].application_resources(app):
        if data["metadata"]["name"] == res:
            return 200, data
    raise NotFound(f"application {app} has no resource {res}")


@router.add(
    "DELETE",
    "/v1/applications/{app}/resources/{res}",
    "Take a resource from an application; its services' uses of it with ?cascade=true",
    tag="resources",
    responses=DELETED,
    query=(CASCADE, DRY_RUN),
    access=team("change this application", path_app),
)
async def unlink_application_resource(request: web.Request, body: None) -> Reply:
    removed = await request.app[CATALOG].unlink_resource(
        param(request, "app"),
        param(request, "res"),
        cascade=flag(request, "cascade"),
        dry_run=flag(request, "dry_run"),
    )
    return await deleted(request, removed)


@router.add(
    "DELETE",
    "/v1/applications/{app}/services/{svc}/resources/{res}",
    "Stop a service using a resource",
    tag="resources",
    responses=DELETED,
    query=(DRY_RUN,),
    access=team("change this application", path_app),
)
async def unlink_service_resource(request: web.Request, body: None) -> Reply:
    app, svc, res = param(request, "app"), param(request, "svc"), param(request, "res")
    removed = await request.app[CATALOG].remove_edge(
        node_id(NodeKind.SERVICE, app, svc),
        node_id(NodeKind.RESOURCE, res),
        EdgeType.USES,
        f"use of resource {res} by service {svc}",
        dry_run=flag(request, "dry_run"),
    )
    return await deleted(request, removed)
