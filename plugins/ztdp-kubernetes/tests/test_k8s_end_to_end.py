"""End to end: `ztdp serve` as its own process, the README flow over HTTP, Kubernetes for real.

The Kubernetes API is the sandbox on a loopback socket in this test's event loop (or a real
cluster with ZTDP_TEST_KUBECONFIG, where readiness comes from the cluster's controllers).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ztdp_kubernetes import object_name

# An image the cluster can run (only a real cluster pulls it); conftest.py says the same.
IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")
NAME = object_name("checkout", "checkout-api")  # its Deployment's name in every environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as r:
            return r.status, await r.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, data = await self.call(method, path, body)
        assert 200 <= code < 300, (method, path, code, data)
        return data

    async def until(self, what: str, check: Any, seconds: float = 20) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def api(kube: Any) -> AsyncIterator[Api]:
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    env = {
        **os.environ,
        "ZTDP_KUBECONFIG": kube.kubeconfig,
        # No periodic observation to speak of: Ready and repairs must come from the watch.
        "ZTDP_OBSERVE_INTERVAL": "3600",
        "ZTDP_GRAPH_STORE": "memory",
        "ZTDP_AUTH": "off",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starts at once; runs beside the loop
            [sys.executable, "-m", "ztdp", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as session:
            a = Api(session, f"http://127.0.0.1:{port}")
            for _ in range(400):  # the port answers 503 "starting" until the server is up
                try:
                    if (await a.call("GET", "/v1/healthz"))[0] == 200:
                        break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(log.read_text())
                await asyncio.sleep(0.05)
            yield a
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave the server running past the test
            proc.wait()
            pytest.fail(f"ztdp serve did not stop within 15 s of SIGTERM:\n{log.read_text()}")
        assert "Traceback" not in log.read_text(), log.read_text()


async def test_readme_flow_creates_the_deployment_and_reaches_ready(
    api: Api, kube: Any, namespace: str
) -> None:
    assert "kubernetes" in [p["kind"] for p in await api.ok("GET", "/v1/providers")]
    # dev names its cluster as every provider's section is named; prod as it was spelt first.
    where = {
        "dev": {"providers": {"kubernetes": {"namespace": namespace}}},
        "prod": {"kubernetes": {"namespace": f"{namespace}-prod"}},
    }
    for env, spec in where.items():
        await api.ok(
            "POST",
            "/v1/environments",
            {"metadata": {"name": env, "owner": "platform"}, "spec": spec},
        )
    # The plugin's settings model checks the section, merged with ZTDP_KUBECONFIG.
    bad = {"providers": {"kubernetes": {"namespace": "Not_A_Label"}}}
    code, problem = await api.call(
        "POST", "/v1/environments", {"metadata": {"name": "bad", "owner": "platform"}, "spec": bad}
    )
    assert code == 422 and problem["errors"][0]["loc"] == "spec.providers.kubernetes.namespace"
    await api.ok("POST", "/v1/applications", {"metadata": {"name": "checkout", "owner": "team-x"}})
    await api.ok("POST", "/v1/applications/checkout/environments/allowed", ["dev"])
    await api.ok(
        "POST",
        "/v1/applications/checkout/services",
        {
            "metadata": {"name": "checkout-api", "owner": "team-x"},
            "spec": {"application": "checkout", "port": 8080, "public": True},
        },
    )
    await api.ok(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions",
        {"version": "1.0.0", "owner": "team-x", "image": IMAGE},
    )

    accepted = await api.ok(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "dev"},
    )

    async def finished() -> Any:
        run = await api.ok("GET", f"/v1/runs/{accepted['run']}")
        return run if run["status"] != "Running" else None

    run = await api.until("the run to finish", finished)
    assert run["status"] == "Succeeded", run
    dep = await kube.deployment(namespace, NAME)
    assert dep is not None
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ztdp"
    assert dep["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"
    assert dep["metadata"]["annotations"]["ztdp.io/node"] == "deployment/checkout/checkout-api@dev"
    [deployment] = await api.ok("GET", "/v1/environments/dev/deployments")
    # the sandbox has no controller: nothing is ready until it is told; a cluster may be quick
    assert deployment["status"] in (
        ("Progressing",) if hasattr(kube, "emulator") else ("Progressing", "Ready")
    )

    await kube.mark_ready(namespace, NAME)

    async def ready() -> bool:
        [d] = await api.ok("GET", "/v1/environments/dev/deployments")
        return bool(d["status"] == "Ready")

    # The watch brings the ready replicas to the actor: within 2 s (a cluster's own
    # controller may take longer to roll out).
    quick = 2 if hasattr(kube, "emulator") else 200
    await api.until("the deployment to be Ready", ready, seconds=quick)

    # Someone changes the image behind ZTDP's back: the watch makes the actor repair it.
    dep = await kube.deployment(namespace, NAME)
    assert dep is not None
    real = dep["metadata"]["name"]
    container = dep["spec"]["template"]["spec"]["containers"][0]["name"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": "x:1"}]}}}}
    await kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{real}", patch, merge=True
    )

    async def repaired() -> bool:
        now = await kube.deployment(namespace, real)
        return bool(now and now["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE)

    await api.until("the outside change to be repaired", repaired, seconds=quick)

    async def said() -> bool:  # the event follows the repair's commit, after the object
        drift = await api.ok("GET", "/v1/events?type=drift&limit=100")
        return {e["type"] for e in drift} >= {"io.ztdp.drift.detected", "io.ztdp.drift.repaired"}

    await api.until("the repair to be recorded as events", said, seconds=quick)
    plan = await api.ok("GET", "/v1/applications/checkout/plan?environment=dev")
    assert plan["summary"]["noop"] == 1  # what is deployed is what is wanted

    code, problem = await api.call(
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "prod"},
    )
    assert code == 403 and "builtin-allowed-environments" in problem["detail"]
    await asyncio.sleep(0.5)
    assert await kube.deployment(where["prod"], NAME) is None  # denied: nothing created

    events = await api.ok("GET", f"/v1/events?run={accepted['run']}&limit=1000")
    types = {e["type"] for e in events}
    assert {"io.ztdp.run.started", "io.ztdp.run.step", "io.ztdp.run.finished"} <= types
    assert all(e["specversion"] == "1.0" for e in events)


def test_ztdp_demo_runs_the_flow_on_the_sandbox_and_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZTDP_KUBECONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "ztdp", "demo"], env=env, capture_output=True, text=True, timeout=120
    )
    out = " ".join((done.stdout + done.stderr).split())  # rich wraps lines
    assert done.returncode == 0, out
    assert "No kubeconfig: using a local Kubernetes API sandbox" in out
    assert f"Deployment {NAME} created in namespace demo-dev" in out
    assert "checkout-api 1.0.0 in dev is Ready" in out
    assert "prod is not in application checkout's allowed environments" in out
