"""Who is acting: set once per request by the API, read wherever a change is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ACTOR: ContextVar[str] = ContextVar("ztdp_actor", default="anonymous")


def current_actor() -> str:
    return _ACTOR.get()


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    token = _ACTOR.set(name)
    try:
        yield
    finally:
        _ACTOR.reset(token)
