from __future__ import annotations

import pytest
from pydantic import ValidationError

from ztdp.contracts import Application, Resource, Service, ServiceVersionIn
from ztdp.contracts.models import ApprovalSpec

META = {"name": "checkout", "owner": "team-x"}
SUBJECT = {"application": "checkout", "service": "checkout-api", "version": "1.0.0"}


def test_original_application_body_is_accepted_and_enveloped() -> None:
    app = Application.model_validate(
        {"metadata": META, "spec": {"description": "d", "tags": ["payments"], "lifecycle": {}}}
    )
    dumped = app.model_dump(by_alias=True)
    assert list(dumped) == ["apiVersion", "kind", "metadata", "spec"]
    assert dumped["apiVersion"] == "ztdp/v1" and dumped["kind"] == "Application"


@pytest.mark.parametrize("name", ["Checkout", "check_out", "-checkout", "checkout-", "a" * 64, ""])
def test_names_must_be_dns_labels(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        Application.model_validate({"metadata": {"name": name, "owner": "team-x"}})
    assert err.value.errors()[0]["loc"] == ("metadata", "name")


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as err:
        Application.model_validate({"metadata": META, "spec": {"descripton": "typo"}})
    assert err.value.errors()[0]["loc"] == ("spec", "descripton")


def test_lower_case_kind_of_the_original_clients_is_stored_canonically() -> None:
    res = Resource.model_validate(
        {
            "kind": "resource",
            "metadata": {"name": "pg-db", "owner": "team-x"},
            "spec": {"type": "postgres", "config_ref": "config/postgres/pg-db"},
        }
    )
    assert res.kind == "Resource"


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0"])
def test_versions_must_be_semver(version: str) -> None:
    with pytest.raises(ValidationError):
        ServiceVersionIn.model_validate({"version": version, "owner": "team-x"})


@pytest.mark.parametrize("image", ["UPPER/case:1", "repo:tag with space", "repo::1", "/leading"])
def test_malformed_image_is_refused(image: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServiceVersionIn.model_validate({"version": "1.0.0", "owner": "team-x", "image": image})
    assert err.value.errors()[0]["loc"] == ("image",)


def test_valid_image_references_pass() -> None:
    for image in [
        "nginx",
        "nginx:1.27",
        "ghcr.io/acme/api:1.0.0",
        "localhost:5000/a/b@sha256:" + "a" * 64,
    ]:
        ServiceVersionIn.model_validate(
            {"version": "1.0.0-rc.1+b5", "owner": "team-x", "image": image}
        )


@pytest.mark.parametrize("port", [0, 65536, "http"])
def test_service_port_is_range_checked(port: object) -> None:
    with pytest.raises(ValidationError) as err:
        Service.model_validate(
            {"metadata": META, "spec": {"application": "checkout", "port": port}}
        )
    assert err.value.errors()[0]["loc"][:2] == ("spec", "port")


def test_labels_follow_kubernetes_rules() -> None:
    with pytest.raises(ValidationError):
        Application.model_validate({"metadata": {**META, "labels": {"bad key!": "x"}}})
    Application.model_validate({"metadata": {**META, "labels": {"example.com/tier": "web"}}})


@pytest.mark.parametrize(
    ("approver", "principal"),
    [
        ("alice", "token:alice"),  # a plain name is a token's
        ("token:release-bot", "token:release-bot"),
        ("oidc:alice@example.com", "oidc:alice@example.com"),
        ("oidc:auth0|5f7c8ec7", "oidc:auth0|5f7c8ec7"),
    ],
)
def test_approvers_are_principals(approver: str, principal: str) -> None:
    spec = ApprovalSpec.model_validate(
        {"policy": "p", "subject": SUBJECT, "environment": "prod", "approver": approver}
    )
    assert spec.approver == principal


@pytest.mark.parametrize(
    "approver", ["system:ztdp", "anonymous:x", "oidc:", "token:a b", "a:b", "oidc:a b", ""]
)
def test_an_approver_must_be_a_token_or_oidc_principal(approver: str) -> None:
    with pytest.raises(ValidationError) as err:
        ApprovalSpec.model_validate(
            {"policy": "p", "subject": SUBJECT, "environment": "prod", "approver": approver}
        )
    assert err.value.errors()[0]["loc"] == ("approver",)
