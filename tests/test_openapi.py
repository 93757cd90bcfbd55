"""The OpenAPI document is exact: what it says a server does is what that server does.

It depends on the server's settings (credentials, backends that can fail), describes every
operation and who may call it, and states every constraint the server enforces: each value
below is accepted by the document's schema exactly when the server accepts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from pydantic import TypeAdapter, ValidationError

from tests.helpers import Api
from ztdp.api import create_app, openapi_document
from ztdp.api.access import path_app, team
from ztdp.api.problems import BadRequest, Problem
from ztdp.api.routing import Endpoint, Reply, Router
from ztdp.api.v1 import router
from ztdp.api.v1.common import if_match
from ztdp.auth import MemoryTokenStore
from ztdp.contracts import DNS_LABEL_PATTERN
from ztdp.contracts.base import SEMVER_PATTERN
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
    assert sorted(denied) == [  # a deploy, alone or as a Deployment of a set of contracts
        "/v1/applications/{app}/services/{svc}/versions/{version}/deploy",
        "/v1/contracts",
    ]
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
    r"|Needs a ci grant|Needs an approver grant|Needs to be the approver who gave"
    r"|Who may call it depends on the body: .+\."
    r"|Each object needs what the operation writing it alone needs"
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


def test_every_operation_with_a_path_parameter_may_answer_404() -> None:
    for method, path, op in operations(FULL):
        assert ("{" in path) <= ("404" in op["responses"]), (method, path)


def test_a_route_added_later_is_described_without_writing_its_description() -> None:
    table = Router()

    @table.add(
        "DELETE",
        "/v1/things/{app}/{version}",
        "Delete a thing",
        tag="things",
        responses={204: None, 404: Problem},
        access=team("delete things", path_app),
    )
    async def delete_thing(request: web.Request, body: None) -> Reply:
        """Nothing is kept."""
        return 204, None

    for authentication in (True, False):
        doc = table.openapi(title="t", version="0", description="d", authentication=authentication)
        op = doc["paths"]["/v1/things/{app}/{version}"]["delete"]
        assert op["description"] == (
            "Delete a thing.\n\nNeeds a developer grant of the team owning the application in "
            "the path, or platform-admin (to delete things).\n\nNothing is kept."
        )
        assert op["responses"]["204"] == {"description": "No content"}
        app, version = op["parameters"]
        assert app["schema"]["pattern"] == DNS_LABEL_PATTERN
        assert version["schema"]["pattern"] == SEMVER_PATTERN
        assert ("security" in op) is authentication and ("401" in op["responses"]) is authentication


# --- the schema states what the server enforces -------------------------------------------


def endpoint(method: str, path: str) -> Endpoint:
    return next(e for e in router.endpoints if (e.method, e.path) == (method, path))


def schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": FULL["components"]}, validate_formats=True
    )
    return bool(validator.is_valid(value))


def server_accepts(method: str, path: str, body: Any) -> bool:
    """As the route's interceptor validates a body: strictly, from JSON."""
    try:
        TypeAdapter(endpoint(method, path).body).validate_json(json.dumps(body), strict=True)
    except ValidationError:
        return False
    return True


