"""Environments, what is deployed to them, and where applications may run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from ztdp.api.access import (
    READ,
    admin,
    path_app,
    team,
)
from ztdp.api.keys import CATALOG, DEFAULT_TARGET, EVENT_STORE, EVENTS, RUNTIME
from ztdp.api.problems import Problem
from ztdp.api.routing import Reply
from ztdp.api.v1.common import (
    AFTER,
    DELETED,
    DRY_RUN,
    LIMIT,
    NEXT_PAGE,
    READ_ERRORS,
    SINCE,
    UNTIL,
    WRITE,
    deleted,
    deletes,
    event_query,
    flag,
    if_match,
    next_page,
    param,
    router,
)
from ztdp.catalog import Deployment
from ztdp.contracts import (
    AllowedEnvironments,
    Environment,
)
from ztdp.errors import NotFound
from ztdp.graph import EdgeType, NodeKind, node_id
from ztdp.planner import deployment_node
from ztdp.runtime import ActorState


class EnvironmentStatus(BaseModel):
    target: str | None = Field(
        description="where this environment's deployments land: its own cluster, else the "
        "server's default ('sandbox (Kubernetes API emulator: nothing runs)' when `ztdp serve` "
        "started its local sandbox), or null: nowhere, its deploys fail"
    )


class EnvironmentRead(Environment):
    """An environment as read: its contract, and `status` (not part of what is written)."""

    status: EnvironmentStatus | None = None


class EnvironmentWrite(Environment):
    """An environment as written. A `status` (as a read gives it) is accepted and ignored, so
    that what was read can be changed and written back whole."""

    status: dict[str, Any] | None = Field(
        default=None, exclude=True, max_length=16, description="read-only: ignored on writes"
    )


def _with_status(request: web.Request, env: dict[str, Any]) -> dict[str, Any]:
    own = _kubeconfig_in(env.get("spec"))
    target = f"the cluster of kubeconfig {own}" if own else request.app.get(DEFAULT_TARGET)
    return {**env, "status": {"target": target}}


def _kubeconfig_in(spec: object) -> str | None:
    """A `kubeconfig` the spec names anywhere (`spec.kubernetes`, `spec.providers.*`)."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            found = value if key == "kubeconfig" and isinstance(value, str) else None
            found = found or _kubeconfig_in(value)
            if found:
                return found
    return None


@router.add(
    "POST",
    "/v1/environments",
    "Create an environment",
    tag="environments",
    body=EnvironmentWrite,
    responses={201: Environment, **WRITE},
    access=admin("create environments"),
)
async def create_environment(request: web.Request, body: EnvironmentWrite) -> Reply:
    return 201, await request.app[CATALOG].create_environment(body)


@router.add(
    "GET",
    "/v1/environments",
    "List environments",
    tag="environments",
    responses={200: list[EnvironmentRead]},
    access=READ,
)
async def list_environments(request: web.Request, body: None) -> Reply:
    envs = await request.app[CATALOG].list_environments()
    return 200, [_with_status(request, env) for env in envs]


@router.add(
    "GET",
    "/v1/environments/{env}",
    "Read an environment",
    tag="environments",
    responses={200: EnvironmentRead, **READ_ERRORS},
    access=READ,
)
async def get_environment(request: web.Request, body: None) -> Reply:
    env = await request.app[CATALOG].get_environment(param(request, "env"))
    return 200, _with_status(request, env)


@router.add(
    "PUT",
    "/v1/environments/{env}",
    "Change an environment (its cluster, namespace, reconcile mode); "
    "what runs there takes it up at its next run",
    tag="environments",
    body=EnvironmentWrite,
    responses={200: Environment, **WRITE},
    if_match=True,
    access=admin("change environments"),
)
async def update_environment(request: web.Request, body: EnvironmentWrite) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_environment(
        param(request, "env"), body, if_match=if_match(request)
    )


@router.add(
    "GET",
    "/v1/environments/{env}/deployments",
    "List what is deployed to an environment",
    tag="environments",
    responses={200: list[Deployment], **READ_ERRORS},
    access=READ,
)
async def list_deployments(request: web.Request, body: None) -> Reply:
    deployments = await request.app[CATALOG].deployments(param(request, "env"))
    runtime = request.app[RUNTIME]
    nodes = [deployment_node(d.application, d.service, d.environment) for d in deployments]
    actors = await runtime.supervisor.actor_states(nodes)
    return 200, [_observed(d, actors.get(n)) for d, n in zip(deployments, nodes, strict=True)]


@router.add(
    "GET",
    "/v1/environments/{env}/deployments/{app}/{svc}",
    "Read what is deployed of a service to an environment, its status and why",
    tag="environments",
    responses={200: Deployment, **READ_ERRORS},
    access=READ,
)
async def get_deployment(request: web.Request, body: None) -> Reply:
    catalog = request.app[CATALOG]
    deployment = await catalog.deployment(
        param(request, "env"), param(request, "app"), param(request, "svc")
    )
    node = deployment_node(deployment.application, deployment.service, deployment.environment)
    return 200, _observed(deployment, await request.app[RUNTIME].supervisor.actor(node))


