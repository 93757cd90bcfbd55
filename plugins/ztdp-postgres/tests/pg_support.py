"""Helpers of the provider's tests (a module of its own name: every plugin's tests folder
has a `conftest`)."""

from __future__ import annotations

from ztdp.providers import Resource


def resource(
    name: str,
    env: str,
    *,
    application: str = "shop",
    secrets: dict[str, str] | None = None,
    config_ref: str = "v1",
) -> Resource:
    """A `postgres` resource node as the core hands it to the provider."""
    return Resource(
        node=f"resource/{name}@{env}",
        kind="resource",
        name=name,
        application=application,
        desired={"type": "postgres", "config_ref": config_ref},
        secrets=secrets or {},
    )
