"""`ztdp worker`: runs actors, without the API, sharing them with the other workers.

A worker takes its share of the actors' partitions (see ztdp.runtime.ownership), consumes
their NATS mailboxes and commits to the shared state store. It needs the graph too: a step's
target and its policy check are read from it just before the step runs.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from aiohttp import web

from ztdp import __version__
from ztdp.api.app import authenticator, open_failure_limiter, open_token_store
from ztdp.api.keys import AUTH, RUNTIME, SETTINGS, TELEMETRY
from ztdp.api.problems import problem_middleware
from ztdp.api.telemetry import metrics_endpoint
from ztdp.catalog import Catalog
from ztdp.errors import ZtdpError
from ztdp.graph.store import open_graph_store
from ztdp.providers import ProviderRegistry
from ztdp.runtime import Runtime, StartRefused, Supervisor
from ztdp.runtime.backends import open_backends
from ztdp.secrets import open_secret_store
from ztdp.settings import Settings
from ztdp.telemetry import Telemetry
from ztdp.telemetry.logging import configure_logging, said_as_logs

log = logging.getLogger("ztdp.worker")


async def run_worker(settings: Settings, ready: Callable[[Supervisor], None]) -> None:
    """Run actors until SIGINT or SIGTERM, then hand the partitions over and stop."""
    configure_logging(settings.log_format)
    ready = said_as_logs(ready, settings.log_format)  # the banner too, in JSON mode
    if settings.mailbox != "nats":
        raise StartRefused(
            "a worker shares actors with other processes through NATS: set ZTDP_MAILBOX=nats "
            "(with ZTDP_STATE_STORE=redis or ZTDP_GRAPH_STORE=redis); with in-process "
            "mailboxes `ztdp serve` runs the actors itself"
        )
    async with AsyncExitStack() as opened:
        telemetry = Telemetry.from_settings(settings)
        opened.push_async_callback(telemetry.aclose)
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
            telemetry=telemetry,
        )
        # The step hooks; a status history only where this worker's store has one.
        runtime = Runtime(catalog, supervisor, settings, secrets, history=backends.event_store)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with backends.event_keeper, supervisor, _metrics(settings, telemetry, runtime):
                log.info(
                    "ZTDP %s worker %s: providers %s",
                    __version__,
                    supervisor.member,
                    ", ".join(registry.kinds()) or "none",
                )
                ready(supervisor)
                async for _ in signals:
                    break


@asynccontextmanager
async def _metrics(
    settings: Settings, telemetry: Telemetry, runtime: Runtime
) -> AsyncIterator[None]:
    """`/metrics` on ZTDP_WORKER_METRICS_PORT, if set: the figures of the runs and steps this
    worker carries out, under the same rule as the API's (a token unless public)."""
    if settings.worker_metrics_port is None:
        yield
        return
    async with AsyncExitStack() as opened:
        tokens = open_token_store(settings)
        opened.push_async_callback(tokens.aclose)
        limiter = open_failure_limiter(settings)
        opened.push_async_callback(limiter.aclose)
        app = web.Application(middlewares=[problem_middleware])
        app[SETTINGS], app[TELEMETRY], app[RUNTIME] = settings, telemetry, runtime
        app[AUTH] = await authenticator(settings, tokens, limiter, announce=None)
        app.router.add_get("/metrics", metrics_endpoint)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        opened.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.worker_metrics_port)
        try:
            await site.start()
        except OSError as exc:
            raise ZtdpError(
                f"cannot serve metrics on {settings.host}:{settings.worker_metrics_port}: "
                f"{exc.strerror or exc}; choose another ZTDP_WORKER_METRICS_PORT"
            ) from exc
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
        yield


__all__ = ["ZtdpError", "run_worker"]
