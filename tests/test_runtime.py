"""The runtime over HTTP: runs, actors, failures that say what is blocked and why, events.

Providers here are test providers registered in a real registry: the outer boundary.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudevents.core.formats.json import JSONFormat

from tests.helpers import Api
from ztdp.api import create_app
from ztdp.errors import PermanentError, TemporaryError
from ztdp.events import Event, EventFilter, MemoryEventBus
from ztdp.planner import diff
from ztdp.providers import (
    Observation,
    PluginInvalid,
    ProviderInfo,
    ProviderRegistry,
    Resource,
    Target,
)
from ztdp.runtime import ActorState, Run, Supervisor
from ztdp.runtime import supervisor as supervisor_module
from ztdp.runtime.actor import Status
from ztdp.runtime.mailbox import Envelope, MemoryMailbox
from ztdp.settings import Settings
from ztdp.state import MemoryStateStore


class FakeProvider:
    """Realises anything in memory; told per node to fail, hang or be briefly unreachable."""

    def __init__(self, kind: str, delay: float = 0.0) -> None:
        self.kind = kind
        self.delay = delay
        self.live: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, str] = {}
        self.hang: set[str] = set()
        self.unreachable: dict[str, int] = {}
        self.applied: list[str] = []  # applies that finished
        self.started: list[str] = []  # every apply called, finished or not
        self.slow: dict[str, float] = {}

    async def validate(self, *, resource: Resource) -> None:
        return None

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return list(diff(observed, desired))  # type: ignore[arg-type]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.started.append(resource.node)
        if resource.node in self.hang:
            await anyio.sleep(3600)
        if resource.node in self.fail:
            raise PermanentError(self.fail[resource.node])
        if self.unreachable.get(resource.node, 0) > 0:
            self.unreachable[resource.node] -= 1
            raise TemporaryError("connection refused", retry_after=0.01)
        await anyio.sleep(self.slow.get(resource.node, self.delay))
        self.applied.append(resource.node)
        self.live[resource.node] = dict(resource.desired)
        return Observation(state=dict(resource.desired), health="Ready")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        state = self.live.get(resource.node)
        return None if state is None else Observation(state=state, health="Ready")

    async def delete(self, *, resource: Resource, target: Target) -> None:
        self.live.pop(resource.node, None)

    async def health(self, *, resource: Resource, target: Target) -> str:
        return "Ready"

    async def aclose(self) -> None:
        return None


def registry(*providers: FakeProvider) -> ProviderRegistry:
    reg = ProviderRegistry()
    for p in providers:
        reg.register(p, ProviderInfo(p.kind, f"tests:{p.kind}", "tests", "0"))
    return reg


SETTINGS = Settings(step_timeout=0.5, retry_backoff=0.01, provider_retries=3, observe_interval=0)


@pytest.fixture
def kube() -> FakeProvider:
    return FakeProvider("kubernetes")


@pytest.fixture
def pg() -> FakeProvider:
    return FakeProvider("postgres")


@pytest.fixture
async def api(kube: FakeProvider, pg: FakeProvider) -> AsyncIterator[Api]:
    app = create_app(SETTINGS, providers=registry(kube, pg))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        yield api


async def finished(api: Api, run_id: str, seconds: float = 10) -> dict[str, Any]:
    with anyio.fail_after(seconds):
        while True:
            run = await api.ok("GET", f"/v1/runs/{run_id}")
            if run["status"] != "Running":
                return run  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)


def steps(run: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {s["node"]: (s["status"], s["error"]) for s in run["steps"]}


async def deploy(api: Api, svc: str, env: str = "dev") -> dict[str, Any]:
    code, accepted = await api.deploy("checkout", svc, "1.0.0", env)
    assert code == 202, accepted
    return await finished(api, accepted["run"])


async def test_a_deploy_runs_to_ready_and_the_next_plan_is_a_noop(
    api: Api, kube: FakeProvider
) -> None:
    run = await deploy(api, "checkout-api")
    assert run["status"] == "Succeeded" and run["trigger"] == "deploy"
    assert steps(run) == {"deployment/checkout/checkout-api@dev": ("Ready", None)}
    assert kube.applied == ["deployment/checkout/checkout-api@dev"]
    [d] = await api.ok("GET", "/v1/environments/dev/deployments")
    assert d["status"] == "Ready"
    plan = await api.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    assert plan["summary"] == {"create": 0, "update": 0, "delete": 0, "noop": 1}
    await api.version("checkout", "checkout-api", "1.1.0")
    _, accepted = await api.deploy("checkout", "checkout-api", "1.1.0", "dev")
    await finished(api, accepted["run"])
    assert kube.live["deployment/checkout/checkout-api@dev"]["version"] == "1.1.0"


async def with_database(api: Api) -> None:
    """checkout-api uses pg-db; worker uses nothing."""
    await api.ok(
        "POST",
        "/v1/resources",
        {"metadata": {"name": "pg-db", "owner": "team-x"}, "spec": {"type": "postgres"}},
    )
    await api.ok("POST", "/v1/applications/checkout/resources/pg-db", status=201)
    await api.ok(
        "POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db", status=201
    )
    await api.service("checkout", "worker")
    await api.version("checkout", "worker", "1.0.0")


async def test_a_failed_step_blocks_its_dependents_and_independent_work_goes_on(
    api: Api, kube: FakeProvider, pg: FakeProvider
) -> None:
    await with_database(api)
    pg.fail["resource/pg-db@dev"] = "disk quota exceeded"
    first = await deploy(api, "worker")  # the application's plan: pg-db and worker, independent
    assert steps(first) == {
        "resource/pg-db@dev": ("Failed", "disk quota exceeded"),
        "deployment/checkout/worker@dev": ("Ready", None),
    }
    run = await deploy(api, "checkout-api")
    assert run["status"] == "Failed"
    assert steps(run) == {
        "resource/pg-db@dev": ("Failed", "disk quota exceeded"),
        "deployment/checkout/checkout-api@dev": (
            "Blocked",
            "blocked by resource/pg-db@dev: disk quota exceeded",
        ),
        "deployment/checkout/worker@dev": ("Unchanged", None),
    }
    assert "deployment/checkout/checkout-api@dev" not in kube.live


def plan_step(node: str, *deps: str) -> dict[str, Any]:
    """A plan step as the planner makes it, for runs driven without the API."""
    return {
        "node": node,
        "source": node,
        "kind": "deployment",
        "action": "create",
        "provider": "kubernetes",
        "depends_on": list(deps),
        "desired": {"version": "1"},
    }


def run_of(waves: list[dict[str, Any]]) -> Run:
    return Run.from_plan(waves, trigger="apply", environment="dev", actor="test")


Check = Callable[[str, Mapping[str, Any]], Awaitable[str | None]]


class Hooks:
    """The step hooks the API's runtime gives the supervisor, for runs driven without it."""

    def __init__(self, check: Check | None = None) -> None:
        self._check = check

    async def target(
        self, step: Mapping[str, Any], environment: Mapping[str, Any] | None
    ) -> tuple[Resource, Target]:
        return Resource(step["node"], "deployment", step["node"], "app", step["desired"]), Target(
            "dev"
        )

    async def check(self, actor: str, step: Mapping[str, Any]) -> str | None:
        return None if self._check is None else await self._check(actor, step)


