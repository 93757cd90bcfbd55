"""Property-based fuzzing of every operation in /openapi.json against a running `ztdp serve`.

Asserts that no input produces a 5xx, and that every response matches the document: its
status code, content type and body schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ServerProcess
from tests.test_serve import call
from ztdp.api import openapi_document
from ztdp.settings import Settings

pytestmark = pytest.mark.fuzz
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    server = ServerProcess({"ZTDP_GRAPH_STORE": "memory"}).start()
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
        assert call(server.url + path, "POST", body)[0] in (200, 201)
    yield server
    out = server.stop()
    assert "Traceback" not in out, out


# The document the server serves at /openapi.json (test_the_served_document_is_the_generated_one).
DOCUMENT = openapi_document(Settings(graph_store="memory", auth="off"))
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_served_document_is_the_generated_one(server: ServerProcess) -> None:
    assert call(f"{server.url}/openapi.json") == (200, DOCUMENT)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_fails_or_breaks_its_contract(case: Any, server: ServerProcess) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS)
