"""The OpenAPI document is exact: what it says a server does is what that server does.

It depends on the server's settings (credentials, backends that can fail) and describes every
operation and who may call it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import Api
from ztdp.api import create_app, openapi_document
from ztdp.auth import MemoryTokenStore
from ztdp.settings import Settings

FULL = openapi_document()  # authentication on, backends that can fail: every possible answer


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]


async def served(settings: Settings) -> dict[str, Any]:
    app = create_app(settings, tokens=MemoryTokenStore(), announce=lambda _: None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


# --- credentials and outages follow the settings ------------------------------------------


async def test_without_authentication_the_document_asks_for_no_credentials() -> None:
    doc = await served(Settings(auth="off"))
    assert doc == json.loads(json.dumps(openapi_document(Settings(auth="off"))))
    assert "securitySchemes" not in doc["components"]
    for method, path, op in operations(doc):
        assert "security" not in op, (method, path)
        assert not {"401", "429"} & set(op["responses"]), (method, path)
        if path != "/v1/healthz":  # whose 503 says the store cannot be reached
            assert "503" not in op["responses"], (method, path)  # a memory store cannot fail
        assert all(p["name"].lower() != "authorization" for p in op["parameters"])
    # 403 only where policy can deny, whoever asks
    denied = [path for _, path, op in operations(doc) if "403" in op["responses"]]
    assert denied == ["/v1/applications/{app}/services/{svc}/versions/{version}/deploy"]
    assert "Authentication is off" in doc["info"]["description"]


async def test_with_authentication_every_guarded_operation_takes_a_bearer_token() -> None:
    doc = await served(Settings(auth="on"))
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, path, op in operations(doc):
        assert all(p["name"].lower() != "authorization" for p in op["parameters"])
        if path == "/v1/healthz":
            assert "security" not in op and "401" not in op["responses"]
            continue
        assert op["security"] == [{"bearer": []}], (method, path)
        assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
        assert "503" not in op["responses"], (method, path)  # memory store, no OIDC: no outage


def test_a_backend_that_can_fail_makes_every_guarded_operation_answer_503() -> None:
    for settings in (Settings(graph_store="redis"), Settings(auth="on", oidc_issuer="https://i")):
        for method, path, op in operations(openapi_document(settings)):
            assert "503" in op["responses"], (method, path)


# --- every operation is described ----------------------------------------------------------

WHO = re.compile(
    r"Public: needs no credentials\.|Any authenticated identity may call it\."
    r"|Needs platform-admin \(to [^)]+\)\.|Needs a developer grant of .+, or platform-admin"
    r"|Needs a ci grant|Needs an approver grant|Who may call it depends on the body: .+\."
)


def test_every_operation_says_what_it_does_and_who_may_call_it() -> None:
    for method, path, op in operations(FULL):
        description = op.get("description", "")
        assert description.startswith(op["summary"].rstrip(".")), (method, path)
        assert WHO.search(description), (method, path, description)


def test_a_handler_docstring_is_part_of_its_description() -> None:
    events = FULL["paths"]["/v1/events"]["get"]
    assert "the stream lasts until the client leaves" in events["description"]


def test_the_event_stream_is_described() -> None:
    content = FULL["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    event = content["text/event-stream"]["schema"]
    assert event["required"] == ["id", "event", "data"]
    assert event["properties"]["data"]["contentMediaType"] == "application/json"
    assert event["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/CloudEvent"
    }


# --- what the fuzzer found -----------------------------------------------------------------


@pytest.fixture
async def api(memory_client: TestClient) -> AsyncIterator[Api]:  # type: ignore[type-arg]
    yield Api(memory_client)


@pytest.mark.parametrize("labels", [{"tier\n": "web"}, {"tier": "web\n"}])
async def test_a_label_ending_in_a_newline_is_refused(api: Api, labels: dict[str, str]) -> None:
    body = {"metadata": {"name": "checkout", "owner": "team-x", "labels": labels}}
    code, problem = await api.call("POST", "/v1/applications", body)
    assert code == 422 and "metadata.labels" in problem["detail"], problem


@pytest.mark.parametrize("image", ["nginx\n", "nginx:\u00e9", "nginx:1.0\u0661"])
async def test_an_image_ending_in_a_newline_or_tagged_with_non_ascii_is_refused(
    api: Api, image: str
) -> None:
    await api.application("checkout")
    await api.service("checkout", "checkout-api")
    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions",
        {"version": "1.0.0", "owner": "team-x", "image": image},
    )
    assert code == 422 and problem["errors"][0]["loc"] == "image", problem


async def test_a_version_with_build_metadata_gets_a_valid_default_image(api: Api) -> None:
    await api.application("checkout")
    await api.service("checkout", "checkout-api")
    version = await api.version("checkout", "checkout-api", "1.0.0+build.5")
    assert version["image"] == "checkout-api:1.0.0_build.5"  # an image tag cannot hold '+'
    await api.ok(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions",
        {"version": "1.0.1", "owner": "team-x", "image": version["image"]},
    )


async def test_a_revoked_token_is_gone(api: Api) -> None:
    issued = await api.ok("POST", "/v1/tokens", {"name": "bot", "grants": [{"role": "viewer"}]})
    url = f"/v1/tokens/{issued['token']['id']}"
    assert (await api.ok("DELETE", url))["revoked_by"] == "anonymous"
    for method in ("GET", "DELETE"):
        code, problem = await api.call(method, url)
        assert code == 404 and "was revoked at" in problem["detail"], (method, problem)
        assert problem["revoked_by"] == "anonymous"
    [listed] = await api.ok("GET", "/v1/tokens")
    assert listed["revoked_at"] == problem["revoked_at"]  # still listed, for the audit trail
