"""How a `ztdp serve` process runs: its event loop and its heap after start-up.

The runtime benchmark (benchmarks/runtime.py) runs the same way, so that its figures are
those of a server.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("ztdp")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed and asked for; the standard loop otherwise.

    uvloop runs the same asyncio code with its scheduling and I/O in C: the runtime spends
    most of its time switching between actors, which is where it helps.
    """
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform
            log.warning("uvloop is not installed; running on the standard asyncio loop")
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def settle_heap() -> None:
    """Move everything start-up made out of the garbage collector's sight.

    Modules, schemas and settings live as long as the process; without this every full
    collection walks them again, a pause of milliseconds that lands on whatever runs then.
    """
    gc.collect()
    gc.freeze()
