"""The runtime as the API sees it: deploys and applies become runs on the supervisor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ztdp.catalog import Catalog, DeployResult, Removed
from ztdp.catalog.actor import current_actor
from ztdp.contracts import Environment, provider_section
from ztdp.errors import BackendUnavailable, PermanentError
from ztdp.events import EventQuery, EventStore
from ztdp.graph import EdgeType, Graph, NodeKind, Op, node_id
from ztdp.planner import (
    Plan,
    PlanStep,
    StepDecision,
    StepPolicyResult,
    deletions,
    deployment_node,
    mark_blocked,
)
from ztdp.policy import Decision, NodeHealth, Transition, evaluate
from ztdp.providers import Provider, Resource, Target
from ztdp.providers.settings import check_sections, resolve
from ztdp.runtime.actor import ActorState, Status
from ztdp.runtime.runs import Run, Trigger
from ztdp.runtime.secrets import RuntimeSecrets
from ztdp.runtime.supervisor import Supervisor
from ztdp.secrets import (
    EncryptedSecretStore,
    Keyring,
    MemoryRecords,
    SecretInfo,
    SecretStore,
    new_key,
)
from ztdp.settings import Settings

HealthOf = Callable[[str, str, str], NodeHealth | None]


def _denied(decision: Decision) -> str:
    return f"denied by policy: {decision.explain()}"


def _verdict(decision: Decision) -> StepDecision:
    failed: list[StepPolicyResult] = [
        {"policy": r.policy, "type": r.type, "mode": r.mode, "reason": r.reason}
        for r in decision.results
        if not r.passed
    ]
    return {"allowed": decision.allowed, "failed": failed}


def describe(node: str) -> tuple[str, str, str]:
    """(kind, application, name) of a realised node id."""
    kind, rest = node.split("/", 1)
    path, _, _env = rest.partition("@")
    parts = path.split("/")
    return (kind, parts[0], parts[1]) if len(parts) == 2 else (kind, "", parts[0])


def _owner(graph: Graph, nid: str) -> str:
    """The name of the application that owns graph node `nid`, or "" if none does (now)."""
    owners = graph.predecessors(nid, EdgeType.OWNS) if nid in graph else []
    return next((o.rsplit("/", 1)[1] for o in sorted(owners)), "")


class Runtime:
    """Deploys, applies and deletes as runs; the supervisor's step hooks (target, check)."""

    def __init__(
        self,
        catalog: Catalog,
        supervisor: Supervisor,
        settings: Settings,
        secrets: SecretStore | None = None,
        *,
        history: EventStore | None = None,
    ) -> None:
        self.catalog = catalog
        self.supervisor = supervisor
        self._settings = settings
        store = secrets or EncryptedSecretStore(MemoryRecords(), Keyring(new_key()))
        self.secrets = RuntimeSecrets(store, catalog, supervisor.providers)
        catalog.secrets_seen = self.secrets.seen
        self._history = history  # the event store: status histories, read by promotion rules
        supervisor.hooks = self
        catalog.check_environment = self.check_environment

    async def plan(self, app: str, environment: str | None) -> Plan:
        """The catalog's plan of an application, previewed (see `preview`)."""
        attributes = {"ztdp.application": app, "ztdp.environment": environment or ""}
        with self.supervisor.telemetry.tracing.span("plan", attributes=attributes):
            return await self.preview(await self.catalog.plan(app, environment))

    async def preview(self, plan: Plan, *, graph: Graph | None = None) -> Plan:
        """Complete a plan as a run of it would find it now, changing nothing.

        Each deployment's create or update gets the policy decision on its transition (as
        the caller would get it for a deploy); each step its provider's diff, or, if its
        provider is not installed, says so; `blocked_by` says why a step would not run.
        `graph`: the graph the plan was made on, when it is not the stored one (a dry run's
        scratch copy: its policies and allowed environments decide, not the stored ones).
        """
        graph = graph if graph is not None else await self.catalog.graph()
        actor = current_actor()
        reasons: dict[str, str] = {}
        health = await self._health_of_plan(plan)
        for wave in plan.waves:
            for step in wave["steps"]:
                own: list[str] = []
                decision = self._decide(graph, step, actor, health)
                if decision is not None:
                    step["decision"] = _verdict(decision)
                    if not decision.allowed:
                        own.append(_denied(decision))
                if step["action"] != "noop" and self._provider(step) is None:
                    own.append(self._missing(step))
                if own:
                    reasons[step["node"]] = "; ".join(own)
        mark_blocked(plan, reasons)
        changing = [
            s["node"] for w in plan.waves for s in w["steps"] if s["action"] in ("create", "update")
        ]
        actors = await self.supervisor.actor_states(changing)
        for wave in plan.waves:
            for step in wave["steps"]:
                provider = self._provider(step)
                if provider is None or step["action"] not in ("create", "update"):
                    continue
                seen = actors.get(step["node"])
                observed = (seen.observed if seen else None) or {}
                step["diff"] = await provider.diff(desired=step["desired"], observed=observed)  # type: ignore[typeddict-item]
        return plan

    def _provider(self, step: Mapping[str, Any]) -> Provider | None:
        return self.supervisor.provider(step["provider"])

    def _missing(self, step: Mapping[str, Any]) -> str:
        if step["provider"] is None and step["kind"] == "resource":
            # its resource type is not declared: nothing says which provider realises it
            rtype = step["desired"].get("type")
            named = f"resource type {rtype!r}" if rtype else "its resource type"
            return f"{named} does not exist, so no provider realises it"
        return self.supervisor.providers.missing(step["provider"])

    async def deploy(self, app: str, svc: str, version: str, env: str) -> tuple[DeployResult, Run]:
        health = await self.health(app, svc)
        result = await self.catalog.deploy(app, svc, version, env, health=health)
        plan = await self.plan(app, env)
        run = await self._start(plan, trigger="deploy", environment=env, application=app)
        return result, run

    async def preview_deploy(
        self, app: str, svc: str, version: str, env: str
    ) -> tuple[DeployResult, list[Op], Plan | None]:
        """A deploy as a dry run: the decision, the graph changes and the plan; no change."""
        result, batch, after = await self.catalog.preview_deploy(
            app, svc, version, env, health=await self.health(app, svc)
        )
        if not result.decision.allowed:
            return result, batch, None
        return result, batch, await self.preview(await self.catalog.plan_on(after, env, [app]))

    async def removed(
        self, removed: Removed, *, trigger: Trigger = "delete"
    ) -> tuple[list[Plan], list[Run]]:
        """Realise a delete: per environment where it changes something, the plan that removes
        the real objects (dependents before what they depend on), started as a run unless the
        delete was a dry run."""
        assert removed.after is not None
        if not removed.dry_run:
            await self.secrets.forget_deleted(removed.deleted)
        plans = []
        for env in removed.environments:
            plan = deletions(await self.catalog.plan_on(removed.after, env, removed.applications))
            if plan.summary["delete"]:
                plans.append(await self.preview(plan))
        if removed.dry_run:
            return plans, []
        runs = [
            await self._start(
                plan,
                trigger=trigger,
                environment=str(plan.environment),
                application=plan.application,
                former=removed.former_environments,
            )
            for plan in plans
        ]
        return plans, runs

    async def apply(self, env: str) -> tuple[Plan, Run]:
        with self.supervisor.telemetry.tracing.span("plan", attributes={"ztdp.environment": env}):
            plan = await self.catalog.plan_environment(env)
        return plan, await self._start(plan, trigger="apply", environment=env, application=None)

    async def _start(
        self,
        plan: Plan,
        *,
        trigger: Trigger,
        environment: str,
        application: str | None,
        former: Mapping[str, dict[str, Any]] | None = None,
    ) -> Run:
        """Record the run and start it; `former`: deleted environments' last data."""
        run = Run.from_plan(
            plan.waves,
            trigger=trigger,
            environment=environment,
            application=application,
            actor=current_actor(),
        )
        await self.supervisor.start_run(run, plan.waves, environments=former)
        return run

    async def run(self, run_id: str) -> Run:
        return await self.supervisor.state.run(run_id)

    async def runs(self, *, limit: int = 1000) -> list[Run]:
        return await self.supervisor.state.runs(limit=limit)

    def check_environment(self, env: Environment) -> None:
        """Refuse (InvalidInput naming the field) an environment whose settings section of an
        installed provider its `settings_model` refuses, merged with the configured default.
        A section of a provider not installed here is kept: the plan says it is missing."""
        sections = env.spec.providers
        configured = {kind: self._settings.provider_defaults(kind) for kind in sections}
        check_sections(self.supervisor.providers, sections, configured)

    # --- the supervisor's step hooks -------------------------------------------------------

    async def target(
        self, step: Mapping[str, Any], environment: Mapping[str, Any] | None
    ) -> tuple[Resource, Target]:
        kind, app, name = describe(step["node"])
        env = step["node"].rsplit("@", 1)[1]
        if step["action"] == "delete":
            # Delete where it was made: the environment may have been changed or deleted since.
            seen = await self.supervisor.actor(step["node"])
            if seen is not None and seen.resource is not None and seen.target is not None:
                return seen.resource, seen.target
        graph = await self.catalog.graph()
        env_data = graph.data(node_id(NodeKind.ENVIRONMENT, env))
        if env_data is None and environment is not None:
            env_data = dict(environment)
        if env_data is None:
            raise PermanentError(
                f"environment {env} no longer exists and where {step['node']} was made is "
                "not known; refusing to guess a cluster to act on"
            )
        spec = env_data.get("spec", {})
        if not app and kind == "resource":  # a resource node's id does not name its owner
            app = _owner(graph, node_id(NodeKind.RESOURCE, name))
        desired = step["desired"]
        if step.get("roll"):  # another application's deployment, rolled by a rotation
            desired = await self._still_rolls(step, app, env)
        resource = Resource(
            node=step["node"],
            kind=kind,
            name=name,
            application=app,
            desired=dict(desired),
            depends_on=tuple(step["depends_on"]),
        )
        kind_of_provider = step.get("provider") or ""
        section = provider_section(spec, kind_of_provider)
        provider = self.supervisor.providers.get(kind_of_provider)
        settings = section
        if provider is not None:  # a missing provider fails the step with its own words
            settings = resolve(
                provider,
                kind_of_provider,
                environment=env,
                configured=self._settings.provider_defaults(kind_of_provider),
                spec=section,
            )
        target = Target(
            environment=env,
            settings=settings,
            reconcile=spec.get("reconcile", "repair"),
            spec=section,
        )
        return resource, target

    async def resolve(self, resource: Resource, target: Target) -> Resource:
        return await self.secrets.resolve(resource, target)

    async def generated(
        self, resource: Resource, target: Target, secrets: Mapping[str, str]
    ) -> None:
        await self.secrets.generated(resource, target, secrets)

    async def regenerate(self, info: SecretInfo) -> tuple[SecretInfo, Run | None]:
        """Rotate a provider-generated secret: its resource is applied again without its
        outputs (its provider generates new ones) and the deployments using them follow in the
        same run. None: the resource is not realised there (nothing to apply now)."""
        marked = await self.secrets.request_new(info, current_actor())
        node = info.generated_by
        assert node is not None  # only a generated secret is regenerated
        graph = await self.catalog.graph()
        plan = await self.catalog.plan(info.application, info.environment)
        # A resource used by other applications' services too: their deployments roll onto
        # the new secrets in the same run; only that, not whatever else those applications
        # have not applied yet (theirs to apply, not the rotating team's).
        resource = node.rsplit("@", 1)[0]
        users = _users(graph, resource, info.environment) - {info.application}
        if users:
            theirs = await self.catalog.plan_on(graph, info.environment, sorted(users))
            name = resource.rsplit("/", 1)[1]
            rolls = [
                PlanStep(**step, roll=name)  # checked again when it runs (`_still_rolls`)
                for wave in theirs.waves
                for step in wave["steps"]
                if _rolls_only(step, name)
            ]
            if rolls:  # after the resource: each waits for it (planner.waits)
                plan.waves.append({"index": len(plan.waves), "steps": rolls})
                plan.summary["update"] += len(rolls)
        found = False
        for wave in plan.waves:
            for step in wave["steps"]:
                if step["node"] == node and step["action"] == "noop":
                    step["action"] = "update"  # same desired state; new outputs wanted
                    plan.summary["noop"] -= 1
                    plan.summary["update"] += 1
                found = found or step["node"] == node
        if not found:
            return marked, None
        run = await self._start(
            await self.preview(plan),
            trigger="apply",
            environment=info.environment,
            application=info.application,
        )
        return marked, run

    async def _still_rolls(self, step: Mapping[str, Any], app: str, env: str) -> Mapping[str, Any]:
        """The desired state a rotation's roll of another application's deployment applies:
        its application's as it is now, if that still differs from what runs only by the
        rotated secrets' versions (or not at all, rolled meanwhile by its own run). Anything
        else changed since the rotation was planned (a deploy of theirs, say): not applied
        from here, where it would be rolled back or rolled out by another team."""
        plan = await self.catalog.plan(app, env)
        now = next((s for w in plan.waves for s in w["steps"] if s["node"] == step["node"]), None)
        if now is not None and (now["action"] == "noop" or _rolls_only(now, step["roll"])):
            return dict(now["desired"])
        raise PermanentError(
            f"{step['node']} changed since the rotation of {step['roll']}'s secrets was "
            f"planned; the next apply of application {app} rolls it onto them"
        )

    async def check(self, actor: str, step: Mapping[str, Any]) -> str | None:
        """Policy is evaluated again before each step: it may have changed since the plan."""
        if step["kind"] != "deployment" or step["action"] not in ("create", "update"):
            return None
        _, app, svc = describe(step["node"])
        decision = self._decide(
            await self.catalog.graph(), step, actor, await self.health(app, svc)
        )
        return None if decision is None or decision.allowed else _denied(decision)

    # --- policy and health -----------------------------------------------------------------

    def _decide(
        self, graph: Graph, step: Mapping[str, Any], actor: str, health: HealthOf
    ) -> Decision | None:
        """The decision on the transition a step makes; None for a step that is no deploy."""
        if step["kind"] != "deployment" or step["action"] not in ("create", "update"):
            return None
        _, app, svc = describe(step["node"])
        t = Transition(
            application=app,
            service=svc,
            version=step["desired"]["version"],
            environment=step["node"].rsplit("@", 1)[1],
            actor=actor,
        )
        return evaluate(graph, t, health=health)

    async def evaluate(self, t: Transition) -> Decision:
        """Ask policy about a transition, with the deployments' health as the state store has it."""
        return await self.catalog.evaluate(t, health=await self.health(t.application, t.service))

    async def health(self, application: str, service: str) -> HealthOf:
        """How the service's deployments are doing in every environment, read at once from
        the state store (policy evaluation is synchronous and runs inside a write)."""
        return await self._health([(application, service)])

    async def _health_of_plan(self, plan: Plan) -> HealthOf:
        pairs = {
            describe(s["node"])[1:]
            for w in plan.waves
            for s in w["steps"]
            if s["kind"] == "deployment"
        }
        return await self._health(sorted(pairs))

    async def _health(self, pairs: list[tuple[str, str]]) -> HealthOf:
        if not pairs:
            return _no_health
        graph = await self.catalog.graph()
        environments = [n.split("/", 1)[1] for n, _ in graph.nodes(NodeKind.ENVIRONMENT)]
        nodes = [deployment_node(a, s, e) for a, s in pairs for e in environments]
        actors = await self.supervisor.actor_states(nodes)
        timed = _timed_promotions(graph)  # else `since` is only shown: the record's will do
        known = {
            node: NodeHealth(
                status=state.status.value,
                since=await self._ready_since(node, state) if timed else state.since,
                version=(state.desired or {}).get("version"),
            )
            for node, state in actors.items()
        }

        def health(application: str, service: str, environment: str) -> NodeHealth | None:
            return known.get(deployment_node(application, service, environment))

        return health

    async def _ready_since(self, node: str, state: ActorState) -> datetime | None:
        """When the node's current status began. For Ready: where its unbroken run of Ready
        statuses begins in the event store's history, which outlives the actor's record (a
        state store replaced or wiped while the event store was kept; docs/decisions.md). The record
        decides when the history cannot: no store, an outage, or a history that has not yet
        caught up with the record (its newest status is another, or older than the record's)."""
        if state.status is not Status.READY or self._history is None or state.since is None:
            return state.since
        try:
            page = await self._history.query(
                EventQuery(node=node, type="actor.status", limit=_HISTORY)
            )
        except BackendUnavailable:
            return state.since
        zone, began = state.since.tzinfo, state.since
        events = page.events
        if events and datetime.fromtimestamp(events[-1].time, zone) < state.since - _CLOCK_SLACK:
            return state.since  # the record changed after the newest status the store has
        for event in reversed(events):
            if event.data.get("status") != "Ready":
                break
            began = min(began, datetime.fromtimestamp(event.time, zone))
        return began

    async def status_of(self, node: str) -> Status:
        state = await self.supervisor.actor(node)
        return Status.PENDING if state is None else state.status


