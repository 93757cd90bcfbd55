"""One contract suite for every state store (memory and real Redis)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.ports import free_port
from ztdp.errors import BackendUnavailable, Fenced, NotFound
from ztdp.settings import Settings
from ztdp.state import (
    DeleteObserved,
    Fence,
    MemoryStateStore,
    ObservedResource,
    PutActor,
    PutObserved,
    PutRun,
    PutStep,
    Run,
    RunStep,
    StateStore,
    open_state_store,
)
from ztdp.state.redis import RedisStateStore

OpenStore = Callable[..., StateStore]

SHORT = 0.2  # seconds: a lease or membership the tests wait out
LONG = 30.0  # seconds: one that outlives the test


@pytest.fixture(params=["memory", "redis"])
async def open_store(request: pytest.FixtureRequest) -> AsyncIterator[OpenStore]:
    """Opens stores of the parametrized kind (`keep_runs` as asked); closes them afterwards."""
    opened: list[StateStore] = []

    def open_(*, keep_runs: int = 1000) -> StateStore:
        store: StateStore
        if request.param == "memory":
            store = MemoryStateStore(keep_runs=keep_runs)
        else:
            store = RedisStateStore.from_url(
                request.getfixturevalue("redis_url"),
                prefix=request.getfixturevalue("redis_prefix"),
                keep_runs=keep_runs,
            )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.aclose()


@pytest.fixture
def state_store(open_store: OpenStore) -> StateStore:
    """The same test against every state store."""
    return open_store()


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStateStore]:
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await store.aclose()


def observed(node: str, environment: str, application: str, **state: Any) -> ObservedResource:
    return ObservedResource(
        node=f"{node}@{environment}",
        kind="deployment",
        application=application,
        environment=environment,
        source=node,
        provider="kubernetes",
        state=dict(state),
        depends_on=[],
    )


def step(node: str, *, wave: int = 0, action: str = "create") -> RunStep:
    return RunStep(
        node=node, source=node, kind="deployment", action=action, provider="kubernetes", wave=wave
    )


def new_run(*nodes: str, actor: str = "alice") -> Run:
    return Run(
        trigger="deploy",
        environment="dev",
        application="checkout",
        actor=actor,
        steps=[step(n, wave=i) for i, n in enumerate(nodes)],
    )


async def fence_of(store: StateStore, partition: int = 0, owner: str = "w1") -> Fence:
    fence = await store.acquire(partition, owner, ttl=LONG)
    assert fence is not None, f"partition {partition} was not free"
    return fence


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 5.0) -> None:
    """Poll `check` until it holds (rather than sleeping for a guessed time)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"still not true after {within} s"
        await asyncio.sleep(0.02)


async def lease_gone(store: StateStore, partition: int) -> None:
    async def gone() -> bool:
        return partition not in await store.holders()

    await until(gone)


# --- observed state ------------------------------------------------------------------------


async def test_observed_is_filtered_by_environment_and_application(
    state_store: StateStore,
) -> None:
    fence = await fence_of(state_store)
    api_dev = observed("deployment/checkout/api", "dev", "checkout", replicas=2)
    web_dev = observed("deployment/shop/web", "dev", "shop")
    api_prod = observed("deployment/checkout/api", "prod", "checkout")
    await state_store.commit(
        [PutObserved(api_dev), PutObserved(web_dev), PutObserved(api_prod)], fence=fence
    )

    assert await state_store.observed(environment="dev") == {
        api_dev.node: api_dev,
        web_dev.node: web_dev,
    }
    assert await state_store.observed(environment="dev", application="checkout") == {
        api_dev.node: api_dev
    }
    assert await state_store.observed(environment="prod") == {api_prod.node: api_prod}
    assert await state_store.observed(environment="prod", application="shop") == {}
    assert await state_store.observed(environment="staging") == {}


async def test_observed_state_is_replaced_and_deleted_per_node(state_store: StateStore) -> None:
    fence = await fence_of(state_store)
    api = observed("deployment/checkout/api", "dev", "checkout", replicas=1)
    web = observed("deployment/checkout/web", "dev", "checkout")
    await state_store.commit([PutObserved(api), PutObserved(web)], fence=fence)

    scaled = observed("deployment/checkout/api", "dev", "checkout", replicas=3)
    await state_store.commit([PutObserved(scaled), DeleteObserved(web.node, "dev")], fence=fence)

    seen = await state_store.observed(environment="dev")
    assert seen == {api.node: scaled}
    await state_store.commit([DeleteObserved(api.node, "prod")], fence=fence)  # not there
    assert await state_store.observed(environment="dev") == {api.node: scaled}
    assert seen[api.node].state == {"replicas": 3}
    assert seen[api.node].depends_on == []


