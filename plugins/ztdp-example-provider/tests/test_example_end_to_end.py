"""The example provider inside ZTDP, over HTTP, loaded through its entry point as `ztdp serve`
loads it: a resource of type `files` is realised by an apply's run as a file in the directory
its environment names, and its delete's run removes the file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path

import anyio
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import REPO
from tests.helpers import Api
from tests.test_runtime import finished
from ztdp.api import create_app
from ztdp.providers import GROUP, ProviderRegistry
from ztdp.settings import Settings


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    settings = Settings(step_timeout=20, retry_backoff=0.01, provider_retries=2, observe_interval=0)
    # Only this plugin: the installed distribution's entry point, as the server finds it.
    registry = ProviderRegistry.from_entry_points(
        [ep for ep in entry_points(group=GROUP) if ep.name == "files"]
    )
    app = create_app(settings, providers=registry)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client)


async def test_an_apply_writes_the_file_and_a_delete_removes_it(api: Api, tmp_path: Path) -> None:
    [info] = await api.ok("GET", "/v1/providers")
    assert info["kind"] == "files" and info["distribution"] == "ztdp-example-provider"
    spec = {"providers": {"files": {"directory": str(tmp_path)}}}
    await api.ok("POST", "/v1/environments", {"metadata": {"name": "dev"}, "spec": spec})
    rtype = {"kind": "ResourceType", "metadata": {"name": "files"}, "spec": {"provider": "files"}}
    await api.ok("POST", "/v1/resources", rtype)
    await api.application("shop")
    notes = {"kind": "resource", "metadata": {"name": "notes", "owner": "team-x"}}
    notes["spec"] = {"type": "files", "config_ref": "notes-v1"}
    await api.ok("POST", "/v1/resources", notes)
    await api.ok("POST", "/v1/applications/shop/resources/notes")

    applied = await api.ok("POST", "/v1/apply?env=dev", status=202)
    [step] = [s for wave in applied["plan"]["waves"] for s in wave["steps"]]
    assert (step["node"], step["action"], step["provider"]) == (
        "resource/notes@dev",
        "create",
        "files",
    )
    run = await finished(api, applied["run"], 30)
    assert run["status"] == "Succeeded", run
    assert (tmp_path / "notes@dev.json").is_file()

    # The last application letting go of it removes it: 202 and the run doing it (docs/api.md).
    deleted = await api.ok("DELETE", "/v1/applications/shop/resources/notes", status=202)
    [run_id] = deleted["runs"]
    assert (await finished(api, run_id, 30))["status"] == "Succeeded"
    assert os.listdir(tmp_path) == []
    await api.ok("DELETE", "/v1/resources/notes")  # nothing real left: 200


async def test_an_environment_naming_a_relative_directory_is_refused(api: Api) -> None:
    spec = {"providers": {"files": {"directory": "relative/path"}}}
    code, problem = await api.call(
        "POST", "/v1/environments", {"metadata": {"name": "dev"}, "spec": spec}
    )
    assert code == 422, problem
    assert problem["errors"][0]["loc"] == "spec.providers.files.directory"


async def test_the_readme_walkthrough_does_what_it_says(api: Api, tmp_path: Path) -> None:
    """README, "Writing a provider plugin": its contracts, an apply of the environment, the
    file, and the application's delete removing it."""
    section = (REPO / "README.md").read_text().split("## Writing a provider plugin", 1)[1]
    text = section.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    contracts = list(yaml.safe_load_all(text.replace("/tmp/ztdp-files", str(tmp_path))))
    await api.ok("POST", "/v1/contracts", contracts, status=200)
    applied = await api.ok("POST", "/v1/apply?env=scratch", status=202)
    assert (await finished(api, applied["run"], 30))["status"] == "Succeeded"
    assert os.listdir(tmp_path) == ["notes-store@scratch.json"]
    deleted = await api.ok("DELETE", "/v1/applications/notes?cascade=true", status=202)
    [run_id] = deleted["runs"]
    assert (await finished(api, run_id, 30))["status"] == "Succeeded"
    assert os.listdir(tmp_path) == []


