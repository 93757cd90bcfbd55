"""Spans and the W3C trace context carried in message headers.

`Tracing` wraps a tracer: the OpenTelemetry API's no-op tracer unless spans are exported, so
that tracing switched off costs a no-op call and nothing is injected into messages. The
context crosses processes as a `traceparent` header (W3C Trace Context): injected into an
envelope's headers when it is sent, extracted when it is handled, whatever the mailbox.

Secrets never reach a span: ZTDP's own spans carry names, kinds and ids only, and every span
(the libraries' too: SQL text, URLs) passes `RedactingProcessor` before any exporter sees it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import anyio.to_thread
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ztdp import __version__

SHUTDOWN_GRACE = 5.0  # seconds a closing process waits for its last spans to be sent
TRACESTATE_MAX = 512  # characters of tracestate passed on (W3C: at least 512 must be)
PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent / tracestate
TRACE_HEADERS = frozenset(PROPAGATOR.fields)

Attributes = Mapping[str, AttributeValue]
_NOT_TRACED = nullcontext(trace.INVALID_SPAN)


class Tracing:
    """ZTDP's tracer and how its context travels in headers."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer: Tracer = (
            provider.get_tracer("ztdp", __version__) if provider else trace.NoOpTracer()
        )

    def inject(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """`headers` plus the current span's context (unchanged when tracing is off)."""
        if not self.enabled:
            return headers
        carrier = {k: v for k, v in headers.items() if k not in TRACE_HEADERS}
        PROPAGATOR.inject(carrier)
        if len(carrier.get("tracestate", "")) > TRACESTATE_MAX:
            # A caller's (the API takes its parent from the request) up to 8,192 characters
            # would ride on every message of the run: dropped, as W3C lets a vendor do.
            del carrier["tracestate"]
        return carrier

    def extract(self, headers: Mapping[str, str]) -> Context:
        return PROPAGATOR.extract(headers)

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        parent: Context | None = None,
        links: Sequence[Link] = (),
    ) -> AbstractContextManager[Span]:
        """A current span; an exception escaping it marks it as an error (its type only).
        With tracing off, a shared null context holding the invalid span: nothing at all is
        done (not even the no-op tracer's context switch) on paths taken per message."""
        if not self.enabled:
            return _NOT_TRACED
        return self._span(name, kind, attributes, parent, links)

    @contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Attributes | None,
        parent: Context | None,
        links: Sequence[Link],
    ) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,  # messages may quote what they failed on
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                if span.is_recording():
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    span.set_attribute("error.type", type(exc).__qualname__)
                raise

    def linked(self, headers: Sequence[Mapping[str, str]]) -> list[Link]:
        """Links to the spans that sent these messages (for a batch handled at once)."""
        links = []
        for h in headers:
            ctx = trace.get_current_span(self.extract(h)).get_span_context()
            if ctx.is_valid:
                links.append(Link(ctx))
        return links

    async def aclose(self) -> None:
        """Send the spans still buffered, waiting at most `SHUTDOWN_GRACE` seconds: an
        unreachable collector must not hold a stopping process up (the SDK would wait 30 s)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is None:
            return
        done = threading.Event()

        def send() -> None:
            try:
                shutdown()
            finally:
                done.set()

        # A daemon thread of its own: one still waiting on the network does not keep the
        # process alive at exit, as a worker thread of anyio's would.
        threading.Thread(target=send, name="ztdp span export", daemon=True).start()
        await anyio.to_thread.run_sync(done.wait, SHUTDOWN_GRACE)


# --- redaction: what could carry a secret is masked before any exporter sees a span ----------

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|authorization|api[_-]?key|cookie", re.I)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", re.I)
_SQL_PASSWORD = re.compile(r"(PASSWORD\s+)(E?'(?:[^']|'')*'|\$\w*\$.*?\$\w*\$)", re.I | re.S)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:[^=&#\s]*(?:password|secret|token|signature|key)[^=&#\s]*)=)[^&#\s]*", re.I
)


def redact(value: Any) -> Any:
    """A string with passwords in URLs and SQL, and secret query parameters, masked."""
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\g<pre>:" + REDACTED + "@", value)
        value = _SQL_PASSWORD.sub(r"\1'" + REDACTED + "'", value)
        return _QUERY_SECRET.sub(r"\g<key>" + REDACTED, value)
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if attributes is None:
        return None
    return {k: (REDACTED if _SECRET_KEY.search(k) else redact(v)) for k, v in attributes.items()}
