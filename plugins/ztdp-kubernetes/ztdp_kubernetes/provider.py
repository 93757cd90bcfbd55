"""A service version deployed to an environment, as a Namespace, a Deployment and a Service.

Names: a node's Deployment and Service are named `object_name(application, service)` in the
environment's namespace, so that distinct nodes never share an object. Ownership: both carry
the annotation `ztdp.io/node` with the node's id, and the provider changes or deletes only
objects whose annotation names the node at hand; a step that would touch anything else fails,
naming both nodes. Only the calls every API server honours: read, create, merge-patch with the
full desired spec, delete, list, watch.

Watches (`KubernetesProvider.watch`): for one target, the Deployments and Services labelled
`app.kubernetes.io/managed-by=ztdp` in its namespace, one list and then one watch per kind,
resumed from the last resourceVersion seen when a stream ends or breaks, listed again when that
version has expired (410 Gone); each change of an object whose `ztdp.io/node` annotation names
a node becomes a `Change` for that node.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ztdp.errors import PermanentError, TemporaryError
from ztdp.planner import diff as field_diff
from ztdp.providers import Change, Health, Observation, Provider, Resource, Target, Watching
from ztdp_kubernetes.settings import KubernetesSettings

if TYPE_CHECKING:
    from kubernetes_asyncio import client, config, watch
    from kubernetes_asyncio.client import ApiClient
    from kubernetes_asyncio.client.exceptions import ApiException
else:
    # kubernetes-asyncio takes half a second to import (its models): loaded in a thread at the
    # first call that needs a cluster (`_api`), not when ZTDP loads its plugins at start-up.
    # Until then these names are stand-ins that nothing raises or uses.
    client = config = watch = None

    class ApiException(Exception):  # replaced by kubernetes-asyncio's by `_load`
        pass

    ApiClient = None


def _load() -> None:
    """Bind kubernetes-asyncio's modules to this module's names (idempotent, thread-safe)."""
    import kubernetes_asyncio.client as real_client
    import kubernetes_asyncio.client.exceptions as exceptions
    import kubernetes_asyncio.config as real_config
    import kubernetes_asyncio.watch as real_watch

    globals().update(
        client=real_client,
        config=real_config,
        watch=real_watch,
        ApiClient=real_client.ApiClient,
        ApiException=exceptions.ApiException,
    )


_loaded = False


async def _loading() -> None:
    global _loaded
    if not _loaded:
        await asyncio.to_thread(_load)
        _loaded = True


MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
MERGE_PATCH = "application/merge-patch+json"
ANNOTATION = "ztdp.io/"
NODE = f"{ANNOTATION}node"
# The Deployment's secret references (JSON: env var -> {secret, version}), never values, so
# that observe reports them as the plan shows them; and their digest on the pod template.
SECRET_REFS = f"{ANNOTATION}secret-refs"
SECRETS_DIGEST = f"{ANNOTATION}secrets-digest"

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


def secret_refs(env: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The env vars that reference secrets, each as the plan shows it (name and version)."""
    return {k: dict(v) for k, v in env.items() if isinstance(v, Mapping) and "secret" in v}


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
    refs = secret_refs(d.get("env") or {})
    if d.get("env"):
        container["env"] = [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}}
            if k in refs
            else {"name": k, "value": str(v)}
            for k, v in sorted(d["env"].items())
        ]
    template_meta: dict[str, Any] = {"labels": labels}
    if refs:
        shown = json.dumps(refs, sort_keys=True, separators=(",", ":"))
        annotations[SECRET_REFS] = shown
        # A rotation changes a version, so the digest, so the pod template: the pods roll.
        template_meta["annotations"] = {SECRETS_DIGEST: hashlib.sha256(shown.encode()).hexdigest()}
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
                "template": {"metadata": template_meta, "spec": {"containers": [container]}},
            },
        },
    }
    if refs:
        missing = sorted(set(refs) - set(resource.secrets))
        if missing:
            raise PermanentError(
                f"{resource.node}: no value was resolved for env {', '.join(missing)} "
                "(a secret reference); refusing to deploy without it"
            )
        out["secret"] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata(),
            "data": {
                k: base64.b64encode(resource.secrets[k].encode()).decode() for k in sorted(refs)
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
    list: Callable[..., Awaitable[Any]]  # also the watch, with watch=True


def _kinds(api: ApiClient) -> tuple[_Kind, _Kind, _Kind]:
    """Deployment, Service and Secret (of the env vars referencing secrets), in that order."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    return (
        _Kind(
            "Deployment",
            "deployment",
            apps.read_namespaced_deployment,
            apps.create_namespaced_deployment,
            apps.patch_namespaced_deployment,
            apps.delete_namespaced_deployment,
            apps.list_namespaced_deployment,
        ),
        _Kind(
            "Service",
            "service",
            core.read_namespaced_service,
            core.create_namespaced_service,
            core.patch_namespaced_service,
            core.delete_namespaced_service,
            core.list_namespaced_service,
        ),
        _Kind(
            "Secret",
            "secret",
            core.read_namespaced_secret,
            core.create_namespaced_secret,
            core.patch_namespaced_secret,
            core.delete_namespaced_secret,
            core.list_namespaced_secret,
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
    # Annotations no longer wanted are removed (null), as a merge patch removes keys.
    before = seen.metadata.annotations or {}
    metadata["annotations"] = {
        **{
            k: None for k in before if k.startswith(ANNOTATION) and k not in metadata["annotations"]
        },
        **metadata["annotations"],
    }
    patch: dict[str, Any] = {"metadata": metadata}
    if "spec" in manifest:
        patch["spec"] = manifest["spec"]
    if "data" in manifest:  # a Secret: keys no longer wanted are removed
        old = getattr(seen, "data", None) or {}
        patch["data"] = {**{k: None for k in old if k not in manifest["data"]}, **manifest["data"]}
    return patch


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
    for kind in _kinds(api)[:2]:  # that scheme had no Secret
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


# --- watches ------------------------------------------------------------------------------------

SELECTOR = f"{MANAGED_BY}=ztdp"  # the objects a watch follows; the annotation then names the node
WATCH_TIMEOUT = 300.0  # seconds the API server keeps one watch request open (`timeoutSeconds`)
LIST_TIMEOUT = 60.0  # seconds a list may take
# Delays before each attempt to resume a broken watch; when they are spent, the watch fails.
RECONNECT_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0)
BUFFER = 1000  # changes waiting for the consumer; the watch stops reading when it is full
QUICK = 1.0  # seconds: a stream that ends this soon without a line counts as a failure

_Seen = tuple[str | None, str | None]  # an object's node (its annotation) and resourceVersion


@dataclass
class _Followed:
    """One kind in one namespace, as a watch knows it: every labelled object, by name."""

    kind: _Kind
    namespace: str
    version: str = ""  # the resourceVersion to resume from
    objects: dict[str, _Seen] = field(default_factory=dict)

    def where(self) -> str:
        return f"watch of {self.kind.name}s in namespace {self.namespace}"

    def _detail(self, name: str) -> str:
        return f"{self.kind.name} {name} in namespace {self.namespace}"

    def _changes(self, name: str, before: _Seen | None, after: _Seen | None) -> list[Change]:
        """What an object's change means to the nodes involved (a node sees its object come,
        change or go; an object handed from one node to another is gone for one, new for the
        other)."""
        old = before[0] if before else None
        new = after[0] if after else None
        detail = self._detail(name)
        if old is not None and old == new:
            if before == after:
                return []
            return [Change(node=new, event="modified", detail=detail)]
        out = []
        if old is not None:
            out.append(Change(node=old, event="deleted", detail=detail))
        if new is not None:
            out.append(Change(node=new, event="added", detail=detail))
        return out

    def event(self, kind: str, obj: Mapping[str, Any]) -> list[Change]:
        """A watch event: record the object's new state; the changes it means."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        if meta.get("resourceVersion"):
            self.version = str(meta["resourceVersion"])
        before = self.objects.get(name)
        if kind == "DELETED":
            self.objects.pop(name, None)
            return self._changes(name, before, None)
        after = _seen(obj)
        self.objects[name] = after
        return self._changes(name, before, after)

    def listed(self, body: Mapping[str, Any]) -> list[Change]:
        """A fresh list: record it; the changes since what was known before (the first time,
        every object is new)."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        if not version:
            raise PermanentError(
                f"{self.where()}: the API server's list answered no resourceVersion, so no "
                "watch can start from it"
            )
        objects = {
            str((obj.get("metadata") or {}).get("name")): _seen(obj)
            for obj in body.get("items") or []
        }
        changes = [
            change
            for name in sorted(objects.keys() | self.objects.keys())
            for change in self._changes(name, self.objects.get(name), objects.get(name))
        ]
        self.version, self.objects = str(version), objects
        return changes


def _seen(obj: Mapping[str, Any]) -> _Seen:
    meta = obj.get("metadata") or {}
    node = (meta.get("annotations") or {}).get(NODE)
    return (str(node) if node else None, meta.get("resourceVersion"))


async def _answer(response: Any) -> Any:
    """An unparsed response (`_preload_content=False`): its status checked, as the client's
    parsed calls check it."""
    if not 200 <= response.status < 300:
        body = await response.text()
        response.release()
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = body
        raise exc
    return response


_Item = Change | Exception  # what the streams send to the consumer: a change, or why they stopped


class _Changes:
    """The changes of one watch, as they arrive; a failure of the watch is raised here."""

    def __init__(self, receive: MemoryObjectReceiveStream[_Item]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> Change:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, Exception):
            raise item
        return item


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
    settings_model = KubernetesSettings

    def __init__(
        self,
        *,
        watch_timeout: float = WATCH_TIMEOUT,
        reconnect_delays: Sequence[float] = RECONNECT_DELAYS,
    ) -> None:
        self._clients: dict[tuple[str, str | None, bool], ApiClient] = {}
        self._lock = asyncio.Lock()
        self._watch_timeout = watch_timeout
        self._reconnect_delays = tuple(reconnect_delays)

    async def _api(self, target: Target, *, watches: bool = False) -> ApiClient:
        """The client of `target`'s cluster; watches have one of their own per cluster, with
        no limit on its connections: each watch holds two for as long as it runs, and must not
        leave applies and observations waiting for one (the client's pool holds 100)."""
        kubeconfig = target.settings.get("kubeconfig")
        if not kubeconfig:
            raise PermanentError(
                f"environment {target.environment} names no cluster: set its "
                "spec.providers.kubernetes.kubeconfig or the configured default "
                "(ZTDP_PROVIDERS__KUBERNETES__KUBECONFIG, or ZTDP_KUBECONFIG)"
            )
        key = (str(kubeconfig), target.settings.get("context"), watches)
        await _loading()
        async with self._lock:
            if key not in self._clients:
                settings = client.Configuration()
                try:
                    await config.load_kube_config(
                        config_file=key[0], context=key[1], client_configuration=settings
                    )
                except (OSError, config.ConfigException) as exc:
                    raise PermanentError(f"kubeconfig {key[0]!r} cannot be used: {exc}") from exc
                if watches:
                    settings.connection_pool_maxsize = 0  # aiohttp: no limit
                self._clients[key] = ApiClient(configuration=settings)
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
        deployments = _kinds(api)[0]
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
            "env": _observed_env(container.env or [], annotations),
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

    @asynccontextmanager
    async def watch(self, *, target: Target) -> AsyncIterator[_Changes]:
        """Changes of the Deployments and Services ZTDP manages in `target`'s namespace.

        Entering lists both kinds (raising `TemporaryError` or `PermanentError` if it cannot),
        so every change after that is reported: as a `Change` for the node the object's
        `ztdp.io/node` annotation names (both nodes if it names another one now). Objects
        without the label `app.kubernetes.io/managed-by=ztdp` are not followed. A stream that
        ends or breaks is resumed from the last resourceVersion seen; one whose version has
        expired (410 Gone) is listed again, and what differs from before is reported. When a
        stream cannot be resumed (`reconnect_delays` spent, or refused), iterating raises the
        error. Leaving the context stops both streams and closes their connections.
        """
        api = await self._api(target, watches=True)
        ns = _namespace(target)
        # Deployments and Services: a Secret follows its Deployment (its annotation).
        followed = [_Followed(kind, ns) for kind in _kinds(api)[:2]]
        for one in followed:
            one.listed(await self._list(one))  # what is there now is no change
        send, receive = anyio.create_memory_object_stream[_Item](BUFFER)
        failure: BaseException | None = None
        with send, receive:
            async with anyio.create_task_group() as tg:
                for one in followed:
                    tg.start_soon(self._follow, one, send)
                try:
                    yield _Changes(receive)
                except BaseException as exc:  # the caller's: raised below, not in a group
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _list(self, one: _Followed) -> Any:
        """The labelled objects of one kind, with the list's resourceVersion, as plain JSON."""
        try:
            response = await _answer(
                await one.kind.list(
                    one.namespace,
                    label_selector=SELECTOR,
                    _preload_content=False,
                    _request_timeout=LIST_TIMEOUT,
                )
            )
            try:
                body = await response.read()
            finally:
                response.release()
        except (TimeoutError, ApiException, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, one.where()) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TemporaryError(f"{one.where()}: the list answered no JSON: {exc}") from exc

    async def _follow(self, one: _Followed, send: MemoryObjectSendStream[_Item]) -> None:
        """Follow one kind until cancelled; a failure goes to the consumer, then this ends."""
        try:
            await self._resume(one, send)
        except Exception as exc:
            await send.send(exc)  # raised where the changes are read

    async def _resume(self, one: _Followed, send: MemoryObjectSendStream[_Item]) -> None:
        """Watch from `one.version`, again and again: at once when a stream ends, after a delay
        when it breaks (`reconnect_delays`), after listing again when its version expired."""
        failures = 0
        quick = min(QUICK, self._watch_timeout / 2)
        while True:
            started, version = anyio.current_time(), one.version
            try:
                await self._watch_once(one, send)
                if one.version != version or anyio.current_time() - started >= quick:
                    failures = 0
                    continue  # it ended, as watches do (timeoutSeconds): resume at once
                error: Exception = TemporaryError(f"{one.where()}: the stream ended at once")
            except ApiException as exc:
                if exc.status != 410:
                    error = _failure(exc, one.where())
                else:  # the version expired: list again, report what differs
                    try:
                        for change in one.listed(await self._list(one)):
                            await send.send(change)
                        failures = 0
                        continue
                    except TemporaryError as relist_failed:
                        error = relist_failed
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = _failure(exc, one.where())
            except TemporaryError as exc:
                error = exc
            if isinstance(error, PermanentError):
                raise error
            if one.version != version:  # it got somewhere before it broke
                failures = 0
            failures += 1
            if failures > len(self._reconnect_delays):
                raise TemporaryError(
                    f"{one.where()} broke and could not be resumed "
                    f"({failures - 1} attempts): {error.args[0] if error.args else error!r}",
                    retry_after=1.0,
                ) from error
            await anyio.sleep(self._reconnect_delays[failures - 1])

    async def _watch_once(self, one: _Followed, send: MemoryObjectSendStream[_Item]) -> None:
        """One watch request, from `one.version` until the stream ends.

        kubernetes-asyncio's `Watch` hands an HTTP error of the request itself (403, 503) to
        its line reader, which cannot always tell it from the stream; it is raised here.
        """

        async def checked(*args: Any, **kwargs: Any) -> Any:
            return await _answer(await one.kind.list(*args, **kwargs))

        stream = watch.Watch(return_type="object")  # events as plain JSON, not models
        try:
            async for event in stream.stream(
                checked,
                one.namespace,
                label_selector=SELECTOR,
                resource_version=one.version,
                allow_watch_bookmarks=True,
                timeout_seconds=max(1, round(self._watch_timeout)),
                _request_timeout=self._watch_timeout + 30,  # a silent dead connection ends
            ):
                if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                    raise TemporaryError(f"{one.where()}: not a watch event: {event!r:.200}")
                if event["type"] == "BOOKMARK":  # nothing changed up to its version
                    one.version = str(event["object"]["metadata"]["resourceVersion"])
                    continue
                for change in one.event(event["type"], event["object"]):
                    await send.send(change)
        finally:
            with anyio.CancelScope(shield=True):  # its session and connection, even if cancelled
                await stream.close()

    async def aclose(self) -> None:
        for api in self._clients.values():
            await api.close()
        self._clients.clear()


def _observed_env(env: Sequence[Any], annotations: Mapping[str, str]) -> dict[str, Any]:
    """The container's env as the plan shows it: a variable from a Secret as its reference
    (secret and version, from the Deployment's annotation), never the value."""
    try:
        refs = json.loads(annotations.get(SECRET_REFS) or "{}")
    except ValueError:
        refs = {}
    out: dict[str, Any] = {}
    for e in env:
        if e.value_from is not None:
            ref = e.value_from.secret_key_ref
            out[e.name] = refs.get(e.name) or {"secret": None if ref is None else ref.name}
        else:
            out[e.name] = e.value
    return out


_COMPARED = ("version", "image", "config_ref", "port", "public", "replicas", "env")

if TYPE_CHECKING:  # mypy checks that the provider implements the protocols it claims
    _provides: Provider = KubernetesProvider()
    _watches: Watching = KubernetesProvider()
