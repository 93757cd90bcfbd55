"""Small helpers that drive the HTTP API the way a client would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from ztdp.api import create_app
from ztdp.auth import MemoryTokenStore
from ztdp.graph.store import GraphStore
from ztdp.settings import Settings


class Api:
    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body, **kw)
        ctype = resp.headers.get("Content-Type", "")
        if resp.status >= 400:
            assert ctype.startswith("application/problem+json"), (resp.status, ctype)
        data = await resp.json(content_type=None)
        return resp.status, data

    async def ok(self, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        code, data = await self.call(method, path, body)
        expected = status or {"POST": 201}.get(method, 200)
        assert code == expected, (code, data)
        return data

    async def revision(self) -> int:
        return int((await self.ok("GET", "/v1/status"))["revision"])

    # the README flow, step by step
    async def environment(self, name: str) -> Any:
        return await self.ok(
            "POST",
            "/v1/environments",
            {"metadata": {"name": name, "owner": "platform-team"}, "spec": {}},
        )

    async def application(self, name: str = "checkout", owner: str = "team-x") -> Any:
        return await self.ok(
            "POST",
            "/v1/applications",
            {
                "metadata": {"name": name, "owner": owner},
                "spec": {"description": "d", "tags": ["payments"], "lifecycle": {}},
            },
        )

    async def service(self, app: str, name: str, port: int | None = 8080) -> Any:
        return await self.ok(
            "POST",
            f"/v1/applications/{app}/services",
            {
                "metadata": {"name": name, "owner": "team-x"},
                "spec": {"application": app, "port": port, "public": True},
            },
        )

    async def version(self, app: str, svc: str, version: str = "1.0.0") -> Any:
        return await self.ok(
            "POST",
            f"/v1/applications/{app}/services/{svc}/versions",
            {"version": version, "config_ref": "default-config", "owner": "team-x"},
        )

    async def deploy(self, app: str, svc: str, version: str, env: str) -> tuple[int, Any]:
        return await self.call(
            "POST",
            f"/v1/applications/{app}/services/{svc}/versions/{version}/deploy",
            {"environment": env},
        )

    async def basic(self) -> None:
        """dev and prod; checkout allowed in both; checkout-api 1.0.0."""
        await self.environment("dev")
        await self.environment("prod")
        await self.application("checkout")
        await self.ok("PUT", "/v1/applications/checkout/environments/allowed", ["dev", "prod"], 200)
        await self.service("checkout", "checkout-api")
        await self.version("checkout", "checkout-api", "1.0.0")


class Caller(Api):
    """The API as one authenticated identity."""

    def __init__(self, client: TestClient, token: str) -> None:  # type: ignore[type-arg]
        super().__init__(client)
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return await super().call(method, path, body, headers=headers, **kw)


@asynccontextmanager
async def authenticated(
    store: GraphStore, people: dict[str, list[dict[str, Any]]], settings: Settings | None = None
) -> AsyncIterator[dict[str, Caller]]:
    """The API with authentication on over `store`: `admin` and a caller per name in `people`."""
    announced: list[str] = []
    settings = (settings or Settings()).model_copy(update={"auth": "on"})
    app = create_app(settings, store=store, tokens=MemoryTokenStore(), announce=announced.append)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        found = re.search(r"ztdp_\S+", announced[0])
        assert found is not None, announced
        admin = Caller(client, found.group(0))
        callers = {"admin": admin}
        for name, grants in people.items():
            issued = await admin.ok("POST", "/v1/tokens", {"name": name, "grants": grants})
            callers[name] = Caller(client, issued["secret"])
        yield callers
