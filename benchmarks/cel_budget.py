"""`/v1/healthz` latency while the costliest accepted CEL expression is evaluated in a loop.

1. The costliest accepted expression: candidates that pass the static budget and exhaust the
   evaluation budget, each evaluated by an in-process catalog over the same intent as the
   server's (a version whose `env` fills a 1 MiB request); the slowest median decision wins.
2. A ZTDP API process (memory store, run as `ztdp serve` runs it) answers `GET /v1/healthz`
   one request after another: first with nothing else to do (the baseline), then while
   another connection deploys again and again against a policy holding that expression. The
   figures are median, p99 and max latency, and their ratios to the baseline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from ztdp.catalog import Catalog
from ztdp.contracts import Application, Environment, Policy, Service, ServiceVersionIn
from ztdp.errors import InvalidInput
from ztdp.graph.store import MemoryGraphStore
from ztdp.policy import Transition, cel
from ztdp.state import MemoryStateStore

PROBES = 1000
EVALUATIONS = 20
ENV = {f"VAR_{i:03}": "v" * 3900 for i in range(256)}  # 256 variables, just under 1 MiB
FIFTY = "[" + ",".join(str(i) for i in range(1, 51)) + "]"
FORTY = "[" + ",".join(str(i) for i in range(1, 41)) + "]"
CANDIDATES = {
    "map equality": " && ".join(
        f"version.env.{m}(k, version.env == version.env)"
        for m in ("all", "exists", "all", "exists")
    ),
    "long sum": f"{FIFTY}.all(x, {' + '.join(['x'] * 45)} > 0)",
    "literal list in": f"{FORTY}.all(x, x in {FORTY})",
    "concatenation": "version.env.all(k, version.env[k] + version.env[k] + version.env[k] != '')",
    "string methods": "version.env.all(k, "
    + " || ".join(f"k.{m}('{c}')" for m in ("startsWith", "endsWith", "contains") for c in "ABCD")
    + " || true)",
    "regex": "version.env.all(k, !version.env[k].matches('^(v|w)*x$'))",
    "conditional index": "version.env.all(k, version.env[k] == '' ? false : k != 'X')",
}
APP = "bench"
SVC = "api"
VERSION = "1.0.0"
ENVIRONMENT = "prod"


# --- 1. the costliest accepted expression --------------------------------------------------


async def build(catalog: Catalog) -> None:
    def meta(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "owner": "team-x"}}

    await catalog.create_environment(Environment.model_validate(meta(ENVIRONMENT)))
    await catalog.create_application(Application.model_validate(meta(APP)))
    await catalog.set_allowed(APP, [ENVIRONMENT], replace=True)
    await catalog.create_service(
        APP, Service.model_validate({**meta(SVC), "spec": {"application": APP}})
    )
    body = {"version": VERSION, "owner": "team-x", "env": ENV}
    await catalog.create_version(APP, SVC, ServiceVersionIn.model_validate(body))


def policy(expression: str) -> Policy:
    return Policy.model_validate(
        {
            "metadata": {"name": "costly", "owner": "platform-team"},
            "spec": {
                "transition": {"environment": ENVIRONMENT},
                "rule": {"type": "expression", "expression": expression},
            },
        }
    )


async def costliest() -> tuple[str, list[float]]:
    """The candidate whose decisions take longest, with those decisions' times in seconds."""
    transition = Transition(application=APP, service=SVC, version=VERSION, environment=ENVIRONMENT)
    budget = f"exceeded the evaluation budget of {cel.LIMITS.steps} steps"
    timings: dict[str, list[float]] = {}
    for name, expression in CANDIDATES.items():
        catalog = Catalog(MemoryGraphStore(), MemoryStateStore())
        await build(catalog)
        try:
            await catalog.create_policy(policy(expression))
        except InvalidInput as exc:
            sys.exit(f"candidate {name!r} is not accepted: {exc.detail}")
        times = []
        for _ in range(EVALUATIONS):
            started = time.perf_counter()
            decision = await catalog.evaluate(transition)
            times.append(time.perf_counter() - started)
        [result] = [r for r in decision.results if r.policy == "costly"]
        if budget not in result.reason:
            sys.exit(f"candidate {name!r} does not exhaust the budget: {result.reason}")
        timings[name] = times
        print(
            f"  {name:18} {len(expression):4} chars  decision median "
            f"{statistics.median(times) * 1000:6.1f} ms  max {max(times) * 1000:6.1f} ms"
        )
    name = max(timings, key=lambda n: statistics.median(timings[n]))
    return name, timings[name]


