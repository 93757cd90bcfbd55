"""The aiohttp application: middleware, the v1 routes, the OpenAPI document and its UI."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import swagger_ui
from aiohttp import web

from ztdp import __version__
from ztdp.api.keys import CATALOG, GRAPH_CACHE, SETTINGS
from ztdp.api.problems import problem_middleware
from ztdp.api.v1 import router
from ztdp.catalog import Catalog
from ztdp.graph.store import GraphStore, open_graph_store
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore, StateStore

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
_DOCS_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
"""


def openapi_document() -> dict[str, object]:
    return router.openapi(title="ZTDP", version=__version__, description=DESCRIPTION)


def create_app(
    settings: Settings, *, store: GraphStore | None = None, state: StateStore | None = None
) -> web.Application:
    """Build the API. Stores passed in are the caller's to close; others are opened here."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[GRAPH_CACHE] = {}
    router.install(app)
    spec = json.dumps(openapi_document()).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_PAGE, content_type="text/html")

    async def docs_init(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_INIT, content_type="text/javascript")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/init.js", docs_init)
    app.router.add_static("/docs/static", SWAGGER_STATIC)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        graph_store = store if store is not None else open_graph_store(settings)
        catalog = Catalog(
            graph_store, state or MemoryStateStore(), write_retries=settings.write_retries
        )
        try:
            await catalog.ensure_resource_types(settings.seed_resource_types)
            app[CATALOG] = catalog
            log.info("ZTDP %s ready: graph store %s", __version__, settings.graph_store)
            yield
        finally:
            if own_store:
                await graph_store.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app