def agree(method: str, path: str, body: Any) -> None:
    schema = FULL["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
    in_schema = schema_accepts(schema["schema"], body)
    assert in_schema == server_accepts(method, path, body), (body, "schema says", in_schema)


LABELS = [
    ({"tier": "web"}, True),
    ({"example.com/tier": "web"}, True),
    ({"Tier_1.a": ""}, True),
    ({"a" * 63: "x"}, True),
    ({"a" * 64: "x"}, False),
    ({"p" * 250 + "/ab": "v"}, True),  # 253 characters
    ({"p" * 251 + "/ab": "v"}, False),
    ({"Example.com/tier": "web"}, False),
    ({"": "x"}, False),
    ({"bad key!": "x"}, False),
    ({"tier\n": "web"}, False),
    ({"tier": "web\n"}, False),
    ({"tier": "-web"}, False),
    ({"tier": "é"}, False),
    ({"tier": "a" * 63}, True),
    ({"tier": "a" * 64}, False),
]


@pytest.mark.parametrize(("labels", "valid"), LABELS)
def test_label_keys_and_values(labels: dict[str, str], valid: bool) -> None:
    body = {"metadata": {"name": "a", "owner": "t", "labels": labels}}
    assert server_accepts("POST", "/v1/applications", body) is valid
    agree("POST", "/v1/applications", body)


VERSIONS = [
    ("1.0.0", True),
    ("1.0.0-rc.1", True),
    ("1.0.0-0a.1", True),
    ("1.0.0+build.5", True),
    ("10.20.30-alpha-1+001", True),
    ("1.0.0-" + "a" * 122, True),  # 128 characters
    ("1.0.0-" + "a" * 123, False),
    ("1.0", False),
    ("01.0.0", False),
    ("1.0.0-01", False),
    ("1.0.0-", False),
    ("1.0.0+", False),
    ("1.0.0-a..b", False),
    ("1.0.0\n", False),
    ("\u0661.\u0660.\u0660", False),
    ("v1.0.0", False),
]
VERSIONS_PATH = "/v1/applications/{app}/services/{svc}/versions"


@pytest.mark.parametrize(("version", "valid"), VERSIONS)
def test_versions_are_semantic_versions(version: str, valid: bool) -> None:
    body = {"version": version, "owner": "t"}
    assert server_accepts("POST", VERSIONS_PATH, body) is valid
    agree("POST", VERSIONS_PATH, body)
    # and so are the versions in paths
    path = "/v1/applications/{app}/services/{svc}/versions/{version}"
    [param] = [p for p in FULL["paths"][path]["get"]["parameters"] if p["name"] == "version"]
    assert schema_accepts(param["schema"], version) is valid


IMAGES = [
    ("nginx", True),
    ("nginx:1.25", True),
    ("ghcr.io/acme/checkout-api:1.0.0", True),
    ("localhost:5000/a/b", True),
    ("registry:5000/a_b/c__d:Tag-1.x", True),
    ("nginx@sha256:" + "a" * 64, True),
    ("nginx:" + "a" * 128, True),
    ("nginx:" + "a" * 129, False),
    ("Nginx", False),
    ("nginx:", False),
    ("a//b", False),
    ("nginx\n", False),
    ("nginx:\u00e9", False),
    ("nginx@sha256:abc", False),
]


@pytest.mark.parametrize(("image", "valid"), IMAGES)
def test_image_references(image: str, valid: bool) -> None:
    body = {"version": "1.0.0", "owner": "t", "image": image}
    assert server_accepts("POST", VERSIONS_PATH, body) is valid
    agree("POST", VERSIONS_PATH, body)


DURATIONS = [
    ("10m", True),
    ("1h30m", True),
    ("2d", True),
    ("45s", True),
    ("1d2h3m4s", True),
    ("", False),
    ("m", False),
    ("10x", False),
    ("1m1h", False),
    ("1234567d", False),
    ("10m\n", False),
    ("\u0661\u0660m", False),
]


@pytest.mark.parametrize(("duration", "valid"), DURATIONS)
def test_durations(duration: str, valid: bool) -> None:
    rule = {"type": "promotion", "requires": ["dev"], "min_ready": duration}
    body = {"metadata": {"name": "p", "owner": "t"}, "spec": {"rule": rule}}
    assert server_accepts("POST", "/v1/policies", body) is valid
    agree("POST", "/v1/policies", body)


GRANTS = [
    ({"role": "platform-admin"}, True),
    ({"role": "viewer"}, True),
    ({"role": "viewer", "team": "x"}, True),
    ({"role": "developer", "team": "team-x"}, True),
    ({"role": "developer"}, False),  # a developer grant needs a team
    ({"role": "developer", "team": None}, False),
    ({"role": "developer", "team": "x", "checks": ["unit"]}, False),  # only ci lists checks
    ({"role": "ci", "team": "team-x", "checks": ["unit"]}, True),
    ({"role": "ci", "checks": ["unit"]}, False),  # a ci grant needs a team
    ({"role": "approver", "environments": ["prod"]}, True),
    ({"role": "approver"}, False),  # an approver grant needs environments
    ({"role": "approver", "environments": []}, False),
    ({"role": "viewer", "checks": ["unit"]}, False),
    ({"role": "viewer", "checks": []}, True),
    ({"role": "root"}, False),
    ({"team": "x"}, False),
]


@pytest.mark.parametrize(("grant", "valid"), GRANTS)
def test_grant_shapes(grant: dict[str, Any], valid: bool) -> None:
    body = {"name": "bot", "grants": [grant]}
    assert server_accepts("POST", "/v1/tokens", body) is valid
    agree("POST", "/v1/tokens", body)


IF_MATCH = [
    ('"12"', True),
    ("12", True),
    ('W/"12"', True),
    ("W/12", True),
    ("1" * 18, True),
    ("1" * 19, False),
    ('""12""', False),
    ('"12', False),
    ("\u00b2", False),
    ('W/"x"', False),
    ("", False),
]


@pytest.mark.parametrize(("value", "valid"), IF_MATCH)
def test_if_match(value: str, valid: bool) -> None:
    [param] = [
        p
        for p in FULL["paths"]["/v1/applications/{app}"]["put"]["parameters"]
        if p["in"] == "header"
    ]
    assert param["name"] == "If-Match" and schema_accepts(param["schema"], value) is valid
    request = make_mocked_request("PUT", "/", headers={"If-Match": value})
    try:
        if_match(request)
    except BadRequest:
        assert not valid
    else:
        assert valid


def test_keys_of_a_constrained_dictionary_are_constrained() -> None:
    env = FULL["components"]["schemas"]["ServiceVersionIn"]["properties"]["env"]
    assert "patternProperties" not in env
    assert env["propertyNames"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    body = {"version": "1.0.0", "owner": "t", "env": {"not a name": "x"}}
    assert not server_accepts("POST", VERSIONS_PATH, body)
    agree("POST", VERSIONS_PATH, body)


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


async def test_a_whole_number_written_with_a_fraction_is_an_integer(api: Api) -> None:
    """The schema says `integer`, which 3.0 is: JSON does not tell it from 3."""
    await api.application("checkout")
    await api.service("checkout", "checkout-api")
    url = "/v1/applications/checkout/services/checkout-api/versions"
    version = await api.ok("POST", url, {"version": "1.0.0", "owner": "team-x", "replicas": 3.0})
    assert version["replicas"] == 3
    code, problem = await api.call("POST", url, {"version": "1.0.1", "owner": "t", "replicas": 3.5})
    assert code == 422 and problem["errors"][0]["loc"] == "replicas"
    code, problem = await api.call("POST", url, {"version": "1.0.2", "owner": "t", "replicas": "3"})
    assert code == 422 and problem["errors"][0]["loc"] == "replicas"  # still no coercion
    rule = {"type": "approval", "required": 2.0}  # inside a union told apart by `type`
    policy = {"metadata": {"name": "two", "owner": "platform"}, "spec": {"rule": rule}}
    assert (await api.ok("POST", "/v1/policies", policy))["spec"]["rule"]["required"] == 2
    token = {"name": "bot", "grants": [{"role": "viewer"}], "expires_in_days": 30.0}
    assert (await api.ok("POST", "/v1/tokens", token))["token"]["name"] == "bot"


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/applications/null,null/services/schema", "path.app 'null,null' names nothing"),
        ("/v1/applications/Checkout", "DNS-1123 label"),
        ("/v1/applications/a/services/b/versions/1.x.0", "'1.x.0' is not a semantic version"),
        ("/v1/applications/a/services/b/versions/1.0", "at least 5 characters"),
    ],
)
async def test_a_path_parameter_that_breaks_its_schema_names_nothing(
    api: Api, path: str, says: str
) -> None:
    code, problem = await api.call("GET", path)
    assert code == 404 and says in problem["detail"], problem


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/applications/schema", "GET"),
        ("OPTIONS", "/v1/applications/schema", "GET"),
        ("GET", "/v1/policies/evaluate", "POST"),
        ("PUT", "/v1/policies/evaluate", "POST"),
        ("PUT", "/v1/applications/a/services/schema", "GET"),
    ],
)
async def test_a_fixed_path_does_not_fall_through_to_its_templated_sibling(
    api: Api, method: str, path: str, allow: str
) -> None:
    resp = await api.client.request(method, path, json={})
    assert resp.status == 405 and resp.headers["Allow"] == allow
    assert resp.content_type == "application/problem+json"


