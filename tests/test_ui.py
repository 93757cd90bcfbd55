"""`/ui` in a real browser: Debian's Chromium driven by Playwright, against a real server with
authentication on whose deployments land in the Kubernetes sandbox (a real socket).

The page is waited for through its DOM (Playwright's wait-for-selector), never by sleeping.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright import async_api as playwright_api

from ztdp.api import create_app
from ztdp.api.keys import EVENTS
from ztdp.api.ui import UI_CSP
from ztdp.auth import MemoryTokenStore
from ztdp.events import EventFilter
from ztdp.settings import Settings
from ztdp_kubernetes import sandbox as sandbox_module

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: `apt-get install chromium` (.ci/run does it)",
)

IMAGE = "registry.k8s.io/pause:3.10"
DEPLOYMENT = "deployment/shop/web@dev"
WAIT_MS = 20_000
# Text from the server that a page building HTML from strings would run.
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


@dataclass
class Server:
    url: str
    admin: str
    app: Any
    box: Any
    namespace: str

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, json=body, headers=headers) as r,
        ):
            data = await r.json(content_type=None)
            assert r.status < 300, (method, path, r.status, data)
            return data


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    announced: list[str] = []
    async with sandbox_module.sandbox() as box:
        settings = Settings(auth="on", kubeconfig=box.kubeconfig, observe_interval=3600)
        app = create_app(settings, tokens=MemoryTokenStore(), announce=announced.append)
        async with TestServer(app, host="127.0.0.1") as ts:
            found = re.search(r"ztdp_\S+", announced[0])
            assert found is not None
            url = str(ts.make_url("")).rstrip("/")
            yield Server(url, found.group(0), app, box, "ui-test")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        # Root in a container has no user namespaces for Chromium's sandbox.
        b = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            await b.close()


async def _graph(s: Server) -> None:
    """dev (in the sandbox's namespace), an application shop with a service web 1.0.0 and a
    service worker that web uses."""
    env = {
        "metadata": {"name": "dev"},
        # drift is reported, not repaired: the page can show it and its plan diff
        "spec": {"kubernetes": {"namespace": s.namespace}, "reconcile": "report-only"},
    }
    await s.call("POST", "/v1/environments", env)
    await s.call(
        "POST",
        "/v1/applications",
        {"metadata": {"name": "shop", "owner": "team-x"}, "spec": {"description": HOSTILE}},
    )
    await s.call("POST", "/v1/applications/shop/environments/allowed", ["dev"])
    for svc in ("web", "worker"):
        await s.call(
            "POST",
            "/v1/applications/shop/services",
            {
                "metadata": {"name": svc, "owner": "team-x"},
                "spec": {"application": "shop", "port": 8080, "public": False},
            },
        )
    await s.call(
        "POST",
        "/v1/applications/shop/services/web/versions",
        {"version": "1.0.0", "owner": "team-x", "image": IMAGE},
    )


def _watch_page(page: Any, host: str) -> tuple[list[str], list[str]]:
    """Collect requests to any other host; and content the CSP refused, script errors and
    failed requests (but the 401s that ask for a token)."""
    outside: list[str] = []
    refused: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if urlsplit(r.url).netloc not in ("", host) else None,
    )
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda e: refused.append(str(e)))
    # 401 is the page asking who is there; anything else failing is a fault of ours
    page.on(
        "response",
        lambda r: (
            refused.append(f"{r.status} {r.url}") if r.status >= 400 and r.status != 401 else None
        ),
    )
    return outside, refused


@needs_chromium
async def test_the_page_logs_in_draws_the_graph_shows_a_node_and_follows_status(
    server: Server, browser: Any
) -> None:
    await _graph(server)
    host = urlsplit(server.url).netloc
    page = await browser.new_page()
    outside, refused = _watch_page(page, host)
    response = await page.goto(server.url + "/ui")
    assert response.status == 200
    assert response.headers["content-security-policy"] == UI_CSP

    # authentication is on: the page asks for a token, and refuses a wrong one
    await page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    await page.fill("#token", "ztdp_0000000000000000_" + "x" * 43)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#login-error:text('refused')", timeout=WAIT_MS)
    await page.fill("#token", server.admin)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#live[data-state=live]", timeout=WAIT_MS)
    me = await server.call("GET", "/v1/whoami")
    assert await page.text_content("#who") == me["principal"]

    # the nodes, by kind
    for nid in (
        "application/shop",
        "service/shop/web",
        "version/shop/web/1.0.0",
        "environment/dev",
    ):
        await page.wait_for_selector(f'#nodes li[data-id="{nid}"]', timeout=WAIT_MS)
    assert await page.evaluate("window.ztdp.cy.nodes().length") >= 5
    edge_types = set(await page.evaluate("window.ztdp.cy.edges().map(e => e.data('type'))"))
    assert {"owns", "has_version", "allowed_in"} <= edge_types

    # a click on the drawn node (on the canvas) shows its details
    await _click_node(page, "version/shop/web/1.0.0")
    await page.wait_for_selector('#node[data-id="version/shop/web/1.0.0"]', timeout=WAIT_MS)
    spec = await page.text_content("#node-spec")
    assert IMAGE in (spec or "")
    assert "deployed nowhere" in (await page.text_content("#node-plan") or "")
    assert "not realised" in (await page.text_content("#node-status") or "")

    # text from the server is shown as text, never run
    await page.click('#nodes li[data-id="application/shop"] button')
    await page.wait_for_selector('#node[data-id="application/shop"]', timeout=WAIT_MS)
    assert HOSTILE.replace('"', '\\"') in (await page.text_content("#node-spec") or "")
    assert await page.locator("#details img, #details script").count() == 0
    assert await page.evaluate("window.pwned") is None

    # a deploy: the deployment appears and its status arrives from the event stream
    bus = server.app[EVENTS]
    async with bus.subscribe(EventFilter(type="run.finished")) as finished:
        accepted = await server.call(
            "POST",
            "/v1/applications/shop/services/web/versions/1.0.0/deploy",
            {"environment": "dev"},
        )
        await page.wait_for_selector(
            f'#nodes li[data-id="{DEPLOYMENT}"][data-status=Progressing]', timeout=WAIT_MS
        )
        while (await finished.receive())["runid"] != accepted["run"]:
            pass  # another run's end
    assert await page.evaluate(f"window.ztdp.cy.getElementById('{DEPLOYMENT}').data('status')") in (
        "Progressing",
    )
    await page.click(f'#nodes li[data-id="{DEPLOYMENT}"] button')
    await page.wait_for_selector(f'#node[data-id="{DEPLOYMENT}"]', timeout=WAIT_MS)
    await page.wait_for_selector("#node-events li strong:text('actor.status')", timeout=WAIT_MS)
    await page.wait_for_selector(".plan[data-plan='shop@dev']", timeout=WAIT_MS)

    # the Kubernetes Deployment controller (the sandbox plays it) reports the rollout: Ready
    dep = await server.box.deployment_of(server.namespace, DEPLOYMENT)
    assert dep is not None
    await server.box.mark_ready(server.namespace, dep["metadata"]["name"])
    await page.wait_for_selector(
        f'#nodes li[data-id="{DEPLOYMENT}"][data-status=Ready]', timeout=WAIT_MS
    )
    await page.wait_for_selector(
        f'#node-status li[data-node="{DEPLOYMENT}"] .badge[data-status=Ready]', timeout=WAIT_MS
    )
    colour = await page.evaluate(f"window.ztdp.cy.getElementById('{DEPLOYMENT}').data('colour')")
    assert colour == "#188038"

    # someone changes the image behind ZTDP's back: Drifted, and its drift event
    # says how
    real = dep["metadata"]["name"]
    container = dep["spec"]["template"]["spec"]["containers"][0]["name"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": "x:1"}]}}}}
    path = f"/apis/apps/v1/namespaces/{server.namespace}/deployments/{real}"
    code, _ = await server.box.request("PATCH", path, patch, merge=True)
    assert code == 200
    await page.wait_for_selector(
        f'#nodes li[data-id="{DEPLOYMENT}"][data-status=Drifted]', timeout=WAIT_MS
    )
    await page.click(f'#nodes li[data-id="{DEPLOYMENT}"] button')
    # the live object against what was applied, from the drift event; the plan shows what
    # an apply would put back (report-only does not repair by itself)
    drift = "#node-events table.drift"
    await page.wait_for_selector(drift, timeout=WAIT_MS)
    rows = await page.locator(drift + " tr").all_text_contents()
    assert any("x:1" in r and IMAGE in r for r in rows), rows
    update = f'.plan[data-plan="shop@dev"] table[data-node="{DEPLOYMENT}"][data-action=update]'
    await page.wait_for_selector(update, timeout=WAIT_MS)
    rows = await page.locator(update + " tr").all_text_contents()
    assert any("x:1" in r and IMAGE in r for r in rows), rows

    # a change to the graph arrives too: a new version is drawn without a reload
    await server.call(
        "POST",
        "/v1/applications/shop/services/web/versions",
        {"version": "1.1.0", "owner": "team-x", "image": IMAGE},
    )
    await page.wait_for_selector('#nodes li[data-id="version/shop/web/1.1.0"]', timeout=WAIT_MS)
    # and its plan diff, for the deployment, names the change of version when deployed
    await page.click('#nodes li[data-id="version/shop/web/1.0.0"] button')
    await page.wait_for_selector(".plan[data-plan='shop@dev']", timeout=WAIT_MS)

    assert outside == [], outside
    assert refused == [], refused
    await page.close()


async def _click_node(page: Any, nid: str) -> None:
    """Click where the graph library drew the node."""
    pos = await page.evaluate(
        "(id) => { const p = window.ztdp.cy.getElementById(id).renderedPosition();"
        " const b = document.getElementById('graph').getBoundingClientRect();"
        " return {x: b.left + p.x, y: b.top + p.y}; }",
        nid,
    )
    await page.mouse.click(pos["x"], pos["y"])


@needs_chromium
async def test_the_token_stays_in_the_tab_and_a_new_tab_asks_again(
    server: Server, browser: Any
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(server.url + "/ui")
    await page.fill("#token", server.admin)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#live[data-state=live]", timeout=WAIT_MS)
    assert await page.evaluate("sessionStorage.getItem('ztdp.token')") == server.admin
    assert await page.evaluate("localStorage.length") == 0
    await page.reload()  # the same tab keeps it
    await page.wait_for_selector("#live[data-state=live]", timeout=WAIT_MS)
    other = await context.new_page()  # another tab does not
    await other.goto(server.url + "/ui")
    await other.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    await page.click("#logout")
    await page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    assert await page.evaluate("sessionStorage.getItem('ztdp.token')") is None
    await context.close()


@needs_chromium
async def test_swagger_ui_calls_no_outside_host(server: Server, browser: Any) -> None:
    page = await browser.new_page()
    outside, refused = _watch_page(page, urlsplit(server.url).netloc)
    response = await page.goto(server.url + "/docs")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    await page.wait_for_selector(".opblock", timeout=WAIT_MS)  # the operations are drawn
    assert await page.locator(".validator, img[src*='validator']").count() == 0
    assert outside == [], outside
    assert refused == [], refused
    await page.close()


# --- without a browser: what the server answers ---------------------------------------------


async def test_the_live_graph_is_a_read_like_the_others(server: Server) -> None:
    await _graph(server)
    async with aiohttp.ClientSession() as s, s.get(server.url + "/v1/graph/live") as r:
        assert r.status == 401 and r.content_type == "application/problem+json"
    reader = await server.call(
        "POST", "/v1/tokens", {"name": "viewer", "grants": [{"role": "viewer"}]}
    )
    live = await server.call("GET", "/v1/graph/live", token=reader["secret"])
    ids = {n["id"]: n for n in live["nodes"]}
    assert "version/shop/web/1.0.0" in ids and DEPLOYMENT not in ids
    whole = await server.call("GET", "/v1/graph")
    assert live["revision"] == whole["revision"]
    assert live["nodes"] == whole["nodes"] and live["edges"] == whole["edges"]

    await server.call(
        "POST", "/v1/applications/shop/services/web/versions/1.0.0/deploy", {"environment": "dev"}
    )
    live = await server.call("GET", "/v1/graph/live")
    [dep] = [n for n in live["nodes"] if n["kind"] == "deployment"]
    assert dep["id"] == DEPLOYMENT
    assert dep["data"]["environment"] == "dev"
    assert dep["data"]["source"] == "version/shop/web/1.0.0"
    assert dep["data"]["status"] in ("Pending", "Progressing", "Ready", "Failed")
    edges = {(e["source"], e["type"], e["target"]) for e in live["edges"]}
    assert ("version/shop/web/1.0.0", "realises", DEPLOYMENT) in edges
    assert (DEPLOYMENT, "runs_in", "environment/dev") in edges
    nodes = {n["id"] for n in live["nodes"]}
    assert all(e["source"] in nodes and e["target"] in nodes for e in live["edges"])


async def test_the_page_and_its_assets_are_ours_only(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("/ui", "/ui/static/ui.js", "/ui/static/cytoscape.min.js"):
            async with s.get(server.url + path) as r:
                assert r.status == 200, path
                assert r.headers["Content-Security-Policy"] == UI_CSP
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with s.get(server.url + "/ui") as r:
            html = await r.text()
        # no inline script or style, nothing from another host
        assert "<script>" not in html and "<style" not in html and " style=" not in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html)
        for path in (
            "/ui/static/index.html",
            "/ui/static/..%2fui.py",
            "/ui/static/%2e%2e%2f%2e%2e%2fsettings.py",
            "/ui/static/nothing.js",
        ):
            async with s.get(server.url + path) as r:
                assert r.status == 404, path
        async with s.get(server.url + "/ui/static/cytoscape.LICENSE") as r:
            assert "Cytoscape Consortium" in await r.text()


async def test_swagger_ui_is_told_not_to_call_the_validator(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(server.url + "/docs/init.js") as r:
            init = await r.text()
        async with s.get(server.url + "/docs") as r:
            html = await r.text()
    assert "validatorUrl: null" in init
    assert not re.search(r"https?://", init + html)


@needs_chromium
async def test_with_authentication_off_the_page_opens_directly(browser: Any) -> None:
    app = create_app(Settings(auth="off"))
    async with TestServer(app, host="127.0.0.1") as ts:
        url = str(ts.make_url("")).rstrip("/")
        page = await browser.new_page()
        outside, refused = _watch_page(page, urlsplit(url).netloc)
        await page.goto(url + "/ui")
        await page.wait_for_selector("#live[data-state=live]", timeout=WAIT_MS)
        assert await page.text_content("#who") == "authentication off"
        assert await page.is_hidden("#login") and await page.is_hidden("#logout")
        # ZTDP seeds the resource type postgres: the graph is drawn, with it
        await page.wait_for_selector('#nodes li[data-id="resourcetype/postgres"]', timeout=WAIT_MS)
        await page.click('#nodes li[data-id="resourcetype/postgres"] button')
        await page.wait_for_selector("#node-plan p:text('not realised')", timeout=WAIT_MS)
        assert outside == [] and refused == [], (outside, refused)
        await page.close()


@needs_chromium
async def test_a_blocked_deploy_shows_its_plan_diff_and_why(server: Server, browser: Any) -> None:
    await _graph(server)
    # a resource whose provider is not installed here, used by the worker
    await server.call(
        "POST",
        "/v1/resources",
        {"kind": "ResourceType", "metadata": {"name": "queue"}, "spec": {"provider": "no-such"}},
    )
    await server.call(
        "POST",
        "/v1/resources",
        {"metadata": {"name": "jobs", "owner": "team-x"}, "spec": {"type": "queue"}},
    )
    await server.call("POST", "/v1/applications/shop/resources/jobs")
    await server.call("POST", "/v1/applications/shop/services/worker/resources/jobs")
    await server.call(
        "POST",
        "/v1/applications/shop/services/worker/versions",
        {"version": "2.0.0", "owner": "team-x", "image": IMAGE},
    )
    page = await browser.new_page()
    outside, refused = _watch_page(page, urlsplit(server.url).netloc)
    await page.goto(server.url + "/ui")
    await page.fill("#token", server.admin)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#live[data-state=live]", timeout=WAIT_MS)
    await page.wait_for_selector('#nodes li[data-id="resource/jobs"]', timeout=WAIT_MS)

    worker = "deployment/shop/worker@dev"
    await server.call(
        "POST",
        "/v1/applications/shop/services/worker/versions/2.0.0/deploy",
        {"environment": "dev"},
    )
    await page.wait_for_selector(
        f'#nodes li[data-id="{worker}"][data-status=Blocked]', timeout=WAIT_MS
    )
    # what it needs failed: no provider can realise it
    await page.wait_for_selector(
        '#nodes li[data-id="resource/jobs@dev"][data-status=Failed]', timeout=WAIT_MS
    )
    edges = await page.evaluate(
        "window.ztdp.cy.edges().map(e => [e.data('source'), e.data('type'), e.data('target')])"
    )
    assert [worker, "depends_on", "resource/jobs@dev"] in edges
    assert ["service/shop/worker", "uses", "resource/jobs"] in edges

    # the application's plan in dev: both steps still to create, with their diff and why not
    await page.click('#nodes li[data-id="application/shop"] button')
    plan = '.plan[data-plan="shop@dev"]'
    step = f'{plan} table.diff[data-node="{worker}"][data-action=create]'
    await page.wait_for_selector(step, timeout=WAIT_MS)
    rows = await page.locator(step + " tr").all_text_contents()
    assert any("image" in r and IMAGE in r for r in rows), rows
    assert any("blocked" in r and "resource/jobs@dev" in r for r in rows), rows
    resource = f'{plan} table.diff[data-node="resource/jobs@dev"][data-action=create]'
    rows = await page.locator(resource + " tr").all_text_contents()
    assert any("no-such" in r for r in rows), rows
    assert outside == [] and refused == [], (outside, refused)
    await page.close()
