"""Graph stores: `memory` (embedded default) and `redis` (persistent, shared)."""

from __future__ import annotations

from ztdp.graph.store.base import Change, GraphStore
from ztdp.graph.store.memory import MemoryGraphStore
from ztdp.settings import Settings


def open_graph_store(settings: Settings) -> GraphStore:
    if settings.graph_store == "redis":
        from ztdp.graph.store.redis import RedisGraphStore

        return RedisGraphStore.from_url(
            settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
        )
    return MemoryGraphStore()


__all__ = ["Change", "GraphStore", "MemoryGraphStore", "open_graph_store"]
