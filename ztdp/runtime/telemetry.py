"""The runtime's telemetry, as interceptors around its seams rather than code in its handlers.

- `TracedMailbox` wraps a mailbox: every send is a PRODUCER span whose context is injected
  into the envelope's headers (W3C `traceparent`), so it crosses any mailbox, memory or NATS.
- `handling` is the CONSUMER span of an actor handling a message: its parent is the context
  extracted from the headers. A run's coordinator sends its steps from inside that span, a
  step's actor calls its provider and answers the coordinator from inside its own: the
  deploy request's trace follows the run to every provider call, one connected trace.
- `TracedProvider` wraps a provider: a span and a duration per call (apply, observe, delete,
  health, validate, diff), attributes naming the node and the environment, never its values.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from ztdp.providers import Change, Health, Observation, Provider, Resource, Target, Watching
from ztdp.runtime.mailbox import Delivery, Envelope, Mailbox
from ztdp.telemetry import Telemetry

T = TypeVar("T")


class TracedMailbox:
    """A mailbox whose sends carry the sender's trace context."""

    def __init__(self, inner: Mailbox, telemetry: Telemetry) -> None:
        self.inner = inner
        self.partitions = inner.partitions
        self._tracing = telemetry.tracing

    async def send(self, envelope: Envelope, *, partition: int) -> None:
        attributes = {
            "messaging.operation.type": "send",
            "messaging.destination.partition.id": str(partition),
            "messaging.message.id": envelope.id,
            "ztdp.node": envelope.node,
            "ztdp.message.kind": envelope.kind,
        }
        with self._tracing.span(
            f"send {envelope.kind}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            envelope = replace(envelope, headers=self._tracing.inject(envelope.headers))
            await self.inner.send(envelope, partition=partition)

    def consume(self, partition: int) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        return self.inner.consume(partition)

    async def pending(self, partition: int) -> int:
        return await self.inner.pending(partition)

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()


NOT_TRACED = nullcontext()  # reusable: enters and leaves at no cost


def handling(telemetry: Telemetry, batch: Sequence[Delivery]) -> AbstractContextManager[object]:
    """The span of an actor handling `batch` (one delivery, or a run coordinator's batch): a
    child of the first one's sender, linked to the others'. On the path of every message:
    with tracing off it is a shared null context."""
    tracing = telemetry.tracing
    if not tracing.enabled:
        return NOT_TRACED
    first = batch[0].envelope
    attributes: dict[str, AttributeValue] = {
        "messaging.operation.type": "process",
        "messaging.message.id": first.id,
        "messaging.batch.message_count": len(batch),
        "ztdp.node": first.node,
        "ztdp.message.kind": first.kind,
    }
    if any(d.redelivered for d in batch):  # a handler before may have died mid-way
        attributes["ztdp.redelivered"] = True
    run = first.body.get("run") if first.kind == "step" else None
    if run is not None:
        attributes["ztdp.run"] = str(run)
    return tracing.span(
        f"{first.kind} {first.node}",
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        parent=tracing.extract(first.headers),
        links=tracing.linked([d.envelope.headers for d in batch[1:]]),
    )


class TracedProvider:
    """A provider whose calls are spans and timed; everything else is the provider's own
    (`kind`, `watch`, `settings_model`, ...)."""

    def __init__(self, inner: Provider, telemetry: Telemetry) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._tracing = telemetry.tracing
        self._seconds = telemetry.metrics.provider_seconds
        self._timers: dict[tuple[str, str], Any] = {}  # (operation, outcome) -> its histogram

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        resource: Resource | None = None,
        target: Target | None = None,
    ) -> T:
        outcome = "ok"
        start = time.perf_counter()
        try:
            if not self._tracing.enabled:
                return await call()
            with self._tracing.span(
                f"{self.kind}.{operation}",
                kind=SpanKind.CLIENT,
                attributes=_of(self.kind, resource, target),
            ):
                return await call()
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            timer = self._timers.get((operation, outcome))
            if timer is None:  # a labelled child is found under a lock: once per label set
                timer = self._timers[operation, outcome] = self._seconds.labels(
                    self.kind, operation, outcome
                )
            timer.observe(time.perf_counter() - start)

    async def validate(self, *, resource: Resource) -> None:
        await self._call("validate", lambda: self.inner.validate(resource=resource), resource)

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return await self._call("diff", lambda: self.inner.diff(desired=desired, observed=observed))

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        return await self._call(
            "apply", lambda: self.inner.apply(resource=resource, target=target), resource, target
        )

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        return await self._call(
            "observe",
            lambda: self.inner.observe(resource=resource, target=target),
            resource,
            target,
        )

    async def delete(self, *, resource: Resource, target: Target) -> None:
        await self._call(
            "delete", lambda: self.inner.delete(resource=resource, target=target), resource, target
        )

    async def health(self, *, resource: Resource, target: Target) -> Health:
        return await self._call(
            "health", lambda: self.inner.health(resource=resource, target=target), resource, target
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TracedWatchingProvider(TracedProvider):
    """A traced provider that also watches (declared, not found by `__getattr__`: a
    runtime-checkable protocol looks at the class)."""

    def watch(self, *, target: Target) -> AbstractAsyncContextManager[AsyncIterator[Change]]:
        inner = self.inner
        assert isinstance(inner, Watching)
        return inner.watch(target=target)


def traced(provider: Provider, telemetry: Telemetry) -> TracedProvider:
    """`provider` with its calls traced and timed."""
    if isinstance(provider, Watching):
        return _TracedWatchingProvider(provider, telemetry)
    return TracedProvider(provider, telemetry)


def _of(
    provider: str, resource: Resource | None, target: Target | None
) -> dict[str, AttributeValue]:
    """Which node and where: names only, never its desired values (env may hold secrets)."""
    attributes: dict[str, AttributeValue] = {"ztdp.provider": provider}
    if resource is not None:
        attributes["ztdp.node"] = resource.node
        attributes["ztdp.resource.kind"] = resource.kind
    if target is not None:
        attributes["ztdp.environment"] = target.environment
    return attributes
