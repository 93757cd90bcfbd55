"""`ztdp serve` as a real process: the embedded default and the Redis store across restarts."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ServerProcess, free_port


def call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def redis_env(url: str, prefix: str) -> dict[str, str]:
    """`ztdp serve` on the Redis store, with this test's own keys."""
    return {"ZTDP_GRAPH_STORE": "redis", "ZTDP_REDIS_URL": url, "ZTDP_REDIS_PREFIX": prefix}


def test_serve_starts_on_the_embedded_memory_store() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        code, status = call(f"{server.url}/v1/status")
        assert code == 200 and status["graph_store"] == "memory"
    finally:
        out = server.stop()
    assert "event loop: uvloop" in out  # the default where uvloop is installed


def test_serve_says_plainly_that_authentication_is_off() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        assert call(f"{server.url}/v1/status")[1]["authentication"] == "off"
    finally:
        out = server.stop()
    assert "authentication OFF" in out


@pytest.mark.redis
def test_serve_on_redis_loses_nothing_across_a_restart(redis_url: str, redis_prefix: str) -> None:
    env = redis_env(redis_url, redis_prefix)
    first = ServerProcess(env).start()
    try:
        token = first.admin_token()
        assert token is not None, first.text()
        assert call(f"{first.url}/v1/status")[0] == 401  # Redis means authentication on
        assert (
            call(
                f"{first.url}/v1/environments",
                "POST",
                {"metadata": {"name": "dev", "owner": "platform-team"}},
                token,
            )[0]
            == 201
        )
        assert (
            call(
                f"{first.url}/v1/applications",
                "POST",
                {"metadata": {"name": "checkout", "owner": "team-x"}, "spec": {"tags": []}},
                token,
            )[0]
            == 201
        )
        assert (
            call(
                f"{first.url}/v1/applications/checkout/environments/allowed", "PUT", ["dev"], token
            )[0]
            == 200
        )
        before = call(f"{first.url}/v1/graph", token=token)[1]
    finally:
        first.stop()
    second = ServerProcess(env).start()
    try:
        assert second.admin_token() is None  # the admin token is printed once, at the first start
        after = call(f"{second.url}/v1/graph", token=token)[1]
        assert after == before
        code, app = call(f"{second.url}/v1/applications/checkout", token=token)
        assert (
            code == 200
            and app["spec"]["tags"] == []
            and app["metadata"]["updated_by"] == "token:admin"
        )
        assert call(f"{second.url}/v1/applications/checkout/environments/allowed", token=token)[
            1
        ] == ["dev"]
        changes = call(f"{second.url}/v1/changes", token=token)[1]
        # the seeded postgres resource type, then the three writes above: all by the admin token
        assert [c["actor"] for c in changes] == [
            "system:ztdp",
            "token:admin",
            "token:admin",
            "token:admin",
        ]
    finally:
        second.stop()


@pytest.mark.redis
def test_redis_without_authentication_needs_an_explicit_off(
    redis_url: str, redis_prefix: str
) -> None:
    env = {**redis_env(redis_url, redis_prefix), "ZTDP_AUTH": "off"}
    server = ServerProcess(env).start()
    try:
        assert call(f"{server.url}/v1/status")[1]["authentication"] == "off"
    finally:
        out = server.stop()
    assert "authentication OFF" in out and server.admin_token() is None


@pytest.mark.redis
def test_two_api_processes_on_one_redis_see_each_others_writes(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str
) -> None:
    env = {
        **redis_env(redis_url, redis_prefix),
        "ZTDP_AUTH": "off",
        "ZTDP_MAILBOX": "nats",
        "ZTDP_NATS_URL": nats_url,
        "ZTDP_NATS_PREFIX": nats_prefix,
    }
    a, b = ServerProcess(env).start(), ServerProcess(env).start()
    try:
        assert (
            call(f"{a.url}/v1/environments", "POST", {"metadata": {"name": "dev", "owner": "p"}})[0]
            == 201
        )
        code, problem = call(
            f"{b.url}/v1/environments", "POST", {"metadata": {"name": "dev", "owner": "p"}}
        )
        assert code == 409 and problem["detail"] == "environment dev already exists"
    finally:
        a.stop()
        b.stop()


