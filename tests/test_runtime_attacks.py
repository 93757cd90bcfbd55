"""Attacks on the distributed runtime: ways to lose, duplicate or reorder work, leave a run
Running for ever, or keep acting on a partition whose lease is gone.

Each test names the bug it found (fixed since) or the attack that held.
Most run in one process over the memory backends (as tests/test_ownership.py does); those
that need JetStream's redelivery or payload limits use the session's NATS server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest

from tests.test_ownership import SETTINGS as SHARED_SETTINGS
from tests.test_ownership import Shared
from tests.test_runtime import (
    SETTINGS,
    FakeProvider,
    Hooks,
    outcomes,
    plan_step,
    registry,
    run_of,
    send_apply,
    supervisor_of,
)
from ztdp.errors import BackendUnavailable, NotFound, PermanentError
from ztdp.events import Event, EventFilter, MemoryEventBus
from ztdp.providers import Observation, Resource, Target
from ztdp.runtime import Run, StartRefused, Supervisor
from ztdp.runtime.actor import Status
from ztdp.runtime.mailbox import Envelope, MemoryMailbox
from ztdp.state import Fence, MemoryStateStore, PutActor, Write


async def until_finished(supervisor: Supervisor, run: Run, seconds: float) -> Run:
    """The run once it is no longer Running; TimeoutError if it still is after `seconds`."""
    with anyio.fail_after(seconds):
        while (recorded := await supervisor.state.run(run.id)).status == "Running":  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return recorded


class FlakyStore(MemoryStateStore):
    """A memory state store whose commits fail as told (`fail` returns the error, or None)."""

    def __init__(self, fail: Callable[[Sequence[Write]], Exception | None]) -> None:
        super().__init__()
        self.fail = fail

    async def commit(self, writes: Sequence[Write], *, fence: Fence) -> None:
        error = self.fail(writes)
        if error is not None:
            raise error
        await super().commit(writes, fence=fence)


def supervisor_on(state: MemoryStateStore, kube: FakeProvider, **settings: Any) -> Supervisor:
    s = SETTINGS.model_copy(update=settings)
    supervisor = Supervisor(
        providers=registry(kube),
        state=state,
        events=MemoryEventBus(),
        mailbox=MemoryMailbox(s.partitions),
        settings=s,
    )
    supervisor.hooks = Hooks()
    return supervisor


def touches(node: str, writes: Sequence[Write]) -> bool:
    """Whether the commit is one of the node's actor's own (not its coordinator's): every
    commit of an actor carries its snapshot."""
    return any(isinstance(w, PutActor) and w.node == node for w in writes)


# --- a step acknowledged without an answer: its run is Running for ever ---------------------


async def test_a_step_whose_failure_cannot_be_recorded_does_not_leave_its_run_running() -> None:
    kube = FakeProvider("kubernetes")
    # Every write about "x" is refused by the store with an error that is not an outage, as
    # Redis answers "OOM command not allowed" or "READONLY" (a redis ResponseError).
    state = FlakyStore(
        lambda ws: RuntimeError("OOM command not allowed") if touches("x", ws) else None
    )
    supervisor = supervisor_on(state, kube)
    waves = [
        {"index": 0, "steps": [plan_step("x"), plan_step("y")]},
        {"index": 1, "steps": [plan_step("z", "x")]},
    ]
    run = run_of(waves)
    async with supervisor:
        await supervisor.start_run(run, waves)
        recorded = await until_finished(supervisor, run, 3)
    assert recorded.status == "Failed"
    assert outcomes(recorded)["z"][0] == "Blocked"
    # x's failure, recorded by its coordinator, is said before the Blocked it causes.
    said = await supervisor.events.query(EventFilter(run=run.id, type="run.step"), limit=100)
    assert [(e["subject"], e["data"]["status"]) for e in said if e["subject"] != "y"][-2:] == [
        ("x", "Failed"),
        ("z", "Blocked"),
    ]


async def test_an_undecodable_actor_snapshot_fails_its_step_instead_of_hanging_the_run() -> None:
    kube = FakeProvider("kubernetes")
    state = MemoryStateStore()
    supervisor = supervisor_on(state, kube)
    waves = [{"index": 0, "steps": [plan_step("x")]}]
    run = run_of(waves)
    async with supervisor:
        # A snapshot an older or newer version wrote, or a hand edit: not what this one reads.
        fence = supervisor._ownership.fences[supervisor.partition("x")]
        await state.commit([PutActor("x", {"node": "x", "status": "Exploded"})], fence=fence)
        await supervisor.start_run(run, waves)
        recorded = await until_finished(supervisor, run, 3)
    assert recorded.status == "Failed"


async def test_a_run_whose_start_could_not_be_sent_does_not_stay_running() -> None:
    """The start is sent before the run is recorded: when it cannot be sent, the caller gets
    the outage (503) and no run exists that nobody would ever start."""
    kube = FakeProvider("kubernetes")
    supervisor = supervisor_on(MemoryStateStore(), kube)
    waves = [{"index": 0, "steps": [plan_step("x")]}]
    run = run_of(waves)
    async with supervisor:
        real_send = supervisor.mailbox.send

        async def away(envelope: Envelope, *, partition: int) -> None:
            raise BackendUnavailable("NATS unreachable")

        supervisor.mailbox.send = away  # type: ignore[method-assign]
        with pytest.raises(BackendUnavailable):
            await supervisor.start_run(run, waves)
        supervisor.mailbox.send = real_send  # type: ignore[method-assign]
        with pytest.raises(NotFound):
            await supervisor.state.run(run.id)
    assert kube.started == []


# --- order across an outage ----------------------------------------------------------------


async def test_a_store_blip_does_not_let_an_older_apply_overtake_a_newer_one() -> None:
    kube = FakeProvider("kubernetes", delay=0.05)
    blips = [1]

    def once(writes: Sequence[Write]) -> Exception | None:
        if blips and touches("x", writes):
            blips.pop()
            return BackendUnavailable("Redis unreachable")
        return None

    supervisor = supervisor_on(FlakyStore(once), kube)
    async with supervisor:
        await send_apply(supervisor, "x", "1")
        await send_apply(supervisor, "x", "2")  # sent after: must be the one that stays
        with anyio.fail_after(5):
            while kube.applied.count("x") < 2:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await anyio.sleep(1.5)  # the nacked message's PAUSE
    assert kube.live["x"]["version"] == "2"
    state = await supervisor.actor("x")
    assert state is not None and state.desired == {"version": "2"}


# --- JetStream: redelivery behind a slow actor, payload limits ------------------------------


class SlowFirst(FakeProvider):
    """Applies version "1" slowly (a long rollout), every other version at once."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.versions: list[str] = []  # of every apply started, in order

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.versions.append(resource.desired["version"])
        if resource.desired.get("version") == "1":
            self.slow[resource.node] = 2.0
        else:
            self.slow.pop(resource.node, None)
        return await super().apply(resource=resource, target=target)


async def nats_supervisor(
    nats_url: str, nats_prefix: str, kube: FakeProvider, **settings: Any
) -> tuple[Supervisor, Any]:
    from ztdp.runtime.mailbox.nats import NatsMailbox

    s = SETTINGS.model_copy(update={"partitions": 4, **settings})
    mailbox = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=s.partitions, ack_wait=s.ack_wait
    )
    supervisor = Supervisor(
        providers=registry(kube),
        state=MemoryStateStore(),
        events=MemoryEventBus(),
        mailbox=mailbox,
        settings=s,
        exclusive=False,
    )
    supervisor.hooks = Hooks()
    return supervisor, mailbox


