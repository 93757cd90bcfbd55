"""The caller's authorization, decided against the very graph a write commits.

The API installs a guard for each request that may write; the catalog calls it inside every
attempt of an atomic write, on the graph that attempt validates and commits against. A write
retried after a stale revision is therefore authorized again on the newer graph, and no
interleaving of writers can make a decision taken on one graph apply to another.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ztdp.graph import Graph

WriteGuard = Callable[[Graph], None]
"""Raise `Forbidden` if the caller may not make this request's write on that graph."""

ChangeGuard = Callable[[Graph, Collection[str]], None]
"""Raise `Forbidden` if the caller may not change or delete those nodes (a cascade's)."""

_GUARD: ContextVar[WriteGuard | None] = ContextVar("ztdp_write_guard", default=None)
_CHANGES: ContextVar[ChangeGuard | None] = ContextVar("ztdp_change_guard", default=None)


def check_write(graph: Graph) -> None:
    """Authorize the current request's write on `graph` (nothing to check outside requests)."""
    guard = _GUARD.get()
    if guard is not None:
        guard(graph)


def check_changes(graph: Graph, nodes: Collection[str]) -> None:
    """Authorize changing `nodes` too (what a cascade takes with it), on the write's graph."""
    guard = _CHANGES.get()
    if guard is not None and nodes:
        guard(graph, nodes)


@contextmanager
def guarded(guard: WriteGuard | None, changes: ChangeGuard | None = None) -> Iterator[None]:
    token, changes_token = _GUARD.set(guard), _CHANGES.set(changes)
    try:
        yield
    finally:
        _GUARD.reset(token)
        _CHANGES.reset(changes_token)
