"""ZTDP as separate processes for the benchmarks, built on the tests' own harness.

One installation: `ztdp serve` with ZTDP_ACTORS=off (the API only) and `ztdp worker`s, on the
Redis at 127.0.0.1:6379 under a fresh key prefix (deleted afterwards) and a NATS server of
the benchmark's own (tests/nats_server.py), with the `recording` provider
(tests/plugins/ztdp-recording) realising `recording` resources as entries in that Redis.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import WorkerProcess, shared_env
from tests.conftest import ServerProcess
from ztdp.state import partition_of

REDIS_URL = "redis://127.0.0.1:6379/0"
CONTRACTS_PER_REQUEST = 500  # the limit of POST /v1/contracts


class Cluster:
    """An installation's processes under fresh Redis and NATS prefixes; `close()` removes all."""

    def __init__(self, nats_url: str, **settings: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.redis_prefix = f"ztdp-bench-{tag}"
        self.env = shared_env(REDIS_URL, self.redis_prefix, nats_url, f"bench{tag}")
        # The defaults, said explicitly (the tests' harness shortens them).
        self.env.update(ZTDP_PARTITIONS="16", ZTDP_LEASE_TTL="2", ZTDP_ACK_WAIT="3")
        # Workers as docs/runtime.md recommends: a takeover's burst waits its turn.
        self.env.update(ZTDP_ACTOR_CONCURRENCY="256")
        self.env.update(settings)
        self.api: ServerProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def start_api(self) -> Cluster:
        self.api = ServerProcess({**self.env, "ZTDP_ACTORS": "off"}).start()
        return self

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.env).start()
        self.workers.append(worker)
        return worker

    def owners(self) -> dict[str, list[int]]:
        """`GET /v1/status`: each worker holding leases, with its partitions."""
        return {w["member"]: w["partitions"] for w in request(f"{self.url}/v1/status")["workers"]}

    def wait_balanced(self, workers: int, seconds: float = 60) -> dict[str, list[int]]:
        """Until `workers` workers own the 16 partitions in equal shares."""
        share = 16 // workers

        def balanced() -> dict[str, list[int]] | None:
            owners = self.owners()
            ok = len(owners) == workers and all(len(p) == share for p in owners.values())
            return owners if ok else None

        return wait_until(f"{workers} worker(s) owning {share} partitions each", balanced, seconds)

    def crashed(self) -> int:
        """How many of the workers exited by themselves."""
        return sum(1 for w in self.workers if w.proc is not None and w.proc.poll() is not None)

    def applies(self) -> int:
        """How many applies the recording provider has recorded."""
        return int(self.redis.llen(f"{self.redis_prefix}:recording:applies"))

    def observes(self) -> int:
        """How many observations the recording provider has recorded."""
        return int(self.redis.llen(f"{self.redis_prefix}:recording:observes"))

    def close(self) -> None:
        for p in [*self.workers, self.api]:
            if p is not None:
                p.stop()
                shutil.rmtree(p.log.parent, ignore_errors=True)
        keys = list(self.redis.scan_iter(match=f"{self.redis_prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            self.redis.delete(*keys[i : i + 1000])
        self.redis.close()


def request(url: str, method: str = "GET", body: Any = None, timeout: float = 300) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{method} {url}: {err.code} {err.read()[:2000]!r}") from err


def wait_until(what: str, check: Callable[[], Any], seconds: float, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(poll)
    return found


def node(i: int) -> str:
    return f"resource/{_name(i)}@dev"


def declare(api: str, resources: int) -> None:
    """Environment `dev`, application `app`, a resource type `rec` of the recording provider
    and `resources` resources of it (r00000, ...), not linked to the application yet (so no
    plan has them), through `POST /v1/contracts`, 500 at a time."""
    request(
        f"{api}/v1/contracts",
        "POST",
        [
            {"kind": "Environment", "metadata": {"name": "dev", "owner": "p"}},
            {"kind": "Application", "metadata": {"name": "app", "owner": "team-x"}},
            {
                "kind": "ResourceType",
                "metadata": {"name": "rec", "owner": "p"},
                "spec": {"provider": "recording"},
            },
        ],
    )
    _submit(api, [_resource(i) for i in range(resources)])


def link(api: str, indices: Iterable[int]) -> None:
    """Link resources to `app`: from now on `dev`'s plan has resource/r?????@dev for each."""
    _submit(
        api, [{"kind": "ResourceLink", "application": "app", "resource": _name(i)} for i in indices]
    )


def warm_up(cluster: Cluster, candidates: Iterable[int]) -> list[int]:
    """Have each worker read the whole intent graph once, alone, before the runs that count.

    A worker's first step loads the graph from Redis, and every step that starts before that
    load finished loads it too (no single flight): 16 concurrent first steps on 10,000
    resources block a worker's event loop for seconds, past its leases. So: one candidate
    resource on a partition of each worker is declared, linked and applied in a run of its
    own (one step per worker); later graph changes reach the workers as increments. Returns
    the candidates used; their actors exist afterwards.
    """
    owners = list(cluster.owners().values())
    picked: list[int] = []
    for i in candidates:
        p = partition_of(node(i), 16)
        if any(p in parts for parts in owners):
            picked.append(i)
            owners = [parts for parts in owners if p not in parts]
        if not owners:
            break
    _submit(cluster.url, [_resource(i) for i in picked])
    link(cluster.url, picked)
    run_id, _ = apply(cluster.url)
    run = finished(cluster.url, run_id, seconds=120)
    if run["status"] != "Succeeded":
        raise SystemExit(f"the warm-up run {run_id}: {run['status']}")
    return picked


def _name(i: int) -> str:
    return f"r{i:05d}"


def _resource(i: int) -> dict[str, Any]:
    meta = {"name": _name(i), "owner": "team-x"}
    return {"kind": "Resource", "metadata": meta, "spec": {"type": "rec"}}


def _submit(api: str, contracts: list[dict[str, Any]]) -> None:
    for i in range(0, len(contracts), CONTRACTS_PER_REQUEST):
        request(f"{api}/v1/contracts", "POST", contracts[i : i + CONTRACTS_PER_REQUEST])


def apply(api: str) -> tuple[str, float]:
    """`POST /v1/apply?env=dev`: the run's id and the wall-clock time just before the POST."""
    posted = time.time()
    return request(f"{api}/v1/apply?env=dev", "POST")["run"], posted


def finished(api: str, run_id: str, seconds: float = 600) -> dict[str, Any]:
    """Wait for the run's `run.finished` event on `GET /v1/events` as Server-Sent Events
    (a stream filtered to that type: polling the run, 1,000 steps and more, cost the API
    process a third of its CPU during a measurement); the run as `GET /v1/runs/{id}` answers
    then."""
    deadline = time.monotonic() + seconds
    req = urllib.request.Request(
        f"{api}/v1/events?type=run.finished&run={run_id}",
        headers={"Accept": "text/event-stream"},
    )
    # Answered once subscribed: a run that ends after the look below is on the stream.
    with urllib.request.urlopen(req, timeout=min(seconds, 20)) as stream:
        run: dict[str, Any] = request(f"{api}/v1/runs/{run_id}")
        while run["status"] == "Running":
            line = stream.readline()  # an event, or the keep-alive every 15 s
            if not line:
                raise SystemExit(f"the event stream ended before run {run_id} did")
            if line.startswith(b"data:") and json.loads(line[5:]).get("runid") == run_id:
                run = request(f"{api}/v1/runs/{run_id}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {seconds:g} s waiting for run {run_id}")
    return run
