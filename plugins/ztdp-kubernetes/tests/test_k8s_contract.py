"""The provider seam's contract suite (`ztdp.testing.ProviderContract`) against the Kubernetes
provider, on the sandbox over a real socket (and a real cluster when ZTDP_TEST_KUBECONFIG is
set, see conftest.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ztdp.providers import Provider, Resource, Target
from ztdp.testing import ProviderContract
from ztdp_kubernetes import KubernetesProvider

IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")
DESIRED = {
    "version": "1.0.0",
    "image": IMAGE,
    "config_ref": "cfg",
    "port": 8080,
    "public": True,
    "replicas": 1,
    "env": {"LOG_LEVEL": "debug"},
}


def deployment(name: str, **changes: Any) -> Resource:
    return Resource(
        node=f"deployment/shop/{name}@dev",
        kind="deployment",
        name=name,
        application="shop",
        desired={**DESIRED, **changes},
    )


class TestKubernetesContract(ProviderContract):
    @pytest.fixture(autouse=True)
    def _paths(self, tmp_path: Path) -> None:
        self.tmp = tmp_path

    @pytest.fixture
    async def provider(self) -> AsyncIterator[Provider]:
        p = KubernetesProvider()
        yield p
        await p.aclose()

    @pytest.fixture
    async def target(self, kube: Any, namespace: str) -> Target:
        section = {"namespace": namespace, "kubeconfig": kube.kubeconfig}
        return Target(environment="dev", settings=section, spec=section)

    def make_resource(self, name: str) -> Resource:
        return deployment(name)

    async def unreachable_target(self) -> Target:
        kubeconfig = self.tmp / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
            "current-context: x\n"
        )
        return Target(environment="dev", settings={"kubeconfig": str(kubeconfig)})

    def invalid_resource(self) -> Resource:
        return deployment("bad", port=70000)
