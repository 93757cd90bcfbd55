"""`/ui`: the live graph page, its script, its styles and the graph library, served by ZTDP.

The page is static: its script reads the API like any client (`GET /v1/graph/live`, the
Server-Sent Events of `GET /v1/events`), with the caller's token, so the page itself needs
no credentials and adds no way around the API's access rules. Everything it loads comes from
this server, under a Content-Security-Policy that allows nothing else.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static" / "ui"

# Scripts, styles and connections from this origin only; no inline script or style, no eval,
# no frames, no forms posted elsewhere. Cytoscape draws on a canvas and sets element styles
# through the CSSOM, which `style-src` does not govern.
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Swagger UI: the same, except that it sets inline styles (its own, from its bundle) and shows
# images and fonts it ships as data: URLs. Scripts and connections stay this origin's only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": UI_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def _file(name: str) -> web.Response:
    path = STATIC / name
    return web.Response(
        body=path.read_bytes(), content_type=_TYPES.get(path.suffix, "text/plain"), headers=_HEADERS
    )


async def page(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    # Only the files shipped beside the page: a fixed set, so no path is ever resolved.
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _file(name)


ASSETS = frozenset({"ui.js", "ui.css", "cytoscape.min.js", "cytoscape.LICENSE"})


def install_ui(app: web.Application) -> None:
    """Add `/ui` and its assets (`/ui/static/{name}`) to `app`."""
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/static/{name}", asset)
