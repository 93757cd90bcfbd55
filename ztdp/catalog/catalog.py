"""The catalog: every operation on declared intent, as one validated, atomic graph write.

Each write reads the graph, validates the change against it (parents exist, names are free,
policy allows), and commits one batch guarded by the revision it read. If another process
wrote in between, the store refuses the batch and the write is validated again from the new
graph, so a rule checked is a rule that still holds when the batch lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, Field

from ztdp.catalog import deletion
from ztdp.catalog.actor import current_actor
from ztdp.catalog.deletion import Removal
from ztdp.catalog.guard import check_changes, check_write
from ztdp.contracts import (
    Application,
    Approval,
    Check,
    Environment,
    Policy,
    Resource,
    ResourceType,
    Service,
    ServiceVersion,
    ServiceVersionIn,
)
from ztdp.contracts.base import Envelope
from ztdp.contracts.models import ExpressionRule
from ztdp.errors import AlreadyExists, Conflict, InvalidInput, NotFound, PolicyDenied, StaleRevision
from ztdp.events import EventBus, make_change_event, make_event
from ztdp.events.store import EventStore
from ztdp.graph import (
    DeleteEdge,
    DeleteNode,
    EdgeType,
    Graph,
    NodeKind,
    Op,
    PutEdge,
    PutNode,
    node_id,
    op_from_json,
    op_to_json,
)
from ztdp.graph.store import Change, GraphStore
from ztdp.graph.store.memory import LOG_MAX_LENGTH, MemoryGraphStore
from ztdp.planner import (
    Desired,
    Plan,
    SecretsSeen,
    desired_application,
    desired_in_environment,
    make_plan,
)
from ztdp.policy import (
    Decision,
    HealthOf,
    Transition,
    allowed_environments,
    compile_expression,
    evaluate,
)
from ztdp.state import ObservedResource, StateStore

T = TypeVar("T")
E = TypeVar("E", bound=Envelope)

RETRY_PAUSE = 0.002  # seconds: the first pause before a graph write tries again, doubling


class Deployment(BaseModel):
    application: str
    service: str
    version: str
    environment: str
    image: str
    status: str = Field(
        default="Pending", description="Pending until a runtime realises it (see docs/decisions.md)"
    )
    reason: str | None = Field(
        default=None,
        description="why it has its status, e.g. the error that failed it or the failed step "
        "that blocks it; the provider's message otherwise",
    )
    since: datetime | None = Field(default=None, description="when it took its current status")


class DeployResult(BaseModel):
    deployment: Deployment
    decision: Decision


class Dependent(BaseModel):
    node: str
    why: str


@dataclass
class Removed:
    """What a delete removed (or, as a dry run, would remove), and what the runtime needs
    to realise it: the applications it touched, the environments, the graph after it."""

    deleted: list[str]  # graph nodes deleted
    unlinked: list[str]  # edges removed on their own, "source -type-> target"
    dependents: list[Dependent]  # what a cascade took with it
    revision: int | None  # the graph revision of the delete; None for a dry run
    dry_run: bool = False
    applications: set[str] = field(default_factory=set)
    environments: list[str] = field(default_factory=list)
    after: Graph | None = None
    # environments the delete removes, as they were: where their objects are to be deleted
    former_environments: dict[str, dict[str, Any]] = field(default_factory=dict)


class Linked(NamedTuple):
    """A linked resource, and whether this request made the link (201) or found it (200)."""

    resource: dict[str, Any]
    created: bool


def _stamp(model: E, revision: int) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=True)
    if data["metadata"]["owner"] is None:  # a caller that did not resolve it: never store none
        raise InvalidInput(
            f"metadata.owner: {model.kind} {model.metadata.name} must name its owner",
            field="metadata.owner",
        )
    data["metadata"]["revision"] = revision
    data["metadata"]["updated_by"] = current_actor()
    return data


def _checked(env: Environment) -> None:
    """Refuse an environment whose rules between fields its model cannot state."""
    conflict = env.spec.conflict()
    if conflict is not None:
        raise InvalidInput(conflict, field="spec.kubernetes")


def _owned(model: E, owner_of: dict[str, Any]) -> E:
    """`model`, owned by `owner_of`'s owner if it names none: a service's application, or the
    stored object an update replaces."""
    if model.metadata.owner is not None:
        return model
    meta = model.metadata.model_copy(update={"owner": owner_of["metadata"]["owner"]})
    return model.model_copy(update={"metadata": meta})


def _name(nid: str) -> str:
    return nid.rsplit("/", 1)[1]


# The secrets a plan of some applications in an environment sees (set by the runtime).
SecretsSource = Callable[[Collection[str], str], Awaitable[SecretsSeen]]


def _where_allowed(
    graph: Graph,
    environment: str,
    apps: Sequence[str],
    desired: dict[str, Desired],
    observed: Mapping[str, Any],
) -> dict[str, Desired]:
    """What `POST /v1/apply?env=E` realises: an application's resources only where it may
    be (no allowed environments: anywhere), unless a deployment there uses them or they
    exist there already: an allowed list that shrinks stops new creations, it never
    deletes a database (delete the resource for that)."""
    refused = {
        owned
        for app in apps
        if (allowed := allowed_environments(graph, app)) and environment not in allowed
        for owned in graph.out(node_id(NodeKind.APPLICATION, app), EdgeType.OWNS)
    }
    used = {dep for d in desired.values() if d.kind == "deployment" for dep in d.depends_on}
    return {
        nid: d
        for nid, d in desired.items()
        if d.kind != "resource" or d.source not in refused or nid in used or nid in observed
    }


class Catalog:
    def __init__(
        self,
        store: GraphStore,
        state: StateStore,
        *,
        write_retries: int = 8,
        events: EventBus | None = None,
        event_store: EventStore | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._event_store = event_store
        self._graph_id: str | None = None
        self._state = state
        self._retries = write_retries
        self._lock = asyncio.Lock()  # one writer per process; other processes via revisions
        # Set by the runtime: the installed providers validate an environment's sections.
        self.check_environment: Callable[[Environment], None] | None = None
        # Set by the runtime: what plans show of secrets (versions, injected outputs).
        self.secrets_seen: SecretsSource | None = None

    async def _secrets(self, applications: Collection[str], environment: str) -> SecretsSeen:
        if self.secrets_seen is None or not applications:
            return SecretsSeen()
        return await self.secrets_seen(applications, environment)

    async def graph(self) -> Graph:
        return await self._store.read()

    async def scratch(self) -> Catalog:
        """A catalog over a copy of the current graph, for trying a whole set of writes: it
        writes to nothing else and publishes no event, but reads the same observed state."""
        graph = (await self._store.read()).copy()
        scratch = Catalog(MemoryGraphStore(graph), self._state, write_retries=1)
        scratch.check_environment = self.check_environment
        return scratch

    async def ping(self) -> None:
        await self._store.ping()

    async def changes(self, *, since: int, limit: int) -> list[Change]:
        """Committed changes after revision `since`, oldest first: from the event store when
        there is one (kept by age), else from the graph store's own log (its last 10,000)."""
        if self._event_store is None:
            return await self._store.changes(since=since, limit=limit)
        found = await self._event_store.changes(
            graph=await self._identity(), since=since, limit=limit
        )
        return [
            Change(
                revision=e.sequence,
                actor=e.actor,
                at=datetime.fromtimestamp(e.time, UTC),
                ops=list(e.data.get("ops", ())),
            )
            for e in found
        ]

    async def record_changes(self, *, batch: int = 1_000) -> int:
        """Append to the event store the changes the graph store's own log still holds (its
        last 10,000), as their `io.ztdp.graph.changed` events; return how many were missing.

        Run at start: a change's event has the graph's id and the revision as its id, so what
        the store has is not stored twice, and what it missed (a store that was down when the
        change was committed, or one in memory after a restart) is recorded after all.
        """
        if self._event_store is None:
            return 0
        graph = await self._identity()
        changes = await self._store.changes(since=0, limit=LOG_MAX_LENGTH)
        events = [
            make_change_event(
                graph=graph,
                revision=c.revision,
                subject=_logged_subject([op_from_json(raw) for raw in c.ops]),
                actor=c.actor,
                data={"revision": c.revision, "operations": len(c.ops), "ops": c.ops},
            )._replace(time=c.at.timestamp())
            for c in changes
        ]
        added = 0
        for start in range(0, len(events), batch):
            added += await self._event_store.append(events[start : start + batch])
        return added

    async def _identity(self) -> str:
        if self._graph_id is None:
            self._graph_id = await self._store.identity()
        return self._graph_id

    async def _preview(
        self, build: Callable[[Graph, int], tuple[Sequence[Op], T]]
    ) -> tuple[T, list[Op], Graph]:
        """What `_write(build)` would do, committing nothing: its result, its expanded batch and
        the graph as it would be after it (a copy)."""
        graph = await self._store.read()
        check_write(graph)
        ops, result = build(graph, graph.revision + 1)
        batch = graph.expand(ops)
        graph.check(batch)
        after = graph.copy()
        after.apply(batch, graph.revision + 1)
        return result, batch, after

    async def _write(self, build: Callable[[Graph, int], tuple[Sequence[Op], T]]) -> T:
        """Validate and commit one batch; `build` gets the graph and the revision it will make."""
        async with self._lock:
            for attempt in range(self._retries):
                if attempt:
                    # Jittered and growing: against a process writing back to back, retrying
                    # at once lost every time (a create failed after 8 attempts in CI).
                    await asyncio.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))
                graph = await self._store.read()
                check_write(graph)  # on this attempt's graph: the one the batch commits on
                ops, result = build(graph, graph.revision + 1)
                # the batch as the store records it, taken before the commit changes `graph`
                batch = graph.expand(ops) if self._events is not None and ops else ()
                try:
                    revision = await self._store.commit(
                        ops, expected_revision=graph.revision, actor=current_actor()
                    )
                except StaleRevision:
                    continue  # another process wrote first: validate again on its graph
                if self._events is not None and ops:
                    await self._events.publish(
                        make_change_event(
                            graph=await self._identity(),
                            revision=revision,
                            subject=_subject(ops),
                            actor=current_actor(),
                            data={
                                "revision": revision,
                                "operations": len(ops),
                                "ops": [op_to_json(op) for op in batch],
                            },
                        )
                    )
                return result
        raise StaleRevision(f"the graph kept changing; gave up after {self._retries} attempts")

    # --- lookups ---------------------------------------------------------------------------

    @staticmethod
    def _require(graph: Graph, nid: str, what: str) -> dict[str, Any]:
        data = graph.data(nid)
        if data is None:
            raise NotFound(f"{what} does not exist")
        return data

    @staticmethod
    def _require_field(graph: Graph, nid: str, what: str, field: str) -> dict[str, Any]:
        data = graph.data(nid)
        if data is None:
            raise InvalidInput(f"{field}: {what} does not exist", field=field)
        return data

    @staticmethod
    def _check_revision(current: dict[str, Any], expected: int | None, what: str) -> None:
        have = current["metadata"]["revision"] if "metadata" in current else current["revision"]
        if expected is not None and expected != have:
            raise StaleRevision(
                f"{what} is at revision {have}, the update was based on revision {expected}; "
                "read it again and retry"
            )

    def _list(self, graph: Graph, kind: NodeKind) -> list[dict[str, Any]]:
        return [data for _, data in sorted(graph.nodes(kind), key=lambda item: item[0])]

    # --- environments ----------------------------------------------------------------------

    async def create_environment(self, env: Environment) -> dict[str, Any]:
        nid = node_id(NodeKind.ENVIRONMENT, env.metadata.name)
        _checked(env)
        if self.check_environment is not None:
            self.check_environment(env)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            if nid in graph:
                raise AlreadyExists(f"environment {env.metadata.name} already exists")
            data = _stamp(env, rev)
            return [PutNode(nid, NodeKind.ENVIRONMENT, data)], data

        return await self._write(build)

    async def list_environments(self) -> list[dict[str, Any]]:
        return self._list(await self.graph(), NodeKind.ENVIRONMENT)

    async def deployments(self, env: str) -> list[Deployment]:
        graph = await self.graph()
        env_id = node_id(NodeKind.ENVIRONMENT, env)
        self._require(graph, env_id, f"environment {env}")
        return [
            _deployment(graph.data(vid) or {}, env)
            for vid in sorted(graph.predecessors(env_id, EdgeType.DEPLOY))
        ]

    # --- applications ----------------------------------------------------------------------

    async def create_application(self, app: Application) -> dict[str, Any]:
        nid = node_id(NodeKind.APPLICATION, app.metadata.name)
        _refuse_reserved(app.metadata.name, "application")

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            if nid in graph:
                raise AlreadyExists(f"application {app.metadata.name} already exists")
            data = _stamp(app, rev)
            return [PutNode(nid, NodeKind.APPLICATION, data)], data

        return await self._write(build)

    async def update_application(
        self, name: str, app: Application, *, if_match: int | None = None
    ) -> dict[str, Any]:
        return await self._replace(NodeKind.APPLICATION, name, app, if_match=if_match)

    async def _replace(
        self, kind: NodeKind, name: str, body: Envelope, *, if_match: int | None
    ) -> dict[str, Any]:
        """Replace a top-level object whole, if it is still at the revision the change was
        based on (`If-Match`, else the body's `metadata.revision`); its owner stays if the
        body names none."""
        nid, what = node_id(kind, name), f"{kind.value} {name}"
        same_name(body.metadata.name, name)
        expected = if_match if if_match is not None else body.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            current = self._require(graph, nid, what)
            self._check_revision(current, expected, what)
            data = _stamp(_owned(body, current), rev)
            return [PutNode(nid, kind, data)], data

        return await self._write(build)

    async def get_application(self, name: str) -> dict[str, Any]:
        return self._require(
            await self.graph(), node_id(NodeKind.APPLICATION, name), f"application {name}"
        )

    async def list_applications(self) -> list[dict[str, Any]]:
        return self._list(await self.graph(), NodeKind.APPLICATION)

    # --- allowed environments --------------------------------------------------------------

    async def allowed(self, app: str) -> list[str]:
        graph = await self.graph()
        self._require(graph, node_id(NodeKind.APPLICATION, app), f"application {app}")
        return allowed_environments(graph, app)

    async def set_allowed(
        self, app: str, envs: Sequence[str], *, replace: bool, field: str = "body"
    ) -> list[str]:
        app_id = node_id(NodeKind.APPLICATION, app)

        def build(graph: Graph, rev: int) -> tuple[list[Op], list[str]]:
            self._require(graph, app_id, f"application {app}")
            for i, env in enumerate(envs):
                if node_id(NodeKind.ENVIRONMENT, env) not in graph:
                    where = f"{field}[{i}]" if field == "body" else field
                    raise InvalidInput(f"{where}: environment {env} does not exist", field=where)
            current = set(allowed_environments(graph, app))
            wanted = set(envs) if replace else current | set(envs)
            ops: list[Op] = [
                DeleteEdge(app_id, node_id(NodeKind.ENVIRONMENT, e), EdgeType.ALLOWED_IN)
                for e in sorted(current - wanted)
            ]
            ops += [
                PutEdge(app_id, node_id(NodeKind.ENVIRONMENT, e), EdgeType.ALLOWED_IN)
                for e in sorted(wanted - current)
            ]
            return ops, sorted(wanted)

        return await self._write(build)

    # --- services and versions -------------------------------------------------------------

    async def create_service(self, app: str, svc: Service) -> dict[str, Any]:
        app_id = node_id(NodeKind.APPLICATION, app)
        nid = node_id(NodeKind.SERVICE, app, svc.metadata.name)
        _refuse_reserved(svc.metadata.name, "service")
        _same_application(svc, app)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            application = self._require(graph, app_id, f"application {app}")
            if nid in graph:
                raise AlreadyExists(
                    f"service {svc.metadata.name} of application {app} already exists"
                )
            data = _stamp(_owned(svc, application), rev)
            return [PutNode(nid, NodeKind.SERVICE, data), PutEdge(app_id, nid, EdgeType.OWNS)], data

        return await self._write(build)

    def _service(self, graph: Graph, app: str, svc: str) -> tuple[str, dict[str, Any]]:
        self._require(graph, node_id(NodeKind.APPLICATION, app), f"application {app}")
        nid = node_id(NodeKind.SERVICE, app, svc)
        return nid, self._require(graph, nid, f"service {svc} of application {app}")

    async def get_service(self, app: str, svc: str) -> dict[str, Any]:
        return self._service(await self.graph(), app, svc)[1]

    async def list_services(self, app: str) -> list[dict[str, Any]]:
        graph = await self.graph()
        app_id = node_id(NodeKind.APPLICATION, app)
        self._require(graph, app_id, f"application {app}")
        ids = sorted(
            i for i in graph.successors(app_id, EdgeType.OWNS) if graph.kind(i) is NodeKind.SERVICE
        )
        return [graph.data(i) or {} for i in ids]

    def _version_view(self, graph: Graph, vid: str) -> dict[str, Any]:
        data = dict(graph.data(vid) or {})
        data["environments"] = sorted(_name(e) for e in graph.successors(vid, EdgeType.DEPLOY))
        return data

    async def create_version(self, app: str, svc: str, body: ServiceVersionIn) -> dict[str, Any]:
        vid = node_id(NodeKind.VERSION, app, svc, body.version)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            sid, service = self._service(graph, app, svc)
            if vid in graph:
                raise AlreadyExists(f"version {body.version} of service {svc} already exists")
            version = ServiceVersion(
                **body.model_dump(exclude={"image", "owner"}),
                owner=body.owner or service["metadata"]["owner"],
                # An image tag cannot hold a semantic version's '+': it is written '_'.
                image=body.image or f"{svc}:{body.version.replace('+', '_')}",
                application=app,
                service=svc,
                revision=rev,
                updated_by=current_actor(),
            )
            data = version.model_dump(mode="json", exclude={"environments"})
            view = {**data, "environments": []}
            return [
                PutNode(vid, NodeKind.VERSION, data),
                PutEdge(sid, vid, EdgeType.HAS_VERSION),
            ], view

        return await self._write(build)

    async def list_versions(self, app: str, svc: str) -> list[dict[str, Any]]:
        graph = await self.graph()
        sid, _ = self._service(graph, app, svc)
        return [
            self._version_view(graph, v)
            for v in sorted(graph.successors(sid, EdgeType.HAS_VERSION))
        ]

    async def get_version(self, app: str, svc: str, version: str) -> dict[str, Any]:
        graph = await self.graph()
        self._service(graph, app, svc)
        vid = node_id(NodeKind.VERSION, app, svc, version)
        self._require(graph, vid, f"version {version} of service {svc}")
        return self._version_view(graph, vid)

    async def deploy(
        self, app: str, svc: str, version: str, env: str, *, health: HealthOf | None = None
    ) -> DeployResult:
        result, _, _ = await self._deploy(app, svc, version, env, health=health, dry_run=False)
        return result

    async def preview_deploy(
        self, app: str, svc: str, version: str, env: str, *, health: HealthOf | None = None
    ) -> tuple[DeployResult, list[Op], Graph]:
        """The deploy's decision, its graph changes and the graph after it; nothing changes.

        A denied deploy is an answer too: its decision, with no changes, instead of a 403.
        """
        result, batch, after = await self._deploy(
            app, svc, version, env, health=health, dry_run=True
        )
        assert after is not None
        return result, batch, after

    async def _deploy(
        self,
        app: str,
        svc: str,
        version: str,
        env: str,
        *,
        health: HealthOf | None,
        dry_run: bool,
    ) -> tuple[DeployResult, list[Op], Graph | None]:
        vid = node_id(NodeKind.VERSION, app, svc, version)
        env_id = node_id(NodeKind.ENVIRONMENT, env)

        def build(graph: Graph, rev: int) -> tuple[list[Op], DeployResult]:
            sid, _ = self._service(graph, app, svc)
            ver = self._require(graph, vid, f"version {version} of service {svc}")
            self._require_field(graph, env_id, f"environment {env}", "environment")
            actor = current_actor()
            transition = Transition(
                application=app, service=svc, version=version, environment=env, actor=actor
            )
            decision = evaluate(graph, transition, health=health)
            decisions.append(decision)
            deployment = _deployment(ver, env)
            if not decision.allowed:
                if dry_run:
                    return [], DeployResult(deployment=deployment, decision=decision)
                raise PolicyDenied(
                    f"deploy of {svc} {version} to {env} denied: {decision.explain()}",
                    decision=decision.model_dump(mode="json"),
                )
            # One version of a service per environment: the new one replaces the old.
            ops: list[Op] = [
                DeleteEdge(other, env_id, EdgeType.DEPLOY)
                for other in graph.successors(sid, EdgeType.HAS_VERSION)
                if other != vid and graph.has_edge(other, env_id, EdgeType.DEPLOY)
            ]
            ops.append(PutEdge(vid, env_id, EdgeType.DEPLOY, {"revision": rev, "by": actor}))
            return ops, DeployResult(deployment=deployment, decision=decision)

        decisions: list[Decision] = []
        try:
            if dry_run:
                return await self._preview(build)
            return await self._write(build), [], None
        finally:
            if decisions:
                await self._decided(decisions[-1], asked=not dry_run)

    # --- dependencies between services -----------------------------------------------------

    async def add_dependency(self, app: str, svc: str, dep_app: str, dep_svc: str) -> list[str]:
        def build(graph: Graph, rev: int) -> tuple[list[Op], list[str]]:
            sid, _ = self._service(graph, app, svc)
            did = node_id(NodeKind.SERVICE, dep_app, dep_svc)
            self._require_field(
                graph, did, f"service {dep_svc} of application {dep_app}", "service"
            )
            if did == sid:
                raise InvalidInput(f"service {svc} cannot depend on itself", field="service")
            back = _uses_path(graph, did, sid)
            if back:  # refused now: a cycle would fail every later plan of the application
                cycle = [sid, *back[:-1]]  # back ends where it started: at sid
                shown = " -> ".join(_service_ref(n) for n in [*cycle, sid])
                raise InvalidInput(
                    f"service {svc} cannot use {_service_ref(did)}: that would make a "
                    f"dependency cycle: {shown}",
                    field="service",
                    cycle=cycle,
                )
            ops: list[Op] = (
                []
                if graph.has_edge(sid, did, EdgeType.USES)
                else [PutEdge(sid, did, EdgeType.USES)]
            )
            deps = {
                d for d in graph.successors(sid, EdgeType.USES) if graph.kind(d) is NodeKind.SERVICE
            }
            return ops, sorted(_service_ref(d) for d in deps | {did})

        return await self._write(build)

    async def dependencies(self, app: str, svc: str) -> list[str]:
        graph = await self.graph()
        sid, _ = self._service(graph, app, svc)
        return sorted(
            _service_ref(d)
            for d in graph.successors(sid, EdgeType.USES)
            if graph.kind(d) is NodeKind.SERVICE
        )

    # --- resources -------------------------------------------------------------------------

    async def create_resource(self, body: Resource | ResourceType) -> dict[str, Any]:
        # A resource may name a type that does not exist (yet): its plan step says what is
        # missing (docs/api.md). Resources and types share one namespace, so that
        # GET /v1/resources/{name} means one thing.
        name = body.metadata.name

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            for other, what in _RESOURCE_KINDS.items():
                if node_id(other, name) in graph:
                    raise AlreadyExists(f"a {what} named {name} already exists")
            kind = _resource_kind(body)
            data = _stamp(body, rev)
            return [PutNode(node_id(kind, name), kind, data)], data

        return await self._write(build)

    async def ensure_resource_types(self, types: dict[str, str]) -> None:
        """Create the configured built-in resource types that are missing."""
        graph = await self.graph()
        for name, provider in types.items():
            if node_id(NodeKind.RESOURCE_TYPE, name) in graph:
                continue
            rtype = ResourceType.model_validate(
                {
                    "kind": "ResourceType",
                    "metadata": {"name": name, "owner": "ztdp"},
                    "spec": {"provider": provider, "description": "built in"},
                }
            )
            with contextlib.suppress(AlreadyExists):  # another process seeded it first
                await self.create_resource(rtype)

    async def list_resources(self) -> list[dict[str, Any]]:
        graph = await self.graph()
        return self._list(graph, NodeKind.RESOURCE_TYPE) + self._list(graph, NodeKind.RESOURCE)

    async def link_application_resource(self, app: str, res: str) -> Linked:
        app_id = node_id(NodeKind.APPLICATION, app)
        rid = node_id(NodeKind.RESOURCE, res)

        def build(graph: Graph, rev: int) -> tuple[list[Op], Linked]:
            self._require(graph, app_id, f"application {app}")
            data = self._require(graph, rid, f"resource {res}")
            if graph.has_edge(app_id, rid, EdgeType.OWNS):
                return [], Linked(data, created=False)
            return [PutEdge(app_id, rid, EdgeType.OWNS)], Linked(data, created=True)

        return await self._write(build)

    async def application_resources(self, app: str) -> list[dict[str, Any]]:
        graph = await self.graph()
        app_id = node_id(NodeKind.APPLICATION, app)
        self._require(graph, app_id, f"application {app}")
        ids = sorted(
            i for i in graph.successors(app_id, EdgeType.OWNS) if graph.kind(i) is NodeKind.RESOURCE
        )
        return [graph.data(i) or {} for i in ids]

    async def link_service_resource(
        self, app: str, svc: str, res: str, field: str | None = None
    ) -> Linked:
        rid = node_id(NodeKind.RESOURCE, res)

        def build(graph: Graph, rev: int) -> tuple[list[Op], Linked]:
            sid, _ = self._service(graph, app, svc)
            if field is None:
                data = self._require(graph, rid, f"resource {res}")
            else:
                data = self._require_field(graph, rid, f"resource {res}", field)
            if not graph.has_edge(node_id(NodeKind.APPLICATION, app), rid, EdgeType.OWNS):
                raise Conflict(
                    f"resource {res} is not linked to application {app}; "
                    f"POST /v1/applications/{app}/resources/{res} first"
                )
            if graph.has_edge(sid, rid, EdgeType.USES):
                return [], Linked(data, created=False)
            return [PutEdge(sid, rid, EdgeType.USES)], Linked(data, created=True)

        return await self._write(build)

    async def service_resources(self, app: str, svc: str) -> list[dict[str, Any]]:
        graph = await self.graph()
        sid, _ = self._service(graph, app, svc)
        ids = sorted(
            i for i in graph.successors(sid, EdgeType.USES) if graph.kind(i) is NodeKind.RESOURCE
        )
        return [graph.data(i) or {} for i in ids]

    async def service_resource(self, app: str, svc: str, res: str) -> dict[str, Any]:
        graph = await self.graph()
        sid, _ = self._service(graph, app, svc)
        rid = node_id(NodeKind.RESOURCE, res)
        if not graph.has_edge(sid, rid, EdgeType.USES):
            raise NotFound(f"service {svc} of application {app} does not use resource {res}")
        return graph.data(rid) or {}

    # --- policies, checks, approvals -------------------------------------------------------

    def _policy_ops(self, graph: Graph, policy: Policy, rev: int) -> list[Op]:
        nid = node_id(NodeKind.POLICY, policy.metadata.name)
        sel = policy.spec.transition
        targets = []
        if sel.environment is not None:
            targets.append(
                (node_id(NodeKind.ENVIRONMENT, sel.environment), "spec.transition.environment")
            )
        if sel.application is not None:
            targets.append(
                (node_id(NodeKind.APPLICATION, sel.application), "spec.transition.application")
            )
        for tid, where in targets:
            self._require_field(graph, tid, tid.replace("/", " ", 1), where)
        if isinstance(policy.spec.rule, ExpressionRule):
            compile_expression(policy.spec.rule.expression)
        ops: list[Op] = [
            DeleteEdge(nid, t, EdgeType.POLICY) for t in graph.successors(nid, EdgeType.POLICY)
        ]
        ops.append(PutNode(nid, NodeKind.POLICY, _stamp(policy, rev)))
        ops += [PutEdge(nid, tid, EdgeType.POLICY, {"edge": sel.edge}) for tid, _ in targets]
        return ops

    async def create_policy(self, policy: Policy) -> dict[str, Any]:
        _refuse_reserved(policy.metadata.name, "policy")
        nid = node_id(NodeKind.POLICY, policy.metadata.name)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            if nid in graph:
                raise AlreadyExists(f"policy {policy.metadata.name} already exists")
            return self._policy_ops(graph, policy, rev), _stamp(policy, rev)

        return await self._write(build)

    async def update_policy(
        self, name: str, policy: Policy, *, if_match: int | None = None
    ) -> dict[str, Any]:
        nid = node_id(NodeKind.POLICY, name)
        same_name(policy.metadata.name, name)
        expected = if_match if if_match is not None else policy.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            current = self._require(graph, nid, f"policy {name}")
            self._check_revision(current, expected, f"policy {name}")
            if current["spec"]["rule"]["type"] != policy.spec.rule.type and graph.predecessors(
                nid, EdgeType.SATISFIES
            ):
                raise Conflict(f"policy {name} has approvals; its rule type cannot change")
            owned = _owned(policy, current)
            return self._policy_ops(graph, owned, rev), _stamp(owned, rev)

        return await self._write(build)

    async def get_policy(self, name: str) -> dict[str, Any]:
        return self._require(await self.graph(), node_id(NodeKind.POLICY, name), f"policy {name}")

    async def list_policies(self) -> list[dict[str, Any]]:
        return self._list(await self.graph(), NodeKind.POLICY)

    def _require_subject(self, graph: Graph, subject: Any) -> None:
        vid = node_id(NodeKind.VERSION, subject.application, subject.service, subject.version)
        self._require_field(
            graph,
            vid,
            f"version {subject.version} of service {subject.service} of application "
            f"{subject.application}",
            "spec.subject",
        )

    async def put_check(
        self, check: Check, *, create: bool, name: str | None = None, if_match: int | None = None
    ) -> dict[str, Any]:
        """Create a check (`create`), or update the one called `name`."""
        if name is not None:
            same_name(check.metadata.name, name)
        nid = node_id(NodeKind.CHECK, check.metadata.name)
        expected = if_match if if_match is not None else check.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            current = graph.data(nid)
            if create and current is not None:
                raise AlreadyExists(f"check {check.metadata.name} already exists")
            if not create:
                current = self._require(graph, nid, f"check {check.metadata.name}")
                self._check_revision(current, expected, f"check {check.metadata.name}")
            self._require_subject(graph, check.spec.subject)
            data = _stamp(check if current is None else _owned(check, current), rev)
            return [PutNode(nid, NodeKind.CHECK, data)], data

        return await self._write(build)

    async def get_check(self, name: str) -> dict[str, Any]:
        return self._require(await self.graph(), node_id(NodeKind.CHECK, name), f"check {name}")

    async def list_checks(self) -> list[dict[str, Any]]:
        return self._list(await self.graph(), NodeKind.CHECK)

    async def create_approval(self, approval: Approval) -> dict[str, Any]:
        nid = node_id(NodeKind.APPROVAL, approval.metadata.name)
        pid = node_id(NodeKind.POLICY, approval.spec.policy)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            if nid in graph:
                raise AlreadyExists(f"approval {approval.metadata.name} already exists")
            policy = self._require_field(
                graph, pid, f"policy {approval.spec.policy}", "spec.policy"
            )
            if policy["spec"]["rule"]["type"] != "approval":
                raise InvalidInput(
                    f"spec.policy: policy {approval.spec.policy} is a "
                    f"{policy['spec']['rule']['type']} policy, not an approval policy",
                    field="spec.policy",
                )
            self._require_subject(graph, approval.spec.subject)
            self._require_field(
                graph,
                node_id(NodeKind.ENVIRONMENT, approval.spec.environment),
                f"environment {approval.spec.environment}",
                "spec.environment",
            )
            data = _stamp(approval, rev)
            return [
                PutNode(nid, NodeKind.APPROVAL, data),
                PutEdge(nid, pid, EdgeType.SATISFIES),
            ], data

        return await self._write(build)

    async def get_approval(self, name: str) -> dict[str, Any]:
        return self._require(
            await self.graph(), node_id(NodeKind.APPROVAL, name), f"approval {name}"
        )

    async def list_approvals(self) -> list[dict[str, Any]]:
        return self._list(await self.graph(), NodeKind.APPROVAL)

    async def _decided(self, decision: Decision, *, asked: bool = False) -> None:
        """Record a decision; for a transition really asked for, each audit policy it failed.

        A what-if evaluation records no audit denial: they count the deploys a policy would
        have stopped (docs/policies.md).
        """
        if self._events is None:
            return
        t = decision.transition
        await self._events.publish(
            make_event(
                "policy.decision",
                subject=node_id(NodeKind.VERSION, t.application, t.service, t.version),
                actor=current_actor(),
                # a what-if (evaluate, a dry run) is told apart from a deploy really asked for
                data={**decision.model_dump(mode="json"), "asked": asked},
            )
        )
        for result in decision.audit_denials if asked else ():
            await self._events.publish(
                make_event(
                    "policy.audit_denied",
                    subject=node_id(NodeKind.POLICY, result.policy),
                    actor=current_actor(),
                    data={
                        "policy": result.policy,
                        "type": result.type,
                        "reason": result.reason,
                        "transition": t.model_dump(mode="json"),
                        "allowed": decision.allowed,
                    },
                )
            )

    async def evaluate(self, t: Transition, *, health: HealthOf | None = None) -> Decision:
        graph = await self.graph()
        self._service(graph, t.application, t.service)
        self._require_field(
            graph,
            node_id(NodeKind.VERSION, t.application, t.service, t.version),
            f"version {t.version} of service {t.service}",
            "version",
        )
        self._require_field(
            graph,
            node_id(NodeKind.ENVIRONMENT, t.environment),
            f"environment {t.environment}",
            "environment",
        )
        decision = evaluate(graph, t, health=health)
        await self._decided(decision)
        return decision

    # --- deletes -------------------------------------------------------------------------

    async def remove(
        self,
        what: str,
        removal: Callable[[Graph], Removal],
        *,
        cascade: bool = False,
        dry_run: bool = False,
    ) -> Removed:
        """Delete an object or a link, and with `cascade` what depends on it.

        `removal` computes, on the write's graph, what goes (raising `NotFound` for a missing
        target); dependents refuse the delete with a 409 listing them unless `cascade`, and a
        cascade needs the caller to be allowed to change each of them.
        """

        def build(graph: Graph, rev: int) -> tuple[list[Op], Removed]:
            r = removal(graph)
            if r.dependents and not cascade:
                listed = "; ".join(r.dependents.values())
                raise Conflict(
                    f"{what} cannot be deleted while others depend on it: {listed}. Delete "
                    "them first, or ask to delete them with it (?cascade=true)",
                    dependents=[{"node": n, "why": why} for n, why in r.dependents.items()],
                )
            check_changes(graph, list(r.dependents))
            removed = Removed(
                deleted=list(r.nodes),
                unlinked=[f"{e.source} -{e.type.value}-> {e.target}" for e in r.edges],
                dependents=[Dependent(node=n, why=why) for n, why in r.dependents.items()],
                revision=rev,
            )
            # on this attempt's graph: what the runtime must realise again, and where
            removed.applications = deletion.affected_applications(graph, r)
            removed.environments = [_name(e) for e, _ in graph.nodes(NodeKind.ENVIRONMENT)]
            removed.former_environments = {
                _name(n): data
                for n in r.nodes
                if (data := graph.data(n)) is not None and graph.kind(n) is NodeKind.ENVIRONMENT
            }
            return r.ops(), removed

        if dry_run:
            removed, _, after = await self._preview(build)
            removed.dry_run, removed.revision, removed.after = True, None, after
            return removed
        removed = await self._write(build)
        removed.after = await self.graph()
        return removed

    async def delete(
        self, kind: NodeKind, *names: str, cascade: bool = False, dry_run: bool = False
    ) -> Removed:
        """Delete one object of any kind, as `remove` does; a missing object is a 404."""
        nid, what = node_id(kind, *names), _describe(kind, names)
        compute = _REMOVALS[kind]

        def removal(graph: Graph) -> Removal:
            if kind in (NodeKind.SERVICE, NodeKind.VERSION):
                self._service(graph, names[0], names[1])  # name the missing parent
            if nid not in graph:
                raise NotFound(f"{what} does not exist")
            return compute(graph, nid)

        return await self.remove(what, removal, cascade=cascade, dry_run=dry_run)

    async def unlink_resource(
        self, app: str, res: str, *, cascade: bool = False, dry_run: bool = False
    ) -> Removed:
        """Take a resource from an application (its services' uses of it are dependents)."""
        aid, rid = node_id(NodeKind.APPLICATION, app), node_id(NodeKind.RESOURCE, res)

        def removal(graph: Graph) -> Removal:
            self._require(graph, aid, f"application {app}")
            if not graph.has_edge(aid, rid, EdgeType.OWNS):
                raise NotFound(f"application {app} has no resource {res}")
            return deletion.resource_link(graph, aid, rid)

        what = f"the link of resource {res} to application {app}"
        return await self.remove(what, removal, cascade=cascade, dry_run=dry_run)

    async def remove_edge(
        self, source: str, target: str, etype: EdgeType, what: str, *, dry_run: bool = False
    ) -> Removed:
        """Remove one edge that nothing depends on (a use, a dependency, an allowed env)."""

        def removal(graph: Graph) -> Removal:
            for nid in (source, target):
                if nid not in graph:
                    raise NotFound(f"{nid.replace('/', ' ', 1)} does not exist")
            if not graph.has_edge(source, target, etype):
                raise NotFound(f"there is no {what}")
            return deletion.edge(source, target, etype)

        return await self.remove(what, removal, dry_run=dry_run)

    async def undeploy(self, app: str, svc: str, env: str, *, dry_run: bool = False) -> Removed:
        """Take a service out of an environment: the deploy edge of its version there goes."""
        sid = node_id(NodeKind.SERVICE, app, svc)
        eid = node_id(NodeKind.ENVIRONMENT, env)

        def removal(graph: Graph) -> Removal:
            self._service(graph, app, svc)
            self._require(graph, eid, f"environment {env}")
            deployed = [
                v
                for v in graph.successors(sid, EdgeType.HAS_VERSION)
                if graph.has_edge(v, eid, EdgeType.DEPLOY)
            ]
            if not deployed:
                raise NotFound(f"service {svc} of application {app} is not deployed to {env}")
            return deletion.edge(deployed[0], eid, EdgeType.DEPLOY)

        return await self.remove(f"the deployment of {svc} to {env}", removal, dry_run=dry_run)

    # --- plans -----------------------------------------------------------------------------

    async def plan(self, app: str, environment: str | None) -> Plan:
        graph = await self.graph()
        revision = graph.revision
        self._require(graph, node_id(NodeKind.APPLICATION, app), f"application {app}")
        if environment is None:
            return make_plan(
                desired_application(graph, app),
                {},
                application=app,
                environment=None,
                revision=revision,
            )
        self._require_field(
            graph,
            node_id(NodeKind.ENVIRONMENT, environment),
            f"environment {environment}",
            "environment",
        )
        desired = desired_in_environment(
            graph, environment, [app], await self._secrets([app], environment)
        )
        observed = await self._state.observed(environment=environment, application=app)
        # Resources belong to no one application (they are realised once per environment for
        # every application linking them): those this application wants are its to compare.
        for nid, seen in (await self._state.observed(environment=environment)).items():
            if seen.kind == "resource" and nid in desired:
                observed[nid] = seen
        return make_plan(
            desired, observed, application=app, environment=environment, revision=revision
        )

    async def plan_on(self, graph: Graph, environment: str, applications: Collection[str]) -> Plan:
        """The plan realising `graph` (a preview's, or the current one) for some applications
        in one environment, including the removal of what they no longer want there."""
        apps = sorted(applications)
        if node_id(NodeKind.ENVIRONMENT, environment) not in graph:
            # The environment itself goes: nothing is wanted there any more, whoever's it was.
            everything = await self._state.observed(environment=environment)
            return make_plan(
                {}, everything, application=None, environment=environment, revision=graph.revision
            )
        existing = [a for a in apps if node_id(NodeKind.APPLICATION, a) in graph]
        desired = desired_in_environment(
            graph, environment, existing, await self._secrets(existing, environment)
        )
        observed: dict[str, ObservedResource] = {}
        for app in apps:
            observed.update(await self._state.observed(environment=environment, application=app))
        # A resource is realised once per environment for every application linking it, so it
        # belongs to none of them: it goes when no application links it any more.
        for nid, seen in (await self._state.observed(environment=environment)).items():
            source = nid.rsplit("@", 1)[0]
            if seen.kind == "resource" and (
                nid in desired or not graph.predecessors(source, EdgeType.OWNS)
            ):
                observed[nid] = seen
        return make_plan(
            desired,
            observed,
            application=apps[0] if len(apps) == 1 else None,
            environment=environment,
            revision=graph.revision,
        )

    async def plan_environment(self, environment: str) -> Plan:
        """One plan for every application in an environment (what `POST /v1/apply` runs)."""
        graph = await self.graph()
        revision = graph.revision
        self._require_field(
            graph,
            node_id(NodeKind.ENVIRONMENT, environment),
            f"environment {environment}",
            "query.env",
        )
        apps = [_name(nid) for nid, _ in graph.nodes(NodeKind.APPLICATION)]
        desired = desired_in_environment(
            graph, environment, apps, await self._secrets(apps, environment)
        )
        observed = await self._state.observed(environment=environment)
        desired = _where_allowed(graph, environment, apps, desired, observed)
        return make_plan(
            desired, observed, application=None, environment=environment, revision=revision
        )

    # --- reads and updates of one object (issue 9) -----------------------------------------

    async def get_environment(self, name: str) -> dict[str, Any]:
        return self._require(
            await self.graph(), node_id(NodeKind.ENVIRONMENT, name), f"environment {name}"
        )

    async def update_environment(
        self, name: str, env: Environment, *, if_match: int | None = None
    ) -> dict[str, Any]:
        """Change an environment; its realised nodes take it up at their next run there."""
        _checked(env)
        if self.check_environment is not None:
            self.check_environment(env)
        return await self._replace(NodeKind.ENVIRONMENT, name, env, if_match=if_match)

    async def update_service(
        self, app: str, svc: str, body: Service, *, if_match: int | None = None
    ) -> dict[str, Any]:
        same_name(body.metadata.name, svc)
        _same_application(body, app)
        expected = if_match if if_match is not None else body.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            sid, current = self._service(graph, app, svc)
            self._check_revision(current, expected, f"service {svc} of application {app}")
            data = _stamp(_owned(body, current), rev)
            return [PutNode(sid, NodeKind.SERVICE, data)], data

        return await self._write(build)

    async def get_resource(self, name: str) -> dict[str, Any]:
        """The resource called `name`, else the resource type (they share one namespace)."""
        graph = await self.graph()
        for kind in _RESOURCE_KINDS:
            data = graph.data(node_id(kind, name))
            if data is not None:
                return data
        raise NotFound(f"no resource or resource type {name} exists")

    async def update_resource(
        self, name: str, body: Resource | ResourceType, *, if_match: int | None = None
    ) -> dict[str, Any]:
        """Change a resource or a resource type (the body's kind says which)."""
        kind = _resource_kind(body)
        what = _RESOURCE_KINDS[kind]
        nid = node_id(kind, name)
        same_name(body.metadata.name, name)
        expected = if_match if if_match is not None else body.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            current = self._require(graph, nid, f"{what} {name}")
            self._check_revision(current, expected, f"{what} {name}")
            if isinstance(body, Resource) and body.spec.type != current["spec"]["type"]:
                users = sorted(_name(a) for a in graph.predecessors(nid, EdgeType.OWNS))
                if users:
                    raise Conflict(
                        f"resource {name} is used by application {', '.join(users)}: its type "
                        f"cannot change from {current['spec']['type']} to {body.spec.type}; "
                        "create a resource of the new type instead"
                    )
            data = _stamp(_owned(body, current), rev)
            return [PutNode(nid, kind, data)], data

        return await self._write(build)

    async def deployment(self, env: str, app: str, svc: str) -> Deployment:
        """What version of a service is deployed to an environment (404 if none)."""
        graph = await self.graph()
        env_id = node_id(NodeKind.ENVIRONMENT, env)
        self._require(graph, env_id, f"environment {env}")
        sid, _ = self._service(graph, app, svc)
        for vid in graph.successors(sid, EdgeType.HAS_VERSION):
            if graph.has_edge(vid, env_id, EdgeType.DEPLOY):
                return _deployment(graph.data(vid) or {}, env)
        raise NotFound(f"service {svc} of application {app} is not deployed to {env}")