# --- actors --------------------------------------------------------------------------------

SNAPSHOT: dict[str, Any] = {
    "status": "Ready",
    "generation": 7,
    "ratio": 0.5,
    "missing": None,
    "ok": True,
    "path": "a/b",
    "empty_list": [],
    "empty_dict": {},
    "desired": {"spec": {"ports": [], "labels": {}, "env": [{"name": "A", "values": []}]}},
}


async def test_an_actor_snapshot_round_trips_with_its_json_types(state_store: StateStore) -> None:
    fence = await fence_of(state_store)
    assert await state_store.actor("deployment/checkout/api@dev") is None

    await state_store.commit([PutActor("deployment/checkout/api@dev", SNAPSHOT)], fence=fence)

    got = await state_store.actor("deployment/checkout/api@dev")
    assert got == SNAPSHOT
    assert got is not None
    assert isinstance(got["empty_list"], list) and isinstance(got["empty_dict"], dict)
    assert isinstance(got["desired"]["spec"]["ports"], list)
    assert isinstance(got["desired"]["spec"]["labels"], dict)


async def test_a_snapshot_is_the_stores_own_copy(state_store: StateStore) -> None:
    fence = await fence_of(state_store)
    snapshot: dict[str, Any] = {"desired": {"replicas": 1}, "tags": []}
    await state_store.commit([PutActor("n", snapshot)], fence=fence)

    snapshot["desired"]["replicas"] = 5
    snapshot["tags"].append("changed without a commit")
    got = await state_store.actor("n")
    assert got == {"desired": {"replicas": 1}, "tags": []}
    assert got is not None
    got["desired"]["replicas"] = 9
    assert await state_store.actor("n") == {"desired": {"replicas": 1}, "tags": []}


async def test_actors_reads_the_snapshots_of_those_that_have_one(
    state_store: StateStore,
) -> None:
    fence = await fence_of(state_store)
    await state_store.commit(
        [PutActor("a", {"n": 1}), PutActor("b", {"n": 2, "x": []})], fence=fence
    )

    assert await state_store.actors(["a", "missing", "b"]) == {
        "a": {"n": 1},
        "b": {"n": 2, "x": []},
    }
    assert await state_store.actors(["missing"]) == {}
    assert await state_store.actors([]) == {}


async def test_a_node_is_filed_under_the_partition_of_its_last_commit(
    state_store: StateStore,
) -> None:
    first = await fence_of(state_store, 0, "w1")
    second = await fence_of(state_store, 1, "w2")
    await state_store.commit([PutActor("a", {"v": 1}), PutActor("b", {"v": 1})], fence=first)
    await state_store.commit([PutActor("c", {"v": 1})], fence=second)
    assert await state_store.nodes(0) == ["a", "b"]
    assert await state_store.nodes(1) == ["c"]

    await state_store.commit([PutActor("a", {"v": 2})], fence=second)

    assert await state_store.nodes(0) == ["b"]
    assert await state_store.nodes(1) == ["a", "c"]
    assert await state_store.nodes(2) == []
    assert await state_store.actor("a") == {"v": 2}


# --- runs ----------------------------------------------------------------------------------


async def test_a_run_reads_back_as_created_with_its_plan(state_store: StateStore) -> None:
    run = new_run("deployment/a@dev", "deployment/b@dev", "deployment/c@dev")
    plan = {
        "deployment/a@dev": {"step": {"action": "create", "spec": {}}, "after": []},
        "deployment/b@dev": {"step": {"action": "create"}, "after": ["deployment/a@dev"]},
        "deployment/c@dev": {"step": {"ports": [80, 443]}, "after": ["deployment/a@dev"]},
    }
    await state_store.create_run(run, plan)

    got = await state_store.run(run.id)
    assert got.model_dump() == run.model_dump()
    assert [s.node for s in got.steps] == [
        "deployment/a@dev",
        "deployment/b@dev",
        "deployment/c@dev",
    ]
    assert got.created_at == run.created_at and got.created_at.tzinfo is not None
    assert await state_store.run_plan(run.id) == plan
    assert (await state_store.run_plan(run.id))["deployment/a@dev"]["step"]["spec"] == {}


