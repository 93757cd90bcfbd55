"""`ztdp worker`: runs actors, without the API, sharing them with the other workers.

A worker takes its share of the actors' partitions (see ztdp.runtime.ownership), consumes
their NATS mailboxes and commits to the shared state store. It needs the graph too: a step's
target and its policy check are read from it just before the step runs.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio

from ztdp import __version__
from ztdp.catalog import Catalog
from ztdp.errors import ZtdpError
from ztdp.graph.store import open_graph_store
from ztdp.providers import ProviderRegistry
from ztdp.runtime import Runtime, StartRefused, Supervisor
from ztdp.runtime.backends import open_backends
from ztdp.secrets import open_secret_store
from ztdp.settings import Settings

log = logging.getLogger("ztdp.worker")


async def run_worker(settings: Settings, ready: Callable[[Supervisor], None]) -> None:
    """Run actors until SIGINT or SIGTERM, then hand the partitions over and stop."""
    if settings.mailbox != "nats":
        raise StartRefused(
            "a worker shares actors with other processes through NATS: set ZTDP_MAILBOX=nats "
            "(with ZTDP_STATE_STORE=redis or ZTDP_GRAPH_STORE=redis); with in-process "
            "mailboxes `ztdp serve` runs the actors itself"
        )
    async with AsyncExitStack() as opened:
        registry = ProviderRegistry.from_entry_points()
        opened.push_async_callback(registry.aclose)
        secrets = open_secret_store(settings)  # the API's: it resolves what steps reference
        opened.push_async_callback(secrets.aclose)
        graph = open_graph_store(settings)
        opened.push_async_callback(graph.aclose)
        backends = await opened.enter_async_context(open_backends(settings, queries=False))
        catalog = Catalog(
            graph,
            backends.state,
            write_retries=settings.write_retries,
            events=backends.events,
            event_store=backends.event_store,
        )
        supervisor = Supervisor(
            providers=registry,
            state=backends.state,
            events=backends.events,
            mailbox=backends.mailbox,
            settings=settings,
        )
        # The step hooks; a status history only where this worker's store has one.
        Runtime(catalog, supervisor, settings, secrets, history=backends.event_store)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with backends.event_keeper, supervisor:
                log.info(
                    "ZTDP %s worker %s: providers %s",
                    __version__,
                    supervisor.member,
                    ", ".join(registry.kinds()) or "none",
                )
                ready(supervisor)
                async for _ in signals:
                    break


__all__ = ["ZtdpError", "run_worker"]
