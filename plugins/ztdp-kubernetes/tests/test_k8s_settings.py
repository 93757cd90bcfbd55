"""The Kubernetes provider's settings section, as the core merges and validates it."""

from __future__ import annotations

import pytest

from ztdp.errors import InvalidInput, PermanentError
from ztdp.providers import ProviderInfo, ProviderRegistry
from ztdp.providers.settings import check_sections, resolve
from ztdp_kubernetes import KubernetesProvider


def test_the_environment_overrides_the_configured_default_field_by_field() -> None:
    settings = resolve(
        KubernetesProvider(),
        "kubernetes",
        environment="dev",
        configured={"kubeconfig": "/etc/k", "context": "main"},
        spec={"namespace": "apps", "context": "dev-1"},
    )
    assert settings == {"kubeconfig": "/etc/k", "context": "dev-1", "namespace": "apps"}


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"namespace": "Not_A_Label"}, "namespace"),
        ({"kubeconfig": ""}, "kubeconfig"),
        ({"context": "x" * 300}, "context"),
        ({"cluster": "elsewhere"}, "cluster"),
    ],
)
def test_a_bad_section_names_its_field(section: dict[str, str], field: str) -> None:
    loc = f"spec.providers.kubernetes.{field}"
    with pytest.raises(PermanentError, match=f"environment dev: {loc}"):
        resolve(KubernetesProvider(), "kubernetes", environment="dev", configured={}, spec=section)
    registry = ProviderRegistry()
    registry.register(KubernetesProvider(), ProviderInfo("kubernetes", "k", "ztdp-kubernetes", "0"))
    with pytest.raises(InvalidInput) as caught:
        check_sections(registry, {"kubernetes": section}, {})
    assert caught.value.field == loc
