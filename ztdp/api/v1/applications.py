"""Applications: create, list, read, change."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ztdp.api.access import (
    READ,
    body_owner,
    path_app,
    path_app_and_body_owner,
    team,
)
from ztdp.api.keys import CATALOG
from ztdp.api.routing import Reply
from ztdp.api.v1.common import (
    READ_ERRORS,
    WRITE,
    deletes,
    if_match,
    param,
    router,
)
from ztdp.contracts import (
    Application,
)
from ztdp.graph import NodeKind


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
    return 200, await request.app[CATALOG].get_application(param(request, "app"))


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
        param(request, "app"), body, if_match=if_match(request)
    )


deletes(
    "delete_application",
    "/v1/applications/{app}",
    NodeKind.APPLICATION,
    "Delete an application; its services and versions with ?cascade=true",
    tag="applications",
    access=team("delete this application", path_app),
)
