"""What every v1 route module shares: the route table and small request helpers."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, Field

from ztdp.api.access import Access
from ztdp.api.keys import CATALOG, RUNTIME
from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import IF_MATCH_PATTERN, Query, Reply, Router
from ztdp.catalog import Removed
from ztdp.catalog.catalog import Dependent
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
