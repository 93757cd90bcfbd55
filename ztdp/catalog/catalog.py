"""The catalog: every operation on declared intent, as one validated, atomic graph write.

Each write reads the graph, validates the change against it (parents exist, names are free,
policy allows), and commits one batch guarded by the revision it read. If another process
wrote in between, the store refuses the batch and the write is validated again from the new
graph, so a rule checked is a rule that still holds when the batch lands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from ztdp.catalog.actor import current_actor
from ztdp.catalog.guard import check_write
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
from ztdp.events import EventBus, make_event
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
)
from ztdp.graph.store import Change, GraphStore
from ztdp.planner import Plan, desired_application, desired_in_environment, make_plan
from ztdp.policy import (
    Decision,
    HealthOf,
    Transition,
    allowed_environments,
    compile_expression,
    evaluate,
)
from ztdp.state import StateStore

T = TypeVar("T")
E = TypeVar("E", bound=Envelope)


class Deployment(BaseModel):
    application: str
    service: str
    version: str
    environment: str
    image: str
    status: str = Field(
        default="Pending", description="Pending until a runtime realises it (see docs/decisions.md)"
    )


class DeployResult(BaseModel):
    deployment: Deployment
    decision: Decision


def _stamp(model: E, revision: int) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=True)
    data["metadata"]["revision"] = revision
    data["metadata"]["updated_by"] = current_actor()
    return data


def _name(nid: str) -> str:
    return nid.rsplit("/", 1)[1]


class Catalog:
    def __init__(
        self,
        store: GraphStore,
        state: StateStore,
        *,
        write_retries: int = 8,
        events: EventBus | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._state = state
        self._retries = write_retries
        self._lock = asyncio.Lock()  # one writer per process; other processes via revisions

    async def graph(self) -> Graph:
        return await self._store.read()

    async def ping(self) -> None:
        await self._store.ping()

    async def changes(self, *, since: int, limit: int) -> list[Change]:
        return await self._store.changes(since=since, limit=limit)

    async def _write(self, build: Callable[[Graph, int], tuple[Sequence[Op], T]]) -> T:
        """Validate and commit one batch; `build` gets the graph and the revision it will make."""
        async with self._lock:
            for _ in range(self._retries):
                graph = await self._store.read()
                check_write(graph)  # on this attempt's graph: the one the batch commits on
                ops, result = build(graph, graph.revision + 1)
                try:
                    revision = await self._store.commit(
                        ops, expected_revision=graph.revision, actor=current_actor()
                    )
                except StaleRevision:
                    continue  # another process wrote first: validate again on its graph
                if self._events is not None and ops:
                    await self._events.publish(
                        make_event(
                            "graph.changed",
                            subject=_subject(ops),
                            actor=current_actor(),
                            data={"revision": revision, "operations": len(ops)},
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
        out = []
        for vid in sorted(graph.predecessors(env_id, EdgeType.DEPLOY)):
            ver = graph.data(vid) or {}
            out.append(
                Deployment(
                    application=ver["application"],
                    service=ver["service"],
                    version=ver["version"],
                    environment=env,
                    image=ver["image"],
                )
            )
        return out

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
        nid = node_id(NodeKind.APPLICATION, name)
        same_name(app.metadata.name, name)
        expected = if_match if if_match is not None else app.metadata.revision

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            current = self._require(graph, nid, f"application {name}")
            self._check_revision(current, expected, f"application {name}")
            data = _stamp(app, rev)
            return [PutNode(nid, NodeKind.APPLICATION, data)], data

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
        if svc.spec.application != app:
            raise InvalidInput(
                f"spec.application {svc.spec.application!r} does not match "
                f"the path's application {app!r}",
                field="spec.application",
            )

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            self._require(graph, app_id, f"application {app}")
            if nid in graph:
                raise AlreadyExists(
                    f"service {svc.metadata.name} of application {app} already exists"
                )
            data = _stamp(svc, rev)
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
            sid, _ = self._service(graph, app, svc)
            if vid in graph:
                raise AlreadyExists(f"version {body.version} of service {svc} already exists")
            version = ServiceVersion(
                **body.model_dump(exclude={"image"}),
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
            if not decision.allowed:
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
            deployment = Deployment(
                application=app, service=svc, version=version, environment=env, image=ver["image"]
            )
            return ops, DeployResult(deployment=deployment, decision=decision)

        decisions: list[Decision] = []
        try:
            return await self._write(build)
        finally:
            if decisions:
                await self._decided(decisions[-1])

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
        if isinstance(body, ResourceType):
            kind, what = NodeKind.RESOURCE_TYPE, "resource type"
        else:
            kind, what = NodeKind.RESOURCE, "resource"
        nid = node_id(kind, body.metadata.name)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            if nid in graph:
                raise AlreadyExists(f"{what} {body.metadata.name} already exists")
            if isinstance(body, Resource):
                tid = node_id(NodeKind.RESOURCE_TYPE, body.spec.type)
                self._require_field(graph, tid, f"resource type {body.spec.type}", "spec.type")
            data = _stamp(body, rev)
            return [PutNode(nid, kind, data)], data

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

    async def link_application_resource(self, app: str, res: str) -> dict[str, Any]:
        app_id = node_id(NodeKind.APPLICATION, app)
        rid = node_id(NodeKind.RESOURCE, res)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
            self._require(graph, app_id, f"application {app}")
            data = self._require(graph, rid, f"resource {res}")
            ops: list[Op] = (
                []
                if graph.has_edge(app_id, rid, EdgeType.OWNS)
                else [PutEdge(app_id, rid, EdgeType.OWNS)]
            )
            return ops, data

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
    ) -> dict[str, Any]:
        rid = node_id(NodeKind.RESOURCE, res)

        def build(graph: Graph, rev: int) -> tuple[list[Op], dict[str, Any]]:
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
            ops: list[Op] = (
                []
                if graph.has_edge(sid, rid, EdgeType.USES)
                else [PutEdge(sid, rid, EdgeType.USES)]
            )
            return ops, data

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
        for tid, field in targets:
            self._require_field(graph, tid, tid.replace("/", " ", 1), field)
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
            return self._policy_ops(graph, policy, rev), _stamp(policy, rev)

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
            data = _stamp(check, rev)
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

    async def _decided(self, decision: Decision) -> None:
        if self._events is None:
            return
        t = decision.transition
        await self._events.publish(
            make_event(
                "policy.decision",
                subject=node_id(NodeKind.VERSION, t.application, t.service, t.version),
                actor=current_actor(),
                data=decision.model_dump(mode="json"),
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
        desired = desired_in_environment(graph, environment, [app])
        observed = await self._state.observed(environment=environment, application=app)
        return make_plan(
            desired, observed, application=app, environment=environment, revision=revision
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
        desired = desired_in_environment(graph, environment, apps)
        observed = await self._state.observed(environment=environment)
        return make_plan(
            desired, observed, application=None, environment=environment, revision=revision
        )


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


__all__ = ["Catalog", "DeployResult", "Deployment"]