def supervisor_of(
    *providers: FakeProvider,
    events: MemoryEventBus | None = None,
    settings: Settings = SETTINGS,
    check: Check | None = None,
) -> Supervisor:
    supervisor = Supervisor(
        providers=registry(*providers),
        state=MemoryStateStore(),
        events=events or MemoryEventBus(),
        mailbox=MemoryMailbox(settings.partitions),
        settings=settings,
    )
    supervisor.hooks = Hooks(check)
    return supervisor


async def execute(supervisor: Supervisor, waves: list[dict[str, Any]]) -> Run:
    """Start a run of the waves and wait for its run.finished event; the run as recorded."""
    run = run_of(waves)
    async with supervisor.events.subscribe(EventFilter(run=run.id, type="run.finished")) as done:
        await supervisor.start_run(run, waves)
        with anyio.fail_after(10):
            await done.receive()
    return await supervisor.state.run(run.id)


async def apply(supervisor: Supervisor, node: str, version: str = "1") -> ActorState:
    """Send the node's actor an apply outside any run; its state once it reports an outcome."""
    flt = EventFilter(node=node, type="actor.status")
    async with supervisor.events.subscribe(flt) as statuses:
        await send_apply(supervisor, node, version)
        with anyio.fail_after(10):
            while (await statuses.receive())["data"]["status"] == "Progressing":
                pass
    state = await supervisor.actor(node)
    assert state is not None
    return state


