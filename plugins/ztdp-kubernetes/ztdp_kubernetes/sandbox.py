"""A local Kubernetes API sandbox: kmock's emulator on a loopback socket, plus a kubeconfig.

For tests and `ztdp demo` where no cluster exists. It is not a cluster: nothing runs and no
controller reports status, so `mark_ready` plays the Deployment controller. Two gaps of kmock 0.8
are filled here: it cannot parse the cluster-scoped core URL `/api/v1/namespaces[/name]`
(`_parse_path`), and it keeps no `metadata.generation` (`_Emulator`). See
tests/test_k8s_api_contract.py for every API behaviour the provider relies on.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

try:
    import kmock
    from kmock._internal import dicts, parsing, rendering
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


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus the `metadata.generation` of Deployments as the API server keeps it.

    The API server sets it to 1 when a Deployment is created and adds 1 on each write that
    changes its `spec` or its annotations (Kubernetes' deployment strategy; writes to the
    `status` subresource never do); the controller reports the generation it has acted on as
    `status.observedGeneration`, which is how a rollout is told from a finished one. kmock
    stores whatever it is sent, so the body of each write to a Deployment is made to carry the
    generation the API server would store, overriding any the client sent, before kmock stores
    it (kmock's record of the request shows that body). Other kinds are left as kmock keeps them.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Held from reading a Deployment to storing the write, so that no other write to it
        # comes in between and the generation computed here is the one stored.
        self._deployment_writes = asyncio.Lock()

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if (
            res is None
            or (res.group, res.plural) != ("apps", "deployments")
            or request.subresource
            or request.action not in (kmock.action.CREATE, kmock.action.UPDATE)
        ):
            return await super()._handle(request)
        async with self._deployment_writes:
            generation = self._generation(request)
            if generation is not None:
                _set_generation(request.data, generation)
            return await super()._handle(request)

    def _generation(self, request: rendering.Request) -> int | None:
        """The generation the Deployment has after `request`; None if kmock refuses it anyway."""
        if request.action == kmock.action.CREATE:
            return 1
        if request.resource is None or request.name is None:
            return None  # not a write to one object: kmock does not store it
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None  # kmock answers 404
        before = self.objects[key].raw
        after = dicts.patch_dict(copy.deepcopy(before), request.data)  # as kmock will patch
        generation = int(before.get("metadata", {}).get("generation") or 1)
        changed = after.get("spec") != before.get("spec") or (
            after.get("metadata", {}).get("annotations")
            != before.get("metadata", {}).get("annotations")
        )
        return generation + 1 if changed else generation


def _set_generation(data: Any, generation: int) -> None:
    """Make a create body, or a merge or JSON patch, set `metadata.generation` too."""
    if isinstance(data, dict):
        metadata = data.get("metadata")
        data["metadata"] = {
            **(metadata if isinstance(metadata, dict) else {}),
            "generation": generation,
        }
    elif isinstance(data, list):
        data.append({"op": "add", "path": "/metadata/generation", "value": generation})


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
        """Play the Deployment controller: report the current generation rolled out.

        Every replica updated to the current pod template and available, no old one left,
        and the generation the controller acted on (`observedGeneration`) the current one.
        """
        dep = await self.deployment(namespace, name)
        if dep is None:
            raise LookupError(f"no deployment {namespace}/{name}")
        replicas = dep["spec"].get("replicas", 1)
        status = {
            "status": {
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "observedGeneration": dep["metadata"]["generation"],
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }
        }
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"
        code, body = await self.request("PATCH", path, status, merge=True)
        if code != 200:
            raise RuntimeError(f"status patch of {namespace}/{name} answered {code}: {body}")


@asynccontextmanager
async def sandbox() -> AsyncIterator[Sandbox]:
    async with _Emulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="ztdp-kube-") as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(KUBECONFIG.format(url=url))
            yield Sandbox(url=url, kubeconfig=str(path), emulator=emulator)
