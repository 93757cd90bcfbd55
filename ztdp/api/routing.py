"""A small route table that both serves aiohttp and writes the OpenAPI 3.1 document.

Each endpoint declares its body type and its responses once; the same pydantic types then
validate requests and describe them in `/openapi.json`, so the document cannot drift from
the code.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema, from_json

from ztdp.api.access import Access, cascade_guard, resolve_owner
from ztdp.api.keys import AUTH, CATALOG, IDENTITY
from ztdp.api.problems import (
    DNS_LABEL_RULE,
    PROBLEM_JSON,
    BadRequest,
    Problem,
    problem,
    validation_problem,
)
from ztdp.auth import ANONYMOUS, Identity
from ztdp.catalog.actor import reset_actor, set_actor
from ztdp.catalog.guard import WriteGuard, guarded
from ztdp.contracts import DNS_LABEL_PATTERN, DnsLabel, SecretName, SemVer
from ztdp.errors import NotFound

Reply = tuple[int, Any]
HandlerFn = Callable[[web.Request, Any], Awaitable[Reply]]

_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    required: bool = False
    pattern: str | None = DNS_LABEL_PATTERN


@dataclass(frozen=True)
class WithHeaders:
    """A handler's payload with response headers of its own (declared by the route's
    `headers=`), e.g. a page of results and its `Link` to the next."""

    payload: Any
    headers: Mapping[str, str]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: HandlerFn
    summary: str
    tag: str
    responses: Mapping[int, Any]
    access: Access
    body: Any = None
    query: tuple[Query, ...] = ()
    if_match: bool = False
    # With `Accept: text/event-stream`, the success answer is a stream of events of this type.
    stream: Any = None
    # Headers of the success answer (name -> description), sent through `WithHeaders`.
    headers: Mapping[str, str] = field(default_factory=dict)
    _adapter: TypeAdapter[Any] | None = field(default=None, init=False, repr=False)

    _path: dict[str, TypeAdapter[Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.body is not None:
            self._adapter = TypeAdapter(self.body)
        self._path = {
            name: TypeAdapter(PATH_PARAMETERS.get(name, DnsLabel))
            for name in _PARAM.findall(self.path)
        }

    def _check_path(self, request: web.Request) -> None:
        """A path parameter that breaks its schema names nothing that can exist: 404."""
        self._check_params(request.match_info)

    def _check_params(self, params: Mapping[str, str]) -> None:
        for name, adapter in self._path.items():
            value = params[name]
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                rule = str(err["msg"]).removeprefix("Value error, ")
                if err["type"] == "string_pattern_mismatch":
                    rule = DNS_LABEL_RULE
                shown = ascii(value[:64]) + ("..." if len(value) > 64 else "")
                raise NotFound(f"path.{name} {shown} names nothing: {rule}") from None

    def authorize(self, request: web.Request, identity: Identity, body: Any) -> WriteGuard | None:
        """This route's access rule for a validated body: what it refuses now raises; what
        depends on stored state is returned as the write guard (`Access.guard`)."""
        resolve_owner(request, identity, body)  # before the access rule reads it
        return self.access.guard(request, identity, body)

    def request_for(self, request: web.Request, params: Mapping[str, str]) -> web.Request:
        """`request` as if it had been made to this route with these path parameters: what an
        access rule reads (method, path parameters) is this route's; the rest (identity, app)
        is `request`'s."""
        self._check_params(params)
        return cast(web.Request, _Routed(request, self.method, dict(params)))

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The interceptor chain of every endpoint: authenticate, validate, authorize, act."""
        identity = ANONYMOUS
        if self.access.need != "public":
            identity = await request.app[AUTH].authenticate(
                request.headers.get("Authorization"),
                peer=request.remote,
                forwarded_for=request.headers.getall("X-Forwarded-For", ()),
            )
        request[IDENTITY] = identity
        self._check_path(request)
        body = None
        if self._adapter is not None:
            raw = await request.read()
            if not raw.strip():
                raise BadRequest("request body is required and must be JSON")
            try:
                body = validate_strictly(self._adapter, raw)
            except ValidationError as exc:
                return validation_problem(exc)
            except ValueError as exc:  # from_json: not JSON at all
                raise BadRequest(f"request body is not valid JSON: {exc}") from None
        for q in self.query:
            if len(request.query.getall(q.name, ())) > 1:
                # `?cascade=true&cascade=false`: which one was meant is not ours to guess
                raise _query_error(q, "is given more than once")
            value = request.query.get(q.name)
            if value is None and q.required:
                raise _query_error(q, "is required")
            if value is not None and q.pattern and not re.fullmatch(q.pattern, value):
                raise _query_error(q, f"must match {q.pattern}")
        guard = self.authorize(request, identity, body)
        if guard is not None:
            guard(await request.app[CATALOG].graph())  # fail fast; the write checks again
        token = set_actor(identity.principal)
        try:
            with guarded(guard, cascade_guard(identity)):
                status, payload = await self.handler(request, body)
        finally:
            reset_actor(token)
        extra: Mapping[str, str] = {}
        if isinstance(payload, WithHeaders):
            payload, extra = payload.payload, payload.headers
        response = json_response(status, payload)
        response.headers.update(extra)
        revision = _revision_of(payload)
        if revision is not None:
            response.headers["ETag"] = f'"{revision}"'  # what If-Match sends back on an update
        return response


class _Routed:
    """A request seen as another route's: its method and path parameters; the rest delegated."""

    def __init__(self, request: web.Request, method: str, params: dict[str, str]) -> None:
        self._request = request
        self.method = method
        self.match_info = params

    def __getitem__(self, key: Any) -> Any:
        return self._request[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def _revision_of(payload: Any) -> int | None:
    """The revision of one stored object: `metadata.revision`, or a (flat) version's `revision`."""
    if not isinstance(payload, dict):
        return None
    meta = payload.get("metadata")
    revision = meta.get("revision") if isinstance(meta, dict) else None
    if revision is None and {"application", "service", "version"} <= payload.keys():
        revision = payload.get("revision")
    return revision if isinstance(revision, int) else None


def validate_strictly(adapter: TypeAdapter[Any], raw: bytes) -> Any:
    """Strictly: `"port": true` or `"public": "yes"` is an error, not 1 or True.

    But a whole number is an integer however it is written: JSON and its schemas do not tell
    443.0 from 443, so neither does ZTDP where it expects an integer.
    """
    # NaN and Infinity are not JSON, though pydantic's parser takes them.
    data = from_json(raw, allow_inf_nan=False)
    try:
        return adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        wholes = [
            err["loc"]
            for err in exc.errors()
            if err["type"] == "int_type"
            and isinstance(err["input"], float)
            and err["input"].is_integer()
        ]
        if not wholes:
            raise
        for loc in wholes:
            _whole_to_int(data, loc)
        try:
            again = json.dumps(data, allow_nan=False)
        except ValueError:  # a number too large for a float: let the first errors tell
            raise exc from None
        return adapter.validate_json(again, strict=True)


def _whole_to_int(data: Any, loc: tuple[int | str, ...]) -> None:
    """Make the whole float at `loc` an int; parts of `loc` that name a union's member (not a
    key or an index of the data) are passed over."""
    parent: Any = None
    key: Any = None
    node: Any = data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            present = 0 <= part < len(node)
        else:
            present = isinstance(node, dict) and part in node
        if present:
            parent, key, node = node, part, node[part]
    if parent is not None and isinstance(node, float) and node.is_integer():
        parent[key] = int(node)


def _query_error(q: Query, problem: str) -> Exception:
    from ztdp.errors import InvalidInput

    return InvalidInput(f"query parameter {q.name} {problem}", field=f"query.{q.name}")


def json_response(status: int, payload: Any) -> web.StreamResponse:
    if isinstance(payload, web.StreamResponse):
        return payload  # already sent by the handler, e.g. a Server-Sent Events stream
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json(by_alias=True)
    elif isinstance(payload, str | bytes):
        return web.Response(status=status, body=payload, content_type="application/json")
    else:
        text = json.dumps(payload, default=_encode)
    return web.Response(status=status, text=text, content_type="application/json")


def _encode(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


@dataclass(frozen=True)
class Refusal:
    """A method a path refuses for a reason worth telling (not in the OpenAPI document)."""

    method: str
    path: str
    detail: str


class Router:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self.refusals: list[Refusal] = []

    def endpoint(self, operation_id: str) -> Endpoint:
        """The endpoint of an operation (its handler's name)."""
        return next(ep for ep in self.endpoints if ep.operation_id == operation_id)

    def refuse(self, method: str, path: str, detail: str) -> None:
        """Answer `method` on `path` with 405 and `detail` instead of a generic 405.

        Undocumented, as every method a path does not offer: a documented operation that
        always fails would be a promise the server breaks.
        """
        self.refusals.append(Refusal(method, path, detail))

    def add(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        tag: str,
        responses: Mapping[int, Any],
        access: Access,
        body: Any = None,
        query: tuple[Query, ...] = (),
        if_match: bool = False,
        stream: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.endpoints.append(
                Endpoint(
                    method,
                    path,
                    fn,
                    summary,
                    tag,
                    responses,
                    access,
                    body=body,
                    query=query,
                    if_match=if_match,
                    stream=stream,
                    headers=dict(headers or {}),
                )
            )
            return fn

        return register

    def install(self, app: web.Application) -> None:
        """Add every endpoint; each path then answers its other methods itself (405).

        A path such as /v1/policies/evaluate or /v1/applications/{app}/services/schema is
        matched before /v1/policies/{id} or .../services/{svc}, as in OpenAPI, so it must not
        fall through to the templated path's operations; and a refused method (PUT on a
        version) says why. Each path's catch-all is added right after its last endpoint, so
        that it comes before any later template the path would also match.
        """
        methods: dict[str, list[str]] = {}
        last: dict[str, int] = {}
        for i, ep in enumerate(self.endpoints):
            methods.setdefault(ep.path, []).append(ep.method)
            last[ep.path] = i
        refusals = {r.path: r for r in self.refusals}
        shadowing = {p for p in methods if any(_shadows(p, t) for t in methods if t != p)}
        for i, ep in enumerate(self.endpoints):
            app.router.add_route(ep.method, ep.path, ep.handle)
            if last[ep.path] == i and (ep.path in shadowing or ep.path in refusals):
                refusal = refusals.get(ep.path)
                app.router.add_route("*", ep.path, _not_allowed(sorted(methods[ep.path]), refusal))

    def openapi(
        self,
        *,
        title: str,
        version: str,
        description: str,
        authentication: bool = True,
        outages: bool = True,
    ) -> dict[str, Any]:
        """The OpenAPI 3.1 document of this table, as exact as the server it describes.

        `authentication`: whether the server asks for credentials; without, no operation
        declares a security requirement or the 401/403/429 answers only credentials cause.
        `outages`: whether a backend (Redis, the identity provider) can be unreachable, so
        that every operation needing it may answer 503.
        """
        components: dict[str, Any] = {}

        def schema(tp: Any) -> dict[str, Any]:
            js = TypeAdapter(tp).json_schema(ref_template=_REF, schema_generator=_Schemas)
            components.update(js.pop("$defs", {}))
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                components[tp.__name__] = js
                return {"$ref": _REF.format(model=tp.__name__)}
            return js

        problem = {PROBLEM_JSON: {"schema": schema(Problem)}}
        paths: dict[str, dict[str, Any]] = {}
        for ep in self.endpoints:
            params: list[dict[str, Any]] = [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": schema(PATH_PARAMETERS.get(name, DnsLabel)),
                }
                for name in _PARAM.findall(ep.path)
            ]
            params += [
                {
                    "name": q.name,
                    "in": "query",
                    "required": q.required,
                    "description": q.description,
                    "schema": {"type": "string", **({"pattern": q.pattern} if q.pattern else {})},
                }
                for q in ep.query
            ]
            if ep.if_match:
                params.append(
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": False,
                        "description": 'the revision the update is based on, e.g. "12"; '
                        "a different current revision is refused with 409",
                        "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
                    }
                )
            guarded = ep.access.need != "public"
            failures = dict(AUTH_RESPONSES if guarded and authentication else {})
            if guarded and outages:
                failures[503] = OUTAGE
            if _PARAM.search(ep.path):  # a path parameter that breaks its schema names nothing
                failures.setdefault(404, _REASONS[404])
            responses: dict[str, Any] = {}
            for status in sorted({*failures, *ep.responses}):
                tp = ep.responses.get(status, Problem)
                if tp is None:  # e.g. 204: nothing but the status
                    responses[str(status)] = {"description": _REASONS.get(status, "success")}
                elif tp is Problem:
                    declared = _REASONS.get(status) if status in ep.responses else None
                    reasons = [declared, failures.get(status)]
                    text = "; or ".join(dict.fromkeys(r for r in reasons if r)) or "error"
                    responses[str(status)] = {"description": text, "content": problem}
                else:
                    content = {"application/json": {"schema": schema(tp)}}
                    if ep.stream is not None and status < 300:
                        content[EVENT_STREAM] = _event_stream(schema(ep.stream))
                    responses[str(status)] = {
                        "description": _REASONS.get(status, "success"),
                        "content": content,
                    }
                    if ep.headers and status < 300:
                        responses[str(status)]["headers"] = {
                            name: {"description": text, "schema": {"type": "string"}}
                            for name, text in ep.headers.items()
                        }
            responses["default"] = {"description": "any other error", "content": problem}
            op: dict[str, Any] = {
                "operationId": ep.operation_id,
                "summary": ep.summary,
                "description": _describe(ep),
                "tags": [ep.tag],
                "parameters": params,
                "responses": responses,
            }
            if guarded and authentication:
                op["security"] = [{"bearer": []}]
            if ep.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema(ep.body)}},
                }
            paths.setdefault(ep.path, {})[ep.method.lower()] = op
        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version, "description": description},
            "paths": paths,
            "components": {"schemas": dict(sorted(components.items()))},
        }
        if authentication:
            document["components"]["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a ZTDP token (ztdp_...) or, if configured, an OIDC JWT",
                }
            }
        return document


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON schemas, with constrained dictionary keys stated as such."""

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        js = super().dict_schema(schema)
        # pydantic states a key pattern as `patternProperties`, which lets any other key
        # through; the server refuses them, so: `propertyNames` and `additionalProperties`.
        patterns = js.get("patternProperties", {})
        if len(patterns) == 1 and "additionalProperties" not in js:
            [(pattern, values)] = js.pop("patternProperties").items()
            js["propertyNames"] = {**js.get("propertyNames", {}), "pattern": pattern}
            js["additionalProperties"] = values
        return js


def _shadows(path: str, template: str) -> bool:
    """Whether `template` also matches every URL of `path`, which has a literal segment where
    the template has a parameter: /v1/policies/evaluate and /v1/policies/{id}."""
    ours, theirs = path.split("/"), template.split("/")
    if len(ours) != len(theirs):
        return False
    pairs = [
        (_PARAM.fullmatch(o) is not None, o, _PARAM.fullmatch(t) is not None, t)
        for o, t in zip(ours, theirs, strict=True)
    ]
    same_or_wider = all(o == t or (t_param and not o_param) for o_param, o, t_param, t in pairs)
    return same_or_wider and any(t_param and not o_param for o_param, _, t_param, _ in pairs)


def _not_allowed(
    methods: list[str], refusal: Refusal | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    allow = ", ".join(methods)

    async def not_allowed(request: web.Request) -> web.StreamResponse:
        if refusal is not None and request.method == refusal.method:
            detail = refusal.detail
        else:
            detail = f"{request.method} is not allowed on {request.path[:100]}"
        response = problem(405, "Method Not Allowed", detail)
        response.headers["Allow"] = allow
        return response

    return not_allowed


def _event_stream(data: dict[str, Any]) -> dict[str, Any]:
    """A `text/event-stream` body; as schemathesis and OpenAPI 3.2 read it before `itemSchema`
    existed, its schema is that of one event, whose `data` is JSON of the given schema."""
    return {
        "schema": {
            "type": "object",
            "description": "one Server-Sent Event; the stream sends a comment every 15 s "
            "while there is nothing to tell",
            "properties": {
                "id": {"type": "string", "description": "the id of the event in `data`"},
                "event": {"type": "string", "description": "the type of the event in `data`"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": data,
                },
            },
            "required": ["id", "event", "data"],
        }
    }


def _describe(ep: Endpoint) -> str:
    """What an operation does and who may call it: its summary, its rule and its docstring."""
    parts = [ep.summary.rstrip(".") + ".", who_may_call(ep.access)]
    doc = inspect.getdoc(ep.handler)
    if doc:
        parts.append(doc)
    return "\n\n".join(parts)


def who_may_call(access: Access) -> str:
    """An access rule in words, as the document tells it for each operation."""
    if access.refine is not None:
        rule = inspect.getdoc(access.refine)
        return "Who may call it depends on the body" + (f": {_sentence(rule)}." if rule else ".")
    match access.need:
        case "public":
            return "Public: needs no credentials."
        case "read":
            return "Any authenticated identity may call it."
        case "each":
            return (
                "Each object needs what the operation writing it alone needs (creating, "
                "updating, linking or deploying it); one that is not allowed refuses the whole set."
            )
        case "admin":
            return f"Needs platform-admin (to {access.what})."
        case "team":
            teams = inspect.getdoc(access.teams) if access.teams else None
            whose = _sentence(teams) if teams else "the teams it touches"
            return f"Needs a developer grant of {whose}, or platform-admin (to {access.what})."
        case "recorder":
            return (
                "Needs a ci grant of the team owning the check's application to record a "
                "result (succeeded or failed), or platform-admin; a developer grant of that "
                "team may declare the check pending."
            )
        case "approver":
            return (
                "Needs an approver grant for the environment approved, approving as itself "
                "(spec.approver is the caller)."
            )
        case "withdraw":
            return (
                "Needs to be the approver who gave the approval (spec.approver is the caller), "
                "or platform-admin."
            )
    return f"Needs {access.need} (to {access.what})."  # a rule this function does not know yet


def _sentence(doc: str) -> str:
    """The first sentence of a docstring, to continue a sentence with: a description of who is
    asked for, after any "What is done:" lead-in."""
    text = doc.split("\n\n")[0].replace("\n", " ").strip().rstrip(".")
    text = text.split(": ", 1)[-1]
    return text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text


AUTH_RESPONSES = {
    401: "No valid token",
    403: "The caller lacks the role or team",
    429: "Too many failed authentications from this client",
}
OUTAGE = "A backend (Redis, the identity provider) is unreachable: retry after Retry-After"
EVENT_STREAM = "text/event-stream"
# What `If-Match` takes: a revision, optionally quoted, optionally weak.
IF_MATCH_PATTERN = r'^(?:W/)?(?:"[0-9]{1,18}"|[0-9]{1,18})$'
# Path parameters are DNS labels, except these.
PATH_PARAMETERS: dict[str, Any] = {"version": SemVer, "secret": SecretName}

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "The body is not JSON",
    403: "Denied by policy",
    404: "Not found",
    409: "Conflict (exists, or stale revision)",
    413: "Body too large",
    422: "Invalid input: the problem names the field",
    503: "A backing store is unavailable",
}
