"""How a `ztdp serve` process runs: its event loop and its heap after start-up."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
import uvloop

from ztdp.cli.process import loop_factory, settle_heap


@pytest.mark.parametrize(("kind", "loop_type"), [("uvloop", uvloop.Loop), ("asyncio", None)])
def test_the_loop_is_the_one_asked_for(kind: str, loop_type: type | None) -> None:
    loop = loop_factory(kind)()
    try:
        if loop_type is None:
            assert not isinstance(loop, uvloop.Loop)
            assert isinstance(loop, asyncio.AbstractEventLoop)
        else:
            assert isinstance(loop, loop_type)
        assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        loop.close()


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_settling_the_heap_hides_what_exists_from_the_collector(unfreeze: None) -> None:
    before = gc.get_freeze_count()
    settle_heap()
    assert gc.get_freeze_count() > before
    assert gc.collect() >= 0 and gc.isenabled()  # later garbage is still collected
