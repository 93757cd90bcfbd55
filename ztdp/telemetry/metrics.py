"""Prometheus figures of one process, in a registry of its own (never the global default, so
that two apps in one process, as in the tests, do not collide).

Counted where the work happens: requests by the API's middleware, runs and steps by the
runtime, provider calls by the provider interceptor, drift by the events the actors publish.
Gauges (actors by status, mailbox depth) are read from the runtime when scraped.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from a fast API read to a slow provider call or a long run.
FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

DRIFT_EVENTS = {
    "io.ztdp.drift.detected": "detected",
    "io.ztdp.drift.repaired": "repaired",
    "io.ztdp.drift.repair_failed": "repair_failed",
}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "ztdp_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ztdp_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["method", "route"],
            buckets=FAST,
            registry=r,
        )
        self.runs = Counter(
            "ztdp_runs", "Runs finished, by trigger and status", ["trigger", "status"], registry=r
        )
        self.run_seconds = Histogram(
            "ztdp_run_duration_seconds",
            "Time from a run's start to its end, by trigger and status",
            ["trigger", "status"],
            buckets=SLOW,
            registry=r,
        )
        self.step_seconds = Histogram(
            "ztdp_step_duration_seconds",
            "Time a run's step took at its actor, by action and outcome",
            ["action", "status"],
            buckets=SLOW,
            registry=r,
        )
        self.provider_seconds = Histogram(
            "ztdp_provider_call_duration_seconds",
            "Provider calls, by provider, operation and outcome (ok or the error's class)",
            ["provider", "operation", "outcome"],
            buckets=SLOW,
            registry=r,
        )
        self.drift = Counter(
            "ztdp_drift",
            "Drift seen by observation: detected, repaired, repair_failed",
            ["outcome"],
            registry=r,
        )
        self.actors = Gauge(
            "ztdp_actors",
            "Actors of the partitions this process owns, by status",
            ["status"],
            registry=r,
        )
        self.mailbox_depth = Gauge(
            "ztdp_mailbox_depth",
            "Messages queued or being handled, per partition this process owns",
            ["partition"],
            registry=r,
        )
        self.partitions = Gauge(
            "ztdp_partitions_owned", "Partitions whose lease this process holds", registry=r
        )

    def event(self, type_: str) -> None:
        """An event this process published: counted if it says something about drift."""
        outcome = DRIFT_EVENTS.get(type_)
        if outcome is not None:
            self.drift.labels(outcome).inc()

    def gauges(self, *, actors: Mapping[str, int], depth: Mapping[int, int]) -> None:
        """Set the gauges to what the runtime holds now (before a scrape)."""
        self.actors.clear()
        for status, count in actors.items():
            self.actors.labels(status).set(count)
        self.mailbox_depth.clear()
        for partition, count in depth.items():
            self.mailbox_depth.labels(str(partition)).set(count)
        self.partitions.set(len(depth))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
