"""The runtime spread over processes: API processes and `ztdp worker`s on one Redis and one NATS.

Real processes, real Redis and a current NATS server; SIGKILL, SIGSTOP and outages as an
operator would meet them. The recording provider (tests/plugins/ztdp-recording) tells what
every process applied, and whether two applies of one node ever overlapped.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.cluster import (
    Recording,
    WorkerProcess,
    declare,
    finished_run,
    ok,
    shared_env,
    wait_until,
)
from tests.conftest import ServerProcess
from tests.test_serve import serve_fails

pytestmark = pytest.mark.redis


@pytest.fixture
def recording(redis_url: str, redis_prefix: str) -> Iterator[Recording]:
    rec = Recording(redis_url, redis_prefix)
    yield rec
    rec.close()


@pytest.fixture
def env(redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str) -> dict[str, str]:
    return shared_env(redis_url, redis_prefix, nats_url, nats_prefix)


class Cluster:
    def __init__(self) -> None:
        self.processes: list[ServerProcess | WorkerProcess] = []

    def api(self, env: dict[str, str], **more: str) -> ServerProcess:
        server = ServerProcess({**env, **more}).start()
        self.processes.append(server)
        return server

    def worker(self, env: dict[str, str], **more: str) -> WorkerProcess:
        worker = WorkerProcess({**env, **more}).start()
        self.processes.append(worker)
        return worker

    def stop(self) -> None:
        for p in self.processes:
            p.stop()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


def test_a_run_completes_on_the_survivor_when_a_worker_is_killed_mid_apply(
    cluster: Cluster, env: dict[str, str], recording: Recording
) -> None:
    """200 nodes, two workers, one SIGKILLed in the middle: the run finishes on the other,
    every node Ready, no node ever applied concurrently with itself, no event missing."""
    slow = {"ZTDP_RECORDING_DELAY": "0.05", "ZTDP_APPLY_PARALLELISM": "8"}
    api = cluster.api(env, ZTDP_ACTORS="off")
    first, second = cluster.worker(env, **slow), cluster.worker(env, **slow)
    declare(api.url, 200)
    run = ok(f"{api.url}/v1/apply?env=dev", "POST")["run"]
    wait_until("a quarter of the applies", lambda: len(recording.applies()) >= 50)
    first.kill()
    done = finished_run(api.url, run, seconds=90)
    assert done["status"] == "Succeeded", [s for s in done["steps"] if s["status"] != "Ready"]
    assert {s["status"] for s in done["steps"]} == {"Ready"} and len(done["steps"]) == 200
    assert recording.overlaps() == []
    assert len(recording.live()) == 200
    events = ok(f"{api.url}/v1/events?run={done['id']}&type=run.step&limit=10000")
    ready = {e["subject"] for e in events if e["data"]["status"] == "Ready"}
    assert ready == {s["node"] for s in done["steps"]}
    assert ok(f"{api.url}/v1/events?run={done['id']}&type=run.finished")
    assert second.proc is not None and second.proc.poll() is None


def test_a_paused_worker_is_taken_over_and_its_late_writes_are_refused(
    cluster: Cluster, env: dict[str, str], recording: Recording
) -> None:
    """SIGSTOP a worker in the middle of its applies, past its lease: another takes its
    actors over and finishes the run; SIGCONT it: its late writes fail their fences."""
    slow = {"ZTDP_RECORDING_DELAY": "1.0"}
    api = cluster.api(env, ZTDP_ACTORS="off")
    paused = cluster.worker(env, **slow)
    declare(api.url, 8)
    run = ok(f"{api.url}/v1/apply?env=dev", "POST")["run"]
    wait_until(
        "applies in progress",
        lambda: any(s["status"] == "Progressing" for s in ok(f"{api.url}/v1/runs/{run}")["steps"]),
    )
    paused.signal(signal.SIGSTOP)
    cluster.worker(env, **slow)  # joins while the first is frozen; takes over when leases expire
    done = finished_run(api.url, run, seconds=60)
    assert done["status"] == "Succeeded"
    paused.signal(signal.SIGCONT)
    # It finds out by its next lease renewal or by its next write's fence, whichever comes
    # first; either way it stops working on those partitions, and nothing it writes lands.
    wait_until(
        "the paused worker to find out",
        lambda: "no longer holds partition" in paused.text() or "lost the lease" in paused.text(),
    )
    after = ok(f"{api.url}/v1/runs/{run}")
    assert after == done  # nothing the late worker wrote reached the run
    assert len(recording.live()) == 8


def test_api_processes_give_the_same_run_status_and_plan(
    cluster: Cluster, env: dict[str, str]
) -> None:
    a = cluster.api(env)  # runs actors too
    b = cluster.api(env, ZTDP_ACTORS="off")
    declare(a.url, 3)
    run = ok(f"{b.url}/v1/apply?env=dev", "POST")["run"]
    done = finished_run(a.url, run)
    assert done["status"] == "Succeeded"
    assert ok(f"{b.url}/v1/runs/{run}") == done
    assert ok(f"{a.url}/v1/runs") == ok(f"{b.url}/v1/runs")
    plan_a = ok(f"{a.url}/v1/applications/app/plan?environment=dev")
    assert plan_a == ok(f"{b.url}/v1/applications/app/plan?environment=dev")
    assert plan_a["summary"] == {"create": 0, "update": 0, "delete": 0, "noop": 3}
    events_a = ok(f"{a.url}/v1/events?run={run}&limit=1000")
    assert [e["id"] for e in events_a] == [
        e["id"] for e in ok(f"{b.url}/v1/events?run={run}&limit=1000")
    ]
    status = ok(f"{b.url}/v1/status")
    assert [w["partitions"] for w in status["workers"]] == [list(range(8))]


def test_a_restarted_server_plans_noop_for_what_exists(redis_url: str, redis_prefix: str) -> None:
    """One `ztdp serve` on Redis (in-process mailboxes): after a restart, what it realised is
    known from the state store, not forgotten."""
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
        "ZTDP_AUTH": "off",
        "ZTDP_RECORDING_REDIS": redis_url,
        "ZTDP_RECORDING_PREFIX": f"{redis_prefix}:recording",
    }
    server = ServerProcess(env).start()
    try:
        declare(server.url, 2)
        run = ok(f"{server.url}/v1/apply?env=dev", "POST")["run"]
        assert finished_run(server.url, run)["status"] == "Succeeded"
    finally:
        server.stop()
    again = ServerProcess(env).start()
    try:
        plan = ok(f"{again.url}/v1/applications/app/plan?environment=dev")
        assert plan["summary"] == {"create": 0, "update": 0, "delete": 0, "noop": 2}
        assert ok(f"{again.url}/v1/runs/{run}")["status"] == "Succeeded"
    finally:
        again.stop()


def test_a_second_embedded_runtime_on_one_redis_is_refused_saying_why(
    redis_url: str, redis_prefix: str
) -> None:
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
        "ZTDP_AUTH": "off",
        "ZTDP_LEASE_TTL": "0.5",
    }
    first = ServerProcess(env).start()
    try:
        code, out = serve_fails(env)
        assert code == 1
        assert "runs actors on this state store with in-process mailboxes" in out
        assert "ZTDP_MAILBOX=nats" in out
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"ZTDP_GRAPH_STORE": "redis", "ZTDP_STATE_STORE": "memory"}, "ZTDP_STATE_STORE=memory"),
        ({"ZTDP_MAILBOX": "nats", "ZTDP_STATE_STORE": "memory"}, "ZTDP_MAILBOX=nats needs"),
        ({"ZTDP_ACTORS": "off"}, "ZTDP_ACTORS=off with in-process mailboxes"),
    ],
)
def test_settings_under_which_processes_would_fight_are_refused(
    settings: dict[str, str], named: str
) -> None:
    code, out = serve_fails({"ZTDP_AUTH": "off", **settings})
    assert code == 1 and named in out, out