async def test_an_unknown_run_is_not_found(state_store: StateStore) -> None:
    with pytest.raises(NotFound, match="run nope does not exist"):
        await state_store.run("nope")
    with pytest.raises(NotFound, match="run nope does not exist"):
        await state_store.run_plan("nope")


async def test_runs_lists_the_newest_last(state_store: StateStore) -> None:
    created = [new_run(f"n{i}") for i in range(4)]
    for run in created:
        await state_store.create_run(run, {})

    assert [r.id for r in await state_store.runs(limit=10)] == [r.id for r in created]
    assert [r.id for r in await state_store.runs(limit=2)] == [r.id for r in created[2:]]
    assert [r.steps[0].node for r in await state_store.runs(limit=1)] == ["n3"]
    assert await state_store.runs(limit=0) == []


async def test_runs_beyond_keep_runs_are_forgotten_oldest_first(open_store: OpenStore) -> None:
    store = open_store(keep_runs=3)
    created = [new_run(f"n{i}") for i in range(5)]
    for run in created:
        await store.create_run(run, {f"n{created.index(run)}": {"after": []}})

    assert [r.id for r in await store.runs(limit=10)] == [r.id for r in created[2:]]
    for gone in created[:2]:
        with pytest.raises(NotFound):
            await store.run(gone.id)
        with pytest.raises(NotFound):
            await store.run_plan(gone.id)
    assert (await store.run(created[2].id)).steps[0].node == "n2"
    assert await store.run_plan(created[4].id) == {"n4": {"after": []}}


async def test_a_step_write_changes_only_that_step(state_store: StateStore) -> None:
    run = new_run("a", "b")
    run.step("a")  # a reader may have looked the steps up before the run was stored
    await state_store.create_run(run, {})
    fence = await fence_of(state_store)
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    done = step("a").model_copy(
        update={"status": "Failed", "error": "boom", "started_at": started, "finished_at": started}
    )

    await state_store.commit([PutStep(run.id, done)], fence=fence)

    got = await state_store.run(run.id)
    assert got.step("a").model_dump() == done.model_dump()
    assert got.steps[0].model_dump() == done.model_dump()
    assert got.step("b").model_dump() == step("b", wave=1).model_dump()
    assert [s.node for s in got.steps] == ["a", "b"]
    assert got.status == "Running" and got.finished_at is None


async def test_a_run_write_changes_only_status_and_finished_at(state_store: StateStore) -> None:
    run = new_run("a", "b")
    await state_store.create_run(run, {"a": {"after": []}})
    fence = await fence_of(state_store)
    await state_store.commit(
        [PutStep(run.id, step("a").model_copy(update={"status": "Ready"}))], fence=fence
    )
    finished = datetime(2026, 1, 2, tzinfo=UTC)
    # A stale copy of the run: its steps and other fields must not overwrite the store's.
    stale = run.model_copy(
        update={"status": "Succeeded", "finished_at": finished, "actor": "mallory", "steps": []}
    )

    await state_store.commit([PutRun(stale)], fence=fence)

    got = await state_store.run(run.id)
    assert (got.status, got.finished_at) == ("Succeeded", finished)
    assert got.actor == "alice" and got.created_at == run.created_at
    assert [(s.node, s.status) for s in got.steps] == [("a", "Ready"), ("b", "Pending")]
    assert await state_store.run_plan(run.id) == {"a": {"after": []}}


async def test_late_writes_to_an_unknown_run_or_step_are_ignored(
    state_store: StateStore,
) -> None:
    run = new_run("a")
    await state_store.create_run(run, {})
    fence = await fence_of(state_store)
    ghost = new_run("x")

    await state_store.commit(
        [
            PutStep("no-such-run", step("a").model_copy(update={"status": "Ready"})),
            PutStep(run.id, step("not-in-run").model_copy(update={"status": "Ready"})),
            PutRun(ghost.model_copy(update={"status": "Failed"})),
            PutActor("a", {"still": "applied"}),
        ],
        fence=fence,
    )

    got = await state_store.run(run.id)
    assert [(s.node, s.status) for s in got.steps] == [("a", "Pending")]
    for missing in ("no-such-run", ghost.id):
        with pytest.raises(NotFound):
            await state_store.run(missing)
    assert [r.id for r in await state_store.runs(limit=10)] == [run.id]
    assert await state_store.actor("a") == {"still": "applied"}


