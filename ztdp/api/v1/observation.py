"""Runs, events (also as a live stream) and installed providers."""

from __future__ import annotations

import json
from typing import Any, Literal

import anyio
from aiohttp import web
from pydantic import BaseModel, Field

from ztdp.api.access import (
    READ,
)
from ztdp.api.keys import CLOSING, EVENT_STORE, EVENTS, RUNTIME
from ztdp.api.problems import Problem
from ztdp.api.routing import Query, Reply
from ztdp.api.v1.common import (
    AFTER,
    LIMIT,
    NEXT_PAGE,
    READ_ERRORS,
    SINCE,
    UNTIL,
    event_query,
    next_page,
    param,
    router,
)
from ztdp.events import EventFilter
from ztdp.runtime import Run


class CloudEvent(BaseModel):
    """An event in the CloudEvents 1.0 structured form (the schema of what is sent)."""

    specversion: Literal["1.0"]
    id: str
    source: str
    type: str = Field(description="io.ztdp.<kind>, e.g. io.ztdp.run.step")
    time: str = Field(description="RFC 3339, UTC")
    subject: str = Field(description="the node the event is about, e.g. environment/dev")
    datacontenttype: Literal["application/json"]
    actor: str = Field(description="the principal that caused it")
    runid: str | None = Field(default=None, description="the run it belongs to, if any")
    data: dict[str, Any]


class ProviderView(BaseModel):
    kind: str
    entry_point: str
    distribution: str
    version: str


@router.add(
    "GET",
    "/v1/runs",
    "Runs, newest last (the last 1,000)",
    tag="runs",
    responses={200: list[Run]},
    access=READ,
)
async def list_runs(request: web.Request, body: None) -> Reply:
    return 200, [r.model_dump(mode="json") for r in await request.app[RUNTIME].runs()]


@router.add(
    "GET",
    "/v1/runs/{id}",
    "A run and the status of each step",
    tag="runs",
    responses={200: Run, **READ_ERRORS},
    access=READ,
)
async def get_run(request: web.Request, body: None) -> Reply:
    return 200, await request.app[RUNTIME].run(param(request, "id"))


@router.add(
    "GET",
    "/v1/events",
    "CloudEvents from the event store, filtered and paged; with "
    "'Accept: text/event-stream', a live Server-Sent Events stream",
    tag="runs",
    responses={200: list[CloudEvent], 422: Problem},
    access=READ,
    stream=CloudEvent,
    headers=NEXT_PAGE,
    query=(
        Query("node", "only events about this node (the CloudEvents subject)", pattern=None),
        Query("run", "only events of this run", pattern=r"^[0-9a-f]{32}$"),
        Query(
            "type",
            "only types starting with io.ztdp.<type>, e.g. run or actor.status",
            pattern=r"^[a-z_.]{1,64}$",
        ),
        Query("actor", "only events caused by this principal, e.g. token:ci", pattern=None),
        SINCE,
        UNTIL,
        AFTER,
        LIMIT,
    ),
)
async def list_events(request: web.Request, body: None) -> Reply:
    """The newest events, oldest first; with `after`, the oldest after that cursor, to page
    through everything the store keeps (docs/runtime.md, "The event store"). Sent
    `Accept: text/event-stream`, the answer is a stream instead: each new event as it happens,
    with `id`, `event` (its type) and `data` (the event as JSON), filtered by `node`, `run`,
    `type` and `actor`; the stream lasts until the client leaves or the server stops."""
    query = event_query(request)
    bus = request.app[EVENTS]
    if "text/event-stream" in request.headers.get("Accept", ""):
        flt = EventFilter(node=query.node, run=query.run, type=query.type, actor=query.actor)
        return 200, await _stream_events(request, bus, flt)
    await bus.sync()  # what this process published or saw is in the store
    page = await request.app[EVENT_STORE].query(query)
    return 200, next_page(request, [e.cloudevent() for e in page.events], after=page.cursor)


async def _stream_events(request: web.Request, bus: Any, flt: EventFilter) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    closing = request.app[CLOSING]
    async with bus.subscribe(flt) as events, anyio.create_task_group() as tg:
        # Answered only once subscribed: a client that reads the state when the stream answers
        # (as /ui does) misses no event between its read and the stream.
        await response.prepare(request)

        async def end_when_closing() -> None:
            await closing.wait()  # the server is shutting down: end the stream, not the wait
            tg.cancel_scope.cancel()

        tg.start_soon(end_when_closing)
        await _send_events(response, events)
        tg.cancel_scope.cancel()
    return response


async def _send_events(response: web.StreamResponse, events: Any) -> None:
    try:
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
