"""The Kubernetes API the tests talk to: the sandbox over a real socket, and a real cluster.

Every test taking `kube` runs against the sandbox, and also against the cluster of
ZTDP_TEST_KUBECONFIG when that is set. Both answer the same small harness: `request`,
`get`, `deployment`, `mark_ready` (the sandbox plays the Deployment controller; a cluster's
own controller is waited for). ZTDP_TEST_IMAGE names an image the cluster can run.

Every test is strict about what it leaves behind: a task still running, or a session or
connection left open (its ResourceWarning is an error, `filterwarnings = error`), fails it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from ztdp_kubernetes.sandbox import MERGE_PATCH, sandbox

CLUSTER = os.environ.get("ZTDP_TEST_KUBECONFIG")
IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")


class Cluster:
    """The harness on a real API server, through kubernetes-asyncio's authenticated client."""

    def __init__(self, kubeconfig: str, api: ApiClient) -> None:
        self.kubeconfig, self.api = kubeconfig, api
        # An emulated "cluster" (the sandbox run on its own) has no controller to wait for.
        self.emulated = os.environ.get("ZTDP_TEST_CLUSTER_EMULATED") == "1"

    async def request(
        self, method: str, path: str, body: Any = None, *, merge: bool = False
    ) -> tuple[int, Any]:
        headers = {
            "Accept": "application/json",
            "Content-Type": MERGE_PATCH if merge else "application/json",
        }
        try:
            data, status, _ = await self.api.call_api(
                path,
                method,
                header_params=headers,
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=False,
            )
        except ApiException as exc:
            return exc.status, json.loads(exc.body) if exc.body else None
        return status, data

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        code, body = await self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        return body if code == 200 else None

    async def mark_ready(self, namespace: str, name: str) -> None:
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        if self.emulated:
            dep = await self.deployment(namespace, name)
            assert dep is not None
            n = dep["spec"].get("replicas", 1)
            status = {
                "replicas": n,
                "updatedReplicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
                "observedGeneration": dep["metadata"]["generation"],
            }
            await self.request("PATCH", path + "/status", {"status": status}, merge=True)
            return
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the cluster's controller rolls it out
            dep = await self.deployment(namespace, name)
            if dep and rolled_out(dep):
                return
            await anyio.sleep(1)
        raise AssertionError(f"deployment {namespace}/{name} never finished its rollout")


def rolled_out(dep: dict[str, Any]) -> bool:
    """`kubectl rollout status`'s test: the current generation is updated and available."""
    want = dep["spec"].get("replicas", 1)
    status = dep.get("status") or {}
    updated = status.get("updatedReplicas", 0)
    return bool(
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and updated >= want
        and status.get("replicas", 0) <= updated
        and status.get("availableReplicas", 0) >= updated
    )


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running, or sessions unclosed, behind it."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    assert not leaked, f"test leaked tasks: {leaked}"
    gc.collect()  # an unclosed aiohttp session or connector warns when it is collected


@pytest.fixture
def namespace() -> str:
    return f"ztdp-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["sandbox", *(["cluster"] if CLUSTER else [])])
async def kube(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Any]:
    if request.param == "sandbox":
        async with sandbox() as box:
            yield box
        return
    assert CLUSTER is not None
    api = await config.new_client_from_config(config_file=CLUSTER)
    cluster = Cluster(CLUSTER, api)
    try:
        yield cluster
    finally:
        for ns in (namespace, f"{namespace}-prod"):
            await cluster.request("DELETE", f"/api/v1/namespaces/{ns}")
        await api.close()
