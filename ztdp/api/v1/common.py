"""What every v1 route module shares: the route table and small request helpers."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from ztdp.api.access import Access
from ztdp.api.keys import CATALOG, RUNTIME
from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import IF_MATCH_PATTERN, Query, Reply, Router, WithHeaders
from ztdp.catalog import Removed
from ztdp.catalog.catalog import Dependent
from ztdp.errors import InvalidInput
from ztdp.events import EventQuery
from ztdp.graph import NodeKind
from ztdp.planner import Plan
from ztdp.runtime.runs import Trigger

_PATH_PARAM = re.compile(r"{(\w+)}")

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


# --- deletes and dry runs (issue 9) --------------------------------------------------------

BOOLEAN = r"^(true|false)$"
CASCADE = Query(
    "cascade",
    "true: delete what depends on it too (each needs the caller's rights); "
    "otherwise dependents make the delete a 409 that lists them",
    pattern=BOOLEAN,
)
DRY_RUN = Query(
    "dry_run", "true: answer what would happen, with the plan, and change nothing", pattern=BOOLEAN
)


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name) == "true"


class DeleteResult(BaseModel):
    """What a delete removed (or, as a dry run, would remove)."""

    deleted: list[str] = Field(description="graph nodes deleted")
    unlinked: list[str] = Field(description="edges removed on their own, 'source -type-> target'")
    dependents: list[Dependent] = Field(description="what the cascade took with it")
    revision: int | None = Field(description="the graph revision of the delete; none if dry run")
    dry_run: bool = False
    runs: list[str] = Field(
        default_factory=list, description="runs removing the real objects: /v1/runs/{id}"
    )
    plans: list[Plan] = Field(
        default_factory=list,
        description="per environment, the plan removing the real objects (of the runs, or "
        "that a dry run would start)",
    )


DELETED = {200: DeleteResult, 202: DeleteResult, 404: Problem, 409: Problem, 422: Problem}


async def deleted(request: web.Request, removed: Removed, trigger: Trigger = "delete") -> Reply:
    """Answer a delete: 202 with the runs when it removes real objects, 200 otherwise."""
    plans, runs = await request.app[RUNTIME].removed(removed, trigger=trigger)
    result = DeleteResult(
        deleted=removed.deleted,
        unlinked=removed.unlinked,
        dependents=removed.dependents,
        revision=removed.revision,
        dry_run=removed.dry_run,
        runs=[r.id for r in runs],
        plans=plans,
    )
    return (202 if runs else 200), result


def deletes(
    operation: str,
    path: str,
    kind: NodeKind,
    summary: str,
    *,
    tag: str,
    access: Access,
    cascade: bool = True,
) -> None:
    """Declare the DELETE of one kind of object at the path that reads it.

    The path's parameters, in order, name the object (`node_id(kind, *names)`); the handler
    deletes it through the catalog, cascading on `?cascade=true` where the kind can have
    dependents, and answers as `deleted` does.
    """
    names = _PATH_PARAM.findall(path)

    async def handler(request: web.Request, body: None) -> Reply:
        removed = await request.app[CATALOG].delete(
            kind,
            *(param(request, name) for name in names),
            cascade=flag(request, "cascade"),
            dry_run=flag(request, "dry_run"),
        )
        return await deleted(request, removed)

    handler.__name__ = handler.__qualname__ = operation  # the OpenAPI operationId
    router.add(
        "DELETE",
        path,
        summary,
        tag=tag,
        responses=DELETED,
        query=(CASCADE, DRY_RUN) if cascade else (DRY_RUN,),
        access=access,
    )(handler)


# --- event queries and pages (issue 11) ----------------------------------------------------

# RFC 3339 as ZTDP reads it: a date, `T`, a time with at most microseconds, and `Z` or an offset.
RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
CURSOR = r"^[0-9]{1,18}$"
MAX_EVENTS = 10_000

SINCE = Query(
    "since",
    "only events at or after this time (RFC 3339, e.g. 2025-01-01T00:00:00Z)",
    pattern=RFC3339,
)
UNTIL = Query("until", "only events before this time (RFC 3339)", pattern=RFC3339)
AFTER = Query(
    "after",
    "a cursor: the matching events stored after it, oldest first (without it: the newest). "
    'Each answer\'s `Link: <...>; rel="next"` header carries the cursor of the next page',
    pattern=CURSOR,
)
LIMIT = Query(
    "limit", f"at most this many (default 100, at most {MAX_EVENTS})", pattern=r"^[0-9]{1,5}$"
)
NEXT_PAGE = {
    "Link": '<...>; rel="next": this query continuing after this page (the cursor only grows: '
    "asked again later, it gives what was stored since)"
}


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            f"query parameter {name} {raw!a} is not a time: {exc}", field=f"query.{name}"
        ) from None


def event_query(request: web.Request, **fixed: str) -> EventQuery:
    """The event query of a request's parameters (already checked against their patterns);
    `fixed` filters are the route's own (a history's node and type)."""
    q = request.query
    since, until = _time(request, "since"), _time(request, "until")
    after = q.get("after")
    return EventQuery(
        node=fixed.get("node", q.get("node")),
        run=q.get("run"),
        type=fixed.get("type", q.get("type")),
        actor=q.get("actor"),
        since=since,
        until=until,
        after=None if after is None else int(after),
        limit=min(int(q.get("limit", 100)), MAX_EVENTS),
    )


def next_page(request: web.Request, payload: Any, **cursor: int) -> WithHeaders:
    """`payload` with the `Link` to the next page: this request's URL with `cursor` set."""
    url = request.rel_url.update_query({k: str(v) for k, v in cursor.items()})
    return WithHeaders(payload, {"Link": f'<{url}>; rel="next"'})
