"""The `Telemetry` of a process: its tracing and its metrics, built from the settings.

Tracing is on when an exporter is configured (`ZTDP_OTEL_EXPORTER`, or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`); only then are the SDK and the exporter imported and the
aiohttp client, asyncpg and redis libraries instrumented. Off, spans are the API's no-op ones.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ztdp.settings import Settings
from ztdp.telemetry.metrics import Metrics
from ztdp.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

log = logging.getLogger("ztdp.telemetry")

# Libraries instrumented when tracing is on: (module, instrumentor class). One whose library
# is not installed (asyncpg comes with a plugin) is skipped.
INSTRUMENTATIONS = (
    ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
    ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
)


class Telemetry:
    """What a process records about itself: spans (`tracing`) and figures (`metrics`)."""

    def __init__(self, tracing: Tracing | None = None, metrics: Metrics | None = None) -> None:
        self.tracing = tracing or Tracing()
        self.metrics = metrics or Metrics()
        self._instrumented: list[Any] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Telemetry:
        if (settings.otel_exporter or ("otlp" if settings.otel_endpoint else "none")) == "none":
            return cls()
        from ztdp.telemetry.export import exporting

        processor = exporting(settings)
        return cls.exporting_to([processor] if processor else [])

    @classmethod
    def exporting_to(
        cls, processors: Sequence[SpanProcessor], *, instrument: bool = True
    ) -> Telemetry:
        """Tracing on, each span (redacted) handed to `processors`; the libraries are
        instrumented too unless `instrument` is false."""
        from ztdp.telemetry.export import tracer_provider

        telemetry = cls(Tracing(tracer_provider(processors)))
        if instrument:
            telemetry._instrument()
        return telemetry

    def _instrument(self) -> None:
        for module, name in INSTRUMENTATIONS:
            try:
                instrumentor = getattr(importlib.import_module(module), name)()
            except ImportError as exc:  # the library it instruments is not installed
                log.debug("not instrumenting %s: %s", module, exc)
                continue
            if instrumentor.is_instrumented_by_opentelemetry:
                continue  # instrumented already, by another Telemetry of this process
            instrumentor.instrument(tracer_provider=self.tracing.provider)
            self._instrumented.append(instrumentor)

    async def aclose(self) -> None:
        """Undo the instrumentation and send the spans still buffered; harmless twice."""
        while self._instrumented:
            self._instrumented.pop().uninstrument()
        await self.tracing.aclose()
