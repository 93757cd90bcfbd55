"""Env vars referencing secrets: a Kubernetes Secret per deployment node and `secretKeyRef`,
never a value inline; a rotation rolls the pods. Against the sandbox over its real socket."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from ztdp.errors import PermanentError
from ztdp.providers import Resource, Target
from ztdp_kubernetes import KubernetesProvider, object_name
from ztdp_kubernetes.provider import SECRET_REFS, SECRETS_DIGEST

IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")
NAME = object_name("shop", "api")


def resource(**changes: Any) -> Resource:
    desired = {
        "version": "1.0.0",
        "image": IMAGE,
        "config_ref": "",
        "port": 8080,
        "public": False,
        "replicas": 1,
    }
    return Resource(
        node="deployment/shop/api@dev",
        kind="deployment",
        name="api",
        application="shop",
        desired={**desired, **changes},
    )


@pytest.fixture
async def provider() -> AsyncIterator[KubernetesProvider]:
    p = KubernetesProvider()
    yield p
    await p.aclose()


async def gone(kube: Any, path: str) -> None:
    with anyio.fail_after(30):
        while (await kube.get(path))[0] != 404:  # noqa: ASYNC110 - polls the API server
            await anyio.sleep(0.2)


def target(kube: Any, namespace: str) -> Target:
    return Target(
        environment="dev", settings={"namespace": namespace, "kubeconfig": kube.kubeconfig}
    )


VALUE = "hunter2-only-in-the-secret"
REF = {"secret": "db-pass", "version": 1}


def with_secret(version: int = 1, value: str = VALUE, **env: Any) -> Any:
    r = resource(env={"LOG_LEVEL": "debug", "DB_PASSWORD": {**REF, "version": version}, **env})
    return replace(r, secrets={"DB_PASSWORD": value})


async def _secret(kube: Any, namespace: str) -> dict[str, Any] | None:
    code, body = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{NAME}")
    return body if code == 200 else None


async def test_a_reference_becomes_a_secret_key_ref(
    provider: KubernetesProvider,
    kube: Any,
    namespace: str,
) -> None:
    seen = await provider.apply(resource=with_secret(), target=target(kube, namespace))
    dep = await kube.deployment(namespace, NAME)
    assert dep is not None
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert env["DB_PASSWORD"] == {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": NAME, "key": "DB_PASSWORD"}},
    }
    assert VALUE not in json.dumps(dep)
    secret = await _secret(kube, namespace)
    assert secret is not None
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == VALUE
    assert secret["metadata"]["annotations"]["ztdp.io/node"] == "deployment/shop/api@dev"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ztdp"
    # observe reports the reference back, so the plan compares references: no change
    assert seen.state["env"] == {"LOG_LEVEL": "debug", "DB_PASSWORD": REF}
    assert VALUE not in json.dumps(seen.state)
    desired = with_secret().desired
    assert await provider.diff(desired=desired, observed=seen.state) == []


async def test_a_rotation_updates_the_secret_and_rolls_the_pods(
    provider: KubernetesProvider,
    kube: Any,
    namespace: str,
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=with_secret(), target=t)
    before = await kube.deployment(namespace, NAME)
    assert before is not None
    again = await provider.apply(resource=with_secret(), target=t)
    same = await kube.deployment(namespace, NAME)
    assert same is not None
    assert same["metadata"]["generation"] == before["metadata"]["generation"]  # idempotent
    await provider.apply(resource=with_secret(version=2, value="new-value-2"), target=t)
    after = await kube.deployment(namespace, NAME)
    assert after is not None
    digest = before["spec"]["template"]["metadata"]["annotations"][SECRETS_DIGEST]
    assert after["spec"]["template"]["metadata"]["annotations"][SECRETS_DIGEST] != digest
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    secret = await _secret(kube, namespace)
    assert secret is not None
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == "new-value-2"
    assert again.state["env"]["DB_PASSWORD"] == REF


async def test_no_reference_left_removes_the_secret(
    provider: KubernetesProvider,
    kube: Any,
    namespace: str,
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=with_secret(), target=t)
    seen = await provider.apply(resource=resource(env={"LOG_LEVEL": "debug"}), target=t)
    await gone(kube, f"/api/v1/namespaces/{namespace}/secrets/{NAME}")
    dep = await kube.deployment(namespace, NAME)
    assert dep is not None and SECRET_REFS not in dep["metadata"]["annotations"]
    assert seen.state["env"] == {"LOG_LEVEL": "debug"}


async def test_delete_removes_the_secret_with_the_deployment(
    provider: KubernetesProvider,
    kube: Any,
    namespace: str,
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=with_secret(), target=t)
    await provider.delete(resource=with_secret(), target=t)
    await gone(kube, f"/api/v1/namespaces/{namespace}/secrets/{NAME}")
    assert await kube.deployment(namespace, NAME) is None


async def test_a_reference_without_its_value_is_refused(
    provider: KubernetesProvider,
    kube: Any,
    namespace: str,
) -> None:
    unresolved = replace(with_secret(), secrets={})
    try:
        await provider.apply(resource=unresolved, target=target(kube, namespace))
    except PermanentError as exc:
        assert "DB_PASSWORD" in exc.detail
    else:
        raise AssertionError("applied without a value")
    assert await kube.deployment(namespace, NAME) is None