async def test_a_file_changed_behind_ztdps_back_is_repaired(tmp_path: Path) -> None:
    """No watch: the core polls the provider (`observe`), sees the drift and applies again."""
    settings = Settings(retry_backoff=0.01, observe_interval=0.2)
    registry = ProviderRegistry.from_entry_points(
        [ep for ep in entry_points(group=GROUP) if ep.name == "files"]
    )
    app = create_app(settings, providers=registry)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        api = Api(client)
        spec = {"providers": {"files": {"directory": str(tmp_path)}}}
        await api.ok("POST", "/v1/environments", {"metadata": {"name": "dev"}, "spec": spec})
        rtype = {"kind": "ResourceType", "metadata": {"name": "files"}}
        await api.ok("POST", "/v1/resources", {**rtype, "spec": {"provider": "files"}})
        await api.application("shop")
        notes = {"kind": "resource", "metadata": {"name": "notes", "owner": "team-x"}}
        await api.ok("POST", "/v1/resources", {**notes, "spec": {"type": "files"}})
        await api.ok("POST", "/v1/applications/shop/resources/notes")
        applied = await api.ok("POST", "/v1/apply?env=dev", status=202)
        assert (await finished(api, applied["run"], 30))["status"] == "Succeeded"
        file = tmp_path / "notes@dev.json"
        written = file.read_text()
        file.write_text(written.replace('"config_ref": ""', '"config_ref": "edited"'))
        node = "node=resource/notes@dev"
        with anyio.fail_after(10):
            while not await api.ok("GET", f"/v1/events?type=drift.repaired&{node}"):  # noqa: ASYNC110 - polls the API as a client does
                await asyncio.sleep(0.05)
        assert file.read_text() == written
        [drift] = await api.ok("GET", f"/v1/events?type=drift.detected&{node}")
        assert drift["data"]["changes"] == [{"path": "config_ref", "before": "edited", "after": ""}]


async def test_an_environment_apply_creates_resources_only_where_their_application_may_be(
    api: Api, tmp_path: Path
) -> None:
    """`POST /v1/apply?env=E` creates an application's resources only where it is allowed
    (no list: anywhere); what exists stays when the list shrinks (deleting a database is a
    delete, never a side effect of an allowed list)."""
    for env in ("dev", "prod"):
        (tmp_path / env).mkdir()
        spec = {"providers": {"files": {"directory": str(tmp_path / env)}}}
        await api.ok("POST", "/v1/environments", {"metadata": {"name": env}, "spec": spec})
    rtype = {"kind": "ResourceType", "metadata": {"name": "files"}, "spec": {"provider": "files"}}
    await api.ok("POST", "/v1/resources", rtype)
    owned = {"billing": ("ledger", ["dev", "prod"]), "lab": ("tmp", None), "beta": ("try", ["dev"])}
    for app, (name, allowed) in owned.items():
        await api.application(app)
        if allowed is not None:
            await api.ok("PUT", f"/v1/applications/{app}/environments/allowed", allowed, 200)
        body = {"kind": "resource", "metadata": {"name": name, "owner": "team-x"}}
        body["spec"] = {"type": "files", "config_ref": f"{name}-v1"}
        await api.ok("POST", "/v1/resources", body)
        await api.ok("POST", f"/v1/applications/{app}/resources/{name}")

    async def apply(env: str) -> dict[str, str]:
        applied = await api.ok("POST", f"/v1/apply?env={env}", status=202)
        assert (await finished(api, applied["run"], 30))["status"] == "Succeeded"
        return {s["node"]: s["action"] for w in applied["plan"]["waves"] for s in w["steps"]}

    assert await apply("prod") == {"resource/ledger@prod": "create", "resource/tmp@prod": "create"}
    assert sorted(os.listdir(tmp_path / "prod")) == ["ledger@prod.json", "tmp@prod.json"]
    dev = {"resource/ledger@dev", "resource/tmp@dev", "resource/try@dev"}
    assert set(await apply("dev")) == dev

    await api.ok("PUT", "/v1/applications/billing/environments/allowed", ["dev"], 200)
    again = await apply("prod")
    assert again.get("resource/ledger@prod") in (None, "noop"), again
    assert (tmp_path / "prod" / "ledger@prod.json").is_file()