async def send_apply(supervisor: Supervisor, node: str, version: str = "1") -> None:
    resource = Resource(node, "deployment", node, "app", {"version": version})
    await supervisor.apply(resource, Target("dev"), provider="kubernetes")


def outcomes(run: Run) -> dict[str, tuple[str, str | None]]:
    return {s.node: (s.status, s.error) for s in run.steps}


async def test_independent_branches_of_one_plan_go_on_when_one_fails() -> None:
    kube = FakeProvider("kubernetes")
    kube.fail["a"] = "image pull failed"
    supervisor = supervisor_of(kube)

    waves = [
        {"index": 0, "steps": [plan_step("a"), plan_step("c")]},
        {"index": 1, "steps": [plan_step("b", "a"), plan_step("d", "c")]},
        {"index": 2, "steps": [plan_step("e", "b", "d")]},
    ]
    async with supervisor:
        run = await execute(supervisor, waves)
    assert outcomes(run) == {
        "a": ("Failed", "image pull failed"),
        "b": ("Blocked", "blocked by a: image pull failed"),
        "c": ("Ready", None),
        "d": ("Ready", None),
        "e": ("Blocked", "blocked by b: blocked by a: image pull failed"),
    }
    assert run.status == "Failed" and sorted(kube.applied) == ["c", "d"]


async def test_policy_is_checked_by_the_actor_just_before_its_step() -> None:
    kube = FakeProvider("kubernetes")
    seen: dict[str, list[str]] = {}

    async def check(actor: str, s: Mapping[str, Any]) -> str | None:
        seen[s["node"]] = list(kube.applied)  # what was done when this step was checked
        return "denied by policy: frozen" if s["node"] == "b" else None

    supervisor = supervisor_of(kube, check=check)
    waves = [
        {"index": 0, "steps": [plan_step("a")]},
        {"index": 1, "steps": [plan_step("b", "a"), plan_step("c", "a")]},
        {"index": 2, "steps": [plan_step("d", "b")]},
    ]
    async with supervisor:
        run = await execute(supervisor, waves)
        b = await supervisor.actor("b")
    assert seen == {"a": [], "b": ["a"], "c": ["a"]}  # after its dependency, not at the start
    assert outcomes(run) == {
        "a": ("Ready", None),
        "b": ("Failed", "denied by policy: frozen"),
        "c": ("Ready", None),
        "d": ("Blocked", "blocked by b: denied by policy: frozen"),
    }
    assert "b" not in kube.started
    assert b is not None and b.status is Status.PENDING  # a refusal is not the actor's failure


async def test_a_check_that_breaks_fails_its_step_not_the_actor() -> None:
    kube = FakeProvider("kubernetes")

    async def check(actor: str, s: Mapping[str, Any]) -> str | None:
        if s["node"] == "a":
            raise LookupError("no such graph node")
        return None

    supervisor = supervisor_of(kube, check=check)
    waves = [{"index": 0, "steps": [plan_step("a"), plan_step("b")]}]
    async with supervisor:
        run = await execute(supervisor, waves)
        a = await supervisor.actor("a")
    assert outcomes(run) == {
        "a": ("Failed", "internal error: LookupError('no such graph node')"),
        "b": ("Ready", None),
    }
    assert a is not None and a.restarts == 0


class SlowToRecord(MemoryStateStore):
    """The memory store, writing a run's record 50 ms late: a large plan's record is still
    being written when its start message (sent first) reaches the coordinator."""

    async def create_run(self, run: Run, plan: Mapping[str, Mapping[str, Any]]) -> None:
        await anyio.sleep(0.05)
        await super().create_run(run, plan)


