"""A provider for runtime benchmarks: applies in a fixed time, touches nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from ztdp.providers import Observation, ProviderInfo, ProviderRegistry, Resource, Target


class SleepProvider:
    kind = "kubernetes"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def validate(self, *, resource: Resource) -> None:
        return None

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return []

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        if self.seconds:
            await anyio.sleep(self.seconds)
        return Observation(state=dict(resource.desired), health="Ready")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        return None

    async def delete(self, *, resource: Resource, target: Target) -> None:
        return None

    async def health(self, *, resource: Resource, target: Target) -> str:
        return "Ready"

    async def aclose(self) -> None:
        return None


def registry(seconds: float) -> ProviderRegistry:
    reg = ProviderRegistry()
    reg.register(
        SleepProvider(seconds), ProviderInfo("kubernetes", "benchmarks", "benchmarks", "0")
    )
    return reg
