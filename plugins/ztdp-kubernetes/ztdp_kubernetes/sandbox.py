"""A local Kubernetes API sandbox: kmock's emulator on a loopback socket, plus a kubeconfig.

For tests and `ztdp demo` where no cluster exists. It is not a cluster: nothing runs and no
controller reports status, so `mark_ready` plays the Deployment controller. kmock 0.8 cannot
parse the cluster-scoped core URL `/api/v1/namespaces[/name]`; `_parse_path` fills that gap
(see tests/test_k8s_api_contract.py for every API behaviour the provider relies on).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

try:
    import kmock
    from kmock._internal import parsing
except ImportError as exc:  # pragma: no cover - only without the sandbox extra
    raise ImportError(
        "the Kubernetes sandbox needs: pip install 'ztdp-kubernetes[sandbox]'"
    ) from exc

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _original_parse_path(path)


parsing.parse_path = _parse_path  # the emulator's URL parser, extended for namespaces

MERGE_PATCH = "application/merge-patch+json"

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: sandbox, cluster: {{server: "{url}"}}}}]
users: [{{name: sandbox, user: {{token: sandbox}}}}]
contexts: [{{name: sandbox, context: {{cluster: sandbox, user: sandbox}}}}]
current-context: sandbox
"""


@dataclass
class Sandbox:
    url: str
    kubeconfig: str
    emulator: Any

    async def request(
        self, method: str, path: str, body: Any = None, *, merge: bool = False
    ) -> tuple[int, Any]:
        """A raw API call: (status, decoded JSON body)."""
        headers = {"Content-Type": MERGE_PATCH if merge else "application/json"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, json=body, headers=headers) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, body = await self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        return body if status == 200 else None

    async def deployment_of(self, namespace: str, node: str) -> dict[str, Any] | None:
        """The Deployment whose `ztdp.io/node` annotation names `node`, if any.

        Found by listing, since its name is derived from the node (see `object_name`); the
        emulator ignores label selectors, so the list is filtered here.
        """
        status, body = await self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")
        if status != 200:
            return None
        for dep in body.get("items", []):
            meta = dep.get("metadata", {})
            if meta.get("namespace") == namespace and (
                (meta.get("annotations") or {}).get("ztdp.io/node") == node
            ):
                return dict(dep)
        return None

    async def mark_ready(self, namespace: str, name: str) -> None:
        """Play the Deployment controller: report every replica available."""
        dep = await self.deployment(namespace, name)
        if dep is None:
            raise LookupError(f"no deployment {namespace}/{name}")
        replicas = dep["spec"].get("replicas", 1)
        status = {
            "status": {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "observedGeneration": dep["metadata"].get("generation", 1),
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "True"},
                ],
            }
        }
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"
        code, body = await self.request("PATCH", path, status, merge=True)
        if code != 200:
            raise RuntimeError(f"status patch of {namespace}/{name} answered {code}: {body}")


@asynccontextmanager
async def sandbox() -> AsyncIterator[Sandbox]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="ztdp-kube-") as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(KUBECONFIG.format(url=url))
            yield Sandbox(url=url, kubeconfig=str(path), emulator=emulator)