_RESOURCE_KINDS = {NodeKind.RESOURCE: "resource", NodeKind.RESOURCE_TYPE: "resource type"}


def _resource_kind(body: Resource | ResourceType) -> NodeKind:
    return NodeKind.RESOURCE_TYPE if isinstance(body, ResourceType) else NodeKind.RESOURCE


def _deployment(version: dict[str, Any], env: str) -> Deployment:
    return Deployment(
        application=version["application"],
        service=version["service"],
        version=version["version"],
        environment=env,
        image=version["image"],
    )


def _same_application(svc: Service, app: str) -> None:
    if svc.spec.application != app:
        raise InvalidInput(
            f"spec.application {svc.spec.application!r} does not match "
            f"the path's application {app!r}",
            field="spec.application",
        )


_REMOVALS: dict[NodeKind, Callable[[Graph, str], Removal]] = {
    NodeKind.APPLICATION: deletion.application,
    NodeKind.SERVICE: lambda graph, nid: deletion.service(graph, nid),
    NodeKind.VERSION: lambda graph, nid: deletion.version(graph, nid),
    NodeKind.ENVIRONMENT: deletion.environment,
    NodeKind.RESOURCE: deletion.resource,
    NodeKind.RESOURCE_TYPE: deletion.resource_type,
    NodeKind.POLICY: lambda graph, nid: deletion.policy(graph, nid),
    NodeKind.CHECK: lambda graph, nid: deletion.single(nid),
    NodeKind.APPROVAL: lambda graph, nid: deletion.single(nid),
}