async def test_a_dependency_that_would_close_a_cycle_is_refused(api: Api) -> None:
    """Before, it was stored, and every later plan or deploy of the application was a 422."""
    await api.application("checkout")
    for svc in ("api", "worker", "db-proxy"):
        await api.service("checkout", svc)
    deps = "/v1/applications/checkout/services/{}/dependencies"
    await api.ok("POST", deps.format("api"), {"service": "worker"}, 200)
    await api.ok("POST", deps.format("worker"), {"service": "db-proxy"}, 200)
    code, problem = await api.call("POST", deps.format("db-proxy"), {"service": "api"})
    assert code == 422 and problem["field"] == "service", problem
    assert problem["detail"].endswith(
        "dependency cycle: checkout/db-proxy -> checkout/api -> checkout/worker -> "
        "checkout/db-proxy"
    )
    assert await api.ok("GET", deps.format("db-proxy")) == []
    assert (await api.ok("GET", "/v1/applications/checkout/plan"))["waves"]


async def test_a_policy_cannot_be_named_after_the_fixed_path_beside_it(api: Api) -> None:
    rule = {"type": "promotion", "requires": ["dev"]}
    body = {"metadata": {"name": "evaluate", "owner": "platform"}, "spec": {"rule": rule}}
    code, problem = await api.call("POST", "/v1/policies", body)
    assert code == 422 and problem["field"] == "metadata.name", problem
    assert "'evaluate' is reserved" in problem["detail"]
