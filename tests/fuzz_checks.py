"""A check of ours for the schemathesis run of tests/test_api_fuzz.py, loaded as its hooks.

schemathesis's `positive_data_acceptance` fails any 422 to a request its schema allows. Some
rules are about other data, which no JSON schema can state: a body naming an environment
that does not exist, a `spec.application` that differs from the path's. ZTDP refuses those
with a 422 whose problem names the `field` it blames. A 422 from the body's own validation
names no `field`: that one means the document missed a constraint, and still fails.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance


@schemathesis.check
def positive_data_acceptance_but_relations(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code == 422 and _names_a_field(response):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


def _names_a_field(response: Any) -> bool:
    try:
        problem = response.json()
    except ValueError:
        return False
    return isinstance(problem, dict) and isinstance(problem.get("field"), str)
