"""OIDC: JWTs signed by an identity provider whose keys are served over a real socket."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import free_port
from ztdp.api import create_app, openapi_document
from ztdp.settings import Settings

ISSUER = "https://idp.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey = KEY) -> str:
    base = {"iss": ISSUER, "aud": "ztdp", "exp": int(time.time()) + 300, "sub": "alice"}
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": "k1"})


@dataclass
class Idp:
    client: TestClient  # type: ignore[type-arg]
    admin: str  # the secret of the token `admin` ZTDP created at its first start

    async def call(self, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json(content_type=None)

    async def ok(self, token: str, method: str, path: str, body: Any = None) -> Any:
        code, data = await self.call(token, method, path, body)
        assert 200 <= code < 300, (method, path, code, data)
        return data


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    """ZTDP with authentication on, accepting JWTs signed by KEY, keys served over a socket."""
    jwk = {**RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    idp_app = web.Application()
    idp_app.router.add_get("/jwks.json", jwks)
    async with TestServer(idp_app, host="127.0.0.1") as idp_server:
        settings = Settings(
            auth="on", oidc_issuer=ISSUER, oidc_jwks_url=str(idp_server.make_url("/jwks.json"))
        )
        announced: list[str] = []
        app = create_app(settings, announce=announced.append)
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            [message] = announced
            yield Idp(c, re.search(r"ztdp_\S+", message).group(0))  # type: ignore[union-attr]


@pytest.fixture
def client(idp: Idp) -> TestClient:  # type: ignore[type-arg]
    return idp.client


async def whoami(client: TestClient, token: str) -> tuple[int, Any]:  # type: ignore[type-arg]
    resp = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json(content_type=None)


async def test_a_valid_jwt_authenticates_with_its_roles(client: TestClient) -> None:  # type: ignore[type-arg]
    token = sign(
        {
            "ztdp_roles": [
                "developer:team-x",
                "approver:prod,staging",
                "ci:team-x:unit-tests,lint",
                "bogus:role",
            ]
        }
    )
    code, me = await whoami(client, token)
    assert code == 200 and me["name"] == "alice" and me["source"] == "oidc"
    assert me["principal"] == "oidc:alice"
    assert me["grants"] == [
        {"role": "developer", "team": "team-x", "environments": [], "checks": []},
        {"role": "approver", "team": None, "environments": ["prod", "staging"], "checks": []},
        {"role": "ci", "team": "team-x", "environments": [], "checks": ["unit-tests", "lint"]},
    ]
    resp = await client.post(
        "/v1/environments",
        json={"metadata": {"name": "dev", "owner": "p"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 403  # a developer is no platform-admin


@pytest.mark.parametrize(
    "token",
    [
        sign({"exp": int(time.time()) - 10}),
        sign({"aud": "someone-else"}),
        sign({"iss": "https://evil.example"}),
        sign({}, key=OTHER_KEY),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "wrong-key"],
)
async def test_an_invalid_jwt_is_401(client: TestClient, token: str) -> None:  # type: ignore[type-arg]
    code, problem = await whoami(client, token)
    assert code == 401 and "JWT" in problem["detail"]


async def test_an_unreachable_identity_provider_is_a_503_not_a_401() -> None:
    settings = Settings(
        auth="on",
        oidc_issuer=ISSUER,
        oidc_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",  # nothing listens there
    )
    app = create_app(settings, announce=lambda _: None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {sign({})}"})
        assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
        assert "identity provider" in (await resp.json())["detail"]


# --- identities in their own namespaces ----------------------------------------------------

ADMIN_ROLE = {"ztdp_roles": ["platform-admin"]}


def environment(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "owner": "platform"}}


async def test_an_oidc_subject_and_a_token_of_the_same_name_are_different_actors(
    idp: Idp,
) -> None:
    await idp.ok(idp.admin, "POST", "/v1/environments", environment("dev"))  # the token admin
    jwt_admin = sign({"sub": "admin", **ADMIN_ROLE})
    prod = await idp.ok(jwt_admin, "POST", "/v1/environments", environment("prod"))
    assert prod["metadata"]["updated_by"] == "oidc:admin"
    changes = await idp.ok(idp.admin, "GET", "/v1/changes")
    assert [c["actor"] for c in changes] == ["system:ztdp", "token:admin", "oidc:admin"]
    events = await idp.ok(idp.admin, "GET", "/v1/events?type=graph.changed")
    assert [e["actor"] for e in events] == ["system:ztdp", "token:admin", "oidc:admin"]
    tokens = await idp.ok(idp.admin, "GET", "/v1/tokens")
    assert [t["created_by"] for t in tokens] == ["system:ztdp"]


@pytest.mark.parametrize("subject", ["system:ztdp", "ztdp", "anonymous", "token:admin"])
async def test_an_oidc_subject_cannot_pose_as_another_identity(idp: Idp, subject: str) -> None:
    token = sign({"sub": subject, **ADMIN_ROLE})
    assert (await idp.ok(token, "GET", "/v1/whoami"))["principal"] == f"oidc:{subject}"
    await idp.ok(token, "POST", "/v1/environments", environment("dev"))
    changes = await idp.ok(idp.admin, "GET", "/v1/changes")
    assert [c["actor"] for c in changes] == ["system:ztdp", f"oidc:{subject}"]


@pytest.mark.parametrize(
    "claims", [{}, {"ztdp_roles": []}, {"ztdp_roles": ["bogus", "developer"]}, {"ztdp_roles": 7}]
)
async def test_a_jwt_without_a_role_is_refused_everywhere(idp: Idp, claims: dict[str, Any]) -> None:
    token = sign(claims)
    for path, item in openapi_document()["paths"].items():  # type: ignore[attr-defined]
        for method, op in item.items():
            url = re.sub(r"{\w+}", "x1", path)
            code, problem = await idp.call(token, method.upper(), url, {})
            if not op.get("security"):
                continue  # public: nobody needs a role
            assert code == 403, (method, url, code, problem)
            assert "oidc:alice has no ZTDP role" in problem["detail"]


# --- approvals name principals -------------------------------------------------------------

SUBJECT = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}
DEPLOY = "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy"


def approval(name: str, approver: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "owner": "platform"},
        "spec": {
            "policy": "prod-approval",
            "subject": SUBJECT,
            "environment": "prod",
            "approver": approver,
        },
    }


async def test_approvals_name_principals(idp: Idp) -> None:
    admin = idp.admin
    await idp.ok(admin, "POST", "/v1/environments", environment("prod"))
    await idp.ok(
        admin, "POST", "/v1/applications", {"metadata": {"name": "checkout", "owner": "team-x"}}
    )
    await idp.ok(admin, "PUT", "/v1/applications/checkout/environments/allowed", ["prod"])
    await idp.ok(
        admin,
        "POST",
        "/v1/applications/checkout/services",
        {
            "metadata": {"name": "checkout-api", "owner": "team-x"},
            "spec": {"application": "checkout"},
        },
    )
    await idp.ok(
        admin,
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions",
        {"version": "1.0.0", "owner": "team-x"},
    )
    rule = {"type": "approval", "required": 1, "approvers": ["oidc:carol", "release-bot"]}
    created = await idp.ok(
        admin,
        "POST",
        "/v1/policies",
        {
            "metadata": {"name": "prod-approval", "owner": "platform"},
            "spec": {"transition": {"environment": "prod"}, "rule": rule},
        },
    )
    # a plain name is a token's: stored as its principal
    assert created["spec"]["rule"]["approvers"] == ["oidc:carol", "token:release-bot"]

    carol = sign({"sub": "carol", "ztdp_roles": ["approver:prod", "developer:team-x"]})
    code, problem = await idp.call(carol, "POST", "/v1/approvals", approval("a0", "carol"))
    assert code == 403 and "not as token:carol" in problem["detail"]  # that is a token's name
    code, problem = await idp.call(carol, "POST", "/v1/approvals", approval("a0", "system:ztdp"))
    assert code == 422 and problem["errors"][0]["loc"] == "spec.approver"
    done = await idp.ok(carol, "POST", "/v1/approvals", approval("a1", "oidc:carol"))
    assert done["spec"]["approver"] == "oidc:carol"

    # nobody approves their own deploy, recognised by principal
    code, problem = await idp.call(carol, "POST", DEPLOY, {"environment": "prod"})
    assert code == 403
    assert "oidc:carol's own approval does not count for its own deploy" in problem["detail"]
    # a token named carol is someone else: its approval is not carol's, and not listed
    issued = await idp.ok(
        admin,
        "POST",
        "/v1/tokens",
        {"name": "carol", "grants": [{"role": "approver", "environments": ["prod"]}]},
    )
    token_carol = issued["secret"]
    assert issued["token"]["created_by"] == "token:admin"
    await idp.ok(token_carol, "POST", "/v1/approvals", approval("a2", "carol"))
    code, problem = await idp.call(carol, "POST", DEPLOY, {"environment": "prod"})
    assert code == 403 and "not listed as approvers: token:carol" in problem["detail"]
    # anyone else may deploy on oidc:carol's approval
    code, result = await idp.call(admin, "POST", DEPLOY, {"environment": "prod"})
    assert code == 202, result
    revoked = await idp.ok(admin, "DELETE", f"/v1/tokens/{issued['token']['id']}")
    assert revoked["revoked_by"] == "token:admin"
