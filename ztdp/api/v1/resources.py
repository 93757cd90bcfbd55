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
    path_app_and_resource,
    team,
)
from ztdp.api.keys import CATALOG
from ztdp.api.routing import Reply
from ztdp.api.v1.common import READ_ERRORS, WRITE, param, router
from ztdp.contracts import (
    Resource,
    ResourceLinkRequest,
    ResourceType,
)


def _resource_access(body: Any) -> Access:
    """Platform-admin for a resource type or a shared resource; else a developer grant of the
    team the body names as owner."""
    if isinstance(body, ResourceType):
        return admin("create resource types")
    if body.spec.shared:
        return admin("create shared resources")
    return team("create resources for that team", body_owner)


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
    "POST",
    "/v1/applications/{app}/resources/{res}",
    "Give an application a resource",
    tag="resources",
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_application_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_application_resource(
        param(request, "app"), param(request, "res")
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
    "Let a service use one of its application's resources",
    tag="resources",
    body=ResourceLinkRequest,
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource_body(request: web.Request, body: ResourceLinkRequest) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_service_resource(
        param(request, "app"), param(request, "svc"), body.resource, field="resource"
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
    "Let a service use one of its application's resources",
    tag="resources",
    responses={200: Resource, **WRITE},
    access=team("link this resource to this application", path_app_and_resource),
)
async def link_service_resource(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.link_service_resource(
        param(request, "app"), param(request, "svc"), param(request, "res")
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
