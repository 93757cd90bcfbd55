"""Providers come from the `ztdp.providers` entry-point group; each is checked as it loads."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ztdp.errors import PluginInvalid
from ztdp.providers.base import REQUIRED_METHODS, Provider
from ztdp.providers.settings import check_model

GROUP = "ztdp.providers"

__all__ = ["GROUP", "PluginInvalid", "ProviderInfo", "ProviderRegistry"]


@dataclass(frozen=True)
class ProviderInfo:
    kind: str
    entry_point: str
    distribution: str
    version: str


class ProviderRegistry:
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._info: dict[str, ProviderInfo] = {}

    @classmethod
    def from_entry_points(cls, eps: Iterable[EntryPoint] | None = None) -> ProviderRegistry:
        """Load every installed provider: each entry point names a factory taking no arguments."""
        registry = cls()
        for ep in eps if eps is not None else entry_points(group=GROUP):
            dist = ep.dist.name if ep.dist else "unknown distribution"
            version = ep.dist.version if ep.dist else "?"
            where = f"plugin {ep.name!r} ({ep.value}) from {dist} {version}"
            try:
                factory = ep.load()
            except Exception as exc:
                raise PluginInvalid(f"{where} cannot be imported: {exc}") from exc
            registry.register(factory(), ProviderInfo(ep.name, ep.value, dist, version), where)
        return registry

    def register(self, provider: Any, info: ProviderInfo, where: str | None = None) -> None:
        where = where or f"provider {info.kind!r} from {info.distribution}"
        missing = [
            m
            for m in REQUIRED_METHODS
            if not inspect.iscoroutinefunction(getattr(provider, m, None))
        ]
        if missing:
            raise PluginInvalid(
                f"{where} does not implement the provider protocol: "
                f"missing async method(s) {', '.join(missing)}"
            )
        if getattr(provider, "kind", None) != info.kind:
            raise PluginInvalid(
                f"{where} says its kind is {getattr(provider, 'kind', None)!r}, "
                f"but is registered as {info.kind!r}"
            )
        check_model(provider, where)
        if info.kind in self._providers:
            raise PluginInvalid(
                f"{where}: a provider of kind {info.kind!r} is already loaded "
                f"from {self._info[info.kind].distribution}"
            )
        self._providers[info.kind] = provider
        self._info[info.kind] = info

    def get(self, kind: str) -> Provider | None:
        return self._providers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._providers)

    def missing(self, kind: str | None) -> str:
        """Why a node of provider `kind` cannot be realised here: the same words in a plan
        step's `blocked_by` and in the error of a run's step."""
        installed = ", ".join(self.kinds()) or "none"
        return f"no provider {kind!r} is installed (installed: {installed})"

    def info(self) -> list[ProviderInfo]:
        return [self._info[k] for k in self.kinds()]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