# --- fenced commits ------------------------------------------------------------------------


async def seed_for_fencing(store: StateStore, fence: Fence) -> Run:
    """A run, an actor and observed state, committed under `fence`."""
    run = new_run("a", "b")
    await store.create_run(run, {})
    await store.commit(
        [
            PutActor("a", {"v": 1}),
            PutObserved(observed("a", "dev", "checkout", v=1)),
            PutObserved(observed("b", "dev", "checkout", v=1)),
        ],
        fence=fence,
    )
    return run


def everything(run: Run) -> list[Any]:
    """A batch touching every kind of write."""
    return [
        PutActor("a", {"v": 2}),
        PutActor("new", {"v": 2}),
        PutObserved(observed("a", "dev", "checkout", v=2)),
        DeleteObserved("b@dev", "dev"),
        PutStep(run.id, step("a").model_copy(update={"status": "Ready"})),
        PutRun(run.model_copy(update={"status": "Succeeded"})),
    ]


async def assert_unchanged(store: StateStore, run: Run, partition: int) -> None:
    assert await store.actor("a") == {"v": 1}
    assert await store.actor("new") is None
    assert await store.nodes(partition) == ["a"]
    seen = await store.observed(environment="dev")
    assert sorted(seen) == ["a@dev", "b@dev"] and seen["a@dev"].state == {"v": 1}
    got = await store.run(run.id)
    assert got.status == "Running"
    assert [s.status for s in got.steps] == ["Pending", "Pending"]


async def test_a_stale_token_is_fenced_and_writes_nothing(state_store: StateStore) -> None:
    old = await fence_of(state_store, 3, "w1")
    run = await seed_for_fencing(state_store, old)
    await state_store.release(old)
    new = await fence_of(state_store, 3, "w1")  # the same owner again, a newer lease
    assert new.token > old.token

    with pytest.raises(Fenced, match=rf"w1 .*partition 3 .*lease {old.token}\b"):
        await state_store.commit(everything(run), fence=old)

    await assert_unchanged(state_store, run, 3)
    await state_store.commit(everything(run), fence=new)  # the current lease still writes
    assert await state_store.actor("new") == {"v": 2}
    assert (await state_store.run(run.id)).status == "Succeeded"


async def test_a_wrong_owner_is_fenced(state_store: StateStore) -> None:
    fence = await fence_of(state_store, 0, "w1")
    run = await seed_for_fencing(state_store, fence)
    forged = Fence(0, "intruder", fence.token)

    with pytest.raises(Fenced, match=rf"intruder .*partition 0 .*lease {fence.token}\b"):
        await state_store.commit(everything(run), fence=forged)

    await assert_unchanged(state_store, run, 0)


async def test_a_fence_on_a_partition_never_leased_is_refused(state_store: StateStore) -> None:
    with pytest.raises(Fenced):
        await state_store.commit([PutActor("a", {"v": 1})], fence=Fence(9, "w1", 1))
    assert await state_store.actor("a") is None
    assert await state_store.nodes(9) == []


async def test_an_expired_lease_is_fenced(state_store: StateStore) -> None:
    fence = await fence_of(state_store, 0, "w1")
    run = await seed_for_fencing(state_store, fence)
    assert await state_store.renew([fence], ttl=SHORT) == {0}

    await lease_gone(state_store, 0)

    with pytest.raises(Fenced, match=rf"w1 .*partition 0 .*lease {fence.token}\b"):
        await state_store.commit(everything(run), fence=fence)
    await assert_unchanged(state_store, run, 0)


# --- leases --------------------------------------------------------------------------------


async def test_a_lease_is_exclusive_while_held(state_store: StateStore) -> None:
    fence = await fence_of(state_store, 0, "w1")

    assert await state_store.acquire(0, "w2", ttl=LONG) is None
    assert await state_store.acquire(0, "w1", ttl=LONG) is None  # not even twice by its owner
    other = await state_store.acquire(1, "w2", ttl=LONG)

    assert other is not None and other.partition == 1 and other.owner == "w2"
    assert fence.partition == 0 and fence.owner == "w1"
    assert await state_store.holders() == {0: "w1", 1: "w2"}


