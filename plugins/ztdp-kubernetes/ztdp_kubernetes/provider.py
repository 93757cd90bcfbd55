"""A service version deployed to an environment, as a Namespace, a Deployment and a Service.

Only the calls every API server honours: read, create, merge-patch with the full desired spec,
delete. Objects carry `app.kubernetes.io/managed-by=ztdp`; delete removes only those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from ztdp.errors import PermanentError, TemporaryError
from ztdp.planner import diff as field_diff
from ztdp.providers import Health, Observation, Resource, Target

MANAGED_BY = "app.kubernetes.io/managed-by"
MERGE_PATCH = "application/merge-patch+json"
ANNOTATION = "ztdp.io/"


def _namespace(target: Target) -> str:
    return str(target.settings.get("namespace") or target.environment)


def _labels(resource: Resource) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": resource.name,
        "app.kubernetes.io/version": str(resource.desired["version"]),
        "app.kubernetes.io/part-of": resource.application,
        MANAGED_BY: "ztdp",
    }


def manifests(resource: Resource, namespace: str) -> dict[str, dict[str, Any]]:
    """The objects ZTDP wants for a deployment node: Namespace, Deployment and maybe Service."""
    d = resource.desired
    labels = _labels(resource)
    selector = {
        "app.kubernetes.io/name": resource.name,
        "app.kubernetes.io/part-of": resource.application,
    }
    annotations = {
        f"{ANNOTATION}node": resource.node,
        f"{ANNOTATION}config-ref": str(d.get("config_ref") or ""),
        f"{ANNOTATION}public": "true" if d.get("public") else "false",
    }

    def metadata() -> dict[str, Any]:  # the Deployment's and the Service's, each its own copy
        return {
            "name": resource.name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        }

    container: dict[str, Any] = {"name": resource.name, "image": d["image"]}
    if d.get("port"):
        container["ports"] = [{"containerPort": d["port"], "name": "http"}]
    if d.get("env"):
        container["env"] = [{"name": k, "value": str(v)} for k, v in sorted(d["env"].items())]
    out: dict[str, dict[str, Any]] = {
        "namespace": {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "ztdp"}},
        },
        "deployment": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(),
            "spec": {
                "replicas": int(d.get("replicas", 1)),
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    }
    if d.get("port"):
        out["service"] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(),
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": d["port"], "targetPort": d["port"]}],
            },
        }
    return out


def _failure(exc: BaseException, where: str) -> Exception:
    """Provider errors as ZTDP's: what a retry may fix is temporary."""
    if isinstance(exc, ApiException):
        text = f"{where}: Kubernetes answered {exc.status} {exc.reason}"
        if exc.status in (429, 500, 502, 503, 504):
            return TemporaryError(text, retry_after=1.0)
        return PermanentError(f"{text}: {str(exc.body)[:300]}")
    return TemporaryError(f"{where}: cannot reach the cluster: {exc!r}", retry_after=1.0)


def _health(deployment: Any) -> tuple[Health, str]:
    want = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    available = (status.available_replicas if status else None) or 0
    for cond in (status.conditions if status else None) or []:
        if cond.type == "ReplicaFailure" and cond.status == "True":
            return "Degraded", cond.message or "replica failure"
        if cond.type == "Progressing" and cond.status == "False":
            return "Degraded", cond.message or "progress deadline exceeded"
    if available >= want:
        return "Ready", f"{available}/{want} replicas available"
    return "Progressing", f"{available}/{want} replicas available"


