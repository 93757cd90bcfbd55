"""A service version deployed to an environment, as a Namespace, a Deployment and a Service.

Names: a node's Deployment and Service are named `object_name(application, service)` in the
environment's namespace, so that distinct nodes never share an object. Ownership: both carry
the annotation `ztdp.io/node` with the node's id, and the provider changes or deletes only
objects whose annotation names the node at hand; a step that would touch anything else fails,
naming both nodes. Only the calls every API server honours: read, create, merge-patch with the
full desired spec, delete.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from ztdp.errors import PermanentError, TemporaryError
from ztdp.planner import diff as field_diff
from ztdp.providers import Health, Observation, Resource, Target

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
MERGE_PATCH = "application/merge-patch+json"
ANNOTATION = "ztdp.io/"
NODE = f"{ANNOTATION}node"

NAME_LIMIT = 63  # a Service's name is a DNS-1035 label: at most 63 characters
HASH_CHARS = 10  # 50 bits of SHA-256, in lower-case base32 (a-z, 2-7)


def object_name(application: str, service: str) -> str:
    """The name of the Deployment and Service of `service` of `application`: a DNS-1035 label.

    `{application}-{service}`, cut to fit, then a hash of the pair: the readable part alone
    cannot tell `a-b`/`c` from `a`/`b-c`, and long names lose their ends to the cut.
    """
    digest = hashlib.sha256(f"{application}/{service}".encode()).digest()
    suffix = base64.b32encode(digest).decode().lower()[:HASH_CHARS]
    readable = f"{application}-{service}"
    if not readable[0].isalpha():  # ZTDP names may start with a digit, DNS-1035 labels not
        readable = f"z{readable}"
    return f"{readable[: NAME_LIMIT - HASH_CHARS - 1].rstrip('-')}-{suffix}"


def _namespace(target: Target) -> str:
    return str(target.settings.get("namespace") or target.environment)


def _labels(resource: Resource, name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": resource.name,
        INSTANCE: name,
        "app.kubernetes.io/version": str(resource.desired["version"]),
        "app.kubernetes.io/part-of": resource.application,
        MANAGED_BY: "ztdp",
    }


def manifests(resource: Resource, namespace: str) -> dict[str, dict[str, Any]]:
    """The objects ZTDP wants for a deployment node: Namespace, Deployment and maybe Service."""
    d = resource.desired
    name = object_name(resource.application, resource.name)
    labels = _labels(resource, name)
    # The instance label alone: unique to this node's objects, so the Service never selects
    # the Pods of a Deployment of the previous naming scheme, or of anything else.
    selector = {INSTANCE: name}
    annotations = {
        NODE: resource.node,
        f"{ANNOTATION}config-ref": str(d.get("config_ref") or ""),
        f"{ANNOTATION}public": "true" if d.get("public") else "false",
    }

    def metadata() -> dict[str, Any]:  # the Deployment's and the Service's, each its own copy
        return {
            "name": name,
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


@dataclass(frozen=True)
class _Kind:
    """One namespaced kind's calls, so that Deployments and Services pass the same checks."""

    name: str  # as Kubernetes spells the kind, for messages
    key: str  # its key in `manifests`
    read: Callable[..., Awaitable[Any]]
    create: Callable[..., Awaitable[Any]]
    patch: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[Any]]


def _kinds(api: ApiClient) -> tuple[_Kind, _Kind]:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    return (
        _Kind(
            "Deployment",
            "deployment",
            apps.read_namespaced_deployment,
            apps.create_namespaced_deployment,
            apps.patch_namespaced_deployment,
            apps.delete_namespaced_deployment,
        ),
        _Kind(
            "Service",
            "service",
            core.read_namespaced_service,
            core.create_namespaced_service,
            core.patch_namespaced_service,
            core.delete_namespaced_service,
        ),
    )


async def _read(kind: _Kind, name: str, namespace: str) -> Any | None:
    try:
        return await kind.read(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _owner(obj: Any) -> str | None:
    annotations: Mapping[str, str] = obj.metadata.annotations or {}
    return annotations.get(NODE)


def _refuse_unless_owned(kind: _Kind, obj: Any, namespace: str, node: str, verb: str) -> None:
    """Fail the step if `obj` is not `node`'s: another node's, or not made by ZTDP at all."""
    owner = _owner(obj)
    if owner == node:
        return
    what = f"{kind.name} {obj.metadata.name} in namespace {namespace}"
    if owner is None:
        raise PermanentError(
            f"{what} was not made by ZTDP (it has no {NODE} annotation), so it is not node "
            f"{node}'s; refusing to {verb} it: remove it, or annotate it {NODE}={node} to "
            "hand it over"
        )
    raise PermanentError(f"{what} belongs to node {owner}, not {node}; refusing to {verb} it")


def _patch(manifest: Mapping[str, Any], seen: Any) -> dict[str, Any]:
    """A merge patch with the full desired metadata labels/annotations and spec.

    It carries the resourceVersion that was read, so the API server refuses it (409) if the
    object changed after its owner was checked.
    """
    meta = manifest["metadata"]
    metadata = {"labels": meta.get("labels", {}), "annotations": meta.get("annotations", {})}
    if seen.metadata.resource_version:
        metadata["resourceVersion"] = seen.metadata.resource_version
    return {"metadata": metadata, "spec": manifest["spec"]}


async def _delete(kind: _Kind, obj: Any, namespace: str) -> None:
    """Delete `obj` as it was read: refused (409) if it changed after its owner was checked."""
    meta = obj.metadata
    options = {}
    if meta.resource_version or meta.uid:
        options["body"] = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                resource_version=meta.resource_version, uid=meta.uid
            )
        )
    try:
        await kind.delete(meta.name, namespace, **options)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def _retire_previous(api: ApiClient, namespace: str, resource: Resource, name: str) -> None:
    """Delete this node's objects of the previous naming scheme (the service's name alone).

    Only those whose annotation names this node: under that scheme two nodes could share an
    object, and the one named there is the last that wrote it; the other node's objects are
    its own to retire when it is applied or deleted.
    """
    previous = resource.name
    if previous == name:
        return
    for kind in _kinds(api):
        obj = await _read(kind, previous, namespace)
        if obj is not None and _owner(obj) == resource.node:
            await _delete(kind, obj, namespace)


