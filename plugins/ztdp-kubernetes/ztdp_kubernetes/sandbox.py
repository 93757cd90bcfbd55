"""A local Kubernetes API sandbox: kmock's emulator on a loopback socket, plus a kubeconfig.

For tests and `ztdp demo` where no cluster exists. It is not a cluster: nothing runs and no
controller reports status, so `mark_ready` plays the Deployment controller. Gaps of kmock 0.8
filled here: it cannot parse the cluster-scoped core URL `/api/v1/namespaces[/name]`
(`_parse_path`); it keeps no `metadata.generation` and no `metadata.resourceVersion`; it does
not know a resource before an object of it exists (a list answers 404); it ignores label
selectors; and it serves no watch to kubernetes-asyncio, which asks `watch=True` where kmock
only knows `true` (`_guess_action`), nor from a resourceVersion (`_Emulator`). See
tests/test_k8s_api_contract.py for every API behaviour the provider relies on.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import re
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import RawTestServer
from aiohttp.web_runner import ServerRunner

try:
    import kmock
    from kmock._internal import aiobus, dicts, enums, k8s, parsing, references, rendering
except ImportError as exc:  # pragma: no cover - only without the sandbox extra
    raise ImportError(
        "the Kubernetes sandbox needs: pip install 'ztdp-kubernetes[sandbox]'"
    ) from exc

_original_parse_path = parsing.parse_path
_original_guess_k8s = parsing.guess_k8s


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _original_parse_path(path)


# The values of a boolean query parameter the API server takes for true (Go's ParseBool).
TRUE = frozenset({"1", "t", "T", "true", "True", "TRUE"})


def _guess_action(
    k8s: parsing.ParsedPath, method: enums.method, query: dict[str, str]
) -> enums.action | None:
    """kmock's, except that `watch=True` (kubernetes-asyncio's spelling) is a watch too."""
    if method == enums.method.GET and k8s.group is not None and query.get("watch") in TRUE:
        return enums.action.WATCH
    return _original_guess_k8s(k8s, method, query)


parsing.parse_path = _parse_path  # the emulator's URL parser, extended for namespaces
parsing.guess_k8s = _guess_action  # and its reading of `?watch=`

MERGE_PATCH = "application/merge-patch+json"

# The resources the provider uses, known from the start as on a real API server.
RESOURCES = {
    "v1/namespaces": references.ResourceInfo(kind="Namespace", namespaced=False),
    "v1/services": references.ResourceInfo(kind="Service", namespaced=True),
    "v1/secrets": references.ResourceInfo(kind="Secret", namespaced=True),
    "apps/v1/deployments": references.ResourceInfo(
        kind="Deployment", namespaced=True, subresources={"status", "scale"}
    ),
}
VERBS = {"get", "list", "watch", "create", "patch", "delete"}


class _BadRequest(k8s.KubernetesError):
    pass


def _bad_request(message: str) -> k8s.KubernetesError:
    return _BadRequest(status=400, reason="BadRequest", message=message)


# --- label selectors ------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"""^\s*(?P<absent>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*
        (?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)
          |\s(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    """A label selector as the API server reads it: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
    `a in (x,y)`, `a notin (x,y)`, joined by commas (all must hold). Empty selects all."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Selector:
        parts, depth, start = [], 0, 0
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
        requirements: list[tuple[str, str, frozenset[str]]] = []
        for part in parts:
            if not part.strip():
                if len(parts) > 1:
                    raise ValueError(f"label selector {text!r} has an empty requirement")
                continue
            m = _REQUIREMENT.match(part)
            if m is None or (m["absent"] and (m["op"] or m["setop"])):
                raise ValueError(f"label selector {text!r}: cannot read {part.strip()!r}")
            if m["absent"]:
                requirements.append((m["key"], "!", frozenset()))
            elif m["op"]:
                op = "notin" if m["op"] == "!=" else "in"
                requirements.append((m["key"], op, frozenset({m["value"]})))
            elif m["setop"]:
                values = frozenset(v.strip() for v in m["values"].split(","))
                requirements.append((m["key"], m["setop"], values))
            else:
                requirements.append((m["key"], "exists", frozenset()))
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
        for key, op, values in self.requirements:
            present = key in labels
            ok = {
                "exists": present,
                "!": not present,
                "in": present and labels.get(key) in values,
                "notin": not present or labels.get(key) not in values,
            }[op]
            if not ok:
                return False
        return True


def _selector(request: rendering.Request) -> Selector:
    try:
        return Selector.parse(request.params.get("labelSelector", ""))
    except ValueError as exc:
        raise _bad_request(str(exc)) from exc


# --- resourceVersions and the record of changes ------------------------------------------------

ObjectKey = tuple[references.resource, str | None, str | None]


@dataclass(frozen=True)
class _Change:
    """One stored change, as a watch may replay it."""

    version: int  # the resourceVersion it gave the object
    resource: references.resource
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]  # the object after it (for DELETED: its last state)
    before: dict[str, Any] | None  # the object before it, to see it leave a label selector

    def seen_by(
        self,
        resource: references.resource | None,
        namespace: str | None,
        name: str | None,
        selector: Selector,
    ) -> dict[str, Any] | None:
        """The event a watch of `resource` (in `namespace`, of `name`, under `selector`) gets.

        As the API server's watch cache does: an object that starts matching the selector is
        ADDED, one that stops matching is DELETED (its previous state, at this version).
        """
        meta = self.obj.get("metadata") or {}
        if (
            self.resource != resource
            or (namespace is not None and meta.get("namespace") != namespace)
            or (name is not None and meta.get("name") != name)
        ):
            return None
        now = selector.matches(self.obj)
        if self.type != "MODIFIED":
            return {"type": self.type, "object": self.obj} if now else None
        was = selector.matches(self.before)
        if now:
            return {"type": "MODIFIED" if was else "ADDED", "object": self.obj}
        if was and self.before is not None:
            gone = copy.deepcopy(self.before)
            gone.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            return {"type": "DELETED", "object": gone}
        return None


def _version(obj: Mapping[str, Any] | None) -> int | None:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


class _History:
    """Every change stored, numbered as the API server numbers them (its resourceVersions).

    kmock reports each change of an object (ADDED, MODIFIED, DELETED) on a bus per resource;
    here those buses record into one sequence, so that a watch can start from any version
    still kept (`oldest` up) and resume where it broke. Older versions are forgotten, as etcd
    compacts them, and a watch from one of them is answered 410 Gone.
    """

    def __init__(self, keep: int = 10_000) -> None:
        # The last resourceVersion given out: as on a real API server, never 0, which means
        # "any version" to a watch.
        self.version = 1
        self.oldest = 1  # a watch may start from any version >= this
        self.keep = keep
        self.changes: list[_Change] = []
        self.current: dict[ObjectKey, dict[str, Any]] = {}  # each live object's last state
        self.changed = asyncio.Condition()
        self.epoch = 0  # bumped to end every open watch
        self.abort = False  # whether they end by a broken connection, or cleanly
        self.closed = False

    async def record(self, resource: references.resource, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict) or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        key = (resource, meta.get("namespace"), meta.get("name"))
        before = self.current.get(key)
        if kind == "MODIFIED" and before is not None and obj == before:
            return  # a write that changed nothing is no change (and keeps its version)
        snapshot = copy.deepcopy(obj)
        version = _version(obj)
        if version is None or version <= self.version:
            # Not stamped by `_Emulator._handle`: a deletion, or kmock's own change (it marks
            # an object with finalizers deleted). Stamp it here, and the stored object too.
            version = self.version + 1
            snapshot.setdefault("metadata", {})["resourceVersion"] = str(version)
            if kind != "DELETED" and isinstance(obj.get("metadata"), dict):
                obj["metadata"]["resourceVersion"] = str(version)
        self.version = version
        if kind == "DELETED":
            self.current.pop(key, None)
        else:
            self.current[key] = snapshot
        self.changes.append(_Change(version, resource, kind, snapshot, before))
        if len(self.changes) > 2 * self.keep:
            self.forget(len(self.changes) - self.keep)
        async with self.changed:
            self.changed.notify_all()

    def forget(self, count: int | None = None) -> None:
        """Forget the oldest `count` changes (all if None), as etcd's compaction does."""
        count = len(self.changes) if count is None else count
        if count:
            self.oldest = self.changes[count - 1].version
            del self.changes[:count]
        if count is None or not self.changes:
            self.oldest = self.version

    async def wait(self, *, after: int, epoch: int) -> None:
        """Until a change after version `after`, or until watches of `epoch` are ended."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.version > after or self.epoch != epoch)

    def since(self, version: int) -> list[_Change]:
        return self.changes[bisect.bisect_right(self.changes, version, key=lambda c: c.version) :]

    async def end_watches(self, *, abort: bool) -> None:
        self.abort = abort
        self.epoch += 1
        async with self.changed:
            self.changed.notify_all()


class _Recorder(aiobus.Bus[Any]):
    """Stands in for kmock's bus of one resource: records its changes into the history."""

    def __init__(self, history: _History, resource: references.resource) -> None:
        super().__init__()
        self.history, self.resource = history, resource

    async def put(self, *items: Any) -> None:
        for item in items:
            await self.history.record(self.resource, item)


class _Recorders(dict[references.resource, aiobus.Bus[Any]]):
    def __init__(self, history: _History) -> None:
        super().__init__()
        self.history = history

    def __missing__(self, resource: references.resource) -> aiobus.Bus[Any]:
        self[resource] = recorder = _Recorder(self.history, resource)
        return recorder


def _expired(version: int, oldest: int) -> dict[str, Any]:
    """The event a real API server sends to a watch from a version it no longer keeps."""
    return {
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {version} ({oldest})",
            "reason": "Expired",
            "code": 410,
        },
    }


def _set_metadata(data: Any, key: str, value: Any) -> None:
    """Make a create body, or a merge or JSON patch, set `metadata.<key>` too."""
    if isinstance(data, dict):
        metadata = data.get("metadata")
        data["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), key: value}
    elif isinstance(data, list):
        data.append({"op": "add", "path": f"/metadata/{key}", "value": value})


def _without_version(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus what the provider needs of a real API server that kmock lacks.

    - `metadata.generation` of Deployments as the API server keeps it: set to 1 when a
      Deployment is created, plus 1 on each write that changes its `spec` or its annotations
      (Kubernetes' deployment strategy; writes to the `status` subresource never do); the
      controller reports the generation it has acted on as `status.observedGeneration`, which
      is how a rollout is told from a finished one.
    - `metadata.resourceVersion` of every object: one counter for all, given to each write that
      changes something (a write that changes nothing keeps the version and is no event).
    - Lists answer the current resourceVersion and honour `labelSelector`.
    - Watches (`?watch=true`, or `True`, `1`...) stream one JSON line per change: from a
      `resourceVersion` (every change after it; 410 Gone, as an ERROR event, if it is older
      than the changes kept), or without one (ADDED for each object there, then the changes);
      filtered by `labelSelector` (an object entering it is ADDED, one leaving it DELETED);
      ended cleanly after `timeoutSeconds`, with a BOOKMARK first if `allowWatchBookmarks`.

    kmock stores whatever it is sent, so the body of each write is made to carry the generation
    and resourceVersion the API server would store, overriding any the client sent, before
    kmock stores it (kmock's record of the request shows that body). Writes are serialised.
    Not emulated: field selectors, `resourceVersionMatch`, paging (`limit`/`continue`), refusing
    a write that carries a stale resourceVersion (409), and periodic bookmarks.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Held from reading an object to storing the write, so that no other write to it comes
        # in between and the generation and version computed here are the ones stored; and by
        # lists and watches while they read the state and its version, so that both agree.
        self._writes = asyncio.Lock()
        self.history = _History()
        self._buses = _Recorders(self.history)
        self._watches_open = asyncio.Event()
        self._watches_open.set()
        self.watching = 0  # watch streams open now
        for key, info in RESOURCES.items():
            self.resources[key] = references.ResourceInfo(
                kind=info.kind,
                namespaced=info.namespaced,
                verbs=set(VERBS),
                subresources=set(info.subresources),
            )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
            kmock.action.DELETE,
        ):
            return await super()._handle(request)
        async with self._writes:
            res = request.resource
            if (
                (res.group, res.plural) == ("apps", "deployments")
                and not request.subresource
                and request.action != kmock.action.DELETE
            ):
                generation = self._generation(request)
                if generation is not None:
                    _set_metadata(request.data, "generation", generation)
            version = self._version(request)
            if version is not None:
                _set_metadata(request.data, "resourceVersion", str(version))
            return await super()._handle(request)

    def _stored(self, request: rendering.Request) -> dict[str, Any] | None:
        """The object a write to one object finds; None if kmock answers 404."""
        if request.resource is None or request.name is None:
            return None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return dict(self.objects[key].raw)

    def _generation(self, request: rendering.Request) -> int | None:
        """The generation the Deployment has after `request`; None if kmock refuses it anyway."""
        if request.action == kmock.action.CREATE:
            return 1
        before = self._stored(request)
        if before is None:
            return None
        after = dicts.patch_dict(copy.deepcopy(before), request.data)  # as kmock will patch
        generation = int(before.get("metadata", {}).get("generation") or 1)
        changed = after.get("spec") != before.get("spec") or (
            after.get("metadata", {}).get("annotations")
            != before.get("metadata", {}).get("annotations")
        )
        return generation + 1 if changed else generation

    def _version(self, request: rendering.Request) -> int | None:
        """The resourceVersion the object has after a create or update; None for others."""
        if request.action == kmock.action.CREATE:
            return self.history.version + 1
        if request.action != kmock.action.UPDATE or request.data is None:
            return None
        before = self._stored(request)
        if before is None:
            return None
        try:
            after = dicts.patch_dict(copy.deepcopy(before), request.data)
        except Exception:  # kmock answers the bad patch itself
            return None
        if _without_version(after) == _without_version(before):
            return _version(before)  # nothing changes: the version neither
        return self.history.version + 1

    def _known(self, request: rendering.Request) -> None:
        if request.resource not in self._get_resources():
            raise k8s.KubernetesResourceNotFoundError()

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        selector = _selector(request)
        async with self._writes:
            listed = await super()._serve_list(request)
            version = self.history.version
        assert isinstance(listed, dict)
        res = request.resource
        api_version = f"{res.group}/{res.version}".lstrip("/") if res else "v1"
        info = RESOURCES.get(f"{api_version}/{res.plural}") if res else None
        return {
            **listed,
            # what kubectl needs to read a list (kmock 0.8 leaves both out)
            "apiVersion": api_version,
            "kind": f"{info.kind}List" if info else "List",
            "metadata": {"resourceVersion": str(version)},
            "items": [obj for obj in listed["items"] if selector.matches(obj)],
        }

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """kmock's, but the core group's version is `v1`, not `/v1` (kubectl's discovery)."""
        found = await super()._serve_version(request)
        assert isinstance(found, dict)
        return {**found, "groupVersion": str(found.get("groupVersion", "")).lstrip("/")}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        self._known(request)
        selector = _selector(request)
        params = request.params
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            start = int(params["resourceVersion"]) if params.get("resourceVersion") else None
        except ValueError as exc:
            raise _bad_request(f"not a number: {exc}") from exc
        bookmarks = params.get("allowWatchBookmarks") in TRUE
        history = self.history
        await self._watches_open.wait()
        self.watching += 1
        try:
            async with self._writes:  # the state and its version, with no write in between
                last = history.version
                initial: list[dict[str, Any]] = []
                if not start:  # none, or 0 ("any"): the objects there now, then the changes
                    initial = [
                        {"type": "ADDED", "object": copy.deepcopy(obj)}
                        for (res, ns, name), obj in history.current.items()
                        if res == request.resource
                        and (request.namespace is None or ns == request.namespace)
                        and (request.name is None or name == request.name)
                        and selector.matches(obj)
                    ]
                elif start < history.oldest:
                    initial = [_expired(start, history.oldest)]
                else:
                    last = start
            yield b""  # the headers: the watch is established
            for event in initial:
                yield event
            if initial and initial[0]["type"] == "ERROR":
                return
            epoch = history.epoch
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            while not history.closed:
                try:
                    async with asyncio.timeout_at(deadline):
                        await history.wait(after=last, epoch=epoch)
                except TimeoutError:
                    if bookmarks:
                        yield _bookmark(request, last)
                    return
                if history.epoch != epoch:
                    if history.abort and request._raw_request is not None:
                        transport = request._raw_request.transport
                        if transport is not None:
                            transport.abort()
                    return
                if last < history.oldest:  # it fell behind what is kept
                    yield _expired(last, history.oldest)
                    return
                for change in history.since(last):
                    last = change.version
                    seen = change.seen_by(
                        request.resource, request.namespace, request.name, selector
                    )
                    if seen is not None:
                        yield seen
        finally:
            self.watching -= 1

    async def close_watches(self) -> None:
        """End every watch, and any that starts from now on, cleanly (before shutting down)."""
        self.history.closed = True
        self._watches_open.set()
        await self.history.end_watches(abort=False)


def _bookmark(request: rendering.Request, version: int) -> dict[str, Any]:
    res = request.resource
    info = RESOURCES.get(f"{res.group}/{res.version}/{res.plural}".lstrip("/")) if res else None
    api_version = f"{res.group}/{res.version}".lstrip("/") if res else "v1"
    return {
        "type": "BOOKMARK",
        "object": {
            "apiVersion": api_version,
            "kind": info.kind if info else "Object",
            "metadata": {"resourceVersion": str(version)},
        },
    }


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
    emulator: _Emulator

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

        Found by listing, since its name is derived from the node (see `object_name`), and
        keeping the one whose annotation names the node.
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

    async def play_controller(self, interval: float = 0.2) -> None:
        """Play the Deployment controller for good: every Deployment whose current generation
        is not reported rolled out is marked ready, as soon as it is seen (until cancelled).

        For `ztdp serve`'s sandbox, where no test is there to call `mark_ready`: a deploy then
        ends Ready, as on a cluster where the image pulls and the pods start. It polls, since
        this is the emulator's stand-in for a controller, not something to wait on."""
        while True:
            with suppress(aiohttp.ClientError, LookupError, RuntimeError):  # try again soon
                await self._roll_out_all()
            await asyncio.sleep(interval)

    async def _roll_out_all(self) -> None:
        code, namespaces = await self.get("/api/v1/namespaces")
        for ns in namespaces.get("items", []) if code == 200 else []:
            name = ns.get("metadata", {}).get("name")
            code, deployments = await self.get(f"/apis/apps/v1/namespaces/{name}/deployments")
            for dep in deployments.get("items", []) if code == 200 else []:
                meta, status = dep.get("metadata", {}), dep.get("status") or {}
                replicas = (dep.get("spec") or {}).get("replicas", 1)
                if (
                    status.get("observedGeneration") != meta.get("generation")
                    or status.get("availableReplicas") != replicas
                ):
                    await self.mark_ready(name, meta["name"])

    # --- what a real API server does to watches now and then, on demand ------------------------

    async def drop_watches(self, *, abort: bool = True) -> None:
        """End every open watch: by breaking its connection (`abort`), or as a server timeout
        does (the stream ends cleanly)."""
        await self.emulator.history.end_watches(abort=abort)

    @contextmanager
    def watches_held(self) -> Iterator[None]:
        """Leave new watch requests unanswered until the block ends: to change objects while
        no watch is connected."""
        self.emulator._watches_open.clear()
        try:
            yield
        finally:
            self.emulator._watches_open.set()

    def forget_history(self) -> None:
        """Forget every change so far, as etcd's compaction does: a watch that resumes from an
        earlier resourceVersion is answered 410 Gone."""
        self.emulator.history.forget()


class _QuietServer(RawTestServer):
    """kmock's server without an access log: a served sandbox is polled all the time."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> ServerRunner:
        return await super()._make_runner(debug=debug, access_log=None, **kwargs)


@asynccontextmanager
async def sandbox(*, controller: bool = False) -> AsyncIterator[Sandbox]:
    """A sandbox for as long as the block lasts; with `controller`, Deployments it holds are
    reported ready by themselves (`Sandbox.play_controller`), and requests are not logged."""
    server_cls = _QuietServer if controller else RawTestServer
    async with _Emulator() as emulator, kmock.Server(emulator, server_cls=server_cls) as server:
        url = str(server.url).rstrip("/")
        try:
            with tempfile.TemporaryDirectory(prefix="ztdp-kube-") as tmp:
                path = Path(tmp) / "kubeconfig"
                path.write_text(KUBECONFIG.format(url=url))
                box = Sandbox(url=url, kubeconfig=str(path), emulator=emulator)
                if not controller:
                    yield box
                    return
                # Owned by this block, and not by a TaskGroup, which would wrap whatever the
                # block raises (a failed start of the caller's) in an ExceptionGroup.
                playing = asyncio.create_task(box.play_controller())
                try:
                    yield box
                finally:
                    playing.cancel()
                    with suppress(asyncio.CancelledError):
                        await playing
        finally:
            # Open watches would hold the server's shutdown until its grace period ends.
            await emulator.close_watches()
