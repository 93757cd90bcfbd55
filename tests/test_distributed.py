"""The runtime spread over processes: API processes and `ztdp worker`s on one Redis and one NATS.

Real processes, real Redis and a current NATS server; SIGKILL, SIGSTOP and outages as an
operator would meet them. The recording provider (tests/plugins/ztdp-recording) tells what
every process applied, and whether two applies of one node ever overlapped.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import (
    Recording,
    WorkerProcess,
    call,
    declare,
    finished_run,
    ok,
    recording_env,
    shared_env,
    wait_until,
)
from tests.conftest import RedisServer, ServerProcess
from tests.nats_server import NatsServer
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
    # Each step's events in the order they happened: queued by its coordinator, then its
    # actor's (the coordinator publishes "Queued" before it sends the step).
    # A step delivered again says its outcome again: repeats in a row are one.
    by_step: dict[str, list[str]] = {}
    for e in events_a:
        if e["type"] == "io.ztdp.run.step":
            said = by_step.setdefault(e["subject"], [])
            if said[-1:] != [e["data"]["status"]]:
                said.append(e["data"]["status"])
    assert len(by_step) == 3
    assert all(s == ["Queued", "Progressing", "Ready"] for s in by_step.values()), by_step
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
        **recording_env(redis_url, redis_prefix),
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


def test_a_run_survives_the_kill_of_the_only_server(
    redis_url: str, redis_prefix: str, recording: Recording
) -> None:
    """The embedded runtime on Redis (in-process mailboxes): SIGKILL in the middle of a run;
    the restarted server resumes the run from its record and finishes it."""
    env = {
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
        "ZTDP_AUTH": "off",
        "ZTDP_LEASE_TTL": "1",
        "ZTDP_APPLY_PARALLELISM": "2",
        "ZTDP_OBSERVE_INTERVAL": "0",
        **recording_env(redis_url, redis_prefix),
        "ZTDP_RECORDING_DELAY": "0.1",
    }
    server = ServerProcess(env).start()
    try:
        declare(server.url, 20)
        run = ok(f"{server.url}/v1/apply?env=dev", "POST")["run"]
        wait_until("some applies", lambda: len(recording.applies()) >= 5)
    finally:
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        server.proc = None
    assert ok_or_none(server.url) is None
    again = ServerProcess(env).start()
    try:
        done = finished_run(again.url, run)
        assert done["status"] == "Succeeded"
        assert {s["status"] for s in done["steps"]} == {"Ready"}
        assert len(recording.live()) == 20
        assert "resuming 1 run(s)" in again.text()
    finally:
        again.stop()


def ok_or_none(url: str) -> object:
    try:
        return call(f"{url}/v1/healthz")
    except OSError:
        return None


def test_nats_and_then_redis_restarting_mid_apply_pause_the_run_which_then_finishes(
    cluster: Cluster, tmp_path: Path, redis_url: str, redis_prefix: str, recording: Recording
) -> None:
    """Servers of this test's own: NATS with its store directory, Redis with an append-only
    file (as production runs them). Each is SIGKILLed and restarted during an apply; the API
    answers 503 meanwhile and the run finishes once the service is back."""
    nats_server = NatsServer().start()
    redis_server = RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)
    ).start()
    try:
        env = shared_env(redis_server.url, "outage", nats_server.url, "outage")
        # the provider records in the tests' own Redis: the outage is ZTDP's, not the world's
        env.update(recording_env(redis_url, redis_prefix))
        slow = {"ZTDP_RECORDING_DELAY": "0.1", "ZTDP_APPLY_PARALLELISM": "2"}
        api = cluster.api(env, ZTDP_ACTORS="off")
        cluster.worker(env, **slow)
        declare(api.url, 30)

        run = ok(f"{api.url}/v1/apply?env=dev", "POST")["run"]
        wait_until("some applies", lambda: len(recording.applies()) >= 4)
        nats_server.kill()
        code, problem = call(f"{api.url}/v1/apply?env=dev", "POST")
        assert code == 503 and problem["title"] == "Backend unavailable", problem
        nats_server.start()
        assert finished_run(api.url, run, seconds=90)["status"] == "Succeeded"

        for i in range(30):
            ok(f"{api.url}/v1/resources/r{i:03d}", "PUT", resource(f"r{i:03d}", "v2"))
        run = ok(f"{api.url}/v1/apply?env=dev", "POST")["run"]
        before = len(recording.applies())
        wait_until("the second run to start", lambda: len(recording.applies()) > before)
        redis_server.kill()
        assert call(f"{api.url}/v1/runs/{run}")[0] == 503
        redis_server.start()
        done = finished_run(api.url, run, seconds=90)
        assert done["status"] == "Succeeded"
        assert {r["config_ref"] for r in recording.live().values()} == {"v2"}
        assert len(done["steps"]) == 30
        assert recording.overlaps() == []
    finally:
        cluster.stop()
        nats_server.stop()
        redis_server.stop()


def resource(name: str, config_ref: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "owner": "team-x"},
        "spec": {"type": "rec", "config_ref": config_ref},
    }
