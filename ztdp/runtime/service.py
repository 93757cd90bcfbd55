"""The runtime as the API sees it: deploys and applies become runs on the supervisor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ztdp.catalog import Catalog, DeployResult, Removed
from ztdp.catalog.actor import current_actor
from ztdp.graph import NodeKind, Op, node_id
from ztdp.planner import Plan, deletions, deployment_node
from ztdp.policy import Decision, NodeHealth, Transition, evaluate
from ztdp.providers import Resource, Target
from ztdp.runtime.actor import Status
from ztdp.runtime.runs import Run, RunStore, Trigger
from ztdp.runtime.supervisor import Supervisor
from ztdp.settings import Settings


def describe(node: str) -> tuple[str, str, str]:
    """(kind, application, name) of a realised node id."""
    kind, rest = node.split("/", 1)
    path, _, _env = rest.partition("@")
    parts = path.split("/")
    return (kind, parts[0], parts[1]) if len(parts) == 2 else (kind, "", parts[0])


class Runtime:
    def __init__(
        self, catalog: Catalog, supervisor: Supervisor, runs: RunStore, settings: Settings
    ) -> None:
        self.catalog = catalog
        self.supervisor = supervisor
        self.runs = runs
        self._settings = settings

    async def plan(self, app: str, environment: str | None) -> Plan:
        """The catalog's plan, with each step's diff from its provider where one is installed."""
        return await self._annotated(await self.catalog.plan(app, environment))

    async def _annotated(self, plan: Plan) -> Plan:
        for wave in plan.waves:
            for step in wave["steps"]:
                provider = self.supervisor.providers.get(step["provider"] or "")
                if provider is None or step["action"] not in ("create", "update"):
                    continue
                seen = self.supervisor.actors.get(step["node"])
                observed = (seen.observed if seen else None) or {}
                step["diff"] = await provider.diff(desired=step["desired"], observed=observed)  # type: ignore[typeddict-item]
        return plan

    async def deploy(self, app: str, svc: str, version: str, env: str) -> tuple[DeployResult, Run]:
        result = await self.catalog.deploy(app, svc, version, env, health=self.health)
        plan = await self.plan(app, env)
        return result, self._start(plan, trigger="deploy", environment=env, application=app)

    async def preview_deploy(
        self, app: str, svc: str, version: str, env: str
    ) -> tuple[DeployResult, list[Op], Plan | None]:
        """A deploy as a dry run: the decision, the graph changes and the plan; no change."""
        result, batch, after = await self.catalog.preview_deploy(
            app, svc, version, env, health=self.health
        )
        if not result.decision.allowed:
            return result, batch, None
        return result, batch, await self._annotated(await self.catalog.plan_on(after, env, [app]))

    async def removed(
        self, removed: Removed, *, trigger: Trigger = "delete"
    ) -> tuple[list[Plan], list[Run]]:
        """Realise a delete: per environment where it changes something, the plan that removes
        the real objects (dependents before what they depend on), started as a run unless the
        delete was a dry run."""
        assert removed.after is not None
        plans = []
        for env in removed.environments:
            plan = deletions(await self.catalog.plan_on(removed.after, env, removed.applications))
            if plan.summary["delete"]:
                plans.append(await self._annotated(plan))
        if removed.dry_run:
            return plans, []
        runs = [
            self._start(
                plan,
                trigger=trigger,
                environment=str(plan.environment),
                application=plan.application,
            )
            for plan in plans
        ]
        return plans, runs

    async def apply(self, env: str) -> tuple[Plan, Run]:
        plan = await self.catalog.plan_environment(env)
        return plan, self._start(plan, trigger="apply", environment=env, application=None)

    def _start(
        self,
        plan: Plan,
        *,
        trigger: Trigger,
        environment: str,
        application: str | None,
    ) -> Run:
        run = Run.from_plan(
            plan.waves,
            trigger=trigger,
            environment=environment,
            application=application,
            actor=current_actor(),
        )
        self.runs.add(run)
        self.supervisor.start(run, list(plan.waves), target=self._target, check=self._check)
        return run

    async def _target(self, step: Mapping[str, Any]) -> tuple[Resource, Target]:
        kind, app, name = describe(step["node"])
        env = step["node"].rsplit("@", 1)[1]
        graph = await self.catalog.graph()
        env_data = graph.data(node_id(NodeKind.ENVIRONMENT, env)) or {}
        spec = env_data.get("spec", {})
        settings = dict(spec.get("kubernetes") or {})
        settings["reconcile"] = spec.get("reconcile", "repair")
        resource = Resource(
            node=step["node"],
            kind=kind,
            name=name,
            application=app,
            desired=dict(step["desired"]),
            depends_on=tuple(step["depends_on"]),
        )
        target = Target(
            environment=env, settings=settings, defaults={"kubeconfig": self._settings.kubeconfig}
        )
        return resource, target

    async def _check(self, run: Run, step: Mapping[str, Any]) -> str | None:
        """Policy is evaluated again before each step: it may have changed since the plan."""
        if step["kind"] != "deployment" or step["action"] not in ("create", "update"):
            return None
        _, app, svc = describe(step["node"])
        t = Transition(
            application=app,
            service=svc,
            version=step["desired"]["version"],
            environment=run.environment,
            actor=run.actor,
        )
        decision = evaluate(await self.catalog.graph(), t, health=self.health)
        return None if decision.allowed else f"denied by policy: {decision.explain()}"

    async def evaluate(self, t: Transition) -> Decision:
        """Ask policy about a transition, with the deployments' health as this runtime sees it."""
        return await self.catalog.evaluate(t, health=self.health)

    def health(self, application: str, service: str, environment: str) -> NodeHealth | None:
        state = self.supervisor.actors.get(deployment_node(application, service, environment))
        if state is None:
            return None
        version = (state.desired or {}).get("version")
        return NodeHealth(status=state.status.value, since=state.since, version=version)

    def status_of(self, node: str) -> Status:
        state = self.supervisor.actors.get(node)
        return Status.PENDING if state is None else state.status
