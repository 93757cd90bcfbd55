"""The Kubernetes provider's settings section: `spec.providers.kubernetes` of an environment
(formerly `spec.kubernetes`) over the configured `ZTDP_PROVIDERS__KUBERNETES__*` (or the older
`ZTDP_KUBECONFIG`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ztdp.contracts import DnsLabel


class KubernetesSettings(BaseModel):
    """Where an environment's Deployments and Services go."""

    model_config = ConfigDict(extra="forbid")

    kubeconfig: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None, description="path of the kubeconfig file of the cluster"
    )
    context: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None, description="the kubeconfig's context; default its current one"
    )
    namespace: DnsLabel | None = Field(
        default=None, description="the namespace; default the environment's name"
    )