# --- 2. /v1/healthz beside it --------------------------------------------------------------


def serve(port: int) -> None:
    from aiohttp import web

    from ztdp.api import create_app
    from ztdp.cli.process import loop_factory, settle_heap
    from ztdp.settings import Settings

    settings = Settings()
    app = create_app(settings)

    async def settle(_: web.Application) -> None:
        settle_heap()

    app.on_startup.append(settle)
    # As `ztdp serve` runs: on its event loop, with the start-up heap frozen.
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        loop=loop_factory(settings.event_loop)(),
    )


class Server:
    """The API in its own process, so that the client measuring it is never blocked by it."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.base}/v1/healthz")
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


async def setup(http: aiohttp.ClientSession, base: str, expression: str) -> None:
    async def post(path: str, body: Any, status: int = 201) -> None:
        async with http.post(base + path, json=body) as resp:
            assert resp.status == status, (path, resp.status, await resp.text())

    def meta(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "owner": "team-x"}}

    await post("/v1/environments", meta(ENVIRONMENT))
    await post("/v1/applications", meta(APP))
    allowed = f"{base}/v1/applications/{APP}/environments/allowed"
    async with http.put(allowed, json=[ENVIRONMENT]) as resp:
        assert resp.status == 200, (allowed, resp.status, await resp.text())
    await post(f"/v1/applications/{APP}/services", {**meta(SVC), "spec": {"application": APP}})
    version = {"version": VERSION, "owner": "team-x", "env": ENV}
    await post(f"/v1/applications/{APP}/services/{SVC}/versions", version)
    await post("/v1/policies", json.loads(policy(expression).model_dump_json(by_alias=True)))


async def probe(http: aiohttp.ClientSession, base: str) -> list[float]:
    latencies = []
    for _ in range(PROBES):
        started = time.perf_counter()
        async with http.get(f"{base}/v1/healthz") as resp:
            await resp.read()
            assert resp.status == 200
        latencies.append(time.perf_counter() - started)
    return latencies


async def under_load(base: str) -> tuple[list[float], int]:
    """Healthz latencies while another connection deploys until the probes are done."""
    deploys = 0
    done = asyncio.Event()
    started = asyncio.Event()
    url = f"{base}/v1/applications/{APP}/services/{SVC}/versions/{VERSION}/deploy"

    async def deploy() -> None:
        nonlocal deploys
        async with aiohttp.ClientSession() as http:
            while not done.is_set():
                async with http.post(url, json={"environment": ENVIRONMENT}) as resp:
                    await resp.read()
                    assert resp.status == 403, resp.status
                deploys += 1
                started.set()

    async def measure() -> list[float]:
        await started.wait()
        async with aiohttp.ClientSession() as http:
            try:
                return await probe(http, base)
            finally:
                done.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(deploy())
        probing = tg.create_task(measure())
    return probing.result(), deploys


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return statistics.median(ordered), p99, ordered[-1]


async def main() -> None:
    print(f"candidates (decision = one policy evaluation; {EVALUATIONS} each):")
    name, times = await costliest()
    expression = CANDIDATES[name]
    median = statistics.median(times)
    print(
        f"costliest accepted expression: {name} ({len(expression)} chars), decision median "
        f"{median * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
        f"({median / cel.LIMITS.steps * 1e6:.1f} us per step of its {cel.LIMITS.steps})"
    )
    server = Server()
    try:
        async with aiohttp.ClientSession() as http:
            await setup(http, server.base, expression)
            await probe(http, server.base)  # warm-up
            baseline = summary(await probe(http, server.base))
        loaded_latencies, deploys = await under_load(server.base)
        loaded = summary(loaded_latencies)
    finally:
        server.stop()
    print(f"/v1/healthz, {PROBES} requests one after another:")
    print("                       median      p99      max")
    for label, (median, p99, top) in (("alone", baseline), ("while evaluating", loaded)):
        print(f"  {label:18} {median * 1000:7.2f} ms {p99 * 1000:7.2f} ms {top * 1000:7.2f} ms")
    ratios = [m / b for m, b in zip(loaded, baseline, strict=True)]
    print(f"  ratio              {ratios[0]:7.1f}    {ratios[1]:7.1f}    {ratios[2]:7.1f}")
    print(f"  ({deploys} deploys denied meanwhile, each evaluating the expression)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        asyncio.run(main())