async def test_tokens_only_grow(state_store: StateStore) -> None:
    tokens = []
    for owner in ("w1", "w2", "w1", "w3"):
        fence = await fence_of(state_store, 0, owner)
        tokens.append(fence.token)
        await state_store.release(fence)
    expiring = await state_store.acquire(0, "w4", ttl=SHORT)
    assert expiring is not None
    tokens.append(expiring.token)
    await lease_gone(state_store, 0)
    tokens.append((await fence_of(state_store, 0, "w5")).token)

    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens
    assert tokens[0] >= 1


async def test_renew_extends_the_lease(state_store: StateStore) -> None:
    renewed = await state_store.acquire(0, "w1", ttl=SHORT)
    control = await state_store.acquire(1, "w1", ttl=SHORT)
    assert renewed is not None and control is not None

    assert await state_store.renew([renewed], ttl=LONG) == {0}
    await lease_gone(state_store, 1)  # the unrenewed one runs out ...

    assert await state_store.holders() == {0: "w1"}  # ... the renewed one does not
    assert await state_store.acquire(0, "w2", ttl=LONG) is None
    await state_store.commit([PutActor("a", {"v": 1})], fence=renewed)
    assert await state_store.actor("a") == {"v": 1}


async def test_renew_fails_after_a_takeover(state_store: StateStore) -> None:
    old = await state_store.acquire(0, "w1", ttl=SHORT)
    assert old is not None
    await lease_gone(state_store, 0)
    new = await fence_of(state_store, 0, "w2")

    assert await state_store.renew([old], ttl=LONG) == set()
    assert await state_store.holders() == {0: "w2"}
    assert await state_store.renew([new], ttl=LONG) == {0}


async def test_renew_renews_many_leases_at_once_and_names_those_still_held(
    state_store: StateStore,
) -> None:
    kept = await fence_of(state_store, 0, "w1")
    lost = await state_store.acquire(1, "w1", ttl=SHORT)
    other = await fence_of(state_store, 2, "w2")
    assert lost is not None
    await lease_gone(state_store, 1)

    assert await state_store.renew([kept, lost], ttl=LONG) == {0}
    assert await state_store.renew([], ttl=LONG) == set()
    assert await state_store.holders() == {0: "w1", 2: "w2"}
    assert other.partition == 2


async def test_renew_fails_once_expired(state_store: StateStore) -> None:
    fence = await state_store.acquire(0, "w1", ttl=SHORT)
    assert fence is not None
    await lease_gone(state_store, 0)

    assert await state_store.renew([fence], ttl=LONG) == set()
    assert await state_store.holders() == {}


async def test_release_lets_another_take_the_lease_at_once(state_store: StateStore) -> None:
    old = await fence_of(state_store, 0, "w1")
    await state_store.release(old)
    assert await state_store.holders() == {}

    new = await state_store.acquire(0, "w2", ttl=LONG)

    assert new is not None and new.token > old.token
    await state_store.release(old)  # a stale release leaves the new lease alone
    assert await state_store.holders() == {0: "w2"}
    await state_store.commit([PutActor("a", {"v": 1})], fence=new)


async def test_one_of_many_concurrent_acquirers_wins(state_store: StateStore) -> None:
    owners = [f"w{i}" for i in range(20)]

    fences = await asyncio.gather(*(state_store.acquire(5, o, ttl=LONG) for o in owners))

    won = [f for f in fences if f is not None]
    assert len(won) == 1, won
    assert await state_store.holders() == {5: won[0].owner}
    assert won[0].token == 1


async def test_the_first_partition_count_recorded_is_the_installations(
    state_store: StateStore,
) -> None:
    assert await state_store.partitions(16) == 16
    assert await state_store.partitions(8) == 16  # a process with another count finds out


