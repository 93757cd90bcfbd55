"""The provider against a Kubernetes API over a real socket (and a real cluster, if configured)."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest
from ztdp_kubernetes import KubernetesProvider
from ztdp_kubernetes.sandbox import Sandbox

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers import Resource, Target

DESIRED = {
    "version": "1.0.0",
    "image": "ghcr.io/acme/api:1.0.0",
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
async def provider() -> Any:
    p = KubernetesProvider()
    yield p
    await p.aclose()


def target(kube: Sandbox, namespace: str) -> Target:
    return Target(
        environment="dev",
        settings={"namespace": namespace},
        defaults={"kubeconfig": kube.kubeconfig},
    )


async def test_apply_creates_namespace_deployment_and_service(
    kube: Sandbox, namespace: str, provider: Any
) -> None:
    seen = await provider.apply(resource=resource(), target=target(kube, namespace))
    dep = await kube.deployment(namespace, "api")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/api:1.0.0"
    assert container["env"] == [{"name": "LOG_LEVEL", "value": "debug"}]
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["labels"] == {
        "app.kubernetes.io/name": "api",
        "app.kubernetes.io/version": "1.0.0",
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/managed-by": "ztdp",
    }
    assert (await kube.get(f"/api/v1/namespaces/{namespace}"))[0] == 200
    code, svc = await kube.get(f"/api/v1/namespaces/{namespace}/services/api")
    assert code == 200 and svc["spec"]["ports"][0]["port"] == 8080
    assert seen.health == "Progressing" and dict(seen.state) == DESIRED


async def test_applying_twice_changes_nothing(kube: Sandbox, namespace: str, provider: Any) -> None:
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
    kube: Sandbox, namespace: str, provider: Any
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    seen = await provider.apply(
        resource=resource(version="1.1.0", image="ghcr.io/acme/api:1.1.0"), target=t
    )
    assert seen.state["image"] == "ghcr.io/acme/api:1.1.0" and seen.state["version"] == "1.1.0"


async def test_health_follows_the_deployment_status(
    kube: Sandbox, namespace: str, provider: Any
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    assert await provider.health(resource=resource(), target=t) == "Progressing"
    await kube.mark_ready(namespace, "api")
    assert await provider.health(resource=resource(), target=t) == "Ready"


async def test_drift_is_visible_in_observe_and_diff(
    kube: Sandbox, namespace: str, provider: Any
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    # someone changes the image behind ZTDP's back
    async with aiohttp.ClientSession() as s:
        await s.patch(
            f"{kube.url}/apis/apps/v1/namespaces/{namespace}/deployments/api",
            json={
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "api",
                                    "image": "evil:1",
                                    "ports": [{"containerPort": 8080}],
                                    "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                                }
                            ]
                        }
                    }
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
    seen = await provider.observe(resource=resource(), target=t)
    assert seen is not None
    changes = await provider.diff(desired=DESIRED, observed=seen.state)
    assert changes == [{"path": "image", "before": "evil:1", "after": "ghcr.io/acme/api:1.0.0"}]


async def test_delete_removes_what_ztdp_created_and_nothing_else(
    kube: Sandbox, namespace: str, provider: Any
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with aiohttp.ClientSession() as s:
        await s.post(
            f"{kube.url}/api/v1/namespaces/{namespace}/services",
            json={
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "theirs", "namespace": namespace},
            },
        )
    await provider.delete(resource=resource(), target=t)
    assert await kube.deployment(namespace, "api") is None
    assert (await kube.get(f"/api/v1/namespaces/{namespace}/services/api"))[0] == 404
    assert (await kube.get(f"/api/v1/namespaces/{namespace}/services/theirs"))[0] == 200
    await provider.delete(resource=resource(), target=t)  # idempotent


async def test_an_unreachable_cluster_is_a_temporary_error(
    tmp_path: Any, namespace: str, provider: Any
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


async def test_no_cluster_configured_is_permanent(provider: Any) -> None:
    with pytest.raises(PermanentError, match="names no cluster"):
        await provider.apply(resource=resource(), target=Target(environment="dev"))


async def test_validation_refuses_a_bad_port(provider: Any) -> None:
    with pytest.raises(PermanentError, match="port 70000"):
        await provider.validate(resource=resource(port=70000))


@pytest.mark.skipif(
    not os.environ.get("ZTDP_TEST_KUBECONFIG"), reason="ZTDP_TEST_KUBECONFIG not set"
)
async def test_the_same_scenario_on_a_real_cluster(namespace: str, provider: Any) -> None:
    t = Target(
        environment="dev",
        settings={"namespace": namespace},
        defaults={"kubeconfig": os.environ["ZTDP_TEST_KUBECONFIG"]},
    )
    try:
        seen = await provider.apply(resource=resource(), target=t)
        assert dict(seen.state) == DESIRED
        again = await provider.apply(resource=resource(), target=t)
        assert dict(again.state) == DESIRED
    finally:
        await provider.delete(resource=resource(), target=t)
