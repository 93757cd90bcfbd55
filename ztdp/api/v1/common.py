"""What every v1 route module shares: the route table and small request helpers."""

from __future__ import annotations

import re

from aiohttp import web

from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import IF_MATCH_PATTERN, Router

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
    # The pattern the document states: ASCII digits, at most 18, optionally quoted, maybe weak.
    if not re.fullmatch(IF_MATCH_PATTERN, raw):
        shown = ascii(raw[:40]) + ("..." if len(raw) > 40 else "")
        raise BadRequest(f'If-Match header {shown} is not a revision number such as "12"')
    return int(raw.removeprefix("W/").strip('"'))
