"""OIDC: JWTs signed by an identity provider whose keys are served over a real socket."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import free_port
from ztdp.api import create_app
from ztdp.settings import Settings

ISSUER = "https://idp.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey = KEY) -> str:
    base = {"iss": ISSUER, "aud": "ztdp", "exp": int(time.time()) + 300, "sub": "alice"}
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    jwk = {**RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    idp = web.Application()
    idp.router.add_get("/jwks.json", jwks)
    async with TestServer(idp, host="127.0.0.1") as idp_server:
        settings = Settings(
            auth="on", oidc_issuer=ISSUER, oidc_jwks_url=str(idp_server.make_url("/jwks.json"))
        )
        app = create_app(settings, announce=lambda _: None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            yield c


async def whoami(client: TestClient, token: str) -> tuple[int, Any]:  # type: ignore[type-arg]
    resp = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json(content_type=None)


async def test_a_valid_jwt_authenticates_with_its_roles(client: TestClient) -> None:  # type: ignore[type-arg]
    token = sign({"ztdp_roles": ["developer:team-x", "approver:prod,staging", "bogus:role"]})
    code, me = await whoami(client, token)
    assert code == 200 and me["name"] == "alice" and me["source"] == "oidc"
    assert me["grants"] == [
        {"role": "developer", "team": "team-x", "environments": []},
        {"role": "approver", "team": None, "environments": ["prod", "staging"]},
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
