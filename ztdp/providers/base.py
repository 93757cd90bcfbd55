"""The provider seam: how a realised node becomes real somewhere (Kubernetes, Postgres, ...).

Every method is async and idempotent: applying twice changes nothing the second time.
Providers raise `TemporaryError` for what a retry may fix (unreachable, busy) and
`PermanentError` for what it cannot (refused spec); anything else counts as permanent.

A provider may also offer change notifications (`Watching`); one without them is polled.

A provider may declare its settings section as a pydantic model, the class attribute
`settings_model`: the core validates with it the configured default (`Settings.providers[kind]`)
overlaid by the environment's `spec.providers.<kind>`, and hands the result over as
`Target.settings`. A provider without one gets the merged section unchecked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Health = Literal["Ready", "Progressing", "Degraded"]
ChangeEvent = Literal["added", "modified", "deleted"]


Reconcile = Literal["repair", "report-only"]


@dataclass(frozen=True)
class Target:
    """Where a node is realised: its environment and that environment's provider settings.

    `settings` is the provider's validated section: the configured default overlaid by the
    environment's own section. It may hold what the server's configuration holds (a password in
    a URL, say), so only `spec`, the environment's own section, is ever persisted; the settings
    are derived again from it where they are needed (`ztdp.providers.settings`).
    """

    environment: str
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)
    reconcile: Reconcile = "repair"  # the environment's spec.reconcile
    spec: Mapping[str, Any] = field(default_factory=dict)  # spec.providers.<kind> as written


@dataclass(frozen=True)
class Resource:
    """A realised node as a provider sees it."""

    node: str  # e.g. deployment/checkout/checkout-api@dev
    kind: str  # deployment | resource
    name: str  # the node's own name, e.g. checkout-api (a provider may derive real names)
    application: str
    desired: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()
    # Resolved secret values for this call only (apply and observe), never persisted. A
    # deployment: env var name -> value of each env var that references a secret. A resource:
    # the outputs the provider generated earlier, so apply stays idempotent; empty means none
    # yet, or rotation asked: generate new ones.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Observation:
    state: Mapping[str, Any]  # the fields the planner compares with the desired state
    health: Health
    message: str = ""
    # Values the provider generated (a password, a URL with it): the core keeps them in the
    # secret store and nowhere else.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@runtime_checkable
class Provider(Protocol):
    kind: str

    async def validate(self, *, resource: Resource) -> None:
        """Raise PermanentError naming the field if the desired state cannot be realised."""
        ...

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Field-level differences, each `{"path", "before", "after"}`."""
        ...

    async def apply(self, *, resource: Resource, target: Target) -> Observation: ...

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        """What exists now, or None if nothing does."""
        ...

    async def delete(self, *, resource: Resource, target: Target) -> None:
        """Remove what ZTDP created for this node, and nothing else."""
        ...

    async def health(self, *, resource: Resource, target: Target) -> Health: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Change:
    """Something a provider manages for `node` changed: observe that node now.

    `event` is the change as the node sees it: `added` (an object of the node's appeared, or
    was handed to it), `modified`, or `deleted` (its object vanished, or was handed to another
    node). It is a hint, not a state: an observation decides what is true.
    """

    node: str  # a node id, e.g. deployment/checkout/checkout-api@dev
    event: ChangeEvent
    detail: str = ""  # what changed, for logs: e.g. "Deployment checkout-api-nf37 in namespace dev"


@runtime_checkable
class Watching(Protocol):
    """The optional part of the provider seam: notifications of changes, instead of polling.

    One watch covers one target (an environment's cluster and namespace, say)::

        async with provider.watch(target=target) as changes:  # raises if it cannot start
            ...  # from here on no change is missed: observe every node of the target once
            async for change in changes:
                ...  # observe change.node

    Entering the context starts the watch, or raises `TemporaryError` (unreachable, a retry
    may help) or `PermanentError` (refused, e.g. not allowed to list or watch). Once entered,
    every change made after that is notified at least once, possibly more than once. The
    provider resumes broken streams by itself (from where it was, or by listing again and
    comparing); when it cannot, the iterator raises `TemporaryError` or `PermanentError` and
    the caller starts a new watch (with backoff) and observes every node again, since changes
    may have been missed in between. Objects the provider does not manage produce nothing;
    objects of nodes the caller does not know may, and are the caller's to ignore. Leaving the
    context (or cancelling the task in it) stops the watch and releases its connections.
    """

    def watch(self, *, target: Target) -> AbstractAsyncContextManager[AsyncIterator[Change]]:
        """A watch of what this provider manages in `target` (see the class)."""
        ...


REQUIRED_METHODS = ("validate", "diff", "apply", "observe", "delete", "health", "aclose")
