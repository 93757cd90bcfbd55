"""The aiohttp application: middleware, the v1 routes, the OpenAPI document and its UI."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import swagger_ui
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Middleware

from ztdp import __version__
from ztdp.api.keys import (
    AUTH,
    CATALOG,
    CLOSING,
    DEFAULT_TARGET,
    EVENT_STORE,
    EVENTS,
    GRAPH_CACHE,
    RUNTIME,
    SECRETS,
    SETTINGS,
    TELEMETRY,
)
from ztdp.api.problems import Handler, limits_middleware, problem_middleware
from ztdp.api.telemetry import metrics_endpoint, telemetry_middleware
from ztdp.api.ui import DOCS_CSP, install_ui
from ztdp.api.v1 import router
from ztdp.auth import (
    Authenticator,
    ClientAddresses,
    FailureLimiter,
    MemoryFailureLimiter,
    MemoryTokenStore,
    OidcVerifier,
    RedisFailureLimiter,
    RedisTokenStore,
    Tokens,
    TokenStore,
)
from ztdp.catalog import Catalog
from ztdp.catalog.actor import acting_as
from ztdp.contracts import SYSTEM_PRINCIPAL
from ztdp.graph.store import GraphStore, open_graph_store
from ztdp.providers import ProviderRegistry
from ztdp.runtime import Runtime, Supervisor
from ztdp.runtime.backends import open_backends
from ztdp.secrets import SecretStore, open_secret_store
from ztdp.settings import Settings
from ztdp.state import StateStore
from ztdp.telemetry import Telemetry

log = logging.getLogger("ztdp.api")

SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"
DESCRIPTION = (
    "ZTDP keeps applications, services, versions, environments, resources and policies as one "
    "dependency graph, checks every transition against policy and plans the work in waves. "
    "Errors are application/problem+json (RFC 9457)."
)

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ZTDP API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script></body></html>
"""
# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
_DOCS_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout",
  validatorUrl: null});
"""


@asynccontextmanager
async def _hosted(*parts: AbstractAsyncContextManager[object]) -> AsyncIterator[None]:
    """Run the task groups of `parts` (the event keeper, the supervisor) in a task of their own
    for the app's lifetime, entered in order and left in reverse.

    aiohttp may run an app's startup and cleanup in different tasks, and an anyio task group
    must be exited by the task that entered it; so one task owns them from start to finish, and
    cleanup waits for that task.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with AsyncExitStack() as stack:
            for part in parts:
                await stack.enter_async_context(part)
            started.set()
            await stop.wait()

    task = asyncio.create_task(host(), name="ztdp supervisor")
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # it failed to start: raise why
    try:
        yield
    finally:
        stop.set()
        await task


async def authenticator(
    settings: Settings,
    store: TokenStore,
    limiter: FailureLimiter,
    announce: Callable[[str], None] | None,
) -> Authenticator:
    """Who is calling; with `announce`, the first start also makes the first admin token."""
    tokens = Tokens(store)
    oidc = None
    if settings.oidc_issuer:
        oidc = OidcVerifier(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url
            or f"{settings.oidc_issuer.rstrip('/')}/.well-known/jwks.json",
            roles_claim=settings.oidc_roles_claim,
            name_claim=settings.oidc_name_claim,
        )
    if settings.auth_enabled and announce is not None:
        secret = await tokens.bootstrap_admin()
        if secret is not None:
            announce(
                "First start with authentication on: created a platform-admin token. "
                "It is shown only now; store it safely:\n\n    " + secret + "\n"
            )
    elif not settings.auth_enabled:
        log.warning("authentication is OFF: every caller acts as platform-admin")
    return Authenticator(
        tokens,
        oidc=oidc,
        enabled=settings.auth_enabled,
        limiter=limiter,
        clients=ClientAddresses(settings.trusted_proxies),
    )


def cors_middleware(origins: Sequence[str]) -> Middleware:
    """CORS is closed unless origins are configured; then only those get CORS headers."""
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, If-Match"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

    return cors


class _NoRequestBytes(logging.Filter):
    """aiohttp logs a request it cannot parse with its bytes, an Authorization header included.

    Keep the fact and the kind of error, never the bytes: tokens must not reach the logs. And
    as a warning, not an error: the client sent it wrong, nothing in ZTDP failed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = (
                "malformed HTTP request from %s: %s",
                (
                    client,
                    type(exc).__name__,
                ),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _redact_parser_errors() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRequestBytes) for f in server_log.filters):
        server_log.addFilter(_NoRequestBytes())


# What aiohttp's HTTP parser accepts before our own, tighter limits answer in problem+json
# (ztdp.api.problems.limits_middleware); anything beyond gets aiohttp's plain 400.
PARSER_LIMIT = 65536


def openapi_document(settings: Settings | None = None) -> dict[str, object]:
    """The OpenAPI document of a server with these settings.

    Without settings: that of a server with authentication on and backends that can be
    unreachable, the one whose document lists every answer any ZTDP server may give.
    """
    authentication = settings.auth_enabled if settings is not None else True
    outages = (
        settings.distributed or settings.oidc_issuer is not None if settings is not None else True
    )
    description = DESCRIPTION
    if not authentication:
        description += (
            " Authentication is off on this server: every caller acts as platform-admin and "
            "no operation asks for credentials."
        )
    return router.openapi(
        title="ZTDP",
        version=__version__,
        description=description,
        authentication=authentication,
        outages=outages,
    )


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def open_token_store(settings: Settings) -> TokenStore:
    if settings.graph_store == "redis":
        return RedisTokenStore.from_url(
            settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
        )
    return MemoryTokenStore()


def open_failure_limiter(settings: Settings) -> FailureLimiter:
    """Shared by every API process when they share a Redis; else this process's own."""
    limit, window = settings.auth_max_failures, settings.auth_failure_window
    if settings.graph_store == "redis":
        return RedisFailureLimiter.from_url(
            settings.redis_url,
            prefix=settings.redis_prefix,
            limit=limit,
            window=window,
            timeout=settings.redis_timeout,
        )
    return MemoryFailureLimiter(limit=limit, window=window)


