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
from ztdp_kubernetes import KubernetesProvider, object_name

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


NAME = object_name("shop", "api")  # the Deployment's and Service's name for shop's api


def resource(application: str = "shop", **changes: Any) -> Resource:
    return Resource(
        node=f"deployment/{application}/api@dev",
        kind="deployment",
        name="api",
        application=application,
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
        settings={"namespace": namespace, "kubeconfig": kube.kubeconfig},
    )


async def test_apply_creates_namespace_deployment_and_service(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    seen = await provider.apply(resource=resource(), target=target(kube, namespace))
    dep = await kube.deployment(namespace, NAME)
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
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        )
    } == {
        "app.kubernetes.io/name": "api",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/version": "1.0.0",
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/managed-by": "ztdp",
    }
    assert (await kube.get(f"/api/v1/namespaces/{namespace}"))[0] == 200
    code, svc = await kube.get(f"/api/v1/namespaces/{namespace}/services/{NAME}")
    assert code == 200 and svc["spec"]["ports"][0]["port"] == 8080
    assert dict(seen.state) == DESIRED
    assert seen.health == "Progressing"  # nothing is available the moment it is created


async def test_applying_twice_changes_nothing(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    before = await kube.deployment(namespace, NAME)
    await provider.apply(resource=resource(), target=t)
    after = await kube.deployment(namespace, NAME)
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
    await kube.mark_ready(namespace, NAME)
    assert await provider.health(resource=resource(), target=t) == "Ready"


async def test_an_update_is_not_ready_before_its_new_pods_are(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Security review: with 1.0.0 rolled out, applying 1.1.0 answered Ready at once (the old
    pod was available), so the actor recorded 1.1.0 Ready and promotion trusted it although
    no 1.1.0 pod ever ran. Its image here is one no cluster can pull."""
    t = target(kube, namespace)
    await provider.apply(resource=resource(replicas=1), target=t)
    await kube.mark_ready(namespace, NAME)
    assert await provider.health(resource=resource(replicas=1), target=t) == "Ready"
    update = resource(replicas=1, version="1.1.0", image=f"{IMAGE}-next")
    seen = await provider.apply(resource=update, target=t)
    assert seen.state["version"] == "1.1.0"
    assert seen.health == "Progressing", seen.message
    if hasattr(kube, "emulator"):  # the sandbox's controller rolls out whatever it is told
        await kube.mark_ready(namespace, NAME)
        assert await provider.health(resource=update, target=t) == "Ready"


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
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}",
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
    await gone(kube, f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}")
    assert (await kube.get(f"/api/v1/namespaces/{namespace}/services/{NAME}"))[0] == 404
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
        settings={"namespace": namespace, "kubeconfig": str(kubeconfig)},
    )
    with pytest.raises(TemporaryError, match="cannot reach the cluster"):
        await provider.apply(resource=resource(), target=t)


async def test_no_cluster_configured_is_permanent(provider: KubernetesProvider) -> None:
    with pytest.raises(PermanentError, match="names no cluster"):
        await provider.apply(resource=resource(), target=Target(environment="dev"))


async def test_validation_refuses_a_bad_port(provider: KubernetesProvider) -> None:
    with pytest.raises(PermanentError, match="port 70000"):
        await provider.validate(resource=resource(port=70000))


# --- two nodes never map to one object --------------------------------------------------------

OTHER = "deployment/other/api@dev"  # the same service name in another application


async def put(kube: Any, namespace: str, kind: str, name: str, node: str | None) -> dict[str, Any]:
    """Create a Deployment or Service behind ZTDP's back, annotated for `node` (or not at all)."""
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    meta = {
        "name": name,
        "namespace": namespace,
        "labels": {"made-by": "hand"},
        "annotations": {"ztdp.io/node": node} if node else {},
    }
    if kind == "Deployment":
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"made-by": "hand"}},
                "template": {
                    "metadata": {"labels": {"made-by": "hand"}},
                    "spec": {"containers": [{"name": "theirs", "image": "theirs:1"}]},
                },
            },
        }
    else:
        path = f"/api/v1/namespaces/{namespace}/services"
        body = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"ports": [{"port": 1}]},
        }
    code, made = await kube.request("POST", path, body)
    assert code in (200, 201), made
    return dict(made)


