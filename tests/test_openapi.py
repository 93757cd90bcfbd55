"""The OpenAPI document is exact: what it says a server does is what that server does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import Api

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
