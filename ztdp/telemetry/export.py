"""Tracing switched on: the SDK's tracer provider, the exporter, the redacting processor.

Imported only when spans are exported, so that a process without tracing never loads the SDK.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ztdp import __version__
from ztdp.settings import Settings
from ztdp.telemetry.tracing import redact_attributes


class RedactingProcessor(SpanProcessor):
    """Hands `inner` each finished span with what could be a secret masked: SQL text (a
    role's PASSWORD literal), URLs with credentials, attributes named like secrets."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=redact_attributes(span.attributes),
                events=[
                    Event(e.name, redact_attributes(e.attributes), e.timestamp) for e in span.events
                ],
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def tracer_provider(processors: Sequence[SpanProcessor]) -> TracerProvider:
    """A provider whose spans pass redaction, then each of `processors`."""
    resource = Resource.create({"service.version": __version__})
    if resource.attributes.get("service.name", "unknown_service") == "unknown_service":
        resource = resource.merge(Resource({"service.name": "ztdp"}))  # OTEL_SERVICE_NAME wins
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(RedactingProcessor(processor))
    return provider


def exporting(settings: Settings) -> SpanProcessor | None:
    """The processor sending spans where the settings say, or None when they say nowhere."""
    choice = settings.otel_exporter or ("otlp" if settings.otel_endpoint else "none")
    exporter: SpanExporter
    if choice == "none":
        return None
    if choice == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if settings.otel_endpoint:  # the base address, as OTEL_EXPORTER_OTLP_ENDPOINT is
            endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
            exporter = OTLPSpanExporter(endpoint=endpoint)
        else:  # the exporter's own OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or localhost:4318
            exporter = OTLPSpanExporter()
    return BatchSpanProcessor(exporter)
