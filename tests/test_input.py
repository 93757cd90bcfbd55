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
        ({"port": 80.5}, "spec.port"),  # 80.0 is 80: JSON does not tell them apart
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


# --- found by review: input echoed, coerced or not JSON ------------------------------------


async def test_validation_errors_quote_no_unbounded_input(api: Api) -> None:
    key = "k" * 20_000
    code, problem = await api.call(
        "POST", "/v1/applications", {"metadata": {"name": "a", "owner": "t", "labels": {key: "v"}}}
    )
    assert code == 422 and "metadata.labels" in problem["detail"]
    assert "k" * 300 not in str(problem)
    await api.application("checkout")
    await api.service("checkout", "api")
    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services/api/versions",
        {"version": "1.0.0", "owner": "team-x", "env": {"é" * 5000: "x"}},
    )
    assert code == 422 and "é" * 100 not in str(problem)


@pytest.mark.parametrize("query", ["since=0%0A", "since=%0A0"])
async def test_query_parameters_refuse_a_trailing_or_leading_newline(api: Api, query: str) -> None:
    code, problem = await api.call("GET", f"/v1/changes?{query}")
    assert code == 422, problem


async def test_a_plan_query_refuses_a_name_with_a_newline(api: Api) -> None:
    await api.environment("dev")
    await api.application("checkout")
    code, problem = await api.call("GET", "/v1/applications/checkout/plan?environment=dev%0A")
    assert code == 422 and problem["errors"][0]["loc"] == "query.environment"


async def test_nan_and_infinity_are_not_json_and_huge_numbers_not_kept(api: Api) -> None:
    def body(value: str) -> bytes:
        return (
            b'{"metadata": {"name": "a", "owner": "team-x"}, "spec": {"lifecycle": {"a": '
            + value.encode()
            + b"}}}"
        )

    for value, status in (("NaN", 400), ("Infinity", 400), ("-Infinity", 400), ("1e400", 422)):
        resp = await api.client.post(
            "/v1/applications", data=body(value), headers={"Content-Type": "application/json"}
        )
        assert resp.status == status, (value, await resp.text())
        assert resp.headers["Content-Type"].startswith("application/problem+json")
    resp = await api.client.post(
        "/v1/applications", data=body("1.5e300"), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 201 and (await resp.json())["spec"]["lifecycle"] == {"a": 1.5e300}


def test_a_request_that_is_not_http_logs_no_bytes_of_it() -> None:
    """aiohttp's parser refuses it before ZTDP sees it; its log line must not carry a token."""
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory", "ZTDP_AUTH": "on"}).start()
    try:
        token = server.admin_token()
        assert token is not None
        host = "Host: x\r\nConnection: close\r\n"
        pasted = f"GET /v1/whoami HTTP/1.1\r\n{host}Authorization: Bearer {token}\x01\r\n\r\n"
        code, _, _ = _raw(server.port, pasted.encode())
        assert code == 400
        code, _, body = _raw(server.port, f"GET /v1/{'u' * 70_000} HTTP/1.1\r\n{host}\r\n".encode())
        assert code == 400 and "u" * 200 not in body
    finally:
        output = server.stop()
    assert output.count(token) == 1, "the token appears beyond its one announcement"
    assert "Traceback" not in output and "malformed HTTP request from" in output


async def test_a_query_parameter_given_twice_is_refused_not_guessed(api: Api) -> None:
    await api.application("checkout")
    await api.service("checkout", "api")
    code, problem = await api.call("DELETE", "/v1/applications/checkout?cascade=true&cascade=false")
    assert code == 422 and problem["errors"][0]["loc"] == "query.cascade", problem
    assert (await api.call("GET", "/v1/applications/checkout"))[0] == 200