async def run_over_nats(
    nats_url: str, nats_prefix: str, kube: FakeProvider, waves: list[dict[str, Any]]
) -> Run:
    """Run the waves on a supervisor over the session's NATS; the run once it finished."""
    supervisor, mailbox = await nats_supervisor(nats_url, nats_prefix, kube)
    run = run_of(waves)
    try:
        async with supervisor:
            await supervisor.start_run(run, waves)
            return await until_finished(supervisor, run, 10)
    finally:
        await mailbox.aclose()


async def test_mail_queued_behind_a_slow_apply_is_handled_once_and_in_order(
    nats_url: str, nats_prefix: str
) -> None:
    kube = SlowFirst("kubernetes")
    supervisor, mailbox = await nats_supervisor(
        nats_url, nats_prefix, kube, ack_wait=0.6, step_timeout=10
    )
    try:
        async with supervisor:
            await send_apply(supervisor, "x", "1")  # 2 s
            await anyio.sleep(0.1)
            await send_apply(supervisor, "x", "2")  # queued behind it, past its ack wait
            await anyio.sleep(0.9)
            await send_apply(supervisor, "x", "3")  # the newest: must stay
            with anyio.fail_after(10):
                while "3" not in kube.versions:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(1.5)  # any copy still coming
    finally:
        await mailbox.aclose()
    assert kube.live["x"]["version"] == "3", kube.versions
    assert kube.versions == ["1", "2", "3"]