def create_app(
    settings: Settings,
    *,
    store: GraphStore | None = None,
    state: StateStore | None = None,
    tokens: TokenStore | None = None,
    providers: ProviderRegistry | None = None,
    secrets: SecretStore | None = None,
    announce: Callable[[str], None] = _stderr,
    telemetry: Telemetry | None = None,
    sandbox: str | None = None,
) -> web.Application:
    """Build the API. Stores (and a `telemetry`) passed in are the caller's to close; others
    are opened here.

    `announce` receives what must reach the operator but never a log: the first admin token.
    `sandbox` says what the default cluster is when the caller started a local sandbox as it
    (`settings.kubeconfig` is then the sandbox's); reads of the status and of environments
    repeat it, so that nobody takes the emulator for a cluster.
    """
    _redact_parser_errors()
    observing = telemetry if telemetry is not None else Telemetry.from_settings(settings)
    app = web.Application(
        middlewares=[
            telemetry_middleware(observing),  # outermost: it sees every answer, as sent
            cors_middleware(settings.cors_origins),
            problem_middleware,
            limits_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[TELEMETRY] = observing
    if telemetry is None:

        async def close_telemetry(app: web.Application) -> None:
            await observing.aclose()

        app.on_cleanup.append(close_telemetry)
    app[GRAPH_CACHE] = {}
    if sandbox is not None:
        app[DEFAULT_TARGET] = sandbox
    elif settings.kubeconfig:
        app[DEFAULT_TARGET] = f"the cluster of kubeconfig {settings.kubeconfig}"
    app[CLOSING] = asyncio.Event()

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(closing)
    router.install(app)
    # Written when first asked for, off the event loop: it is most of the time building the
    # application takes (a quarter of a second), which `ztdp serve` would otherwise wait for.
    spec: list[bytes] = []
    writing = asyncio.Lock()

    async def openapi(request: web.Request) -> web.Response:
        async with writing:
            if not spec:
                document = await asyncio.to_thread(openapi_document, settings)
                spec.append(json.dumps(document).encode())
        return web.Response(body=spec[0], content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(
            text=_DOCS_PAGE, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP}
        )

    async def docs_init(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_INIT, content_type="text/javascript")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/init.js", docs_init)
    app.router.add_static("/docs/static", SWAGGER_STATIC)
    install_ui(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as opened:  # closed in reverse, however far start-up got
            # Plugins first: an invalid one stops the start before any store is opened.
            registry = providers or ProviderRegistry.from_entry_points()
            if providers is None:
                opened.push_async_callback(registry.aclose)
            # Then the secrets' key: a shared store without one refuses to start.
            secret_store = secrets if secrets is not None else open_secret_store(settings)
            if secrets is None:
                opened.push_async_callback(secret_store.aclose)
            graph_store = store if store is not None else open_graph_store(settings)
            if store is None:
                opened.push_async_callback(graph_store.aclose)
            token_store = tokens if tokens is not None else open_token_store(settings)
            if tokens is None:
                opened.push_async_callback(token_store.aclose)
            limiter = open_failure_limiter(settings)
            opened.push_async_callback(limiter.aclose)
            backends = await opened.enter_async_context(open_backends(settings, state=state))
            events = backends.events
            catalog = Catalog(
                graph_store,
                backends.state,
                write_retries=settings.write_retries,
                events=events,
                event_store=backends.event_store,
            )
            missing = await catalog.record_changes()
            if missing:
                log.info("recorded %d graph changes the event store did not have", missing)
            with acting_as(SYSTEM_PRINCIPAL):  # changes ZTDP makes itself are its own
                await catalog.ensure_resource_types(settings.seed_resource_types)
            app[CATALOG] = catalog
            app[EVENTS] = events
            app[EVENT_STORE] = backends.event_store
            app[SECRETS] = secret_store
            app[AUTH] = await authenticator(settings, token_store, limiter, announce)
            supervisor = Supervisor(
                providers=registry,
                state=backends.state,
                events=events,
                mailbox=backends.mailbox,
                settings=settings,
                run_actors=settings.actors == "on",
                telemetry=observing,
            )
            app[RUNTIME] = Runtime(
                catalog, supervisor, settings, secret_store, history=backends.event_store
            )
            async with _hosted(backends.event_keeper, supervisor):
                log.info(
                    "ZTDP %s ready: graph store %s, event store %s, providers: %s",
                    __version__,
                    settings.graph_store,
                    settings.event_store,
                    ", ".join(registry.kinds()) or "none",
                )
                yield

    app.cleanup_ctx.append(lifecycle)
    return app
