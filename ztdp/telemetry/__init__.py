"""Telemetry: OpenTelemetry traces, Prometheus metrics and JSON logs, in one place.

The call sites (the API's middleware, the runtime's interceptors) take a `Telemetry` object
built from the settings; nothing here is a module-level singleton, so tests build their own
(an in-memory span exporter, a registry of their own).
"""

from ztdp.telemetry.metrics import Metrics
from ztdp.telemetry.setup import Telemetry
from ztdp.telemetry.tracing import Tracing, redact

__all__ = ["Metrics", "Telemetry", "Tracing", "redact"]
