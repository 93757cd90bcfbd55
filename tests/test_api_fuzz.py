"""Schemathesis against a running `ztdp serve`, in both modes: authentication off, and on
with the admin token.

It runs all of its checks (no 5xx; status codes, content types, headers and bodies as the
document says; schema-valid requests accepted and schema-violating ones refused; credentials
required where declared; deleted resources gone) over all of its phases: the document's
examples, its coverage of each constraint's edges, random fuzzing, and the stateful phase,
which chains operations along the links it infers (a created object's name into its read,
update and delete). It must find nothing.

Bounded to keep the suite quick: ZTDP_FUZZ_EXAMPLES examples per operation (default 10) and
a fixed seed (ZTDP_FUZZ_SEED), so a failure can be replayed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess
from tests.test_serve import call
from ztdp.api import openapi_document
from ztdp.settings import Settings

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = os.environ.get("ZTDP_FUZZ_EXAMPLES", "10")
SEED = os.environ.get("ZTDP_FUZZ_SEED", "1")
MODES = {
    "authentication off": {},
    # A generous failure limit: the checks send many bad credentials on purpose, and each
    # must be a 401, not the 429 that would end the run's chance to see it.
    "authentication on": {"ZTDP_AUTH": "on", "ZTDP_AUTH_MAX_FAILURES": "1000000"},
}


@dataclass
class Target:
    server: ServerProcess
    settings: Settings
    token: str | None


@pytest.fixture(scope="module", params=list(MODES))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    env = {"ZTDP_GRAPH_STORE": "memory", **MODES[request.param]}
    server = ServerProcess(env).start()
    token = server.admin_token()
    settings = Settings(**{k.removeprefix("ZTDP_").lower(): v for k, v in env.items()})
    assert (token is not None) == settings.auth_enabled, server.text()
    # Some objects to find, so that fuzzed requests also reach past the 404s.
    for path, body in [
        ("/v1/environments", {"metadata": {"name": "dev", "owner": "p"}}),
        ("/v1/applications", {"metadata": {"name": "a", "owner": "t"}}),
        ("/v1/applications/a/environments/allowed", ["dev"]),
        (
            "/v1/applications/a/services",
            {"metadata": {"name": "s", "owner": "t"}, "spec": {"application": "a"}},
        ),
        ("/v1/applications/a/services/s/versions", {"version": "1.0.0", "owner": "t"}),
    ]:
        assert call(server.url + path, "POST", body, token)[0] in (200, 201)
    yield Target(server, settings, token)
    out = server.stop()
    assert "ERROR" not in out and "Traceback" not in out, out


def test_the_served_document_is_the_generated_one(target: Target) -> None:
    assert call(f"{target.server.url}/openapi.json") == (200, openapi_document(target.settings))


def test_schemathesis_finds_nothing(target: Target, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{target.server.url}/openapi.json",
        "--checks=all",
        # replaced by tests/fuzz_checks.py's, which knows 422s about other data
        "--exclude-checks=positive_data_acceptance",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--suppress-health-check=all",
        "--request-timeout=10",
        "--warnings=off",
    ]
    if target.token:
        command.append(f"--header=Authorization: Bearer {target.token}")
    hooks = {"SCHEMATHESIS_HOOKS": str(REPO / "tests" / "fuzz_checks.py"), "NO_COLOR": "1"}
    run = subprocess.run(
        command,
        cwd=tmp_path,  # schemathesis's own files (its example database) stay out of the tree
        env={**os.environ, **hooks},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    assert "Stateful" in report, report[-5_000:]
    # Not vacuous: with its credentials, schemathesis got past the 401s and 404s.
    done = re.findall(r'" 20[0-9] [0-9.]+s "schemathesis/', target.server.text())
    assert len(done) > 100, report[-5_000:]