class StatusChange(BaseModel):
    """One status a deployment took (or one new error in it), from its actor's
    `io.ztdp.actor.status` event."""

    status: str = Field(description="Pending, Progressing, Ready, Degraded, Drifted, Failed, ...")
    at: datetime = Field(description="when it took this status")
    reason: str | None = Field(description="the error, or the provider's message")
    run: str | None = Field(description="the run that caused it, if any")
    generation: int | None = None
    event: str = Field(description="the id of the event, for GET /v1/events")


@router.add(
    "GET",
    "/v1/environments/{env}/deployments/{app}/{svc}/history",
    "A deployment's status history from the event store: when it became Ready, Failed, ...",
    tag="environments",
    responses={200: list[StatusChange], 422: Problem, **READ_ERRORS},
    access=READ,
    headers=NEXT_PAGE,
    query=(SINCE, UNTIL, AFTER, LIMIT),
)
async def deployment_history(request: web.Request, body: None) -> Reply:
    """Oldest first: the newest `limit` changes, or with `after` the oldest after that cursor.
    Kept as long as the event store keeps events (`ZTDP_EVENT_RETENTION_DAYS`), also after
    an undeploy."""
    node = deployment_node(param(request, "app"), param(request, "svc"), param(request, "env"))
    await request.app[EVENTS].sync()
    page = await request.app[EVENT_STORE].query(
        event_query(request, node=node, type="actor.status")
    )
    history = [
        StatusChange(
            status=str(e.data.get("status")),
            at=datetime.fromtimestamp(e.time, UTC),
            reason=e.data.get("error") or e.data.get("message") or None,
            run=e.run,
            generation=e.data.get("generation"),
            event=e.id,
        )
        for e in page.events
    ]
    return 200, next_page(request, history, after=page.cursor)


def _observed(d: Deployment, state: ActorState | None) -> Deployment:
    """The deployment with its status as its actor last recorded it, and why."""
    if state is not None:  # else Pending: never realised by this runtime (docs/decisions.md)
        d.status, d.since = state.status.value, state.since
        d.reason = state.last_error or state.message or None
    return d


@router.add(
    "GET",
    "/v1/applications/{app}/environments/allowed",
    "List the environments an application may deploy to",
    tag="environments",
    responses={200: list[str], **READ_ERRORS},
    access=READ,
)
async def get_allowed(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].allowed(param(request, "app"))


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
    return 200, await request.app[CATALOG].set_allowed(param(request, "app"), body, replace=False)


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
    return 200, await request.app[CATALOG].set_allowed(param(request, "app"), body, replace=True)


@router.add(
    "POST",
    "/v1/applications/{app}/environments/{env}/allowed",
    "Allow an application in one environment",
    tag="environments",
    responses={200: list[str], **WRITE},
    access=admin("change where applications may run"),
)
async def allow_one(request: web.Request, body: None) -> Reply:
    env = param(request, "env")
    catalog = request.app[CATALOG]
    return 200, await catalog.set_allowed(
        param(request, "app"), [env], replace=False, field="path.env"
    )


deletes(
    "delete_environment",
    "/v1/environments/{env}",
    NodeKind.ENVIRONMENT,
    "Delete an environment; with ?cascade=true what is deployed there is removed first",
    tag="environments",
    access=admin("delete environments"),
)


@router.add(
    "DELETE",
    "/v1/environments/{env}/deployments/{app}/{svc}",
    "Undeploy a service from an environment: its real objects there are removed",
    tag="environments",
    responses=DELETED,
    query=(DRY_RUN,),
    access=team("undeploy this application", path_app),
)
async def undeploy(request: web.Request, body: None) -> Reply:
    removed = await request.app[CATALOG].undeploy(
        param(request, "app"),
        param(request, "svc"),
        param(request, "env"),
        dry_run=flag(request, "dry_run"),
    )
    return await deleted(request, removed, trigger="undeploy")


@router.add(
    "GET",
    "/v1/applications/{app}/environments/{env}/allowed",
    "Whether an application may deploy to an environment (404 if not)",
    tag="environments",
    responses={200: list[str], **READ_ERRORS},
    access=READ,
)
async def get_allowed_one(request: web.Request, body: None) -> Reply:
    app, env = param(request, "app"), param(request, "env")
    allowed = await request.app[CATALOG].allowed(app)
    if env not in allowed:
        raise NotFound(f"application {app} is not allowed in environment {env}")
    return 200, [env]


@router.add(
    "DELETE",
    "/v1/applications/{app}/environments/{env}/allowed",
    "No longer allow an application in an environment (what runs there stays)",
    tag="environments",
    responses=DELETED,
    query=(DRY_RUN,),
    access=admin("change where applications may run"),
)
async def disallow(request: web.Request, body: None) -> Reply:
    app, env = param(request, "app"), param(request, "env")
    removed = await request.app[CATALOG].remove_edge(
        node_id(NodeKind.APPLICATION, app),
        node_id(NodeKind.ENVIRONMENT, env),
        EdgeType.ALLOWED_IN,
        f"permission of application {app} to run in {env}",
        dry_run=flag(request, "dry_run"),
    )
    return await deleted(request, removed)