class KubernetesProvider:
    kind = "kubernetes"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None], ApiClient] = {}
        self._lock = asyncio.Lock()

    async def _api(self, target: Target) -> ApiClient:
        kubeconfig = target.settings.get("kubeconfig") or target.defaults.get("kubeconfig")
        if not kubeconfig:
            raise PermanentError(
                f"environment {target.environment} names no cluster: set its "
                "spec.kubernetes.kubeconfig or the ZTDP_KUBECONFIG setting"
            )
        key = (str(kubeconfig), target.settings.get("context"))
        async with self._lock:
            if key not in self._clients:
                try:
                    self._clients[key] = await config.new_client_from_config(
                        config_file=key[0], context=key[1]
                    )
                except (OSError, config.ConfigException) as exc:
                    raise PermanentError(f"kubeconfig {key[0]!r} cannot be used: {exc}") from exc
            return self._clients[key]

    async def validate(self, *, resource: Resource) -> None:
        if resource.kind != "deployment":
            raise PermanentError(
                f"{resource.node}: the kubernetes provider realises deployments only"
            )
        port = resource.desired.get("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise PermanentError(f"{resource.node}: port {port} is not in 1..65535")
        if not resource.desired.get("image"):
            raise PermanentError(f"{resource.node}: no image")

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return list(field_diff(observed, {k: desired.get(k) for k in _COMPARED}))  # type: ignore[arg-type]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        api = await self._api(target)
        ns = _namespace(target)
        wanted = manifests(resource, ns)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        try:
            await self._ensure(
                lambda: core.read_namespace(ns),
                lambda: core.create_namespace(wanted["namespace"]),
                None,
            )
            await self._ensure(
                lambda: apps.read_namespaced_deployment(resource.name, ns),
                lambda: apps.create_namespaced_deployment(ns, wanted["deployment"]),
                lambda: apps.patch_namespaced_deployment(
                    resource.name, ns, _patch(wanted["deployment"]), _content_type=MERGE_PATCH
                ),
            )
            if "service" in wanted:
                await self._ensure(
                    lambda: core.read_namespaced_service(resource.name, ns),
                    lambda: core.create_namespaced_service(ns, wanted["service"]),
                    lambda: core.patch_namespaced_service(
                        resource.name, ns, _patch(wanted["service"]), _content_type=MERGE_PATCH
                    ),
                )
            else:
                await self._delete_managed(
                    lambda: core.read_namespaced_service(resource.name, ns),
                    lambda: core.delete_namespaced_service(resource.name, ns),
                )
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc
        seen = await self.observe(resource=resource, target=target)
        assert seen is not None
        return seen

    @staticmethod
    async def _ensure(read: Any, create: Any, patch: Any) -> None:
        """Create if missing; otherwise merge-patch the full desired spec (idempotent)."""
        try:
            await read()
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                await create()
                return
            except ApiException as conflict:
                if conflict.status != 409:  # created meanwhile: patch it below
                    raise
        if patch is not None:
            await patch()

    @staticmethod
    async def _delete_managed(read: Any, delete: Any) -> None:
        try:
            obj = await read()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if (obj.metadata.labels or {}).get(MANAGED_BY) == "ztdp":
            try:
                await delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        api = await self._api(target)
        ns = _namespace(target)
        try:
            dep = await client.AppsV1Api(api).read_namespaced_deployment(resource.name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc
        container = dep.spec.template.spec.containers[0]
        annotations = dep.metadata.annotations or {}
        ports = container.ports or []
        state = {
            "version": (dep.metadata.labels or {}).get("app.kubernetes.io/version"),
            "image": container.image,
            "config_ref": annotations.get(f"{ANNOTATION}config-ref", ""),
            "port": ports[0].container_port if ports else None,
            "public": annotations.get(f"{ANNOTATION}public") == "true",
            "replicas": dep.spec.replicas if dep.spec.replicas is not None else 1,
            "env": {e.name: e.value for e in container.env or []},
        }
        health, message = _health(dep)
        return Observation(state=state, health=health, message=message)

    async def health(self, *, resource: Resource, target: Target) -> Health:
        seen = await self.observe(resource=resource, target=target)
        return "Degraded" if seen is None else seen.health

    async def delete(self, *, resource: Resource, target: Target) -> None:
        api = await self._api(target)
        ns = _namespace(target)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        try:
            await self._delete_managed(
                lambda: apps.read_namespaced_deployment(resource.name, ns),
                lambda: apps.delete_namespaced_deployment(resource.name, ns),
            )
            await self._delete_managed(
                lambda: core.read_namespaced_service(resource.name, ns),
                lambda: core.delete_namespaced_service(resource.name, ns),
            )
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc

    async def aclose(self) -> None:
        for api in self._clients.values():
            await api.close()
        self._clients.clear()


_COMPARED = ("version", "image", "config_ref", "port", "public", "replicas", "env")


def _patch(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch with the full desired metadata labels/annotations and spec."""
    meta = manifest["metadata"]
    return {
        "metadata": {"labels": meta.get("labels", {}), "annotations": meta.get("annotations", {})},
        "spec": manifest["spec"],
    }
