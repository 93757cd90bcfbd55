"""Plans, the whole graph, control-plane status and health."""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from ztdp import __version__
from ztdp.api.access import (
    PUBLIC,
    READ,
    admin,
)
from ztdp.api.keys import AUTH, CATALOG, DEFAULT_TARGET, GRAPH_CACHE, RUNTIME, SETTINGS
from ztdp.api.problems import Problem
from ztdp.api.routing import Query, Reply
from ztdp.api.v1.common import READ_ERRORS, param, router
from ztdp.planner import Plan


class ApplyResult(BaseModel):
    environment: str
    run: str = Field(description="follow it at /v1/runs/{run}")
    plan: Plan


class Worker(BaseModel):
    member: str = Field(description="the process: host, pid and a random suffix")
    partitions: list[int] = Field(description="the partitions of actors it owns now")


class Status(BaseModel):
    version: str
    authentication: Literal["on", "off"]
    graph_store: str
    state_store: str
    mailbox: str
    event_bus: str
    event_store: str = Field(
        description="the event store: its plugin name, e.g. memory or postgres"
    )
    revision: int
    nodes: dict[str, int] = Field(description="number of nodes per kind")
    edges: int
    workers: list[Worker] = Field(description="processes running actors, by what they own")
    target: str | None = Field(
        default=None,
        description="where deployments land when an environment names no cluster of its own: "
        "'sandbox (Kubernetes API emulator: nothing runs)' when `ztdp serve` started its local "
        "sandbox, the configured kubeconfig's cluster, or null (nowhere: such deploys fail)",
    )


class Health(BaseModel):
    status: str


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
    return 200, await request.app[RUNTIME].plan(param(request, "app"), env)


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
    settings = request.app[SETTINGS]
    owners = await request.app[RUNTIME].supervisor.owners()
    return 200, Status(
        version=__version__,
        authentication="on" if request.app[AUTH].enabled else "off",
        graph_store=settings.graph_store,
        state_store=settings.state_backend,
        mailbox=settings.mailbox,
        event_bus=settings.event_backend,
        event_store=settings.event_store,
        revision=graph.revision,
        nodes=graph.counts(),
        edges=graph.edge_count(),
        workers=[Worker(member=m, partitions=p) for m, p in sorted(owners.items())],
        target=request.app.get(DEFAULT_TARGET),
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
    await request.app[RUNTIME].supervisor.ping()
    return 200, Health(status="ok")