async def test_a_start_that_comes_before_its_record_starts_the_run_once_it_is_written(
    kube: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a whole START_RETRY later (made a minute here, so that waiting it out fails)."""
    monkeypatch.setattr(supervisor_module, "START_RETRY", 60.0)
    supervisor = Supervisor(
        providers=registry(kube),
        state=SlowToRecord(),
        events=MemoryEventBus(),
        mailbox=MemoryMailbox(SETTINGS.partitions),
        settings=SETTINGS,
    )
    supervisor.hooks = Hooks()
    async with supervisor:
        run = await execute(supervisor, [{"index": 0, "steps": [plan_step("deployment/a@dev")]}])
    assert outcomes(run) == {"deployment/a@dev": ("Ready", None)}


async def test_every_message_crosses_the_mailbox_encoded() -> None:
    """The memory mailbox keeps bytes only: whatever the runtime sends must survive JSON."""
    kube = FakeProvider("kubernetes")
    mailbox = MemoryMailbox(4)
    sent: list[bytes] = []
    original = mailbox.send

    async def recording(envelope: Envelope, *, partition: int) -> None:
        sent.append(envelope.encode())
        await original(envelope, partition=partition)

    mailbox.send = recording  # type: ignore[method-assign]
    supervisor = Supervisor(
        providers=registry(kube),
        state=MemoryStateStore(),
        events=MemoryEventBus(),
        mailbox=mailbox,
        settings=SETTINGS.model_copy(update={"partitions": 4}),
    )
    supervisor.hooks = Hooks()
    async with supervisor:
        run = await execute(supervisor, [{"index": 0, "steps": [plan_step("a")]}])
    assert run.status == "Succeeded"
    kinds = [Envelope.decode(raw).kind for raw in sent]
    assert kinds == ["advance", "step", "advance"]


async def test_a_hanging_provider_times_out_and_the_api_stays_responsive(
    api: Api, kube: FakeProvider
) -> None:
    kube.hang.add("deployment/checkout/checkout-api@dev")
    _, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    with anyio.fail_after(0.3):
        assert (await api.ok("GET", "/v1/status"))["revision"] > 0  # answered while the step hangs
    run = await finished(api, accepted["run"])
    assert steps(run)["deployment/checkout/checkout-api@dev"] == (
        "Failed",
        "apply timed out after 0.5 s",
    )


async def test_an_unreachable_target_is_retried_with_backoff(api: Api, kube: FakeProvider) -> None:
    kube.unreachable["deployment/checkout/checkout-api@dev"] = 2
    run = await deploy(api, "checkout-api")
    assert run["status"] == "Succeeded"
    retries = await api.ok("GET", f"/v1/events?run={run['id']}&type=actor.retry")
    assert [e["data"]["attempt"] for e in retries] == [1, 2]
    assert retries[0]["data"]["error"] == "connection refused"


async def test_retries_give_up_with_the_connection_error(api: Api, kube: FakeProvider) -> None:
    kube.unreachable["deployment/checkout/checkout-api@dev"] = 99
    run = await deploy(api, "checkout-api")
    assert steps(run)["deployment/checkout/checkout-api@dev"] == (
        "Failed",
        "connection refused (gave up after 3 retries)",
    )


async def test_a_missing_provider_fails_the_step_naming_it(kube: FakeProvider) -> None:
    app = create_app(SETTINGS, providers=registry(kube))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        await with_database(api)
        run = await deploy(api, "checkout-api")
        assert steps(run)["resource/pg-db@dev"] == (
            "Failed",
            "no provider 'postgres' is installed (installed: kubernetes)",
        )
        assert steps(run)["deployment/checkout/checkout-api@dev"][0] == "Blocked"


async def test_events_cover_changes_decisions_runs_and_actors(api: Api) -> None:
    run = await deploy(api, "checkout-api")
    await api.deploy("checkout", "checkout-api", "1.0.0", "nowhere")
    for kind in (
        "graph.changed",
        "policy.decision",
        "run.started",
        "run.step",
        "run.finished",
        "actor.status",
    ):
        events = await api.ok("GET", f"/v1/events?type={kind}")
        assert events, kind
        assert all(e["specversion"] == "1.0" and e["source"] == "/ztdp" for e in events)
    by_node = await api.ok(
        "GET", "/v1/events?node=deployment/checkout/checkout-api@dev&type=actor.status"
    )
    assert [e["data"]["status"] for e in by_node] == ["Progressing", "Ready"]
    assert all(e["runid"] == run["id"] for e in by_node)


async def test_events_stream_live_as_server_sent_events(api: Api) -> None:
    resp = await api.client.get("/v1/events?type=run", headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    _, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", "dev")
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(5):
        while not any(e["type"] == "io.ztdp.run.finished" for e in seen):
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
    resp.close()
    assert seen[0]["type"] == "io.ztdp.run.started" and seen[0]["runid"] == accepted["run"]


async def test_providers_are_listed_with_their_origin(api: Api) -> None:
    assert await api.ok("GET", "/v1/providers") == [
        {
            "kind": "kubernetes",
            "entry_point": "tests:kubernetes",
            "distribution": "tests",
            "version": "0",
        },
        {
            "kind": "postgres",
            "entry_point": "tests:postgres",
            "distribution": "tests",
            "version": "0",
        },
    ]


class Incomplete:
    kind = "broken"

    async def apply(self) -> None:
        return None


def test_a_plugin_missing_methods_is_refused_naming_it() -> None:
    ep = EntryPoint(name="broken", value="tests.test_runtime:Incomplete", group="ztdp.providers")
    with pytest.raises(PluginInvalid) as err:
        ProviderRegistry.from_entry_points([ep])
    assert "plugin 'broken' (tests.test_runtime:Incomplete)" in err.value.detail
    assert (
        "missing async method(s) validate, diff, observe, delete, health, aclose"
        in err.value.detail
    )


def test_a_plugin_that_cannot_be_imported_is_refused_naming_it() -> None:
    ep = EntryPoint(name="gone", value="no_such_module:Provider", group="ztdp.providers")
    with pytest.raises(PluginInvalid, match=r"plugin 'gone' .* cannot be imported"):
        ProviderRegistry.from_entry_points([ep])


async def test_a_step_starts_when_its_dependencies_are_done_not_its_whole_wave() -> None:
    kube = FakeProvider("kubernetes")
    kube.slow["slow"] = 0.3
    supervisor = supervisor_of(kube)

    waves = [
        {"index": 0, "steps": [plan_step("slow"), plan_step("fast")]},
        {"index": 1, "steps": [plan_step("after-fast", "fast"), plan_step("after-slow", "slow")]},
    ]
    async with supervisor:
        run = await execute(supervisor, waves)
    assert kube.applied == ["fast", "after-fast", "slow", "after-slow"]
    assert run.status == "Succeeded"


async def test_shutdown_finishes_every_accepted_message() -> None:
    slow = FakeProvider("kubernetes", delay=0.02)
    supervisor = supervisor_of(slow)
    async with supervisor:
        for i in range(20):
            await send_apply(supervisor, f"deployment/a/s{i % 4}@dev", str(i))
    assert len(slow.applied) == 20  # drained before the supervisor stopped
    assert {n: s["version"] for n, s in slow.live.items()} == {
        f"deployment/a/s{i}@dev": str(16 + i) for i in range(4)
    }  # one at a time, in order
    states = await supervisor.actor_states([f"deployment/a/s{i}@dev" for i in range(4)])
    assert {s.status for s in states.values()} == {Status.READY}


@pytest.fixture
async def watched(kube: FakeProvider, pg: FakeProvider) -> AsyncIterator[Api]:
    """The API with actors observing their nodes every 0.05 s."""
    settings = SETTINGS.model_copy(update={"observe_interval": 0.05})
    app = create_app(settings, providers=registry(kube, pg))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        await api.basic()
        await api.ok(
            "POST",
            "/v1/environments",
            {"metadata": {"name": "audit", "owner": "p"}, "spec": {"reconcile": "report-only"}},
        )
        await api.ok("POST", "/v1/applications/checkout/environments/audit/allowed", status=200)
        yield api


async def wait_for_events(api: Api, query: str) -> list[dict[str, Any]]:
    with anyio.fail_after(5):
        while not (events := await api.ok("GET", f"/v1/events?{query}")):  # noqa: ASYNC110 - polls the API as a client does
            await asyncio.sleep(0.02)
    return events  # type: ignore[no-any-return]


async def test_drift_is_detected_and_repaired(watched: Api, kube: FakeProvider) -> None:
    await deploy(watched, "checkout-api")
    node = "deployment/checkout/checkout-api@dev"
    kube.live[node]["image"] = "evil:1"  # changed behind ZTDP's back
    [drift, *_] = await wait_for_events(watched, f"node={node}&type=drift.detected")
    assert drift["data"]["changes"] == [
        {"path": "image", "before": "evil:1", "after": "checkout-api:1.0.0"}
    ]
    await wait_for_events(watched, f"node={node}&type=drift.repaired")
    assert kube.live[node]["image"] == "checkout-api:1.0.0"


async def test_a_failed_repair_is_not_reported_as_repaired(
    watched: Api, kube: FakeProvider
) -> None:
    await deploy(watched, "checkout-api")
    node = "deployment/checkout/checkout-api@dev"
    kube.fail[node] = "quota exceeded"
    kube.live[node]["image"] = "evil:1"
    [failed, *_] = await wait_for_events(watched, f"node={node}&type=drift.repair_failed")
    assert failed["data"]["error"] == "quota exceeded"
    assert await watched.ok("GET", f"/v1/events?node={node}&type=drift.repaired") == []


async def test_report_only_environments_record_drift_without_repairing(
    watched: Api, kube: FakeProvider
) -> None:
    await deploy(watched, "checkout-api", env="audit")
    node = "deployment/checkout/checkout-api@audit"
    kube.live[node]["image"] = "evil:1"
    await wait_for_events(watched, f"node={node}&type=drift.detected")
    await asyncio.sleep(0.2)
    assert kube.live[node]["image"] == "evil:1"
    assert await watched.ok("GET", f"/v1/events?node={node}&type=drift.repaired") == []


async def test_a_plan_shows_what_an_apply_would_put_back_in_a_report_only_environment(
    watched: Api, kube: FakeProvider
) -> None:
    """Drift is left alone by the runtime there, but not by an explicit apply, and the plan
    says what that apply will do (it said "noop" for a drifted deployment before)."""
    await deploy(watched, "checkout-api", env="audit")
    node = "deployment/checkout/checkout-api@audit"
    kube.live[node]["image"] = "evil:1"
    await wait_for_events(watched, f"node={node}&type=drift.detected")
    plan = await watched.ok("GET", "/v1/applications/checkout/plan?environment=audit")
    [step] = [s for w in plan["waves"] for s in w["steps"] if s["node"] == node]
    assert step["action"] == "update"
    assert {"path": "image", "before": "evil:1", "after": "checkout-api:1.0.0"} in step["diff"]
    run = await watched.ok("POST", "/v1/apply?env=audit", status=202)
    assert steps(await finished(watched, run["run"]))[node] == ("Ready", None)
    assert kube.live[node]["image"] == "checkout-api:1.0.0"

    del kube.live[node]  # gone: the plan makes it again, and an undeploy still deletes it
    plan_url = "/v1/applications/checkout/plan?environment=audit"
    with anyio.fail_after(5):
        while (await watched.ok("GET", plan_url))["summary"]["update"] != 1:  # noqa: ASYNC110 - polls the API as a client does
            await asyncio.sleep(0.02)
    undeployed = await watched.ok(
        "DELETE", "/v1/environments/audit/deployments/checkout/checkout-api", status=202
    )
    [run_id] = undeployed["runs"]
    assert steps(await finished(watched, run_id))[node] == ("Deleted", None)


async def test_every_event_is_valid_cloudevents_json(api: Api) -> None:
    await deploy(api, "checkout-api")
    events = await api.ok("GET", "/v1/events?limit=10000")
    fmt = JSONFormat()
    for event in events:
        parsed = fmt.read(None, json.dumps(event).encode())
        assert parsed.get_specversion() == "1.0" and parsed.get_type() == event["type"]


class BrokenObservation(FakeProvider):
    """Answers its first apply with a health no actor knows: the actor itself breaks."""

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        seen = await super().apply(resource=resource, target=target)
        if resource.node == "crashy" and self.applied.count("crashy") == 1:
            return Observation(state=seen.state, health="Exploded")  # type: ignore[arg-type]
        return seen


async def test_a_crashed_actor_restarts_after_backoff_and_its_siblings_carry_on() -> None:
    kube = BrokenObservation("kubernetes")
    supervisor = supervisor_of(kube)

    async with supervisor:
        first = await apply(supervisor, "crashy")
        sibling = await apply(supervisor, "sibling")
        second = await apply(supervisor, "crashy")  # queued behind the restart backoff
    assert first.status is Status.FAILED and first.last_error is not None
    assert first.last_error.startswith("actor crashed: KeyError('Exploded')")
    assert sibling.status is Status.READY
    assert second.status is Status.READY and second.restarts == 1


class RefusingBus(MemoryEventBus):
    """An event bus that cannot take some events (a bug in a transport, say)."""

    def __init__(self, refuse: Callable[[Event], bool]) -> None:
        super().__init__()
        self._refuse = refuse

    async def publish(self, event: Event) -> None:
        if self._refuse(event):
            raise ConnectionError("event transport unreachable")
        await super().publish(event)


async def test_a_crash_that_cannot_be_reported_still_fails_only_its_message() -> None:
    kube = BrokenObservation("kubernetes")
    supervisor = supervisor_of(
        kube,
        events=RefusingBus(
            lambda e: e.type == "io.ztdp.actor.status" and e.data["status"] == "Failed"
        ),
    )
    async with supervisor:
        await send_apply(supervisor, "crashy")  # its Failed status cannot be published
        sibling = await apply(supervisor, "sibling")
        again = await apply(supervisor, "crashy")
    assert sibling.status is Status.READY
    assert again.status is Status.READY and again.restarts == 1


async def test_a_run_that_breaks_fails_alone_and_the_supervisor_goes_on() -> None:
    kube = FakeProvider("kubernetes")
    supervisor = supervisor_of(kube, events=RefusingBus(lambda e: e.type == "io.ztdp.run.started"))
    waves = [{"index": 0, "steps": [plan_step("a")]}]
    run = run_of(waves)
    async with supervisor:
        await supervisor.start_run(run, waves)
        sibling = await apply(supervisor, "b")
        with anyio.fail_after(5):
            while (recorded := await supervisor.state.run(run.id)).status == "Running":  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert recorded.status == "Failed"
    assert [(s.status, s.error) for s in recorded.steps] == [
        ("Failed", "the run broke: ConnectionError('event transport unreachable')")
    ]
    assert sibling.status is Status.READY


async def test_a_run_start_before_its_record_waits_for_it_and_one_without_is_dropped() -> None:
    """start_run sends the start first and records the run after (a crash in between must not
    leave a run nobody starts): the coordinator waits for the record until the start's
    deadline, then drops the start."""
    kube = FakeProvider("kubernetes")
    supervisor = supervisor_of(kube)
    waves = [{"index": 0, "steps": [plan_step("a")]}]
    run = run_of(waves)
    async with supervisor:
        flt = EventFilter(run=run.id, type="run.finished")
        async with supervisor.events.subscribe(flt) as finished:
            await supervisor.send(
                Envelope(
                    node=f"run/{run.id}",
                    kind="advance",
                    id=f"{run.id}:start",
                    deadline=time.time() + 10,
                )
            )
            await anyio.sleep(0.3)  # the start is tried and put back while there is no record
            await supervisor.state.create_run(
                run, {"a": {"step": plan_step("a"), "after": [], "wave": 0, "environment": None}}
            )
            with anyio.fail_after(5):
                await finished.receive()
        orphan = Envelope(node="run/" + "0" * 32, kind="advance", deadline=time.time() - 1)
        await supervisor.send(orphan)
        assert (await apply(supervisor, "b")).status is Status.READY  # the partition goes on
    assert (await supervisor.state.run(run.id)).status == "Succeeded"


class CountingProvider(FakeProvider):
    """Counts the applies running at once."""

    def __init__(self) -> None:
        super().__init__("kubernetes", delay=0.01)
        self.now = self.most = 0

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().apply(resource=resource, target=target)
        finally:
            self.now -= 1


async def test_a_burst_of_messages_is_handled_a_bounded_number_at_a_time() -> None:
    """A takeover or a resync hands a process thousands of messages at once: it handles at
    most `actor_concurrency` of them at a time (the rest wait in their actors' queues), so
    they do not all wait at once on the stores' connection pools and time out there."""
    kube, events = CountingProvider(), MemoryEventBus()
    settings = SETTINGS.model_copy(update={"actor_concurrency": 3})
    nodes = [f"deployment/app/s{i}@dev" for i in range(40)]
    async with (
        supervisor_of(kube, events=events, settings=settings) as supervisor,
        events.subscribe(EventFilter(type="actor.status")) as seen,
    ):
        for node in nodes:
            await send_apply(supervisor, node)
        ready: set[str] = set()
        with anyio.fail_after(10):
            while len(ready) < len(nodes):
                event = await seen.receive()
                if event["data"]["status"] == "Ready":
                    ready.add(event["subject"])
    assert kube.most == 3  # bounded, and reached: the messages did run side by side
