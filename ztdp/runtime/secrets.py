"""Secrets as the runtime uses them: resolved for each provider call, kept when generated.

- A deployment's env references (`{"secret": name}`) are resolved into `Resource.secrets`
  (env var -> value) just before each apply or observe, never stored with the actor.
- A resource's provider may generate outputs (`Observation.secrets`, e.g. a database's
  password and url). They are kept as secrets of the application owning the resource, named
  `<resource>.<output>` (e.g. orders-db.url), marked `generated_by` its node, and handed back
  in `Resource.secrets` on later calls so that applying stays idempotent.
- Rotating a generated secret (`regenerate`) stores an empty value as its next version: the
  mark that a new one is asked for. The resource is then applied with no secrets, so its
  provider generates new ones, which become the version after; the deployments using them
  are updated in the same run (their references' versions changed), so they roll.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from ztdp.catalog import Catalog
from ztdp.contracts import SYSTEM_PRINCIPAL, SecretRef
from ztdp.errors import NotFound, PermanentError, TemporaryError
from ztdp.graph import EdgeType, Graph, NodeKind, node_id
from ztdp.planner import SecretsSeen
from ztdp.providers import ProviderRegistry, Resource, Target
from ztdp.secrets import SecretInfo, SecretStore

log = logging.getLogger("ztdp.runtime.secrets")

OUTPUT = "url"  # the output injected into the services using a resource


def _owner(graph: Graph, resource: str) -> str | None:
    """The application owning a resource (its generated secrets are that application's)."""
    owners = graph.predecessors(node_id(NodeKind.RESOURCE, resource), EdgeType.OWNS)
    return owners[0].rsplit("/", 1)[1] if owners else None


def _is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and "secret" in value


class RuntimeSecrets:
    def __init__(self, store: SecretStore, catalog: Catalog, providers: ProviderRegistry) -> None:
        self.store = store
        self._catalog = catalog
        self._providers = providers

    def injects(self, provider: str | None) -> bool:
        """Whether a provider generates a URL that services using its resources get."""
        found = self._providers.get(provider or "")
        return found is not None and OUTPUT in getattr(found, "outputs", ())

    async def seen(self, applications: Collection[str], environment: str) -> SecretsSeen:
        """The versions a plan shows: of the applications' secrets, and of those owned by the
        applications whose resources they use."""
        graph = await self._catalog.graph()
        scopes = set(applications)
        for app in applications:
            for owned in graph.out(node_id(NodeKind.APPLICATION, app), EdgeType.OWNS):
                for used in graph.out(owned, EdgeType.USES):
                    if graph.kind(used) is NodeKind.RESOURCE:
                        owner = _owner(graph, used.rsplit("/", 1)[1])
                        if owner is not None:
                            scopes.add(owner)
        versions = {
            app: {
                i.name: i.version
                for i in await self.store.list(application=app, environment=environment)
            }
            for app in sorted(scopes)
        }
        return SecretsSeen(versions=versions, injects=self.injects, output=OUTPUT)

    async def resolve(self, resource: Resource, target: Target) -> Resource:
        if resource.kind == "deployment":
            return await self._deployment(resource, target)
        if resource.kind == "resource":
            return await self._resource(resource, target)
        return resource

    async def _deployment(self, resource: Resource, target: Target) -> Resource:
        env = dict(resource.desired.get("env") or {})
        if not any(_is_ref(v) for v in env.values()):
            return resource
        values: dict[str, str] = {}
        where = target.environment
        for var, ref in sorted(env.items()):
            if not _is_ref(ref):
                continue
            name, scope = ref["secret"], ref.get("application") or resource.application
            try:
                info = await self.store.info(application=scope, environment=where, name=name)
                value = await self.store.value(application=scope, environment=where, name=name)
            except NotFound:
                raise PermanentError(
                    f"{resource.node}: env {var} references secret {name}, which application "
                    f"{scope} does not have in environment {where}: create it "
                    f"(POST /v1/applications/{scope}/environments/{where}/secrets)"
                ) from None
            if value == "" and info.generated_by is not None:
                raise TemporaryError(
                    f"{resource.node}: env {var} references secret {name}, which "
                    f"{info.generated_by} is generating again (rotation)",
                    retry_after=1.0,
                )
            values[var] = value
            # The version applied, as observed afterwards (the plan's may be older).
            env[var] = {**ref, "version": info.version}
        return replace(resource, desired={**resource.desired, "env": env}, secrets=values)

    async def _resource(self, resource: Resource, target: Target) -> Resource:
        owner = _owner(await self._catalog.graph(), resource.name)
        if owner is None:
            return resource
        values: dict[str, str] = {}
        for info in await self.store.list(application=owner, environment=target.environment):
            if info.generated_by != resource.node:
                continue
            value = await self.store.value(
                application=owner, environment=target.environment, name=info.name
            )
            if value == "":  # a rotation asked for new ones: the provider generates them
                return resource
            values[info.name.split(".", 1)[1]] = value
        return replace(resource, secrets=values) if values else resource

    async def generated(
        self, resource: Resource, target: Target, secrets: Mapping[str, str]
    ) -> None:
        owner = _owner(await self._catalog.graph(), resource.name)
        if owner is None:
            log.warning(
                "%s: its provider generated secrets but no application owns the resource; "
                "they are not kept",
                resource.node,
            )
            return
        env = target.environment
        for output, value in sorted(secrets.items()):
            if not value:  # nothing generated (an empty value is the mark of a rotation)
                continue
            name = f"{resource.name}.{output}"
            try:
                SecretRef(secret=name)
            except ValueError:
                log.warning("%s: output %r is no secret name; not kept", resource.node, output)
                continue
            try:
                current = await self.store.value(application=owner, environment=env, name=name)
            except NotFound:
                await self.store.put(
                    application=owner,
                    environment=env,
                    name=name,
                    value=value,
                    actor=SYSTEM_PRINCIPAL,
                    generated_by=resource.node,
                )
                continue
            if current != value:
                await self.store.rotate(
                    application=owner,
                    environment=env,
                    name=name,
                    value=value,
                    actor=SYSTEM_PRINCIPAL,
                )

    async def request_new(self, info: SecretInfo, actor: str) -> SecretInfo:
        """Mark every output its resource generated as to be generated again (see the
        module): each one's version grows, so every deployment using any of them is updated
        by the run that follows, after the resource."""
        marked = info
        for other in await self.store.list(
            application=info.application, environment=info.environment
        ):
            if other.generated_by != info.generated_by:
                continue
            done = await self.store.rotate(
                application=other.application,
                environment=other.environment,
                name=other.name,
                value="",
                actor=actor,
            )
            if other.name == info.name:
                marked = done
        return marked

    async def forget_deleted(self, deleted: Collection[str]) -> int:
        """Delete the secrets of deleted applications and environments, and the outputs of
        deleted resources: a new object of the same name (another team's, perhaps) must not
        inherit them."""
        apps = {n.split("/", 1)[1] for n in deleted if n.startswith("application/")}
        envs = {n.split("/", 1)[1] for n in deleted if n.startswith("environment/")}
        resources = {n.split("/", 1)[1] for n in deleted if n.startswith("resource/")}
        if not (apps or envs or resources):
            return 0

        def gone(info: SecretInfo) -> bool:
            made_by = (info.generated_by or "").removeprefix("resource/").rsplit("@", 1)[0]
            return (
                info.application in apps
                or info.environment in envs
                or (info.generated_by is not None and made_by in resources)
            )

        return await self.store.purge(match=gone)
