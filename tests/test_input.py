"""Strict input: no coercion, and every malformed request answered as problem+json."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ServerProcess
from tests.helpers import Api


@pytest.fixture
def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"port": True}, "spec.port"),
        ({"port": "8080"}, "spec.port"),
        ({"port": 80.0}, "spec.port"),
        ({"public": "yes"}, "spec.public"),
        ({"public": 1}, "spec.public"),
    ],
)
async def test_types_are_not_coerced(api: Api, spec: dict[str, Any], field: str) -> None:
    await api.application("checkout")
    before = await api.revision()
    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services",
        {
            "metadata": {"name": "api", "owner": "team-x"},
            "spec": {"application": "checkout", **spec},
        },
    )
    assert code == 422, problem
    assert [e["loc"] for e in problem["errors"]] == [field]
    assert await api.revision() == before


async def test_a_version_refuses_a_string_replica_count(api: Api) -> None:
    await api.application("checkout")
    await api.service("checkout", "api")
    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services/api/versions",
        {"version": "1.0.0", "owner": "team-x", "replicas": "2"},
    )
    assert code == 422 and problem["errors"][0]["loc"] == "replicas"


@pytest.mark.parametrize("value", ["²", "١٢", "\u00e9", "12" * 20, 'W/"x"'])
async def test_a_malformed_if_match_is_a_400_problem(api: Api, value: str) -> None:
    await api.application("checkout")
    code, problem = await api.call(
        "PUT",
        "/v1/applications/checkout",
        {"metadata": {"name": "checkout", "owner": "team-x"}},
        headers={"If-Match": value},
    )
    assert code == 400, problem
    assert "If-Match" in problem["detail"]


def _raw(port: int, request: bytes) -> tuple[int, str, str]:
    """Send bytes as they are (no client library would send these); return status, type, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body.decode("latin-1")


def test_long_paths_and_headers_are_problems_that_do_not_echo_the_request() -> None:
    """Against `ztdp serve` itself: the HTTP parser's limits are set where the server starts."""
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
    try:
        long_path = "/v1/applications/" + "a" * 10_000
        host = "Host: x\r\nConnection: close\r\n"
        cases = [
            (f"GET {long_path} HTTP/1.1\r\n{host}\r\n", 414),
            (
                f"GET /v1/status HTTP/1.1\r\n{host}X-Big: {'b' * 10_000}\r\n\r\n",
                431,
            ),
            (
                f"PUT /v1/applications/x HTTP/1.1\r\n{host}If-Match: \u00e9\r\n"
                "Content-Length: 2\r\n\r\n{}",
                422,  # the body is checked first; the header must not break it either
            ),
        ]
        for request, status in cases:
            code, ctype, body = _raw(server.port, request.encode("utf-8"))
            assert code == status, (code, body[:200])
            assert ctype.startswith("application/problem+json"), ctype
            assert "a" * 200 not in body and "b" * 200 not in body
        code, ctype, body = _raw(
            server.port,
            f"GET /v1/{'c' * 3000} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
        assert code == 404 and ctype.startswith("application/problem+json")
        assert "c" * 200 not in body
    finally:
        output = server.stop()
    assert "Traceback" not in output
