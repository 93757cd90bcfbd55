"""Who is acting: set once per request by the API, read wherever a change is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

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


def set_actor(name: str) -> Token[str]:
    """`acting_as` without a context manager, for the hot path of every request."""
    return _ACTOR.set(name)


def reset_actor(token: Token[str]) -> None:
    _ACTOR.reset(token)