def _describe(kind: NodeKind, names: Sequence[str]) -> str:
    """`service api of application checkout`, `version 1.0.0 of service api`, `policy p`."""
    match kind:
        case NodeKind.SERVICE:
            return f"service {names[1]} of application {names[0]}"
        case NodeKind.VERSION:
            return f"version {names[2]} of service {names[1]} of application {names[0]}"
        case NodeKind.RESOURCE_TYPE:
            return f"resource type {names[0]}"
    return f"{kind.value} {names[0]}"


def same_name(body: str, path: str) -> None:
    """An update names its object twice, in the path and in metadata.name: they must agree."""
    if body != path:
        raise InvalidInput(
            f"metadata.name {body!r} does not match the path's {path!r}", field="metadata.name"
        )


# Path segments the API uses beside names (/v1/applications/schema, /v1/policies/evaluate):
# an object of that name could not be read back.
RESERVED_NAMES = {
    "application": frozenset({"schema"}),
    "service": frozenset({"schema"}),
    "policy": frozenset({"evaluate"}),
}


def _refuse_reserved(name: str, what: str) -> None:
    if name in RESERVED_NAMES.get(what, frozenset()):
        raise InvalidInput(
            f"metadata.name: {name!r} is reserved and cannot name a {what}", field="metadata.name"
        )


def _logged_subject(batch: Sequence[Op]) -> str:
    """The subject of a change read back from a graph store's log, whose batch is expanded
    (a node's deletion preceded by its edges'): its first node operation's node."""
    nodes = [op for op in batch if isinstance(op, PutNode | DeleteNode)]
    return _subject(nodes or batch) if batch else "graph"


def _subject(ops: Sequence[Op]) -> str:
    first = ops[0]
    return first.id if isinstance(first, PutNode | DeleteNode) else first.source


def _uses_path(graph: Graph, start: str, goal: str) -> list[str]:
    """The services from `start` to `goal` along `uses` edges between services, or []."""
    came: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            path = [node]
            while (prev := came[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for nxt in graph.successors(node, EdgeType.USES):
            if nxt not in came and graph.kind(nxt) is NodeKind.SERVICE:
                came[nxt] = node
                queue.append(nxt)
    return []


def _service_ref(sid: str) -> str:
    _, app, svc = sid.split("/")
    return f"{app}/{svc}"


__all__ = ["Catalog", "DeployResult", "Deployment", "Linked", "Removed"]