def _rolls_only(step: Mapping[str, Any], resource: str) -> bool:
    """Whether a plan step only moves a deployment onto new versions of the secrets that
    resource `resource` generated (`env.<VAR>.version` of references to `<resource>.*`)."""
    if step["kind"] != "deployment" or step["action"] != "update" or not step["diff"]:
        return False
    env = step["desired"].get("env") or {}
    for change in step["diff"]:
        path = str(change["path"])
        if not (path.startswith("env.") and path.endswith(".version")):
            return False
        ref = env.get(path[len("env.") : -len(".version")])
        if not (isinstance(ref, Mapping) and str(ref.get("secret", "")).startswith(f"{resource}.")):
            return False
    return True


def _users(graph: Graph, resource: str, environment: str) -> set[str]:
    """The applications with a service deployed in `environment` that uses the resource
    (graph node `resource`): theirs are the deployments its generated secrets reach there."""
    env = node_id(NodeKind.ENVIRONMENT, environment)
    return {
        owner.rsplit("/", 1)[1]
        for service in graph.predecessors(resource, EdgeType.USES)
        if any(
            graph.has_edge(version, env, EdgeType.DEPLOY)
            for version in graph.out(service, EdgeType.HAS_VERSION)
        )
        for owner in graph.predecessors(service, EdgeType.OWNS)
    }


def _timed_promotions(graph: Graph) -> bool:
    """Whether a promotion rule counts time (`min_ready`): only then is the history read."""
    for _, data in graph.nodes(NodeKind.POLICY):
        rule = (data.get("spec") or {}).get("rule") or {}
        if rule.get("type") == "promotion" and rule.get("min_ready"):
            return True
    return False


_HISTORY = 100  # status changes read back: a Ready run longer than that starts at the oldest
_CLOCK_SLACK = timedelta(seconds=1)  # an event is stamped just after the record it reports


def _no_health(application: str, service: str, environment: str) -> NodeHealth | None:
    return None
