"""The example provider against the seam's contract suite, and what it adds of its own: it
never touches a file that is not ZTDP's, and names from the graph cannot leave its directory."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ztdp.errors import PermanentError
from ztdp.providers import Resource, Target
from ztdp.providers.settings import section_problems
from ztdp.testing import ProviderContract
from ztdp_example_provider import FilesProvider


def resource(name: str, config_ref: str = "v1") -> Resource:
    """A `files` resource node as the core hands it over (desired: type and config_ref)."""
    return Resource(
        node=f"resource/{name}@dev",
        kind="resource",
        name=name,
        application="shop",
        desired={"type": "files", "config_ref": config_ref},
    )


@pytest.fixture
async def provider() -> AsyncIterator[FilesProvider]:
    p = FilesProvider()
    yield p
    await p.aclose()


@pytest.fixture
def target(tmp_path: Path) -> Target:
    return Target(environment="dev", settings={"directory": str(tmp_path)})


class TestFilesProviderContract(ProviderContract):
    @pytest.fixture(autouse=True)
    def _paths(self, tmp_path: Path) -> None:
        self.tmp = tmp_path

    def make_resource(self, name: str) -> Resource:
        return resource(name)

    async def unreachable_target(self) -> Target:
        # A directory that is not there (a volume not mounted yet): a retry may find it.
        return Target(environment="dev", settings={"directory": str(self.tmp / "unmounted")})

    def invalid_resource(self) -> Resource:
        return Resource(
            node="resource/bad@dev", kind="resource", name="bad", application="shop",
            desired={"type": "files"},  # no config_ref
        )  # fmt: skip


async def test_apply_writes_the_desired_state_and_its_node(
    provider: FilesProvider, target: Target, tmp_path: Path
) -> None:
    seen = await provider.apply(resource=resource("notes"), target=target)
    content = json.loads((tmp_path / "notes@dev.json").read_text())
    assert content == {
        "ztdp.io/node": "resource/notes@dev",
        "desired": {"type": "files", "config_ref": "v1"},
    }
    assert (
        seen.health == "Ready"
        and await provider.health(resource=resource("notes"), target=target) == "Ready"
    )
    changed = await provider.apply(resource=resource("notes", "v2"), target=target)
    assert changed.state["config_ref"] == "v2"
    assert await provider.diff(desired={"config_ref": "v3"}, observed=changed.state) == [
        {"path": "config_ref", "before": "v2", "after": "v3"},
        {"path": "type", "before": "files", "after": None},
    ]
    assert os.listdir(tmp_path) == ["notes@dev.json"]  # no temporary file left


async def test_a_file_that_is_not_ztdps_is_reported_never_overwritten_or_deleted(
    provider: FilesProvider, target: Target, tmp_path: Path
) -> None:
    theirs = tmp_path / "notes@dev.json"
    for content in ('{"owner": "someone else"}', "not json"):
        theirs.write_text(content)
        seen = await provider.observe(resource=resource("notes"), target=target)
        assert seen is not None and seen.health == "Degraded" and "not ZTDP's" in seen.message
        with pytest.raises(PermanentError, match="not ZTDP's"):
            await provider.apply(resource=resource("notes"), target=target)
        await provider.delete(resource=resource("notes"), target=target)
        assert theirs.read_text() == content


async def test_names_cannot_leave_the_directory(provider: FilesProvider, tmp_path: Path) -> None:
    hostile = Resource(
        node="resource/x@dev", kind="resource", name="../../etc/passwd", application="shop",
        desired={"type": "files", "config_ref": "v1"},
    )  # fmt: skip
    with pytest.raises(PermanentError, match="DNS label"):
        await provider.validate(resource=hostile)
    bad_env = Target(environment="../up", settings={"directory": str(tmp_path)})
    for call in (provider.observe, provider.delete):
        with pytest.raises(PermanentError, match="DNS labels"):
            await call(resource=resource("notes"), target=bad_env)
    assert list(tmp_path.parent.glob("*.json")) == []


def test_the_settings_section_names_its_field() -> None:
    problems = section_problems(FilesProvider(), "files", configured=None, spec={"directory": "x"})
    assert problems[0]["loc"] == "spec.providers.files.directory"
    assert "absolute" in problems[0]["msg"]
    missing = section_problems(FilesProvider(), "files", configured=None, spec={})
    assert missing[0]["loc"] == "spec.providers.files.directory"
    typo = section_problems(FilesProvider(), "files", configured=None, spec={"dir": "/tmp"})
    assert {p["loc"] for p in typo} >= {"spec.providers.files.dir"}
