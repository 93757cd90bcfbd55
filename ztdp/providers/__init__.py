"""Providers: the protocol and the entry-point registry. Core never imports a plugin."""

from ztdp.providers.base import Health, Observation, Provider, Resource, Target
from ztdp.providers.registry import GROUP, PluginInvalid, ProviderInfo, ProviderRegistry

__all__ = [
    "GROUP",
    "Health",
    "Observation",
    "PluginInvalid",
    "Provider",
    "ProviderInfo",
    "ProviderRegistry",
    "Resource",
    "Target",
]