class HugeError(FakeProvider):
    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        self.started.append(resource.node)
        raise PermanentError("admission webhook said: " + "x" * 1_100_000)


async def test_an_event_too_big_for_nats_does_not_make_its_step_run_for_ever(
    nats_url: str, nats_prefix: str
) -> None:
    from ztdp.events.nats import NatsEventBus

    kube = HugeError("kubernetes")
    events = await NatsEventBus.connect(nats_url, prefix=nats_prefix)
    supervisor = Supervisor(
        providers=registry(kube),
        state=MemoryStateStore(),
        events=events,
        mailbox=MemoryMailbox(SETTINGS.partitions),
        settings=SETTINGS,
    )
    supervisor.hooks = Hooks()
    waves = [{"index": 0, "steps": [plan_step("x")]}]
    run = run_of(waves)
    try:
        await supervisor.__aenter__()
        try:
            await supervisor.start_run(run, waves)
            recorded = await until_finished(supervisor, run, 4)
        finally:
            started = list(kube.started)
            await supervisor.aclose(grace=0.5)  # its step would keep it busy for ever
    finally:
        await events.aclose()
    assert recorded.status == "Failed"
    assert started == ["x"]


async def test_a_step_too_big_for_nats_fails_alone_saying_so(
    nats_url: str, nats_prefix: str
) -> None:
    """A desired state near the API's body limit makes a step message over NATS's payload
    limit: that step fails naming its size and the limit, what depends on it is Blocked, and
    the rest of the run goes on (the whole run broke, as "MaxPayloadError()", before)."""
    kube = FakeProvider("kubernetes")
    big = plan_step("big")
    big["desired"] = {"version": "1", "blob": "x" * 1_100_000}
    waves = [
        {"index": 0, "steps": [big, plan_step("small")]},
        {"index": 1, "steps": [plan_step("after", "big")]},
    ]
    recorded = await run_over_nats(nats_url, nats_prefix, kube, waves)
    steps = {s.node: s for s in recorded.steps}
    assert recorded.status == "Failed"
    assert steps["small"].status == "Ready"
    assert steps["big"].status == "Failed"
    error = steps["big"].error or ""
    assert "step for big is 1,1" in error and "bytes" in error and "NATS" in error, error
    assert steps["after"].status == "Blocked"
    assert sorted(kube.started) == ["small"]


async def test_a_provider_error_of_a_megabyte_fails_its_step_and_blocks_its_dependents(
    nats_url: str, nats_prefix: str
) -> None:
    """The error travels in the step's answer and in its dependents' block messages: clipped,
    it fits them (over NATS's limit, the answer could not be sent and the run waited)."""
    kube = FakeProvider("kubernetes")
    kube.fail["a"] = "admission webhook said: " + "x" * 1_100_000
    waves = [
        {"index": 0, "steps": [plan_step("a"), plan_step("c")]},
        {"index": 1, "steps": [plan_step("b", "a")]},
    ]
    recorded = await run_over_nats(nats_url, nats_prefix, kube, waves)
    steps = {s.node: s for s in recorded.steps}
    assert (steps["a"].status, steps["b"].status, steps["c"].status) == (
        "Failed",
        "Blocked",
        "Ready",
    )
    assert (steps["a"].error or "").startswith("admission webhook said: xxx")
    assert (steps["a"].error or "").endswith("more characters)")


