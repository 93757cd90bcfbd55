"""When a Deployment counts as Ready: when `kubectl rollout status` would say it rolled out.

Promotion trusts `Ready`, so a Deployment whose old pods still serve while the new version
rolls out (or never starts) must not be Ready. The Deployments here are kubernetes-asyncio's
models as the provider reads them; a count of None is one the API server left out (it omits
zeros).
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from ztdp.providers import Health
from ztdp_kubernetes.provider import _health

UNDER_WAY = client.V1DeploymentCondition(
    type="Progressing", status="True", reason="ReplicaSetUpdated"
)
AVAILABLE = client.V1DeploymentCondition(
    type="Available", status="True", reason="MinimumReplicasAvailable"
)
TIMED_OUT = client.V1DeploymentCondition(
    type="Progressing",
    status="False",
    reason="ProgressDeadlineExceeded",
    message='ReplicaSet "checkout-api-5d4f" has timed out progressing.',
)


def deployment(
    *,
    generation: int | None = 2,
    observed: int | None = 2,
    want: int = 1,
    replicas: int | None = None,
    updated: int | None = None,
    available: int | None = None,
    conditions: tuple[client.V1DeploymentCondition, ...] = (AVAILABLE, UNDER_WAY),
) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="checkout-api", generation=generation),
        spec=client.V1DeploymentSpec(
            replicas=want, selector=client.V1LabelSelector(), template=client.V1PodTemplateSpec()
        ),
        status=client.V1DeploymentStatus(
            observed_generation=observed,
            replicas=replicas,
            updated_replicas=updated,
            available_replicas=available,
            ready_replicas=available,
            conditions=list(conditions),
        ),
    )


def test_k8s_health_is_not_ready_while_the_new_version_rolls_out() -> None:
    """Security review: deploy 1.0.0 (Ready), then 1.1.0 whose pods crash-loop. Right after
    the patch the old pod is still available, the controller has not observed generation 2
    and no pod is updated; `_health` compared only available with wanted replicas, so 1.1.0
    was Ready at once and a promotion policy let it into prod."""
    rolling = deployment(observed=1, replicas=1, updated=0, available=1)
    assert _health(rolling)[0] != "Ready", "a rollout the controller has not observed"
    half = deployment(replicas=2, updated=1, available=1)  # the new pod is not available
    assert _health(half)[0] != "Ready", "only the old ReplicaSet is available"


@pytest.mark.parametrize(
    ("dep", "expected"),
    [
        pytest.param(
            deployment(observed=1, replicas=1, updated=1, available=1),
            ("Progressing", "waiting for the controller to observe generation 2"),
            id="controller-behind",
        ),
        pytest.param(
            deployment(observed=1, replicas=1, updated=1, available=1, conditions=(TIMED_OUT,)),
            ("Progressing", "waiting for the controller to observe generation 2"),
            id="a-deadline-of-the-previous-rollout-is-not-this-ones",
        ),
        pytest.param(
            deployment(replicas=1, available=1),  # updatedReplicas left out: 0
            ("Progressing", "0/1 replicas updated to the new version"),
            id="nothing-updated-yet",
        ),
        pytest.param(
            deployment(generation=None, observed=None, replicas=1, available=1),
            ("Progressing", "0/1 replicas updated to the new version"),
            id="no-generation-the-counts-decide",
        ),
        pytest.param(
            deployment(want=4, replicas=5, updated=2, available=4),
            ("Progressing", "2/4 replicas updated to the new version"),
            id="half-rolled-out",
        ),
        pytest.param(
            deployment(want=2, replicas=3, updated=2, available=2),
            ("Progressing", "1 old replicas pending termination"),
            id="old-replicas-still-terminating",
        ),
        pytest.param(
            deployment(want=2, replicas=2, updated=2, available=1),
            ("Progressing", "1/2 updated replicas available"),
            id="updated-but-not-yet-available",
        ),
        pytest.param(
            deployment(want=2, replicas=2, updated=2, available=2),
            ("Ready", "2/2 replicas updated and available"),
            id="all-updated-and-available",
        ),
        pytest.param(
            deployment(replicas=2, updated=1, available=1, conditions=(AVAILABLE, TIMED_OUT)),
            (
                "Degraded",
                'progress deadline exceeded: ReplicaSet "checkout-api-5d4f" has timed out '
                "progressing.",
            ),
            id="progress-deadline-exceeded",
        ),
        pytest.param(
            deployment(
                replicas=1,
                updated=0,
                available=1,
                conditions=(
                    client.V1DeploymentCondition(
                        type="ReplicaFailure",
                        status="True",
                        reason="FailedCreate",
                        message='pods "checkout-api-5d4f-x" is forbidden: exceeded quota',
                    ),
                ),
            ),
            (
                "Degraded",
                'replica failure: pods "checkout-api-5d4f-x" is forbidden: exceeded quota',
            ),
            id="replica-failure",
        ),
    ],
)
def test_health_follows_kubectl_rollout_status(
    dep: client.V1Deployment, expected: tuple[Health, str]
) -> None:
    assert _health(dep) == expected
