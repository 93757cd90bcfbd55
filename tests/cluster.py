"""ZTDP as several processes: API processes and workers on one Redis and one NATS.

Each test gets its own Redis key prefix and NATS stream names, and a `recording` provider
(tests/plugins/ztdp-recording, on the processes' path) that writes what every process applied
into the same Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REPO, ServerProcess

# The recording provider, installed for the processes of these tests only: by being on their
# path (its package and its dist-info with the entry point), not in the environment, so that
# no other test sees an extra provider.
RECORDING_PATH = REPO / "tests" / "plugins" / "ztdp-recording"


def recording_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    """The recording provider for a process, writing under the test's prefix."""
    return {
        "PYTHONPATH": str(RECORDING_PATH),
        "ZTDP_RECORDING_REDIS": redis_url,
        "ZTDP_RECORDING_PREFIX": f"{redis_prefix}:recording",
    }


def shared_env(
    redis_url: str, redis_prefix: str, nats_url: str, nats_prefix: str, **more: str
) -> dict[str, str]:
    """Settings of one installation spread over processes, with the recording provider."""
    return {
        **recording_env(redis_url, redis_prefix),
        "ZTDP_GRAPH_STORE": "redis",
        "ZTDP_REDIS_URL": redis_url,
        "ZTDP_REDIS_PREFIX": redis_prefix,
        "ZTDP_MAILBOX": "nats",
        "ZTDP_NATS_URL": nats_url,
        "ZTDP_NATS_PREFIX": nats_prefix,
        "ZTDP_AUTH": "off",
        "ZTDP_PARTITIONS": "8",
        "ZTDP_LEASE_TTL": "1.5",
        "ZTDP_ACK_WAIT": "2",
        "ZTDP_OBSERVE_INTERVAL": "0",
        **more,
    }


class WorkerProcess:
    """`ztdp worker` as a separate process, as an operator would run it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="ztdp-worker-")) / "output.log"

    def start(self) -> WorkerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ztdp", "worker"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while " worker: " not in self.text():  # its banner: it holds its partitions
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.stop()
                pytest.fail(f"ztdp worker did not start: {out}")
            time.sleep(0.05)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> str:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)  # a paused one must hear the SIGTERM
                self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return self.text()


class Recording:
    """What the recording provider of every process wrote."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._p = f"{prefix}:recording"

    def applies(self) -> list[str]:
        return list(self._redis.lrange(f"{self._p}:applies", 0, -1))

    def overlaps(self) -> list[str]:
        return list(self._redis.lrange(f"{self._p}:overlaps", 0, -1))

    def live(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._redis.hgetall(f"{self._p}:live").items()}

    def close(self) -> None:
        self._redis.close()


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ok(url: str, method: str = "GET", body: Any = None) -> Any:
    code, answer = call(url, method, body)
    assert code < 300, (method, url, code, answer)
    return answer


def wait_until(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    """Poll a process from outside, as an operator's client does, until `check` is truthy."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.05)
    return found


def declare(api: str, resources: int, *, env: str = "dev") -> None:
    """An environment, an application and `resources` resources of a `recording` type."""
    ok(f"{api}/v1/environments", "POST", {"metadata": {"name": env, "owner": "p"}})
    ok(f"{api}/v1/applications", "POST", {"metadata": {"name": "app", "owner": "team-x"}})
    ok(
        f"{api}/v1/resources",
        "POST",
        {
            "kind": "ResourceType",
            "metadata": {"name": "rec", "owner": "p"},
            "spec": {"provider": "recording"},
        },
    )
    for i in range(resources):
        name = f"r{i:03d}"
        ok(
            f"{api}/v1/resources",
            "POST",
            {"metadata": {"name": name, "owner": "team-x"}, "spec": {"type": "rec"}},
        )
        ok(f"{api}/v1/applications/app/resources/{name}", "POST")


def finished_run(api: str, run_id: str, seconds: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        code, run = call(f"{api}/v1/runs/{run_id}")
        return run if code == 200 and run["status"] != "Running" else None

    return wait_until(f"run {run_id} to finish", done, seconds)  # type: ignore[no-any-return]


__all__ = ["Recording", "ServerProcess", "WorkerProcess", "shared_env"]
