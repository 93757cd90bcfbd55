"""How `ztdp serve` starts, runs and stops the API, and why it could not start.

In this order, so that a failure is found before anything else is said: the settings, the
port, then the application's start-up (plugins, stores, the runtime). Whatever is logged
while starting is held back until the server listens; if it never does, the caller gets one
`StartFailed` naming the cause, and the held-back lines are dropped unless asked for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from logging.handlers import MemoryHandler

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from pydantic import ValidationError

from ztdp.api.app import PARSER_LIMIT, create_app
from ztdp.api.telemetry import AccessLog
from ztdp.cli.process import loop_factory, settle_heap
from ztdp.errors import ZtdpError
from ztdp.settings import Settings
from ztdp.telemetry.logging import configure_logging, said_as_logs

log = logging.getLogger("ztdp")


class StartFailed(Exception):
    """`ztdp serve` could not start; the message names the cause in one line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


def load_settings(**overrides: object) -> Settings:
    """The settings, or a `StartFailed` naming each bad one and where it comes from."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, err['loc']))} (ZTDP_{str(err['loc'][0]).upper()}): {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise StartFailed("invalid setting " + "; ".join(problems), exit_code=2) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed configuration file
        raise StartFailed(f"cannot read the settings: {exc}", exit_code=2) from exc


def serve(settings: Settings, *, ready: Callable[[], None], keep_start_logs: bool) -> None:
    """Serve until SIGINT or SIGTERM; `ready()` once the server listens."""
    configure_logging(settings.log_format)
    ready = said_as_logs(ready, settings.log_format)  # the banner too, in JSON mode
    loop = loop_factory(settings.event_loop)()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(settings, ready, keep_start_logs))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):  # asked to stop: shut down gracefully
        main.cancel()
        with suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def _serve(settings: Settings, ready: Callable[[], None], keep_start_logs: bool) -> None:
    sock = _bind(settings.host, settings.port)
    api = create_app(settings)

    async def settle(_: web.Application) -> None:
        settle_heap()  # last of the start-up hooks: the stores and plugins are loaded

    api.on_startup.append(settle)
    runner = web.AppRunner(
        api,
        handle_signals=True,
        max_line_size=PARSER_LIMIT,
        max_field_size=PARSER_LIMIT,
        access_log_class=AccessLog,
    )
    try:
        with _held_back(keep_start_logs) as release:
            try:
                await runner.setup()
            except ZtdpError as exc:  # plugins, stores: ZTDP says what is wrong
                raise StartFailed(exc.detail) from exc
            except Exception as exc:
                raise StartFailed(f"{type(exc).__name__}: {exc}") from exc
            await web.SockSite(runner, sock).start()
            ready()
            release()
        await asyncio.Event().wait()  # until a signal ends it
    finally:
        await runner.cleanup()
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening address, taken before anything is loaded: a port in use fails first."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartFailed(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio would
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise StartFailed(f"cannot listen on {host}:{port}: {reason.lower()}") from exc
    return sock


@contextmanager
def _held_back(keep: bool) -> Iterator[Callable[[], None]]:
    """Hold back what is logged while starting; `release()` lets it out, else it is dropped
    (or let out anyway when `keep`, to be read before the failure)."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    target: logging.Handler | None = handlers[0] if handlers else logging.lastResort
    held = MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1, target=target)
    released = False

    def release() -> None:
        nonlocal released
        released = True
        root.handlers = handlers
        held.flush()

    root.handlers = [held]
    try:
        yield release
    finally:
        if not released:
            root.handlers = handlers
            if keep:
                held.flush()
        held.buffer.clear()
        held.close()
