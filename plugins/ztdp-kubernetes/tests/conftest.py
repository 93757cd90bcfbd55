"""The Kubernetes API the tests talk to: the sandbox over a real socket, or a real cluster."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from ztdp_kubernetes.sandbox import Sandbox, sandbox


@pytest.fixture
async def kube() -> AsyncIterator[Sandbox]:
    async with sandbox() as box:
        yield box


@pytest.fixture
def namespace() -> str:
    return f"ztdp-test-{uuid.uuid4().hex[:8]}"


REAL_CLUSTER = os.environ.get("ZTDP_TEST_KUBECONFIG")