def test_a_client_leaving_the_event_stream_is_not_an_error() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        stream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        stream.request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
        response = stream.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        dev = {"metadata": {"name": "dev", "owner": "platform"}}
        assert call(f"{server.url}/v1/environments", "POST", dev)[0] == 201
        while not (line := response.readline()).startswith(b"data: "):
            assert line, "the stream ended before an event"
        assert json.loads(line[6:])["subject"] == "environment/dev"
        stream.close()  # the client leaves
        # The next event is written to the closed connection.
        prod = {"metadata": {"name": "prod", "owner": "platform"}}
        assert call(f"{server.url}/v1/environments", "POST", prod)[0] == 201
    finally:
        out = server.stop()
    assert "ERROR" not in out and "Traceback" not in out, out
    assert '"GET /v1/events HTTP/1.1" 200' in out, out


def test_an_open_event_stream_does_not_hold_up_shutdown() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    stream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        stream.request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
        assert stream.getresponse().status == 200
        assert server.proc is not None
        server.proc.terminate()
        assert server.proc.wait(timeout=5) == 0  # graceful, not the kill after 10 s
    finally:
        stream.close()
        out = server.stop()
    assert "ERROR" not in out and "Traceback" not in out, out


def test_a_malformed_request_is_a_warning_not_an_error() -> None:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
            assert s.recv(65536).split(b" ")[1] == b"400"
    finally:
        out = server.stop()
    assert "WARNING aiohttp.server: malformed HTTP request" in out, out
    assert "ERROR" not in out, out


# --- a start that fails says why, in one line ----------------------------------------------


def serve_fails(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run `ztdp serve` that must fail to start; its exit code and everything it printed."""
    run = subprocess.run(
        [sys.executable, "-m", "ztdp", "serve", "--port", str(free_port()), *args],
        cwd=REPO,
        env={**os.environ, "ZTDP_GRAPH_STORE": "memory", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return run.returncode, run.stdout + run.stderr


def one_line(out: str) -> str:
    [line] = out.splitlines()  # no banner before it, no traceback after it
    assert line.startswith("ztdp serve: "), line
    return line


def test_a_port_in_use_is_one_line_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = serve_fails({"ZTDP_PORT": str(port)}, "--port", str(port))
    assert code == 1
    assert one_line(out) == f"ztdp serve: cannot listen on 127.0.0.1:{port}: address already in use"


def test_an_unreachable_redis_is_one_line_naming_it() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    code, out = serve_fails({"ZTDP_GRAPH_STORE": "redis", "ZTDP_REDIS_URL": url})
    assert code == 1
    assert "graph store: Redis unreachable" in one_line(out)


def test_an_invalid_plugin_is_one_line_naming_it(tmp_path: Path) -> None:
    """A distribution of its own, installed by being on the path, whose provider is broken."""
    dist = tmp_path / "ztdp_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ztdp-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ztdp.providers]\nbroken = no_such_module:Provider\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    code, out = serve_fails({"PYTHONPATH": path})
    assert code == 1
    line = one_line(out)
    assert "plugin 'broken' (no_such_module:Provider) from ztdp-broken 0.1" in line
    assert "cannot be imported" in line


def test_a_bad_setting_is_one_line_naming_it() -> None:
    code, out = serve_fails({"ZTDP_GRAPH_STORE": "postgres"})
    assert code == 2
    assert one_line(out) == (
        "ztdp serve: invalid setting graph_store (ZTDP_GRAPH_STORE): "
        "Input should be 'memory' or 'redis'"
    )


@pytest.mark.parametrize("asked", [{"ZTDP_LOG_LEVEL": "debug"}, {"args": "--debug"}])
def test_a_failed_start_shows_its_traceback_when_asked(asked: dict[str, str]) -> None:
    env = {k: v for k, v in asked.items() if k != "args"}
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, out = serve_fails(
        {"ZTDP_GRAPH_STORE": "redis", "ZTDP_REDIS_URL": url, **env},
        *([asked["args"]] if "args" in asked else []),
    )
    assert code == 1 and "Traceback" in out and "ConnectionRefusedError" in out
    assert out.splitlines()[-1].startswith("ztdp serve: graph store: Redis unreachable")
