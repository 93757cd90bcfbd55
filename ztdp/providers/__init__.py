"""Providers: the protocol and the entry-point registry. Core never imports a plugin."""

from ztdp.providers.base import (
    Change,
    ChangeEvent,
    Health,
    Observation,
    Provider,
    Resource,
    Target,
    Watching,
)
from ztdp.providers.registry import GROUP, PluginInvalid, ProviderInfo, ProviderRegistry

__all__ = [
    "GROUP",
    "Change",
    "ChangeEvent",
    "Health",
    "Observation",
    "PluginInvalid",
    "Provider",
    "ProviderInfo",
    "ProviderRegistry",
    "Resource",
    "Target",
    "Watching",
]
