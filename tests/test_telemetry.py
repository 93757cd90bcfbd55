"""Traces: one deploy is one connected trace, from the API request to the provider's calls,
whatever the mailbox; and no secret reaches a span.

Spans go to an in-memory exporter of the test's own (no global tracer provider is set).
The deploy lands in the Kubernetes sandbox over a real socket, through the real provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.cluster import WorkerProcess, declare, finished_run, shared_env
from tests.conftest import REPO, ServerProcess
from tests.ports import free_port
from ztdp.api import create_app
from ztdp.providers import ProviderRegistry
from ztdp.runtime.mailbox import Envelope
from ztdp.runtime.mailbox.nats import NatsMailbox
from ztdp.runtime.telemetry import TracedMailbox, handling
from ztdp.settings import Settings
from ztdp.telemetry import Telemetry, redact
from ztdp_kubernetes.sandbox import sandbox

SECRET = "hunter2-do-not-trace-me"
IMAGE = "registry.k8s.io/pause:3.10"


@pytest.fixture
async def traced() -> AsyncIterator[tuple[Telemetry, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry.exporting_to([SimpleSpanProcessor(exporter)])
    yield telemetry, exporter
    await telemetry.aclose()


async def until(what: str, check: Callable[[], Any], seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def unbroken(spans: list[ReadableSpan], trace_id: int) -> bool:
    """Every span of the trace has its parent in it, but one: the root."""
    of_trace = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    ids = {s.context.span_id for s in of_trace if s.context is not None}
    roots = [s for s in of_trace if s.parent is None or s.parent.span_id not in ids]
    return len(roots) == 1


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_deploy_is_one_connected_trace_down_to_the_provider(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    async with sandbox() as kube:
        settings = Settings(kubeconfig=kube.kubeconfig, observe_interval=0, auth="off")
        app = create_app(settings, telemetry=telemetry)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:

            async def ok(method: str, path: str, body: Any = None) -> Any:
                async with client.request(method, path, json=body) as r:
                    data = await r.json()
                    assert r.status < 300, (path, r.status, data)
                    return data

            await ok(
                "POST",
                "/v1/environments",
                {
                    "metadata": {"name": "dev", "owner": "platform"},
                    "spec": {"kubernetes": {"namespace": "traced"}},
                },
            )
            await ok("POST", "/v1/applications", {"metadata": {"name": "shop", "owner": "team"}})
            await ok("POST", "/v1/applications/shop/environments/allowed", ["dev"])
            await ok(
                "POST",
                "/v1/applications/shop/services",
                {
                    "metadata": {"name": "api", "owner": "team"},
                    "spec": {"application": "shop", "port": 8080},
                },
            )
            await ok(
                "POST",
                "/v1/applications/shop/environments/dev/secrets",
                {"name": "db-password", "value": SECRET},
            )
            await ok(
                "POST",
                "/v1/applications/shop/services/api/versions",
                {
                    "version": "1.0.0",
                    "owner": "team",
                    "image": IMAGE,
                    "env": {"DB_PASSWORD": {"secret": "db-password"}},
                },
            )
            exporter.clear()
            accepted = await ok(
                "POST",
                "/v1/applications/shop/services/api/versions/1.0.0/deploy",
                {"environment": "dev"},
            )

            async def finished() -> Any:
                run = await ok("GET", f"/v1/runs/{accepted['run']}")
                return run if run["status"] != "Running" else None

            run = await until("the run to finish", finished)
            assert run["status"] == "Succeeded", run

    def of(name: str) -> ReadableSpan | None:
        return next((s for s in exporter.get_finished_spans() if s.name == name), None)

    request = of("POST /v1/applications/{app}/services/{svc}/versions/{version}/deploy")
    assert request is not None and request.kind is SpanKind.SERVER
    assert request.context is not None
    trace_id = request.context.trace_id

    async def connected() -> bool:  # the last spans end as the run's coordinator finishes
        return unbroken(list(exporter.get_finished_spans()), trace_id)

    await until("the trace to be connected", connected, seconds=5)
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == trace_id
    ]
    names = {s.name for s in spans}
    node = "deployment/shop/api@dev"
    run_node = f"run/{accepted['run']}"
    assert {"plan", "send advance", f"advance {run_node}", "send step", f"step {node}"} <= names
    # nothing of this run went into another trace
    of_run = [
        s
        for s in exporter.get_finished_spans()
        if run_node in s.name or (s.attributes or {}).get("ztdp.run") == accepted["run"]
    ]
    assert len(of_run) >= 3 and all(s in spans for s in of_run)
    diff = next(s for s in spans if s.name == "kubernetes.diff")  # the plan's preview
    assert ancestors(diff, spans)[:2] == ["plan", request.name]
    apply = next(s for s in spans if s.name == "kubernetes.apply")
    chain = ancestors(apply, spans)
    # provider call <- the step at its actor <- sent by the run's coordinator <- ... <- request
    assert chain[:3] == [f"step {node}", "send step", f"advance {run_node}"], chain
    assert request.name in chain
    # the Kubernetes client's own HTTP calls (the aiohttp instrumentation) are the apply's
    assert any(s.kind is SpanKind.CLIENT and s.parent == apply.context for s in spans)
    # the step messages carried the context: the step spans are consumers of their sends
    step = next(s for s in spans if s.name == f"step {node}")
    assert step.kind is SpanKind.CONSUMER and step.attributes is not None
    assert step.attributes["ztdp.run"] == accepted["run"]

    # the secret env value is nowhere in any span, of any trace
    for s in exporter.get_finished_spans():
        text = repr(dict(s.attributes or {})) + repr([dict(e.attributes or {}) for e in s.events])
        assert SECRET not in text, s.name


async def test_the_trace_context_crosses_the_nats_mailbox_in_the_headers(
    traced: tuple[Telemetry, InMemorySpanExporter], nats_url: str, nats_prefix: str
) -> None:
    telemetry, exporter = traced
    box = await NatsMailbox.connect(nats_url, prefix=nats_prefix, partitions=2, ack_wait=3)
    mailbox = TracedMailbox(box, telemetry)
    try:
        with telemetry.tracing.span("request"):
            await mailbox.send(Envelope(node="deployment/a/b@dev", kind="observe"), partition=1)
        async with mailbox.consume(1) as deliveries:
            async for delivery in deliveries:
                assert "traceparent" in delivery.envelope.headers
                with handling(telemetry, [delivery]):
                    pass
                await delivery.ack()
                break
    finally:
        await mailbox.aclose()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request, send = spans["request"], spans["send observe"]
    handled = spans["observe deployment/a/b@dev"]
    assert request.context and send.context and handled.context
    assert send.context.trace_id == handled.context.trace_id == request.context.trace_id
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert handled.parent is not None and handled.parent.span_id == send.context.span_id
    assert handled.parent.is_remote  # it came from the headers, not from this task's context
    assert handled.kind is SpanKind.CONSUMER


def test_tracing_off_injects_nothing_and_costs_a_no_op() -> None:
    telemetry = Telemetry.from_settings(Settings(otel_exporter=None, otel_endpoint=None))
    assert not telemetry.tracing.enabled
    with telemetry.tracing.span("x") as span:
        assert not span.is_recording()
        assert telemetry.tracing.inject({"a": "b"}) == {"a": "b"}


@pytest.mark.parametrize(
    ("raw", "hidden"),
    [
        ("postgresql://app:s3cr3t@db:5432/app", "s3cr3t"),
        ("ALTER ROLE app LOGIN PASSWORD 's3cr3t''x'", "s3cr3t"),
        ("CREATE ROLE app PASSWORD $pw$s3cr3t$pw$", "s3cr3t"),
        ("https://k8s/api?token=s3cr3t&watch=1", "s3cr3t"),
    ],
)
def test_what_could_carry_a_secret_is_redacted(raw: str, hidden: str) -> None:
    assert hidden not in redact(raw)


async def test_spans_of_libraries_are_redacted_before_export(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    with telemetry.tracing.span(
        "sql",
        attributes={"db.statement": "ALTER ROLE r PASSWORD 'pw-123'", "db.password": "pw-123"},
    ):
        pass
    [span] = exporter.get_finished_spans()
    assert "pw-123" not in repr(dict(span.attributes or {}))


def test_json_logs_carry_the_trace_of_the_request_in_a_real_process(tmp_path: Path) -> None:
    """`ztdp serve` with ZTDP_LOG_FORMAT=json: stderr is one JSON object per line; the access
    line of a request is in the caller's trace; spans go where ZTDP_OTEL_EXPORTER says."""
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {
        **os.environ,
        "ZTDP_LOG_FORMAT": "json",
        "ZTDP_OTEL_EXPORTER": "console",  # spans on stdout, logs on stderr
        "ZTDP_GRAPH_STORE": "memory",
        "ZTDP_AUTH": "off",
    }
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ztdp", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
        while True:  # the port answers 503 "starting" until the application is up
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/healthz", timeout=5):
                    break
            except urllib.error.HTTPError as starting:
                assert starting.code == 503 and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/healthz?token=not-to-be-logged",
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    lines = [json.loads(line) for line in err.read_text().splitlines() if line.strip()]
    assert lines, "nothing logged"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        datetime.fromisoformat(line["time"])
    assert any(line["logger"] == "ztdp.cli" and "API on" in line["message"] for line in lines)
    [access] = [line for line in lines if line.get("trace_id") == trace_id]
    assert access["logger"] == "aiohttp.access" and "/v1/healthz" in access["message"]
    assert "not-to-be-logged" not in err.read_text()
    assert f"0x{trace_id}" in out.read_text()  # the request's span, exported, in our trace


