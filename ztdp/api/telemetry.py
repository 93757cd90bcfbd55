"""The API's telemetry: a span and two figures per request, and the `/metrics` endpoint.

The request span and the figures name the route's template (`/v1/applications/{app}`), never
the path or the query: a path holds names without bound, a query may hold a token. A caller's
`traceparent` header makes the request part of the caller's trace.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from opentelemetry.trace import SpanKind

from ztdp.api.keys import AUTH, RUNTIME, SETTINGS, TELEMETRY
from ztdp.api.problems import Handler
from ztdp.telemetry import Telemetry
from ztdp.telemetry.metrics import CONTENT_TYPE

UNMATCHED = "unmatched"  # every path no route matches counts as one
TRACE = web.RequestKey("trace", dict[str, str])  # the request span's ids, for the access log


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def telemetry_middleware(telemetry: Telemetry) -> Middleware:
    tracing, metrics = telemetry.tracing, telemetry.metrics

    @web.middleware
    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        route, method = route_of(request), request.method
        status = 500  # unless something answers
        start = time.perf_counter()
        try:
            with tracing.span(
                f"{method} {route}",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route},
                parent=tracing.extract(request.headers) if tracing.enabled else None,
            ) as span:
                ids = span.get_span_context()
                if ids.is_valid:
                    request[TRACE] = {
                        "trace_id": format(ids.trace_id, "032x"),
                        "span_id": format(ids.span_id, "016x"),
                    }
                try:
                    response = await handler(request)
                except web.HTTPException as exc:  # aiohttp's own answers (405, a redirect)
                    status = exc.status
                    raise
                status = response.status
                span.set_attribute("http.response.status_code", status)
                return response
        finally:
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.request_seconds.labels(method, route).observe(time.perf_counter() - start)

    return observed


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus's text format. Needs a token of any role when authentication is on, unless
    `ZTDP_METRICS_PUBLIC` opens it (for a scraper kept to the network by a policy)."""
    app = request.app
    if not app[SETTINGS].metrics_public:
        await app[AUTH].authenticate(
            request.headers.get("Authorization"),
            peer=request.remote,
            forwarded_for=request.headers.getall("X-Forwarded-For", []),
        )
    metrics = app[TELEMETRY].metrics
    runtime = app.get(RUNTIME)
    if runtime is not None:
        actors, depth = await runtime.supervisor.gauges()
        metrics.gauges(actors=actors, depth=depth)
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


class AccessLog(AbstractAccessLogger):
    """One line per request: client, method, path (never the query: it may hold a token),
    status, seconds, user agent; with the request span's ids, logged after the span ended."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        ids = request.get(TRACE) if isinstance(request, web.Request) else None
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %.3fs "%s"',
            request.remote,
            request.method,
            request.path,
            request.version.major,
            request.version.minor,
            response.status,
            time,
            request.headers.get("User-Agent", "-")[:200],
            extra=ids or {},
        )
