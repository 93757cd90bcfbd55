"""What every v1 route module shares: the route table and small request helpers."""

from __future__ import annotations

from aiohttp import web

from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import Router

router = Router()


READ_ERRORS = {404: Problem}
WRITE = {400: Problem, 404: Problem, 409: Problem, 413: Problem, 422: Problem}


def param(request: web.Request, name: str) -> str:
    """A path parameter (the route's pattern has already matched it)."""
    return request.match_info[name]


def if_match(request: web.Request) -> int | None:
    """The revision an update is based on, from `If-Match` (None when absent)."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        shown = ascii(raw[:40]) + ("..." if len(raw) > 40 else "")
        raise BadRequest(f'If-Match header {shown} is not a revision number such as "12"')
    return int(value)
