"""The runtime spread over processes: API processes and `ztdp worker`s on one Redis and one NATS.

Real processes, real Redis and a current NATS server; SIGKILL, SIGSTOP and outages as an
operator would meet them. The recording provider (tests/plugins/ztdp-recording) tells what
every process applied, and whether two applies of one node ever overlapped.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.cluster import (
    Recording,
    WorkerProcess,
    call,
    declare,
    finished_run,
    ok,
    shared_env,
    wait_until,
)
from tests.conftest import ServerProcess

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
