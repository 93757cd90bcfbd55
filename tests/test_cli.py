"""The `ztdp` client commands against a real `ztdp serve` process (with its Kubernetes
sandbox), the start-up times, and the first run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.conftest import REPO, ServerProcess
from tests.ports import free_port

PLATFORM = """
kind: Environment
metadata: {name: dev}
---
kind: Environment
metadata: {name: prod}
---
kind: Policy
metadata: {name: dev-before-prod}
spec:
  transition: {edge: deploy, environment: prod}
  rule: {type: promotion, requires: [dev]}
"""

APP = """
- kind: Application
  metadata: {name: shop, owner: team-shop}
- kind: AllowedEnvironments
  application: shop
  environments: [dev, prod]
- kind: Service
  metadata: {name: api}
  spec: {application: shop, port: 8080}
- kind: ServiceVersion
  application: shop
  service: api
  version: 1.0.0
  image: ghcr.io/acme/api:1.0.0
- kind: Deployment
  application: shop
  service: api
  version: 1.0.0
  environment: dev
"""


def ztdp(
    *args: str, server: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("ZTDP_TOKEN", "ZTDP_SERVER")}
    full.update({**(env or {}), "NO_COLOR": "1", "COLUMNS": "200"})
    if server is not None:
        full["ZTDP_SERVER"] = server
    full["ZTDP_CLIENT_CONFIG"] = "/nonexistent/ztdp-config.toml"
    return subprocess.run(
        [sys.executable, "-m", "ztdp", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    started = ServerProcess({"ZTDP_GRAPH_STORE": "memory", "ZTDP_SANDBOX": "auto"}).start()
    try:
        yield started
    finally:
        out = started.stop()
        assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def contracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("contracts")
    (folder / "platform.yaml").write_text(PLATFORM)
    (folder / "app.yaml").write_text(APP)
    return folder


@pytest.fixture(scope="module")
def applied(server: ServerProcess, contracts: Path) -> subprocess.CompletedProcess[str]:
    """The set applied once, with --dry-run first (which must change nothing)."""
    dry = ztdp("apply", "-f", str(contracts), "--dry-run", server=server.url)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "+ created Environment dev" in dry.stdout
    assert "dry run: nothing written" in dry.stdout
    assert "+ create deployment/shop/api@dev" in dry.stdout
    assert "image: + ghcr.io/acme/api:1.0.0" in dry.stdout  # the diff
    assert "builtin-allowed-environments" in dry.stdout  # the verdicts
    # decided on the set as it would be: shop is allowed in dev by the same set
    assert "denied" not in dry.stdout, dry.stdout
    empty = ztdp("get", "environments", "-o", "json", server=server.url)
    assert json.loads(empty.stdout) == []
    done = ztdp("apply", "-f", str(contracts), "--yes", server=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_apply_yes_follows_each_node_to_ready(applied: subprocess.CompletedProcess[str]) -> None:
    assert "deployment/shop/api@dev: Ready" in applied.stdout
    assert "All Ready." in applied.stdout


def test_apply_again_changes_nothing(
    server: ServerProcess, contracts: Path, applied: object
) -> None:
    again = ztdp("apply", "-f", str(contracts), "--yes", server=server.url)
    assert again.returncode == 0, again.stderr
    assert "Nothing to change" in again.stdout


def test_get_as_json_yaml_and_table(server: ServerProcess, applied: object) -> None:
    as_json = ztdp("get", "deployments", "-o", "json", server=server.url)
    [dep] = json.loads(as_json.stdout)
    assert (dep["environment"], dep["service"], dep["status"]) == ("dev", "api", "Ready")
    as_yaml = ztdp("get", "env", "dev", "-o", "yaml", server=server.url)
    env = yaml.safe_load(as_yaml.stdout)
    assert env["metadata"]["name"] == "dev"
    assert env["status"]["target"] == "sandbox (Kubernetes API emulator: nothing runs)"
    table = ztdp("get", "services", server=server.url)
    assert "api" in table.stdout and "application shop" in table.stdout
    one = ztdp("get", "versions", "shop/api/1.0.0", "-o", "json", server=server.url)
    assert json.loads(one.stdout)["image"] == "ghcr.io/acme/api:1.0.0"
    described = ztdp("describe", "deployment", "dev/shop/api", server=server.url)
    assert described.returncode == 0 and "last events" in described.stdout


def test_status_says_the_sandbox_is_an_emulator(server: ServerProcess, applied: object) -> None:
    status = ztdp("status", server=server.url)
    assert status.returncode == 0, status.stderr
    assert "sandbox (Kubernetes API emulator: nothing runs)" in status.stdout
    with urllib.request.urlopen(f"{server.url}/v1/status") as answer:
        assert json.load(answer)["target"].startswith("sandbox (Kubernetes API emulator")
    banner = server.text()
    assert "sandbox (Kubernetes API emulator: nothing runs)" in banner
    # What the banner says to run shows what was created.
    [url] = re.findall(r"curl (http://\S+/apis/apps/v1/deployments)", banner)
    with urllib.request.urlopen(url) as answer:
        [dep] = [d for d in json.load(answer)["items"] if d["metadata"]["namespace"] == "dev"]
    assert dep["metadata"]["annotations"]["ztdp.io/node"] == "deployment/shop/api@dev"
    [kubeconfig] = re.findall(r"KUBECONFIG=(\S+) kubectl get", banner)
    if shutil.which("kubectl"):
        listed = subprocess.run(
            ["kubectl", "get", "namespaces,deployments,services", "-A"],
            env={**os.environ, "KUBECONFIG": kubeconfig},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        assert f"deployment.apps/{dep['metadata']['name']}" in listed.stdout


def test_a_policy_denial_exits_3_and_writes_nothing(
    server: ServerProcess, applied: object, tmp_path: Path
) -> None:
    """2.0.0 to prod before it runs in dev: dev-before-prod refuses it, apply says so."""
    (tmp_path / "prod.yaml").write_text(
        "kind: ServiceVersion\napplication: shop\nservice: api\nversion: 2.0.0\n---\n"
        "kind: Deployment\napplication: shop\nservice: api\nversion: 2.0.0\nenvironment: prod\n"
    )
    denied = ztdp("apply", "-f", str(tmp_path), "--yes", server=server.url)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "dev-before-prod" in denied.stdout
    assert "denied by policy" in denied.stderr
    missing = ztdp("get", "versions", "shop/api/2.0.0", server=server.url)
    assert missing.returncode == 1 and "Not found" in missing.stderr  # nothing written
    deploy = ztdp("deploy", "shop", "api", "1.0.0", "staging", server=server.url)
    assert deploy.returncode == 1  # no such environment: a failure, not a denial


def test_deploy_wait_promotes_to_ready(server: ServerProcess, applied: object) -> None:
    """1.0.0 is Ready in dev, so dev-before-prod lets it into prod."""
    done = ztdp("deploy", "shop", "api", "1.0.0", "prod", "--wait", server=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deployment/shop/api@prod: Ready" in done.stdout
    runs = ztdp("runs", "-o", "json", server=server.url)
    assert any(r["status"] == "Succeeded" for r in json.loads(runs.stdout))


def test_events_and_follow(server: ServerProcess, applied: object) -> None:
    listed = ztdp("events", "--type", "actor.status", "-o", "json", server=server.url)
    assert any(e["subject"] == "deployment/shop/api@dev" for e in json.loads(listed.stdout))
    follow = subprocess.Popen(
        [sys.executable, "-m", "ztdp", "events", "--follow", "-o", "json"],
        env={**os.environ, "ZTDP_SERVER": server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        # Until the stream is open, nothing it would show is made: retry the change.
        deadline = time.monotonic() + 30
        for label in range(100):
            body = json.dumps({"metadata": {"name": "dev", "labels": {"n": str(label)}}})
            request = urllib.request.Request(
                f"{server.url}/v1/environments/dev",
                data=body.encode(),
                method="PUT",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request).read()
            ready, _, _ = select.select([follow.stdout], [], [], 0.5)
            if ready:
                break
            assert time.monotonic() < deadline
        assert json.loads(follow.stdout.readline())["type"].startswith("io.ztdp.")
    finally:
        follow.terminate()
        follow.communicate(timeout=10)


def test_delete_undeploys(server: ServerProcess, applied: object) -> None:
    gone = ztdp("delete", "deployment", "prod/shop/api", server=server.url)
    assert gone.returncode == 0, gone.stderr
    assert "deleted deployment prod/shop/api" in gone.stdout
    missing = ztdp("get", "deployment", "prod/shop/api", server=server.url)
    assert missing.returncode == 1


def test_usage_errors_exit_2(server: ServerProcess, tmp_path: Path) -> None:
    assert ztdp("get", server=server.url).returncode == 2  # typer: a missing argument
    unknown = ztdp("get", "gizmos", server=server.url)
    assert unknown.returncode == 2 and "unknown kind 'gizmos'" in unknown.stderr
    assert ztdp("apply", "-f", str(tmp_path / "none.yaml"), server=server.url).returncode == 2
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    bad = ztdp("apply", "-f", str(tmp_path / "bad.yaml"), server=server.url)
    assert bad.returncode == 2 and "bad.yaml: cannot read it" in bad.stderr
    (tmp_path / "bad.yaml").write_text("- just a string\n")
    assert ztdp("apply", "-f", str(tmp_path / "bad.yaml"), server=server.url).returncode == 2
    shape = ztdp("get", "services", "no-slash", server=server.url)
    assert shape.returncode == 2 and "APP/SVC" in shape.stderr


def test_apply_without_a_terminal_needs_yes(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text("kind: Environment\nmetadata: {name: qa}\n")
    asked = ztdp("apply", "-f", str(tmp_path), server=server.url)
    assert asked.returncode == 2 and "--yes" in asked.stderr


def test_an_invalid_contract_is_one_line_naming_the_field(
    server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text(
        '[{"kind": "Service", "metadata": {"name": "x"}, '
        '"spec": {"application": "shop", "port": "80"}}]'
    )
    bad = ztdp("apply", "-f", str(tmp_path), "--yes", server=server.url)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "body[0].spec.port" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_server_that_is_down_is_one_line() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["get", "env"], ["events", "--follow"]):
        answer = ztdp(*args, server=down)
        assert answer.returncode == 1
        assert answer.stderr.startswith(f"error: cannot reach ZTDP at {down}")
        assert answer.stderr.count("\n") == 1 and "Traceback" not in answer.stderr


def test_token_and_server_from_the_config_file(server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'server = "{server.url}"\ntoken = "not-needed-here"\n')
    env = {"ZTDP_CLIENT_CONFIG": str(config)}
    full = {**os.environ, **env}
    full.pop("ZTDP_SERVER", None)
    answer = subprocess.run(
        [sys.executable, "-m", "ztdp", "status"], env=full, capture_output=True, text=True
    )
    assert answer.returncode == 0, answer.stderr
    config.write_text('serverr = "x"\n')
    wrong = subprocess.run(
        [sys.executable, "-m", "ztdp", "status"], env=full, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "unknown key(s) serverr" in wrong.stderr


def test_the_examples_plan_cleanly(server: ServerProcess) -> None:
    """config/examples as a whole: a dry run names every contract (the database waits for
    the Postgres provider where it is not installed)."""
    dry = ztdp("apply", "-f", str(REPO / "config" / "examples"), "--dry-run", server=server.url)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for name in ("shop/shop-api/1.0.0", "shop/shop-worker/1.0.0", "shop-db", "dev-before-prod"):
        assert name in dry.stdout


# --- start-up times --------------------------------------------------------------------------


def test_help_is_quick() -> None:
    times = []
    for _ in range(3):
        start = time.monotonic()
        done = ztdp("--help")
        times.append(time.monotonic() - start)
        assert done.returncode == 0
    print(f"ztdp --help: best {min(times):.3f} s")
    assert min(times) < 1.0  # 0.1 to 0.2 s on an idle machine; the test machine is shared


def test_serve_answers_healthz_at_once_and_is_up_soon() -> None:
    port = free_port()
    env = {**os.environ, "ZTDP_SANDBOX": "auto", "ZTDP_GRAPH_STORE": "memory"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztdp", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = up = None
    try:
        while up is None and time.monotonic() - start < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/healthz") as r:
                    up = time.monotonic() - start
                    assert r.status == 200
            except urllib.error.HTTPError as err:
                first = first or time.monotonic() - start
                assert err.code == 503 and json.load(err) == {"status": "starting"}
                assert err.headers["Retry-After"] == "1"
            except OSError:
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"ztdp serve: first answer {first:.3f} s, up {up:.3f} s" if up and first else "")
    assert proc.returncode == 0  # SIGTERM: a clean stop
    assert first is not None and first < 1.5  # a "starting" answer came, and soon
    assert up is not None and up < 10


def test_authentication_on_needs_the_token(tmp_path: Path) -> None:
    secured = ServerProcess({"ZTDP_GRAPH_STORE": "memory", "ZTDP_AUTH": "on"}).start()
    try:
        token = secured.admin_token()
        assert token is not None
        refused = ztdp("get", "env", server=secured.url)
        assert refused.returncode == 1 and "[401]" in refused.stderr
        assert "ZTDP_TOKEN" in refused.stderr and refused.stderr.count("\n") == 1
        allowed = ztdp("get", "env", "-o", "json", server=secured.url, env={"ZTDP_TOKEN": token})
        assert allowed.returncode == 0, allowed.stderr
        flag = ztdp("--token", token, "status", server=secured.url)
        assert flag.returncode == 0 and "authentication on" in flag.stdout
    finally:
        secured.stop()


def test_while_starting_every_path_is_a_503_and_sigterm_stops_it() -> None:
    port = free_port()
    env = {**os.environ, "ZTDP_SANDBOX": "auto", "ZTDP_GRAPH_STORE": "memory"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztdp", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "no answer while starting"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status")
            except urllib.error.HTTPError as err:
                assert err.code == 503
                assert err.headers["Content-Type"] == "application/problem+json"
                assert json.load(err)["detail"] == "ZTDP is starting; retry in a second"
                break
            except OSError:
                time.sleep(0.01)
                continue
            pytest.skip("the server was up before its first answer could be seen")
        proc.terminate()  # while starting
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert b"Traceback" not in out, out


def test_a_command_sent_while_the_server_starts_waits_for_it() -> None:
    """`ztdp serve & ztdp apply ...`: the 503s of the start are retried as they ask."""
    port = free_port()
    env = {**os.environ, "ZTDP_SANDBOX": "off", "ZTDP_GRAPH_STORE": "memory"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ztdp", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:  # until the port answers at all: it is starting
            try:
                urllib.request.urlopen(f"{url}/v1/healthz")
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.01)
                continue
            pytest.skip("the server was up before its first answer could be seen")
        else:
            pytest.fail("ztdp serve did not answer within 20 s")
        status = ztdp("status", server=url)
        assert status.returncode == 0, status.stderr
        assert "graph store memory" in status.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_examples_deploy_to_ready_with_their_database(
    postgres_database: str, tmp_path: Path
) -> None:
    """`ztdp apply -f config/examples` on a fresh server: every node Ready, the shop's database
    made on the Postgres server the environments name (here the tests' own, under a name
    prefix of this run), and the services given its URL through a Kubernetes Secret."""
    prefix = f"ex{uuid.uuid4().hex[:8]}"
    for source in (REPO / "config" / "examples").glob("*.yaml"):
        text = source.read_text().replace(
            "postgresql://postgres@127.0.0.1:5432/postgres", postgres_database
        )
        (tmp_path / source.name).write_text(text)
    started = ServerProcess(
        {
            "ZTDP_GRAPH_STORE": "memory",
            "ZTDP_SANDBOX": "auto",
            "ZTDP_PROVIDERS__POSTGRES__PREFIX": prefix,
        }
    ).start()
    try:
        done = ztdp("apply", "-f", str(tmp_path), "--yes", server=started.url, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "All Ready." in done.stdout, done.stdout
        described = ztdp("get", "deployments", "-o", "json", server=started.url)
        assert described.returncode == 0, described.stderr
        deployments = json.loads(described.stdout)
        assert sorted(d["service"] for d in deployments) == ["shop-api", "shop-worker"]
        assert all(d["status"] == "Ready" for d in deployments), deployments
        databases = asyncio.run(_databases(postgres_database, prefix))
        assert len(databases) == 1 and "shop_db" in databases[0], databases
    finally:
        out = started.stop()
        asyncio.run(_drop(postgres_database, prefix))
    assert "Traceback" not in out, out


async def _databases(url: str, prefix: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        )
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


async def _drop(url: str, prefix: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for name in await _databases(url, prefix):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        roles = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", prefix + "%")
        for row in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
    finally:
        await conn.close()
