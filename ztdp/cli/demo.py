"""`ztdp demo`: the README flow, end to end, narrated for a newcomer."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from rich.console import Console

from ztdp.api import PARSER_LIMIT, create_app
from ztdp.settings import Settings


class DemoFailed(Exception):
    pass


@contextlib.asynccontextmanager
async def _cluster(kubeconfig: str | None, console: Console) -> AsyncIterator[tuple[str, Any]]:
    if kubeconfig:
        console.print(f"Kubernetes: the cluster of [bold]{kubeconfig}[/bold]")
        yield kubeconfig, None
        return
    found = entry_points(group="ztdp.sandboxes", name="kubernetes")
    if not found:
        raise DemoFailed(
            "no kubeconfig given and no Kubernetes sandbox installed: pip install -e "
            "'plugins/ztdp-kubernetes[sandbox]' (make setup does) or pass --kubeconfig"
        )
    sandbox = next(iter(found)).load()
    async with sandbox() as box:
        console.print(
            "[bold yellow]No kubeconfig: using a local Kubernetes API sandbox[/bold yellow] "
            f"(an API emulator on {box.url}). Nothing really runs in it, so the demo plays the "
            "Deployment controller to report ready replicas."
        )
        yield box.kubeconfig, box


async def run_demo(kubeconfig: str | None, console: Console) -> None:
    async with _cluster(kubeconfig, console) as (config, box):
        settings = Settings(
            graph_store="memory", auth="off", kubeconfig=config, observe_interval=0.5
        )
        runner = web.AppRunner(
            create_app(settings, announce=console.print),
            access_log=None,
            max_line_size=PARSER_LIMIT,
            max_field_size=PARSER_LIMIT,
        )
        await runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        console.print(f"ZTDP API on {base} (memory store, authentication off)\n")
        try:
            async with aiohttp.ClientSession(base) as http:
                await _flow(http, console, box)
        finally:
            await runner.cleanup()


async def _call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, path, json=body) as r:
        return r.status, await r.json(content_type=None)


async def _step(
    http: aiohttp.ClientSession,
    console: Console,
    say: str,
    method: str,
    path: str,
    body: Any = None,
) -> Any:
    code, data = await _call(http, method, path, body)
    mark = "[green]✓[/green]" if code < 400 else "[red]✗[/red]"
    console.print(f"{mark} {say}  [dim]{method} {path} → {code}[/dim]")
    if code >= 400 and code != 403:
        raise DemoFailed(f"{method} {path} answered {code}: {data.get('detail')}")
    return data


async def _flow(http: aiohttp.ClientSession, console: Console, box: Any) -> None:
    ns = "demo-dev"
    await _step(
        http,
        console,
        "platform team creates environment dev",
        "POST",
        "/v1/environments",
        {
            "metadata": {"name": "dev", "owner": "platform-team"},
            "spec": {"kubernetes": {"namespace": ns}},
        },
    )
    await _step(
        http,
        console,
        "platform team creates environment prod",
        "POST",
        "/v1/environments",
        {"metadata": {"name": "prod", "owner": "platform-team"}},
    )
    await _step(
        http,
        console,
        "team-x declares application checkout",
        "POST",
        "/v1/applications",
        {"metadata": {"name": "checkout", "owner": "team-x"}},
    )
    await _step(
        http,
        console,
        "checkout may run in dev only",
        "PUT",
        "/v1/applications/checkout/environments/allowed",
        ["dev"],
    )
    await _step(
        http,
        console,
        "team-x declares service checkout-api on port 8080",
        "POST",
        "/v1/applications/checkout/services",
        {
            "metadata": {"name": "checkout-api", "owner": "team-x"},
            "spec": {"application": "checkout", "port": 8080},
        },
    )
    await _step(
        http,
        console,
        "team-x releases version 1.0.0",
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions",
        {"version": "1.0.0", "owner": "team-x", "image": "nginx:1.27"},
    )
    accepted = await _step(
        http,
        console,
        "deploy 1.0.0 to dev",
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "dev"},
    )
    run = await _wait(http, f"/v1/runs/{accepted['run']}", lambda r: r["status"] != "Running")
    for step in run["steps"]:
        console.print(
            f"   step {step['node']}: {step['action']} → {step['status']}"
            + (f" ({step['error']})" if step["error"] else "")
        )
    if run["status"] != "Succeeded":
        raise DemoFailed(f"run {run['id']} {run['status']}")
    node = "deployment/checkout/checkout-api@dev"
    if box is None:
        console.print(f"   Deployment for {node} created in namespace {ns}")
    else:
        # Its name comes from the application and the service; its annotation names the node.
        dep = await box.deployment_of(ns, node)
        if dep is None:
            raise DemoFailed(f"no Deployment in namespace {ns} is annotated ztdp.io/node={node}")
        name = dep["metadata"]["name"]
        console.print(f"   Deployment {name} created in namespace {ns} for {node}")
        await box.mark_ready(ns, name)
        console.print("   (sandbox: reported the Deployment's replicas as available)")
    deployments = await _wait(
        http,
        "/v1/environments/dev/deployments",
        lambda ds: bool(ds) and ds[0]["status"] == "Ready",
        seconds=60,
    )
    console.print(
        f"[green]✓[/green] checkout-api 1.0.0 in dev is [bold]{deployments[0]['status']}[/bold]"
    )
    plan = await _step(
        http,
        console,
        "the plan for dev now: nothing left to do",
        "GET",
        "/v1/applications/checkout/plan?environment=dev",
    )
    console.print(f"   plan: {plan['summary']}")
    denied = await _step(
        http,
        console,
        "deploy 1.0.0 to prod (not allowed)",
        "POST",
        "/v1/applications/checkout/services/checkout-api/versions/1.0.0/deploy",
        {"environment": "prod"},
    )
    console.print(f"   denied: {denied['detail']}")
    console.print("\nDone. Every step above is in the API: GET /v1/events, /v1/runs, /v1/graph.")


async def _wait(http: aiohttp.ClientSession, path: str, done: Any, *, seconds: float = 30) -> Any:
    data = None
    with anyio.move_on_after(seconds):
        while True:
            _, data = await _call(http, "GET", path)
            if done(data):
                break
            await anyio.sleep(0.2)
    return data
