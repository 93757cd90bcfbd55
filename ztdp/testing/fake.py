"""`FakeProvider`: a provider that keeps what it "realises" in memory.

For tests of the core and of plugins that need a provider but not a real backend. It honours
the whole seam: validation, idempotent apply, observe, delete of its own objects only, health,
watches (`Watching`), generated secrets, and a settings model. Switches make calls fail::

    fake = FakeProvider(kind="fake")
    fake.fail("temporary", times=2)            # the next two calls raise TemporaryError
    fake.fail("permanent", methods={"apply"})   # every apply raises PermanentError until heal()
    fake.heal()
"""

from __future__ import annotations

import copy
import math
import secrets as _secrets
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers.base import Change, ChangeEvent, Health, Observation, Resource, Target

__all__ = ["Failure", "FakeProvider", "FakeSettings"]

CALLS = ("validate", "diff", "apply", "observe", "delete", "health", "watch")


class FakeSettings(BaseModel):
    """The fake's settings section: `spec.providers.<kind>` and `ZTDP_PROVIDERS__<KIND>__...`."""

    model_config = ConfigDict(extra="forbid")

    space: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        max_length=63,
        description="where objects live; default: the environment's name",
    )
    unreachable: bool = Field(default=False, description="act as if the backend were down")


@dataclass
class Failure:
    """A switched-on failure: which calls it hits and how many more times (None: until heal)."""

    kind: Literal["temporary", "permanent"]
    methods: frozenset[str]
    times: int | None
    message: str


@dataclass
class _Object:
    state: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    """An in-memory provider implementing `Provider` and `Watching` (see the module).

    Objects are kept per space (the settings' `space`, else the environment) and node. A
    desired state with the key `invalid` is refused (PermanentError), as a real provider refuses
    a spec it cannot realise. `secret_outputs` names the secrets apply generates (like a
    database's password): kept from `Resource.secrets` when given, new ones otherwise.
    `targets` and `resources` hold each node's latest target and applied resource, for asserts.
    """

    settings_model: type[BaseModel] | None = FakeSettings

    def __init__(
        self,
        kind: str = "fake",
        *,
        secret_outputs: Collection[str] = (),
        settings_model: type[BaseModel] | None = FakeSettings,
    ) -> None:
        self.kind = kind
        self.settings_model = settings_model  # None: the merged section is taken as it is
        self.secret_outputs = tuple(secret_outputs)
        self.outputs = self.secret_outputs  # declared, as a generating provider must
        self.objects: dict[tuple[str, str], _Object] = {}
        self.calls: list[tuple[str, str]] = []  # (method, node or environment), oldest first
        self.targets: dict[str, Target] = {}  # node -> the target of its latest call
        self.resources: dict[str, Resource] = {}  # node -> the resource of its latest apply
        self.failures: list[Failure] = []
        self.closed = False
        self._watchers: dict[str, set[MemoryObjectSendStream[Change]]] = {}

    # --- switches ----------------------------------------------------------------------------

    def fail(
        self,
        kind: Literal["temporary", "permanent"],
        *,
        times: int | None = None,
        methods: Collection[str] = CALLS,
        message: str = "",
    ) -> Failure:
        """Make the next `times` calls of `methods` fail (all of them until `heal`: None)."""
        unknown = set(methods) - set(CALLS)
        if unknown:
            raise ValueError(f"FakeProvider has no method(s) {sorted(unknown)}")
        failure = Failure(kind, frozenset(methods), times, message or f"fake {kind} failure")
        self.failures.append(failure)
        return failure

    def heal(self) -> None:
        """Every call succeeds again."""
        self.failures.clear()

    async def tamper(self, *, node: str, target: Target, state: Mapping[str, Any] | None) -> None:
        """Change an object behind ZTDP's back (None: remove it) and notify watchers, as a
        person with access to the backend would."""
        key = (self._space(target), node)
        if state is None:
            event: ChangeEvent = "deleted"
            self.objects.pop(key, None)
        else:
            event = "modified" if key in self.objects else "added"
            self.objects.setdefault(key, _Object({})).state = dict(copy.deepcopy(state))
        await self._notify(key[0], Change(node, event, "changed by hand"))

    # --- the provider seam -------------------------------------------------------------------

    async def validate(self, *, resource: Resource) -> None:
        self._call("validate", resource.node)
        if "invalid" in resource.desired:
            raise PermanentError(f"{resource.node}: desired.invalid is refused by {self.kind}")

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        self._call("diff", "")
        return [
            {"path": key, "before": observed.get(key), "after": value}
            for key, value in sorted(desired.items())
            if observed.get(key) != value
        ]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.resources[resource.node] = resource
        space = self._reach("apply", resource.node, target)
        await self.validate(resource=resource)
        key = (space, resource.node)
        existed = key in self.objects
        obj = self.objects.setdefault(key, _Object({}))
        obj.state = dict(copy.deepcopy(resource.desired))
        obj.secrets = {
            name: resource.secrets.get(name) or _secrets.token_urlsafe(24)
            for name in self.secret_outputs
        }
        await self._notify(space, Change(resource.node, "modified" if existed else "added"))
        return self._observation(obj)

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        space = self._reach("observe", resource.node, target)
        obj = self.objects.get((space, resource.node))
        return None if obj is None else self._observation(obj)

    async def delete(self, *, resource: Resource, target: Target) -> None:
        space = self._reach("delete", resource.node, target)
        if self.objects.pop((space, resource.node), None) is not None:
            await self._notify(space, Change(resource.node, "deleted"))

    async def health(self, *, resource: Resource, target: Target) -> Health:
        space = self._reach("health", resource.node, target)
        return "Ready" if (space, resource.node) in self.objects else "Degraded"

    @asynccontextmanager
    async def watch(self, *, target: Target) -> AsyncIterator[AsyncIterator[Change]]:
        space = self._reach("watch", target.environment, target)
        send, receive = anyio.create_memory_object_stream[Change](max_buffer_size=math.inf)
        self._watchers.setdefault(space, set()).add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._watchers.get(space, set()).discard(send)
            send.close()

    async def aclose(self) -> None:
        self.closed = True
        for senders in self._watchers.values():
            for send in senders:
                send.close()
        self._watchers.clear()

    # --- inside ------------------------------------------------------------------------------

    def _call(self, method: str, subject: str) -> None:
        self.calls.append((method, subject))
        for failure in list(self.failures):
            if method not in failure.methods:
                continue
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
            error = TemporaryError if failure.kind == "temporary" else PermanentError
            raise error(f"{failure.message} ({self.kind}.{method} of {subject or 'a diff'})")

    def _reach(self, method: str, subject: str, target: Target) -> str:
        self.targets[subject] = target
        self._call(method, subject)
        if target.settings.get("unreachable"):
            raise TemporaryError(
                f"{self.kind} backend of environment {target.environment} is unreachable"
            )
        return self._space(target)

    @staticmethod
    def _space(target: Target) -> str:
        return str(target.settings.get("space") or target.environment)

    @staticmethod
    def _observation(obj: _Object) -> Observation:
        return Observation(
            state=copy.deepcopy(obj.state), health="Ready", secrets=dict(obj.secrets)
        )

    async def _notify(self, space: str, change: Change) -> None:
        for send in list(self._watchers.get(space, ())):
            try:
                send.send_nowait(change)  # unbounded: a watch misses nothing
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._watchers[space].discard(send)  # its watcher left
