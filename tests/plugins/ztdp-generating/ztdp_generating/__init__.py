"""A provider for the secrets tests: it realises `generating` resources in memory and
generates outputs for them, as a database provider does (a password and a URL holding it).

As the agreed seam says: when `Resource.secrets` has a `password` it is kept (applying is
idempotent); when empty a new one is generated (that is how a rotation works). A resource
whose `config_ref` is `fail` fails permanently with an error that quotes its URL, password
included: a careless provider, whose error the core must scrub before anyone sees it.

It is not installed: tests put this directory on the path of the processes that use it, or
register `GeneratingProvider` in a registry of their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from ztdp.errors import PermanentError
from ztdp.providers import Health, Observation, Resource, Target


class GeneratingProvider:
    kind = "generating"
    outputs = ("password", "url")  # what it generates; `url` is injected into using services

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}  # node -> the password "the server" accepts
        self.applies: list[tuple[str, bool]] = []  # node, whether it was given a password

    async def validate(self, *, resource: Resource) -> None:
        return None

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            {"path": k, "before": observed.get(k), "after": v}
            for k, v in desired.items()
            if observed.get(k) != v
        ]

    def _outputs(self, resource: Resource, password: str) -> dict[str, str]:
        return {"password": password, "url": f"gen://{resource.name}:{password}@db/{resource.name}"}

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        password = resource.secrets.get("password") or secrets.token_urlsafe(18)
        self.applies.append((resource.node, "password" in resource.secrets))
        if resource.desired.get("config_ref") == "fail":
            url = self._outputs(resource, password)["url"]
            raise PermanentError(f"{resource.node}: cannot connect to {url}: refused")
        self.passwords[resource.node] = password
        return self._seen(resource, password)

    def _seen(self, resource: Resource, password: str) -> Observation:
        return Observation(
            state=dict(resource.desired),
            health="Ready",
            secrets=self._outputs(resource, password),
        )

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        password = self.passwords.get(resource.node)
        if password is None:
            return None
        return self._seen(resource, password)

    async def delete(self, *, resource: Resource, target: Target) -> None:
        self.passwords.pop(resource.node, None)

    async def health(self, *, resource: Resource, target: Target) -> Health:
        return "Ready" if resource.node in self.passwords else "Degraded"

    async def aclose(self) -> None:
        return None
