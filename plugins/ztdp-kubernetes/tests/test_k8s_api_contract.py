"""Every Kubernetes API behaviour the provider relies on, checked against the API the tests use.

If the sandbox (kmock) or a cluster stops behaving like this, these fail first and say which
behaviour is missing, rather than a provider test failing obscurely.
"""

from __future__ import annotations

import aiohttp
import pytest
from ztdp_kubernetes.sandbox import Sandbox

MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_namespaces_can_be_created_and_read(kube: Sandbox, namespace: str) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{kube.url}/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        assert r.status in (200, 201)
        r = await s.get(f"{kube.url}/api/v1/namespaces/{namespace}")
        assert r.status == 200 and (await r.json())["metadata"]["name"] == namespace


@pytest.mark.parametrize(
    ("collection", "kind", "api"),
    [
        ("deployments", "Deployment", "apis/apps/v1"),
        ("services", "Service", "api/v1"),
    ],
)
async def test_namespaced_objects_create_read_conflict_patch_delete(
    kube: Sandbox, namespace: str, collection: str, kind: str, api: str
) -> None:
    base = f"{kube.url}/{api}/namespaces/{namespace}/{collection}"
    body = {
        "apiVersion": api.removeprefix("apis/").removeprefix("api/"),
        "kind": kind,
        "metadata": {"name": "x", "namespace": namespace, "labels": {"a": "1"}},
        "spec": {"k": [1, 2]},
    }
    async with aiohttp.ClientSession() as s:
        assert (await s.get(f"{base}/x")).status == 404  # missing reads are 404
        assert (await s.post(base, json=body)).status in (200, 201)
        assert (await s.post(base, json=body)).status == 409  # creating twice is a conflict
        r = await s.patch(
            f"{base}/x",
            json={"spec": {"k": [3]}, "metadata": {"labels": {"b": "2"}}},
            headers=MERGE,
        )
        patched = await r.json()
        assert r.status == 200 and patched["spec"]["k"] == [3]  # merge-patch replaces lists whole
        assert patched["metadata"]["labels"] == {"a": "1", "b": "2"}  # and merges maps
        assert (await s.delete(f"{base}/x")).status == 200
        assert (await s.get(f"{base}/x")).status == 404


async def test_status_patches_merge_into_the_object(kube: Sandbox, namespace: str) -> None:
    base = f"{kube.url}/apis/apps/v1/namespaces/{namespace}/deployments"
    async with aiohttp.ClientSession() as s:
        await s.post(
            base,
            json={
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": namespace},
                "spec": {"replicas": 1},
            },
        )
        await s.patch(f"{base}/d/status", json={"status": {"availableReplicas": 1}}, headers=MERGE)
        obj = await (await s.get(f"{base}/d")).json()
    assert obj["status"]["availableReplicas"] == 1 and obj["spec"]["replicas"] == 1
