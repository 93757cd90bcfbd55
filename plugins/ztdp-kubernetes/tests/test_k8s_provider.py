"""The provider against a Kubernetes API over a real socket: the sandbox, and a real cluster
when ZTDP_TEST_KUBECONFIG is set (see conftest.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers import Resource, Target
from ztdp_kubernetes import KubernetesProvider

# An image the cluster can run (only a real cluster pulls it); conftest.py says the same.
IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")

DESIRED = {
    "version": "1.0.0",
    "image": IMAGE,
    "config_ref": "cfg",
    "port": 8080,
    "public": True,
    "replicas": 2,
    "env": {"LOG_LEVEL": "debug"},
}


def resource(**changes: Any) -> Resource:
    return Resource(
        node="deployment/shop/api@dev",
        kind="deployment",
        name="api",
        application="shop",
        desired={**DESIRED, **changes},
    )


@pytest.fixture
async def provider() -> AsyncIterator[KubernetesProvider]:
    p = KubernetesProvider()
    yield p
    await p.aclose()


async def gone(kube: Any, path: str) -> None:
    """Wait until a deleted object is gone (a real API server deletes in the background)."""
    with anyio.fail_after(30):
        while (await kube.get(path))[0] != 404:  # noqa: ASYNC110 - polls the API server
            await anyio.sleep(0.2)


def target(kube: Any, namespace: str) -> Target:
    return Target(
        environment="dev",
        settings={"namespace": namespace},
        defaults={"kubeconfig": kube.kubeconfig},
    )


async def test_apply_creates_namespace_deployment_and_service(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    seen = await provider.apply(resource=resource(), target=target(kube, namespace))
    dep = await kube.deployment(namespace, "api")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["env"] == [{"name": "LOG_LEVEL", "value": "debug"}]
    assert dep["spec"]["replicas"] == 2
    labels = dep["metadata"]["labels"]
    assert {
        k: labels[k]
        for k in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/version",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        )
    } == {
        "app.kubernetes.io/name": "api",
        "app.kubernetes.io/version": "1.0.0",
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/managed-by": "ztdp",
    }
    assert (await kube.get(f"/api/v1/namespaces/{namespace}"))[0] == 200
    code, svc = await kube.get(f"/api/v1/namespaces/{namespace}/services/api")
    assert code == 200 and svc["spec"]["ports"][0]["port"] == 8080
    assert dict(seen.state) == DESIRED
    assert seen.health == "Progressing"  # nothing is available the moment it is created


async def test_applying_twice_changes_nothing(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    before = await kube.deployment(namespace, "api")
    await provider.apply(resource=resource(), target=t)
    after = await kube.deployment(namespace, "api")
    assert before is not None and after is not None
    assert (
        after["spec"] == before["spec"]
        and after["metadata"]["labels"] == before["metadata"]["labels"]
    )


async def test_an_update_patches_the_image_and_version(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    seen = await provider.apply(resource=resource(version="1.1.0", image=f"{IMAGE}-next"), target=t)
    assert seen.state["image"] == f"{IMAGE}-next" and seen.state["version"] == "1.1.0"


async def test_health_follows_the_deployment_status(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(replicas=1), target=t)
    assert await provider.health(resource=resource(), target=t) == "Progressing"
    await kube.mark_ready(namespace, "api")
    assert await provider.health(resource=resource(), target=t) == "Ready"


async def test_drift_is_visible_in_observe_and_diff(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    # someone changes the image behind ZTDP's back
    container = {
        "name": "api",
        "image": "evil:1",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
    }
    code, _ = await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/api",
        {"spec": {"template": {"spec": {"containers": [container]}}}},
        merge=True,
    )
    assert code == 200
    seen = await provider.observe(resource=resource(), target=t)
    assert seen is not None
    changes = await provider.diff(desired=DESIRED, observed=seen.state)
    assert changes == [{"path": "image", "before": "evil:1", "after": IMAGE}]


async def test_delete_removes_what_ztdp_created_and_nothing_else(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    code, _ = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "theirs", "namespace": namespace},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    assert code in (200, 201)
    await provider.delete(resource=resource(), target=t)
    await gone(kube, f"/apis/apps/v1/namespaces/{namespace}/deployments/api")
    assert (await kube.get(f"/api/v1/namespaces/{namespace}/services/api"))[0] == 404
    assert (await kube.get(f"/api/v1/namespaces/{namespace}/services/theirs"))[0] == 200
    await provider.delete(resource=resource(), target=t)  # idempotent


async def test_an_unreachable_cluster_is_a_temporary_error(
    tmp_path: Any, namespace: str, provider: KubernetesProvider
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    t = Target(
        environment="dev",
        settings={"namespace": namespace},
        defaults={"kubeconfig": str(kubeconfig)},
    )
    with pytest.raises(TemporaryError, match="cannot reach the cluster"):
        await provider.apply(resource=resource(), target=t)


async def test_no_cluster_configured_is_permanent(provider: KubernetesProvider) -> None:
    with pytest.raises(PermanentError, match="names no cluster"):
        await provider.apply(resource=resource(), target=Target(environment="dev"))


async def test_validation_refuses_a_bad_port(provider: KubernetesProvider) -> None:
    with pytest.raises(PermanentError, match="port 70000"):
        await provider.validate(resource=resource(port=70000))
