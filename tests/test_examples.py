"""The example contracts in config/examples stay valid."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from tests.conftest import REPO
from ztdp.api.v1 import ResourceBody
from ztdp.contracts import Application, Environment, Policy, Service, ServiceVersionIn

MODELS: dict[str, Any] = {
    "environment": Environment,
    "application": Application,
    "service": Service,
    "version": ServiceVersionIn,
    "resource": ResourceBody,
    "policy-promotion": Policy,
    "policy-approval": Policy,
    "policy-expression": Policy,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_example_contract_is_valid(name: str) -> None:
    data = json.loads((REPO / "config" / "examples" / "api" / f"{name}.json").read_text())
    TypeAdapter(MODELS[name]).validate_python(data)


def test_every_example_is_checked() -> None:
    files = {p.stem for p in (REPO / "config" / "examples" / "api").glob("*.json")}
    assert files == set(MODELS)


def test_the_readme_policy_examples_are_valid() -> None:
    section = (REPO / "README.md").read_text().split("## Policies\n", 1)[1]
    docs = list(yaml.safe_load_all(section.split("```yaml\n", 1)[1].split("```", 1)[0]))
    rules = [TypeAdapter(Policy).validate_python(doc).spec.rule.type for doc in docs]
    assert rules == ["promotion", "approval", "expression"]
