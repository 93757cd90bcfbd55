"""One error hierarchy for the whole control plane.

Each branch is named for what the caller should do about it; the API layer maps branches to
HTTP status codes, nothing below it knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ZtdpError(Exception):
    """Root of every error ZTDP raises on purpose."""

    title = "ZTDP error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class InvalidInput(ZtdpError):
    """The request is well-formed but breaks a rule: fix the named field and send it again."""

    title = "Invalid input"

    def __init__(self, detail: str, *, field: str | None = None, **extensions: Any) -> None:
        errors = extensions.pop("errors", None)
        if errors is None and field is not None:
            errors = [{"loc": field, "msg": detail, "type": "value_error"}]
        super().__init__(detail, field=field, errors=errors or [], **extensions)
        self.field = field


class MessageTooLarge(InvalidInput):
    """A message is larger than the mailbox carries in one piece: make what it carries (a
    node's desired state) smaller, or raise the transport's limit."""

    title = "Message too large"


class NotFound(ZtdpError):
    """The named object does not exist: create it first or fix the name."""

    title = "Not found"


class AlreadyExists(ZtdpError):
    """An object with that name exists: read or update it instead of creating it."""

    title = "Already exists"


class Conflict(ZtdpError):
    """The change contradicts the current state of the graph."""

    title = "Conflict"


class StaleRevision(Conflict):
    """Someone changed the object since it was read: read it again, then retry."""

    title = "Stale revision"


class PolicyDenied(ZtdpError):
    """Policy forbids the transition; the decision lists every unmet policy."""

    title = "Denied by policy"


class DependencyCycle(InvalidInput):
    """The dependencies form a cycle, so no order exists: break the named cycle."""

    title = "Dependency cycle"

    def __init__(self, cycle: Sequence[str]) -> None:
        path = " -> ".join([*cycle, cycle[0]]) if cycle else "?"
        super().__init__(f"dependency cycle: {path}", cycle=list(cycle))
        self.cycle = list(cycle)


class BackendUnavailable(ZtdpError):
    """A backing service (Redis, ...) cannot be reached: retry later."""

    title = "Backend unavailable"


class PluginInvalid(ZtdpError):
    """An installed plugin (a provider, an event store) is missing, broken or does not
    implement its protocol: fix, install or uninstall it."""

    title = "Invalid plugin"


class Unauthenticated(ZtdpError):
    """No valid credentials: send a valid, unexpired, unrevoked token."""

    title = "Unauthenticated"


class Forbidden(ZtdpError):
    """The caller is known but lacks the role or team: ask someone who has it."""

    title = "Forbidden"


class RateLimited(ZtdpError):
    """Too many failed attempts from this client: wait `retry_after` seconds."""

    title = "Too many failed authentications"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class PermanentError(ZtdpError):
    """A provider failed in a way retrying cannot fix (bad spec, refused by the target)."""

    title = "Permanent failure"


class TemporaryError(ZtdpError):
    """A provider failed for now (unreachable, busy): retry after `retry_after` seconds."""

    title = "Temporary failure"

    def __init__(self, detail: str, *, retry_after: float = 1.0) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class Fenced(ZtdpError):
    """This worker no longer owns the actor's partition (its lease expired or was taken
    over): its write was refused. Stop working on that partition; its new owner carries on."""

    title = "Fenced"
