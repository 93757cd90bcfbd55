"""Errors as RFC 9457 `application/problem+json`, in one middleware.

Every error leaves here with a status, a title and a `detail` that names the object and the
broken rule; validation errors also list each failing field. Nothing else reaches the client:
an unexpected exception is logged and answered with a 500 problem without a traceback.
A backend that cannot be reached is a 503 with `Retry-After`, never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ztdp.contracts import DNS_LABEL_PATTERN
from ztdp.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyDenied,
    RateLimited,
    Unauthenticated,
    ZtdpError,
)
from ztdp.redis_client import UNREACHABLE

log = logging.getLogger("ztdp.api")
DNS_LABEL_RULE = (
    "must be a DNS-1123 label: lower-case letters, digits and '-', "
    "starting and ending with a letter or digit"
)
PROBLEM_JSON = "application/problem+json"
# An outage of a backend is mostly a restart or a failover: ask clients to come back soon.
BACKEND_RETRY_AFTER = 2  # seconds

_STATUS: list[tuple[type[ZtdpError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (PolicyDenied, 403),
    (Forbidden, 403),
    (BackendUnavailable, 503),
]


class FieldError(BaseModel):
    loc: str = Field(description="dotted path of the field, e.g. 'spec.port' or 'body[1]'")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; extensions carry what the caller needs to act."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class BadRequest(ZtdpError):
    """The request could not be read at all (bad JSON, bad header)."""

    title = "Bad request"


def problem(status: int, title: str, detail: str, **extensions: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extensions.items() if v is not None})
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)


def _short(text: str, limit: int = 100) -> str:
    """Enough of a client's input to recognise it in a message, never all of it."""
    return text if len(text) <= limit else text[:limit] + "..."


def _loc(parts: tuple[int | str, ...], prefix: str) -> str:
    out = prefix
    for part in parts:
        if not isinstance(part, int):
            part = _short(part, 64)  # a key can be anything the client sent, of any length
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_problem(exc: ValidationError, *, prefix: str = "") -> web.Response:
    errors = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return problem(400, "Bad request", f"request body is not valid JSON: {err['msg']}")
        msg = _short(err["msg"], 200)  # messages may quote the input: never all of it
        if (
            err["type"] == "string_pattern_mismatch"
            and err.get("ctx", {}).get("pattern") == DNS_LABEL_PATTERN
        ):
            msg = DNS_LABEL_RULE
        errors.append({"loc": _loc(err["loc"], prefix), "msg": msg, "type": err["type"]})
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(422, "Invalid input", f"{first['loc']}: {first['msg']}{more}", errors=errors)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The HTTP parser is given room beyond these (PARSER_LIMIT in ztdp.api.app), so that an
# over-long URL or header reaches this middleware and is refused as problem+json instead of
# aiohttp's plain-text error echoing the request.
MAX_URL_LENGTH = 4096
MAX_HEADER_LENGTH = 8190


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.raw_path) > MAX_URL_LENGTH:
        return problem(
            414,
            "URI too long",
            f"the request URL has {len(request.raw_path)} characters; at most "
            f"{MAX_URL_LENGTH} are accepted",
        )
    for name, value in request.headers.items():
        if len(name) + len(value) > MAX_HEADER_LENGTH:
            return problem(
                431,
                "Request header fields too large",
                f"header {_short(name, 40)!r} has {len(value)} characters; at most "
                f"{MAX_HEADER_LENGTH} are accepted",
            )
    return await handler(request)


def _retry_later(response: web.Response) -> web.Response:
    if response.status == 503:
        response.headers.setdefault("Retry-After", str(BACKEND_RETRY_AFTER))
    return response


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        return validation_problem(exc)
    except BadRequest as exc:
        return problem(400, exc.title, exc.detail, **exc.extensions)
    except Unauthenticated as exc:
        response = problem(401, exc.title, exc.detail)
        response.headers["WWW-Authenticate"] = 'Bearer realm="ztdp"'
        return response
    except RateLimited as exc:
        response = problem(429, exc.title, exc.detail, retry_after=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except ZtdpError as exc:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if status == 500:
            log.error(
                "unmapped error on %s %s: %s", request.method, _short(request.path), exc.detail
            )
        return _retry_later(problem(status, exc.title, exc.detail, **exc.extensions))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 404:
            detail = f"no route {request.method} {_short(request.path)}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {_short(request.path)}"
        elif exc.status == 413:
            detail = f"request body larger than {request.client_max_size} bytes"
        response = problem(exc.status, exc.reason, detail)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return _retry_later(response)
    except UNREACHABLE as exc:
        # A Redis call that no store translated: still an outage, not a bug of the request.
        log.warning("backend unreachable on %s %s: %r", request.method, request.path, exc)
        return _retry_later(
            problem(503, "Backend unavailable", f"a backend cannot be reached: {exc}")
        )
    except Exception:
        log.exception("internal error on %s %s", request.method, _short(request.path))
        return problem(
            500, "Internal error", "ZTDP failed to handle the request; the failure is logged"
        )