async def read(kube: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    path = (
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        if kind == "Deployment"
        else f"/api/v1/namespaces/{namespace}/services/{name}"
    )
    code, body = await kube.get(path)
    return dict(body) if code == 200 else None


def unchanged(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    return (
        after is not None
        and after["spec"] == before["spec"]
        and after["metadata"].get("labels") == before["metadata"].get("labels")
        and after["metadata"].get("annotations") == before["metadata"].get("annotations")
    )


async def test_two_applications_with_a_service_of_the_same_name_get_objects_of_their_own(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    await provider.apply(resource=resource("other", image=f"{IMAGE}-other"), target=t)
    await provider.apply(resource=resource(version="1.1.0", image=f"{IMAGE}-next"), target=t)

    names = {object_name(app, "api") for app in ("shop", "other")}
    assert len(names) == 2
    for app, image in (("shop", f"{IMAGE}-next"), ("other", f"{IMAGE}-other")):
        name = object_name(app, "api")
        dep = await read(kube, namespace, "Deployment", name)
        svc = await read(kube, namespace, "Service", name)
        assert dep is not None and svc is not None
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image
        for obj in (dep, svc):
            assert obj["metadata"]["annotations"]["ztdp.io/node"] == f"deployment/{app}/api@dev"
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        seen = await provider.observe(resource=resource(app), target=t)
        assert seen is not None and seen.state["image"] == image


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
async def test_apply_refuses_an_object_of_another_node_and_changes_nothing(
    kube: Any, namespace: str, provider: KubernetesProvider, kind: str
) -> None:
    t = target(kube, namespace)
    before = await put(kube, namespace, kind, NAME, OTHER)

    with pytest.raises(PermanentError) as refused:
        await provider.apply(resource=resource(), target=t)

    assert refused.value.detail == (
        f"{kind} {NAME} in namespace {namespace} belongs to node {OTHER}, "
        "not deployment/shop/api@dev; refusing to change it"
    )
    assert unchanged(before, await read(kube, namespace, kind, NAME))
    other = "Service" if kind == "Deployment" else "Deployment"
    assert await read(kube, namespace, other, NAME) is None  # checked first, nothing made
    assert await provider.observe(resource=resource(), target=t) is None  # not reported as ours


async def test_apply_refuses_an_object_ztdp_did_not_make(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    before = await put(kube, namespace, "Deployment", NAME, None)
    with pytest.raises(PermanentError, match="was not made by ZTDP") as refused:
        await provider.apply(resource=resource(), target=target(kube, namespace))
    assert "deployment/shop/api@dev" in refused.value.detail
    assert unchanged(before, await read(kube, namespace, "Deployment", NAME))


async def test_drift_repair_refuses_an_object_handed_to_another_node(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    code, _ = await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}",
        {"metadata": {"annotations": {"ztdp.io/node": OTHER}}, "spec": {"replicas": 5}},
        merge=True,
    )
    assert code == 200
    before = await read(kube, namespace, "Deployment", NAME)
    assert before is not None

    assert await provider.observe(resource=resource(), target=t) is None  # missing: repair...
    with pytest.raises(PermanentError, match=f"belongs to node {OTHER}, not deployment/shop"):
        await provider.apply(resource=resource(), target=t)  # ...which the supervisor does so
    assert unchanged(before, await read(kube, namespace, "Deployment", NAME))


async def test_delete_refuses_to_delete_an_object_of_another_node(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    theirs = await put(kube, namespace, "Service", NAME, OTHER)
    await put(kube, namespace, "Deployment", NAME, "deployment/shop/api@dev")

    with pytest.raises(PermanentError) as refused:
        await provider.delete(resource=resource(), target=target(kube, namespace))

    assert refused.value.detail == (
        f"Service {NAME} in namespace {namespace} belongs to node {OTHER}, "
        "not deployment/shop/api@dev; refusing to delete it"
    )
    assert unchanged(theirs, await read(kube, namespace, "Service", NAME))
    # checked first: the node's own Deployment is not deleted either
    assert await read(kube, namespace, "Deployment", NAME) is not None


async def test_objects_named_by_the_previous_scheme_are_retired_by_their_own_node_only(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Before, objects were named after the service alone: `api` for shop's and other's."""
    t = target(kube, namespace)
    await put(kube, namespace, "Deployment", "api", "deployment/shop/api@dev")
    shared = await put(kube, namespace, "Service", "api", OTHER)  # other wrote it last

    await provider.apply(resource=resource(), target=t)

    await gone(kube, f"/apis/apps/v1/namespaces/{namespace}/deployments/api")
    assert unchanged(shared, await read(kube, namespace, "Service", "api"))
    assert await read(kube, namespace, "Deployment", NAME) is not None

    await provider.delete(resource=resource("other"), target=t)  # never applied since
    await gone(kube, f"/api/v1/namespaces/{namespace}/services/api")
