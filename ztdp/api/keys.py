"""Typed keys of what the aiohttp application holds."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ztdp.auth import Authenticator, Identity
from ztdp.catalog import Catalog
from ztdp.events import EventBus, EventStore
from ztdp.runtime import Runtime
from ztdp.secrets import SecretStore
from ztdp.settings import Settings
from ztdp.telemetry import Telemetry

CATALOG = web.AppKey("catalog", Catalog)
SETTINGS = web.AppKey("settings", Settings)
GRAPH_CACHE = web.AppKey("graph_cache", dict[str, Any])
AUTH = web.AppKey("auth", Authenticator)
RUNTIME = web.AppKey("runtime", Runtime)
EVENTS = web.AppKey("events", EventBus)
EVENT_STORE = web.AppKey("event_store", EventStore)
TELEMETRY = web.AppKey("telemetry", Telemetry)
SECRETS = web.AppKey("secrets", SecretStore)
# Set when the server starts shutting down: live streams end so that shutdown need not wait.
CLOSING = web.AppKey("closing", asyncio.Event)
# Where deployments land when an environment names no cluster of its own: the local sandbox
# (said plainly: nothing runs there), the configured kubeconfig, or None (nowhere yet).
DEFAULT_TARGET = web.AppKey("default_target", str)
IDENTITY = web.RequestKey("identity", Identity)  # the authenticated caller


def identity_of(request: web.Request) -> Identity:
    return request[IDENTITY]
