"""Every Kubernetes API behaviour the provider relies on, checked against the API the tests use
(the sandbox, and a real cluster with ZTDP_TEST_KUBECONFIG).

If the sandbox (kmock) or a cluster stops behaving like this, these fail first and say which
behaviour is missing, rather than a provider test failing obscurely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException


async def test_namespaces_can_be_created_and_read(kube: Any, namespace: str) -> None:
    code, _ = await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    assert code in (200, 201)
    code, ns = await kube.get(f"/api/v1/namespaces/{namespace}")
    assert code == 200 and ns["metadata"]["name"] == namespace


@pytest.mark.parametrize(
    ("collection", "kind", "api", "spec"),
    [
        (
            "deployments",
            "Deployment",
            "apis/apps/v1",
            {
                "replicas": 1,
                "selector": {"matchLabels": {"a": "1"}},
                "template": {
                    "metadata": {"labels": {"a": "1"}},
                    "spec": {
                        "containers": [{"name": "c", "image": "x:1"}, {"name": "d", "image": "y:1"}]
                    },
                },
            },
        ),
        (
            "services",
            "Service",
            "api/v1",
            {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]},
        ),
    ],
)
async def test_namespaced_objects_create_read_conflict_patch_delete(
    kube: Any, namespace: str, collection: str, kind: str, api: str, spec: dict[str, Any]
) -> None:
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    base = f"/{api}/namespaces/{namespace}/{collection}"
    body = {
        "apiVersion": api.removeprefix("apis/").removeprefix("api/"),
        "kind": kind,
        "metadata": {"name": "x", "namespace": namespace, "labels": {"a": "1"}},
        "spec": spec,
    }
    assert (await kube.get(f"{base}/x"))[0] == 404  # missing reads are 404
    assert (await kube.request("POST", base, body))[0] in (200, 201)
    assert (await kube.request("POST", base, body))[0] == 409  # creating twice is a conflict
    shorter = (
        {"template": {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}}
        if kind == "Deployment"
        else {"ports": [{"port": 82, "name": "c"}]}
    )
    code, patched = await kube.request(
        "PATCH", f"{base}/x", {"spec": shorter, "metadata": {"labels": {"b": "2"}}}, merge=True
    )
    assert code == 200
    if kind == "Deployment":  # merge-patch replaces lists whole
        assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["c"]
    else:
        assert [p["port"] for p in patched["spec"]["ports"]] == [82]
    assert {"a": "1", "b": "2"}.items() <= patched["metadata"]["labels"].items()  # maps merge
    assert (await kube.request("DELETE", f"{base}/x"))[0] in (200, 202)


async def test_status_patches_merge_into_the_object(kube: Any, namespace: str) -> None:
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await kube.request(
        "POST",
        base,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"a": "1"}},
                "template": {
                    "metadata": {"labels": {"a": "1"}},
                    "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                },
            },
        },
    )
    code, _ = await kube.request(
        "PATCH", f"{base}/d/status", {"status": {"observedGeneration": 1}}, merge=True
    )
    assert code == 200
    obj = (await kube.get(f"{base}/d"))[1]
    assert obj["status"]["observedGeneration"] == 1 and obj["spec"]["replicas"] == 1


async def test_changes_carrying_a_stale_resource_version_are_refused(
    kube: Any, namespace: str, request: pytest.FixtureRequest
) -> None:
    """The provider reads an object, checks that its `ztdp.io/node` annotation names the node,
    then patches or deletes it carrying the resourceVersion it read: whatever changed it in
    between must make the API server answer 409, so the check cannot be outrun."""
    if hasattr(kube, "emulator"):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="kmock 0.8 keeps no resourceVersion: the sandbox cannot show this guard",
            )
        )
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    base = f"/api/v1/namespaces/{namespace}/services"
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x", "namespace": namespace},
        "spec": {"ports": [{"port": 80}]},
    }
    assert (await kube.request("POST", base, body))[0] in (200, 201)
    read = (await kube.get(f"{base}/x"))[1]["metadata"].get("resourceVersion")
    code, _ = await kube.request(
        "PATCH", f"{base}/x", {"metadata": {"labels": {"someone": "else"}}}, merge=True
    )
    assert code == 200

    stale = {"metadata": {"resourceVersion": read, "labels": {"a": "1"}}}
    assert (await kube.request("PATCH", f"{base}/x", stale, merge=True))[0] == 409
    preconditions = {"preconditions": {"resourceVersion": read}}
    assert (await kube.request("DELETE", f"{base}/x", preconditions))[0] == 409


async def test_a_deployments_generation_counts_changes_of_its_spec_and_annotations(
    kube: Any, namespace: str
) -> None:
    """`metadata.generation` starts at 1 and grows with each write that changes the spec or the
    annotations, never with labels or status: the provider compares it with the controller's
    `status.observedGeneration` to tell a rollout under way from a finished one."""
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": {"a": "1"}},
        "template": {
            "metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
        },
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": namespace, "generation": 7},
        "spec": spec,
    }
    code, created = await kube.request("POST", base, body)
    assert code in (200, 201) and created["metadata"]["generation"] == 1  # the client's ignored

    async def patch(path: str, change: dict[str, Any]) -> int:
        code, patched = await kube.request("PATCH", f"{base}/d{path}", change, merge=True)
        assert code == 200, patched
        generation = (await kube.get(f"{base}/d"))[1]["metadata"]["generation"]
        assert patched["metadata"]["generation"] == generation  # the answer shows it as stored
        return int(generation)

    assert await patch("", {"metadata": {"labels": {"b": "2"}}}) == 1
    assert await patch("/status", {"status": {"observedGeneration": 1, "replicas": 1}}) == 1
    assert await patch("", {"spec": spec}) == 1  # the same spec again: no change
    assert await patch("", {"spec": {"replicas": 2}}) == 2
    assert await patch("", {"metadata": {"annotations": {"c": "3"}}}) == 3
    template = {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}
    assert await patch("", {"spec": {"template": template}}) == 4


# --- watches ------------------------------------------------------------------------------------
# The provider lists the Deployments (and Services) labelled `app.kubernetes.io/managed-by=ztdp`,
# then watches them from the list's resourceVersion with kubernetes-asyncio's `Watch` (which
# asks `?watch=True`), resuming from the last version seen when a stream ends, and listing
# again when the API server answers 410 Gone.

SELECTOR = "app.kubernetes.io/managed-by=ztdp"


def deployment(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"a": "1"}},
            "template": {
                "metadata": {"labels": {"a": "1"}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]},
            },
        },
    }


@asynccontextmanager
async def api_of(kube: Any) -> AsyncIterator[client.AppsV1Api]:
    """A kubernetes-asyncio client of the API the tests use, as the provider makes one."""
    api = await config.new_client_from_config(config_file=kube.kubeconfig)
    try:
        yield client.AppsV1Api(api)
    finally:
        await api.close()


async def events(
    apps: client.AppsV1Api, namespace: str, version: str, *, until: str, **params: Any
) -> list[tuple[str, str]]:
    """(type, name) of each event of a watch from `version`, up to the first of type `until`."""
    seen: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        async with watch.Watch(return_type="object") as stream:
            async for event in stream.stream(
                apps.list_namespaced_deployment,
                namespace,
                resource_version=version,
                timeout_seconds=10,
                **params,
            ):
                seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
                if event["type"] == until:
                    return seen
    raise AssertionError(f"the watch ended before a {until} event: {seen}")


async def make_namespace(kube: Any, namespace: str) -> None:
    await kube.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )


async def test_a_list_answers_a_resource_version_even_with_nothing_in_it(
    kube: Any, namespace: str
) -> None:
    """A watch starts from a list: an environment with nothing deployed yet (its namespace
    may not even exist) lists no object, with a version to watch from."""
    async with api_of(kube) as apps:
        listed = await apps.list_namespaced_deployment(namespace, label_selector=SELECTOR)
    assert listed.items == [] and listed.metadata.resource_version


async def test_a_watch_from_a_lists_version_streams_every_later_change_from_any_client(
    kube: Any, namespace: str
) -> None:
    """Changes made after the list, by other clients and before the watch connected, then
    while it is connected, including a write to the status subresource (the controller's),
    arrive as MODIFIED and DELETED events; the object that was listed is not ADDED again."""
    await make_namespace(kube, namespace)
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    assert (await kube.request("POST", base, deployment(namespace, "d", {"m": "z"})))[0] in (
        200,
        201,
    )
    async with api_of(kube) as apps:
        version = (await apps.list_namespaced_deployment(namespace)).metadata.resource_version
        image = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}}}
        assert (await kube.request("PATCH", f"{base}/d", image, merge=True))[0] == 200

        async def later() -> None:  # while the watch is connected
            status = {"status": {"observedGeneration": 1, "replicas": 1}}
            assert (await kube.request("PATCH", f"{base}/d/status", status, merge=True))[0] == 200
            assert (await kube.request("DELETE", f"{base}/d"))[0] in (200, 202)

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            seen = await events(apps, namespace, version, until="DELETED")
    assert ("ADDED", "d") not in seen
    assert seen[0] == ("MODIFIED", "d") and seen[-1] == ("DELETED", "d")
    if hasattr(kube, "emulator"):  # a cluster's controller writes the status too
        assert seen == [("MODIFIED", "d"), ("MODIFIED", "d"), ("DELETED", "d")]


async def test_label_selectors_filter_lists_and_watches(kube: Any, namespace: str) -> None:
    """An object that gains the label is ADDED to the watch, one that loses it DELETED; the
    unlabelled one is neither listed nor streamed."""
    await make_namespace(kube, namespace)
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await kube.request("POST", base, deployment(namespace, "ours", {"m": "z"}))
    await kube.request("POST", base, deployment(namespace, "theirs", {"m": "other"}))
    async with api_of(kube) as apps:
        listed = await apps.list_namespaced_deployment(namespace, label_selector="m=z")
        assert [d.metadata.name for d in listed.items] == ["ours"]
        replicas = {"spec": {"replicas": 2}}
        assert (await kube.request("PATCH", f"{base}/theirs", replicas, merge=True))[0] == 200
        for name, label in (("theirs", "z"), ("ours", "other")):
            change = {"metadata": {"labels": {"m": label}}}
            assert (await kube.request("PATCH", f"{base}/{name}", change, merge=True))[0] == 200
        assert (await kube.request("DELETE", f"{base}/theirs"))[0] in (200, 202)
        seen = await events(
            apps,
            namespace,
            listed.metadata.resource_version,
            until="DELETED",
            label_selector="m=z",
        )
        seen += await events(
            apps,
            namespace,
            listed.metadata.resource_version,
            until="DELETED",
            label_selector="m in (z, y),m!=other,!gone",  # the same, in other words
        )
    no_status = [e for e in seen if e[0] != "MODIFIED"]
    assert no_status == [("ADDED", "theirs"), ("DELETED", "ours")] * 2


async def test_a_watch_from_an_expired_version_is_answered_410_gone(
    kube: Any, namespace: str
) -> None:
    """A version the API server no longer keeps (etcd compacts them every few minutes) is
    refused with 410 Gone; the provider then lists again. The sandbox forgets on demand;
    version 1 is long gone on any real cluster."""
    if getattr(kube, "emulated", False):
        pytest.skip("a sandbox standing in for a cluster keeps version 1")
    await make_namespace(kube, namespace)
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await kube.request("POST", base, deployment(namespace, "d", {}))
    async with api_of(kube) as apps:
        version = "1"
        if hasattr(kube, "emulator"):
            version = (await apps.list_namespaced_deployment(namespace)).metadata.resource_version
            await kube.request("PATCH", f"{base}/d", {"spec": {"replicas": 2}}, merge=True)
            kube.forget_history()
        with pytest.raises(ApiException) as gone:
            await events(apps, namespace, version, until="DELETED")
    assert gone.value.status == 410


async def test_a_watch_ends_cleanly_after_its_timeout(kube: Any, namespace: str) -> None:
    """`timeoutSeconds` ends the stream (no error); the provider resumes it at once. A real API
    server also ends watches by itself now and then."""
    async with api_of(kube) as apps:
        version = (await apps.list_namespaced_deployment(namespace)).metadata.resource_version
        with anyio.fail_after(5):
            async with watch.Watch(return_type="object") as stream:
                seen = [
                    event["type"]
                    async for event in stream.stream(
                        apps.list_namespaced_deployment,
                        namespace,
                        resource_version=version,
                        timeout_seconds=1,
                        allow_watch_bookmarks=True,
                    )
                ]
    assert set(seen) <= {"BOOKMARK"}


async def test_a_write_that_changes_nothing_keeps_the_version(kube: Any, namespace: str) -> None:
    """An apply or repair that finds everything as desired wakes no watch: its patch changes
    nothing, so the object keeps its resourceVersion and no event is streamed."""
    await make_namespace(kube, namespace)
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await kube.request("POST", base, deployment(namespace, "d", {"m": "z"}))
    before = (await kube.get(f"{base}/d"))[1]["metadata"]["resourceVersion"]
    same = {"metadata": {"labels": {"m": "z"}}, "spec": {"replicas": 1}}
    code, after = await kube.request("PATCH", f"{base}/d", same, merge=True)
    assert code == 200 and after["metadata"]["resourceVersion"] == before