def _failure(exc: BaseException, where: str) -> Exception:
    """Provider errors as ZTDP's: what a retry may fix is temporary."""
    if isinstance(exc, ApiException):
        text = f"{where}: Kubernetes answered {exc.status} {exc.reason}"
        if exc.status in (429, 500, 502, 503, 504):
            return TemporaryError(text, retry_after=1.0)
        if exc.status == 409:  # created or changed by someone else since it was read
            return TemporaryError(f"{text}: the object changed; reading it again", retry_after=1.0)
        return PermanentError(f"{text}: {str(exc.body)[:300]}")
    return TemporaryError(f"{where}: cannot reach the cluster: {exc!r}", retry_after=1.0)


def _health(deployment: Any) -> tuple[Health, str]:
    """Ready when `kubectl rollout status` would say the Deployment rolled out; else why not.

    Ready only once the controller has observed the current generation (the last change of
    spec or annotations) and every wanted replica runs that generation's pod template and is
    available, with no old replica left: right after an update the old pods are available, but
    the new version is not running. Until the controller observes the current generation, its
    conditions and counts describe an earlier one. Counts the API server leaves out are 0.
    """
    want = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    generation = deployment.metadata.generation
    status = deployment.status
    observed = (status.observed_generation if status else None) or 0
    if generation is not None and observed < generation:
        return "Progressing", f"waiting for the controller to observe generation {generation}"
    for cond in (status.conditions if status else None) or []:
        if cond.type == "ReplicaFailure" and cond.status == "True":
            return "Degraded", _degraded("replica failure", cond.message)
        if cond.type == "Progressing" and (
            cond.status == "False" or cond.reason == "ProgressDeadlineExceeded"
        ):
            return "Degraded", _degraded("progress deadline exceeded", cond.message)
    replicas = (status.replicas if status else None) or 0
    updated = (status.updated_replicas if status else None) or 0
    available = (status.available_replicas if status else None) or 0
    if updated < want:
        return "Progressing", f"{updated}/{want} replicas updated to the new version"
    if replicas > updated:
        return "Progressing", f"{replicas - updated} old replicas pending termination"
    if available < updated:
        return "Progressing", f"{available}/{updated} updated replicas available"
    return "Ready", f"{available}/{want} replicas updated and available"


def _degraded(rule: str, message: str | None) -> str:
    return f"{rule}: {message}" if message else rule


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
        name = object_name(resource.application, resource.name)
        wanted = manifests(resource, ns)
        try:
            # Every object this step would touch is checked before any is changed, so a
            # refusal leaves everything as it was.
            found = [(kind, await _read(kind, name, ns)) for kind in _kinds(api)]
            for kind, obj in found:
                if obj is not None and kind.key in wanted:
                    _refuse_unless_owned(kind, obj, ns, resource.node, "change")
            await self._ensure_namespace(client.CoreV1Api(api), wanted["namespace"])
            for kind, obj in found:
                if kind.key in wanted:
                    if obj is None:
                        await kind.create(ns, wanted[kind.key])
                    else:
                        await kind.patch(
                            name, ns, _patch(wanted[kind.key], obj), _content_type=MERGE_PATCH
                        )
                elif obj is not None and _owner(obj) == resource.node:  # its port was removed
                    await _delete(kind, obj, ns)
            await _retire_previous(api, ns, resource, name)
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc
        seen = await self.observe(resource=resource, target=target)
        if seen is None:  # deleted, or handed to another node, since it was applied
            raise TemporaryError(
                f"{resource.node}: Deployment {name} in namespace {ns} changed hands or "
                "vanished right after it was applied; applying again",
                retry_after=1.0,
            )
        return seen

    @staticmethod
    async def _ensure_namespace(core: client.CoreV1Api, manifest: dict[str, Any]) -> None:
        """Create the namespace if missing; it is shared, so never changed or deleted."""
        try:
            await core.read_namespace(manifest["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                await core.create_namespace(manifest)  # type: ignore[arg-type]
            except ApiException as conflict:
                if conflict.status != 409:  # created meanwhile: as good
                    raise

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        """The node's own Deployment; one that belongs to anything else counts as missing."""
        api = await self._api(target)
        ns = _namespace(target)
        deployments, _ = _kinds(api)
        try:
            dep = await _read(deployments, object_name(resource.application, resource.name), ns)
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc
        if dep is None or _owner(dep) != resource.node:
            return None
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
        name = object_name(resource.application, resource.name)
        try:
            found = [(kind, await _read(kind, name, ns)) for kind in _kinds(api)]
            for kind, obj in found:  # all checked first: a refusal deletes nothing
                if obj is not None:
                    _refuse_unless_owned(kind, obj, ns, resource.node, "delete")
            for kind, obj in found:
                if obj is not None:
                    await _delete(kind, obj, ns)
            await _retire_previous(api, ns, resource, name)
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, f"{resource.node} in namespace {ns}") from exc

    async def aclose(self) -> None:
        for api in self._clients.values():
            await api.close()
        self._clients.clear()


_COMPARED = ("version", "image", "config_ref", "port", "public", "replicas", "env")