def test_a_log_line_inside_a_span_names_it() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from ztdp.telemetry import Tracing
    from ztdp.telemetry.logging import JsonFormatter

    tracing = Tracing(TracerProvider())
    record = logging.LogRecord("ztdp.x", logging.ERROR, __file__, 1, "broke: %s", ("why",), None)
    with tracing.span("work") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "broke: why" and line["level"] == "ERROR"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record))  # outside any span


def exported_spans(text: str) -> list[dict[str, Any]]:
    """The spans a process printed with ZTDP_OTEL_EXPORTER=console, among its log lines."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := text.find('{\n    "name": ', at)) != -1:
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = end
    return spans


@pytest.mark.redis
def test_one_apply_is_one_trace_across_the_api_process_nats_and_a_worker(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str
) -> None:
    """The API process (no actors) and a `ztdp worker` on NATS: the worker's coordinator,
    steps and provider calls are in the trace of the request the API process answered; the
    worker's /metrics counts the run it carried out."""
    metrics_port = free_port()
    env = shared_env(redis_url, redis_prefix, nats_url, nats_prefix, ZTDP_OTEL_EXPORTER="console")
    api = ServerProcess({**env, "ZTDP_ACTORS": "off"}).start()
    worker = WorkerProcess({**env, "ZTDP_WORKER_METRICS_PORT": str(metrics_port)}).start()
    trace_id = secrets.token_hex(16)
    try:
        declare(api.url, 2)
        request = urllib.request.Request(
            f"{api.url}/v1/apply?env=dev",
            method="POST",
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            run_id = json.loads(response.read())["run"]
        assert finished_run(api.url, run_id)["status"] == "Succeeded"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            figures = response.read().decode()
    finally:
        api_out, worker_out = api.stop(), worker.stop()  # their last spans are sent at exit

    def of_trace(out: str) -> list[dict[str, Any]]:
        return [s for s in exported_spans(out) if s["context"]["trace_id"] == f"0x{trace_id}"]

    at_api, at_worker = of_trace(api_out), of_trace(worker_out)
    assert {"POST /v1/apply", "plan", "send advance"} <= {s["name"] for s in at_api}
    assert {f"advance run/{run_id}", "step resource/r000@dev", "recording.apply"} <= {
        s["name"] for s in at_worker
    }
    # the run's coordinator, in the worker, is the child of the API process's send: the
    # context crossed NATS in the message's headers; and no span of either lost its parent
    [send] = [s for s in at_api if s["name"] == "send advance"]
    first = [s for s in at_worker if s["name"] == f"advance run/{run_id}"]
    assert send["context"]["span_id"] in {s["parent_id"] for s in first}
    ids = {s["context"]["span_id"] for s in at_api + at_worker}
    assert all(s["parent_id"] in ids for s in at_api + at_worker if s["name"] != "POST /v1/apply")

    assert value_of(figures, "ztdp_runs_total", trigger="apply", status="Succeeded") == 1
    assert value_of(figures, "ztdp_step_duration_seconds_count", action="create") == 2
    assert value_of(figures, "ztdp_partitions_owned") == 8


def value_of(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero ids are invalid
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # a version that must not be accepted
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01-" + "x" * 4000,
    ],
)
async def test_a_bad_traceparent_starts_a_trace_of_its_own(header: str) -> None:
    exporter = InMemorySpanExporter()
    # not instrumented: the test client's own span would replace the header
    telemetry = Telemetry.exporting_to([SimpleSpanProcessor(exporter)], instrument=False)
    app = create_app(Settings(auth="off"), telemetry=telemetry, providers=ProviderRegistry())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/v1/healthz", headers={"traceparent": header})
        assert resp.status == 200
    await telemetry.aclose()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "GET /v1/healthz"]
    assert span.parent is None and span.context is not None and span.context.is_valid
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200


def test_a_callers_long_tracestate_is_not_passed_on_to_every_message() -> None:
    """The API takes its parent from the request; a tracestate of thousands of characters
    would ride on every mailbox message of the run, and push one over NATS's limit."""
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace import TracerProvider

    from ztdp.telemetry import Tracing

    tracing = Tracing(TracerProvider())
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for state, passed in (
        (f"a={'v' * 100}", True),
        (",".join(f"k{i}={'v' * 200}" for i in range(20)), False),
    ):
        token = otel_context.attach(tracing.extract({"traceparent": parent, "tracestate": state}))
        try:
            with tracing.span("send"):
                carrier = tracing.inject({"x-own": "kept"})
        finally:
            otel_context.detach(token)
        assert carrier["x-own"] == "kept" and carrier["traceparent"].startswith("00-0af765")
        assert ("tracestate" in carrier) is passed
