"""Event stores come from the `ztdp.event_stores` entry-point group, checked as they load.

An entry point's name is what `ZTDP_EVENT_STORE` says; its object is a factory called with
the store's address (`ZTDP_EVENT_STORE_URL`, or None) and the settings, returning the store
or an awaitable of it (a store that must connect first). `memory` and `sqlite` are built in.

    [project.entry-points."ztdp.event_stores"]
    audit-log = "acme_audit:open_store"
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ztdp.errors import PluginInvalid, ZtdpError
from ztdp.events.memory_store import MemoryEventStore
from ztdp.events.sqlite_store import open_sqlite
from ztdp.events.store import REQUIRED_METHODS, EventStore
from ztdp.settings import Settings

GROUP = "ztdp.event_stores"

Factory = Callable[[str | None, Settings], EventStore | Awaitable[EventStore]]


def _memory(url: str | None, settings: Settings) -> EventStore:
    return MemoryEventStore()


BUILT_IN: dict[str, Factory] = {"memory": _memory, "sqlite": open_sqlite}


@dataclass(frozen=True)
class EventStoreInfo:
    name: str
    entry_point: str
    distribution: str
    version: str


def _installed(eps: Iterable[EntryPoint] | None) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in eps if eps is not None else entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


async def open_event_store(
    settings: Settings, eps: Iterable[EntryPoint] | None = None
) -> tuple[EventStore, EventStoreInfo]:
    """The store `settings.event_store` names, opened and checked.

    Raises `PluginInvalid` naming the plugin, its distribution and what is wrong when it is
    not installed, cannot be imported, fails to open or does not implement `EventStore`.
    """
    name, url = settings.event_store, settings.event_store_url
    installed = _installed(eps)
    factory: Any
    if name in BUILT_IN:
        if name in installed:
            ep = installed[name]
            raise PluginInvalid(
                f"event store plugin {name!r} ({ep.value}) from {_dist(ep)} has the name of a "
                "built-in store; rename its entry point"
            )
        factory, info = BUILT_IN[name], EventStoreInfo(name, "built in", "ztdp", "")
        where = f"built-in event store {name!r}"
    elif name in installed:
        ep = installed[name]
        info = EventStoreInfo(name, ep.value, *_dist_version(ep))
        where = f"event store plugin {name!r} ({ep.value}) from {_dist(ep)}"
        try:
            factory = ep.load()
        except Exception as exc:
            raise PluginInvalid(f"{where} cannot be imported: {exc}") from exc
    else:
        known = ", ".join(sorted({*BUILT_IN, *installed}))
        raise PluginInvalid(
            f"ZTDP_EVENT_STORE={name}: no event store plugin {name!r} is installed "
            f"(entry-point group {GROUP}; installed: {known})"
        )
    if not callable(factory):
        raise PluginInvalid(f"{where} is not callable: its entry point must name a factory")
    try:
        store = factory(url, settings)
        if inspect.isawaitable(store):
            store = await store
    except ZtdpError:
        raise  # the store's own words: BackendUnavailable naming its address, say
    except Exception as exc:
        raise PluginInvalid(f"{where} failed to open: {exc!r}") from exc
    check(store, where)
    return store, info


def check(store: object, where: str) -> None:
    """Raise `PluginInvalid` unless `store` has every method of `EventStore`, each async."""
    missing = [
        m for m in REQUIRED_METHODS if not inspect.iscoroutinefunction(getattr(store, m, None))
    ]
    if missing:
        raise PluginInvalid(
            f"{where} does not implement the event store protocol: "
            f"missing async method(s) {', '.join(missing)}"
        )


def _dist_version(ep: EntryPoint) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist else ("unknown distribution", "?")


def _dist(ep: EntryPoint) -> str:
    return " ".join(_dist_version(ep))