class FlakyBus(MemoryEventBus):
    """A memory bus away for one publish: the first event about `node`."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node: str | None = node

    async def publish(self, event: Event) -> None:
        if event.subject == self.node:
            self.node = None
            raise BackendUnavailable("NATS at nats://test went away")
        await super().publish(event)


class FlakyMailbox(MemoryMailbox):
    """A memory mailbox away for one send: the first message of `kind`."""

    def __init__(self, partitions: int, kind: str) -> None:
        super().__init__(partitions)
        self.kind: str | None = kind

    async def send(self, envelope: Envelope, *, partition: int) -> None:
        if envelope.kind == self.kind:
            self.kind = None
            raise BackendUnavailable("NATS at nats://test went away")
        await super().send(envelope, partition=partition)


async def test_an_outage_while_a_coordinator_queues_steps_loses_no_event_and_no_step() -> None:
    """The steps are committed as Queued first; an outage in the middle of publishing their
    events and sending them is waited out in place, and the rest is published and sent
    (before: the run broke, "ExceptionGroup"; retried from the store, the Queued events of
    what was not published yet were lost)."""
    kube = FakeProvider("kubernetes")
    bus = FlakyBus("n3")
    supervisor = Supervisor(
        providers=registry(kube),
        state=MemoryStateStore(),
        events=bus,
        mailbox=MemoryMailbox(SETTINGS.partitions),
        settings=SETTINGS.model_copy(update={"apply_parallelism": 0}),
    )
    supervisor.hooks = Hooks()
    waves = [{"index": 0, "steps": [plan_step(f"n{i}") for i in range(6)]}]
    run = run_of(waves)
    async with supervisor:
        await supervisor.start_run(run, waves)
        recorded = await until_finished(supervisor, run, 10)
    assert recorded.status == "Succeeded"
    said = await bus.query(EventFilter(run=run.id, type="run.step"), limit=100)
    by_step: dict[str, list[str]] = {}
    for e in said:
        by_step.setdefault(e["subject"], []).append(e["data"]["status"])
    assert by_step == {f"n{i}": ["Queued", "Progressing", "Ready"] for i in range(6)}


async def test_a_block_message_lost_to_an_outage_is_sent_when_the_backend_is_back() -> None:
    kube = FakeProvider("kubernetes")
    kube.fail["a"] = "refused"
    supervisor = Supervisor(
        providers=registry(kube),
        state=MemoryStateStore(),
        events=MemoryEventBus(),
        mailbox=FlakyMailbox(SETTINGS.partitions, "block"),
        settings=SETTINGS,
    )
    supervisor.hooks = Hooks()
    waves = [
        {"index": 0, "steps": [plan_step("a")]},
        {"index": 1, "steps": [plan_step("b", "a")]},
    ]
    run = run_of(waves)
    async with supervisor:
        await supervisor.start_run(run, waves)
        recorded = await until_finished(supervisor, run, 10)
        with anyio.fail_after(5):
            while (b := await supervisor.actor("b")) is None:  # noqa: ASYNC110 - its own message
                await anyio.sleep(0.01)
    assert outcomes(recorded)["b"][0] == "Blocked"
    assert b.status is Status.BLOCKED


# --- leases ----------------------------------------------------------------------------------


class CutOff(MemoryStateStore):
    """A worker's view of the shared store; `cut` makes every call fail as an outage would
    (this worker's network to Redis is down, not Redis)."""

    def __init__(self, shared: MemoryStateStore) -> None:
        self._shared = shared
        self.cut = False

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "cut":
            return object.__getattribute__(self, name)
        attr = getattr(object.__getattribute__(self, "_shared"), name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if object.__getattribute__(self, "cut"):
                raise BackendUnavailable("state store: Redis unreachable")
            return await attr(*args, **kwargs)

        return call


async def test_an_owner_cut_off_from_the_store_stops_once_its_leases_have_expired() -> None:
    shared = Shared()
    view = CutOff(shared.state)
    a = Supervisor(
        providers=registry(shared.kube),
        state=view,
        events=shared.events,
        mailbox=shared.mailbox,
        settings=SHARED_SETTINGS,
        exclusive=False,
        member="a",
    )
    a.hooks = Hooks()
    async with a:
        assert a.owned == list(range(SHARED_SETTINGS.partitions))
        view.cut = True
        await anyio.sleep(SHARED_SETTINGS.lease_ttl * 2)
        # Its leases have expired in the store: anyone may take them now.
        assert await shared.state.holders() == {}
        owned = a.owned
        view.cut = False
    assert owned == []


async def test_a_worker_with_another_partition_count_is_refused() -> None:
    shared = Shared()
    other = SHARED_SETTINGS.model_copy(update={"partitions": 4})
    b = Supervisor(
        providers=registry(shared.kube),
        state=shared.state,
        events=shared.events,
        mailbox=MemoryMailbox(4),
        settings=other,
        exclusive=False,
        member="b",
    )
    b.hooks = Hooks()
    async with shared.worker("a"):
        with pytest.raises(StartRefused):
            async with b:
                pass


# --- late and broken runs --------------------------------------------------------------------


async def test_a_step_of_a_finished_run_redelivered_late_does_not_roll_the_node_back() -> None:
    kube = FakeProvider("kubernetes")
    supervisor = supervisor_of(kube)
    runs = []
    async with supervisor:
        for version in range(1, 11):
            step = {**plan_step("x"), "desired": {"version": str(version)}}
            waves = [{"index": 0, "steps": [step]}]
            run = run_of(waves)
            await supervisor.start_run(run, waves)
            await until_finished(supervisor, run, 3)
            runs.append((run, step))
        first, step = runs[0]
        # JetStream redelivers the first run's step (its ack was lost with a connection):
        # a redelivery is the stored message again, which no duplicate window drops.
        late = Envelope(
            node="x",
            kind="step",
            body={"run": first.id, "actor": "test", "wave": 0, "step": step, "environment": None},
        )
        # As JetStream marks it: delivered before (the memory mailbox counts deliveries).
        partition = supervisor.partition("x")
        await supervisor.mailbox.send(late, partition=partition)
        supervisor.mailbox._parts[partition].queue[-1].deliveries = 1  # type: ignore[attr-defined]
        await anyio.sleep(0.3)
        recorded = await supervisor.state.run(first.id)
    assert kube.live["x"]["version"] == "10"
    assert kube.applied.count("x") == 10
    assert recorded.steps[0].status == "Ready" and recorded.status == "Succeeded"


async def test_a_run_that_breaks_still_says_it_finished() -> None:
    from tests.test_runtime import RefusingBus

    kube = FakeProvider("kubernetes")
    events = RefusingBus(lambda e: e.type == "io.ztdp.run.started")
    supervisor = supervisor_of(kube, events=events)
    waves = [{"index": 0, "steps": [plan_step("a")]}]
    run = run_of(waves)
    async with supervisor, events.subscribe(EventFilter(run=run.id, type="run.finished")) as done:
        await supervisor.start_run(run, waves)
        await until_finished(supervisor, run, 3)
        with anyio.fail_after(1):
            event = await done.receive()
    assert event["data"]["status"] == "Failed"


# --- Redis answering with an error rather than not at all ------------------------------------


@pytest.mark.redis
async def test_a_read_only_redis_is_backend_unavailable() -> None:
    import redis as sync_redis

    from tests.conftest import RedisServer, free_port
    from ztdp.state.redis import RedisStateStore

    server = RedisServer("--save", "", "--appendonly", "no").start()
    try:
        store = RedisStateStore.from_url(server.url, prefix="attack")
        try:
            fence = await store.acquire(0, "a", ttl=60)
            assert fence is not None
            # Sentinel demoted it: it is now a replica of a master it cannot reach yet.
            sync_redis.Redis.from_url(server.url).replicaof("127.0.0.1", free_port())
            with pytest.raises(BackendUnavailable):
                await store.commit([PutActor("x", {"n": 1})], fence=fence)
        finally:
            await store.aclose()
    finally:
        server.kill()