async def test_members_join_expire_and_leave(state_store: StateStore) -> None:
    assert await state_store.join("w2", ttl=LONG) == ["w2"]
    assert await state_store.join("w1", ttl=LONG) == ["w1", "w2"]
    assert await state_store.join("w3", ttl=SHORT) == ["w1", "w2", "w3"]

    async def w3_gone() -> bool:
        return await state_store.join("w1", ttl=LONG) == ["w1", "w2"]

    await until(w3_gone)
    await state_store.leave("w2")
    assert await state_store.join("w1", ttl=LONG) == ["w1"]
    await state_store.leave("never-joined")
    assert await state_store.join("w3", ttl=LONG) == ["w1", "w3"]  # it may come back


async def test_ping_and_aclose(open_store: OpenStore) -> None:
    store = open_store()
    await store.ping()


# --- Redis only ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_an_unreachable_redis_is_backend_unavailable_at_once() -> None:
    store = RedisStateStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", prefix="ztdp-test-down", timeout=1.0
    )
    fence = Fence(0, "w1", 1)
    try:
        for call in (
            lambda: store.commit([PutActor("a", {})], fence=fence),
            lambda: store.run("r1"),
            lambda: store.acquire(0, "w1", ttl=LONG),
            store.ping,
        ):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="state store: Redis unreachable"):
                await call()
            assert time.monotonic() - started < 1.0
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_trimmed_runs_leave_no_keys_behind(redis_url: str, redis_prefix: str) -> None:
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix, keep_runs=2)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        created = [new_run("a", "b") for _ in range(4)]
        for run in created:
            await store.create_run(run, {"a": {"after": []}})

        keys = [k async for k in client.scan_iter(f"{redis_prefix}:state:run*")]
        for gone in created[:2]:
            assert not [k for k in keys if gone.id in k], keys
        for kept in created[2:]:
            assert sorted(k for k in keys if kept.id in k) == sorted(
                f"{redis_prefix}:state:{family}:{kept.id}"
                for family in ("run", "run-steps", "run-plan")
            )
        assert await client.zcard(f"{redis_prefix}:state:runs") == 2
    finally:
        await client.aclose()
        await store.aclose()


@pytest.mark.redis
async def test_ignored_step_writes_leave_no_keys_behind(
    redis_url: str, redis_prefix: str, redis_store: RedisStateStore
) -> None:
    run = new_run("a", "b")
    await redis_store.create_run(run, {})
    fence = await fence_of(redis_store)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await redis_store.commit(
            [PutStep("no-such-run", step("a")), PutStep(run.id, step("not-in-run"))], fence=fence
        )

        assert [k async for k in client.scan_iter(f"{redis_prefix}:*no-such-run*")] == []
        steps = await client.hkeys(f"{redis_prefix}:state:run-steps:{run.id}")
        assert sorted(steps) == ["a", "b"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_stores_on_one_prefix_share_leases_and_state(
    redis_url: str, redis_prefix: str, redis_store: RedisStateStore
) -> None:
    other = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    elsewhere = RedisStateStore.from_url(redis_url, prefix=f"{redis_prefix}:other")
    try:
        fence = await fence_of(redis_store, 0, "w1")
        assert await other.acquire(0, "w2", ttl=LONG) is None
        await other.commit([PutActor("a", {"v": 1})], fence=fence)  # the lease is what counts

        assert await redis_store.actor("a") == {"v": 1}
        assert await redis_store.nodes(0) == ["a"]
        assert await elsewhere.holders() == {}
        assert await elsewhere.actor("a") is None
    finally:
        await other.aclose()
        await elsewhere.aclose()


@pytest.mark.redis
async def test_an_owner_with_spaces_is_named_whole(redis_store: RedisStateStore) -> None:
    fence = await fence_of(redis_store, 0, "worker 1 on host a")
    assert await redis_store.holders() == {0: "worker 1 on host a"}
    await redis_store.commit([PutActor("a", {})], fence=fence)
    with pytest.raises(Fenced):
        await redis_store.commit([PutActor("a", {})], fence=Fence(0, "worker 1 on host", 1))


@pytest.mark.redis
async def test_open_state_store_follows_the_settings(redis_url: str, redis_prefix: str) -> None:
    memory = open_state_store(Settings(state_store="memory"))
    assert isinstance(memory, MemoryStateStore)
    shared = open_state_store(
        Settings(state_store="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    )
    try:
        assert isinstance(shared, RedisStateStore)
        await shared.ping()
        assert await shared.join("w1", ttl=LONG) == ["w1"]
    finally:
        await shared.aclose()
        await memory.aclose()
