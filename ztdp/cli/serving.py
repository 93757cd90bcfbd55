"""How `ztdp serve` starts, runs and stops the API, and why it could not start.

In this order, so that a failure is found before anything else is said: the settings, the
port, then the application's start-up (plugins, stores, the runtime). Whatever is logged
while starting is held back until the server listens; if it never does, the caller gets one
`StartFailed` naming the cause, and the held-back lines are dropped unless asked for.

The port answers from the moment it is bound: while the application loads (its imports, the
OpenAPI document, the plugins, the stores, a sandbox) every request gets a 503 saying ZTDP
is starting (`/v1/healthz`: `{"status": "starting"}`), so a probe or a script knows at once
that the process is up and when to come back. The loading runs in a thread where it can, so
those answers are not held up by it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager, suppress
from importlib.metadata import EntryPoint, entry_points
from logging.handlers import MemoryHandler
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from ztdp.cli.process import loop_factory, settle_heap
from ztdp.errors import ZtdpError
from ztdp.settings import Settings
from ztdp.telemetry.logging import configure_logging, said_as_logs

if TYPE_CHECKING:
    from aiohttp import web

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


SandboxFactory = Callable[..., AbstractAsyncContextManager[Any]]

# What the sandbox is, in the words every place that mentions it uses.
SANDBOX_NOTE = "sandbox (Kubernetes API emulator: nothing runs)"


def find_sandbox() -> EntryPoint | None:
    """The Kubernetes sandbox's entry point, if its plugin is installed (`make setup` installs
    it); loaded only once the port answers, since it imports the emulator.

    Found by entry point, as providers are: the core names no provider."""
    found = entry_points(group="ztdp.sandboxes", name="kubernetes")
    return next(iter(found)) if found else None


def serve(
    settings: Settings,
    *,
    ready: Callable[[Settings, Any], None],
    keep_start_logs: bool,
    sandbox: EntryPoint | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; `ready(settings, sandbox)` once the application is up.

    With `sandbox`, it is started first and its kubeconfig becomes the default cluster."""
    configure_logging(settings.log_format)
    ready = said_as_logs(ready, settings.log_format)  # the banner too, in JSON mode
    loop = loop_factory(settings.event_loop)()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(settings, ready, keep_start_logs, sandbox))
    try:
        loop.run_until_complete(main)
    except (SystemExit, KeyboardInterrupt):  # asked to stop (aiohttp's GracefulExit, ours)
        main.cancel()
        with suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def _serve(
    settings: Settings,
    ready: Callable[[Settings, Any], None],
    keep_start_logs: bool,
    sandbox: EntryPoint | None,
) -> None:
    sock = _bind(settings.host, settings.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop cleanly while starting, too
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, _graceful_exit)
    front = _Front()
    listener = await loop.create_server(front, sock=sock)
    runner: web.AppRunner | None = None
    try:
        async with AsyncExitStack() as stack:
            with _held_back(keep_start_logs) as release:
                box = None
                if sandbox is not None:
                    try:
                        factory: SandboxFactory = await asyncio.to_thread(sandbox.load)
                        box = await stack.enter_async_context(factory(controller=True))
                    except Exception as exc:
                        raise StartFailed(f"the Kubernetes sandbox did not start: {exc}") from exc
                    settings = settings.model_copy(update={"kubeconfig": box.kubeconfig})
                await asyncio.to_thread(_warm_imports)
                from aiohttp import web

                app_module = importlib.import_module("ztdp.api.app")
                notice = SANDBOX_NOTE if box is not None else None
                api = await asyncio.to_thread(app_module.create_app, settings, sandbox=notice)

                async def settle(_: web.Application) -> None:
                    settle_heap()  # last of the start-up hooks: the stores and plugins are loaded

                api.on_startup.append(settle)
                limit = app_module.PARSER_LIMIT
                from ztdp.api.telemetry import AccessLog

                runner = web.AppRunner(
                    api,
                    handle_signals=True,
                    max_line_size=limit,
                    max_field_size=limit,
                    access_log_class=AccessLog,
                )
                try:
                    await runner.setup()
                except ZtdpError as exc:  # plugins, stores: ZTDP says what is wrong
                    raise StartFailed(exc.detail) from exc
                except Exception as exc:
                    raise StartFailed(f"{type(exc).__name__}: {exc}") from exc
                assert runner.server is not None
                front.serve(runner.server)  # new connections reach the application
                ready(settings, box)
                release()
            await asyncio.Event().wait()  # until a signal ends it
    finally:
        listener.close()
        front.close_starting()
        if runner is not None:
            await runner.cleanup()
        sock.close()


class _Stop(SystemExit):
    """SIGINT or SIGTERM while starting (aiohttp's GracefulExit takes over once it runs)."""


def _graceful_exit() -> None:
    raise _Stop()


class _Front:
    """The listening socket's protocol factory: `_Starting` until the application is up,
    then the application's server. A connection stays with the server that accepted it."""

    def __init__(self) -> None:
        self._app: Callable[[], asyncio.Protocol] | None = None
        self._starting: set[_Starting] = set()

    def serve(self, app: Callable[[], asyncio.Protocol]) -> None:
        self._app = app
        self.close_starting()  # a connection still silent is told to come back

    def close_starting(self) -> None:
        for protocol in list(self._starting):
            protocol.close()

    def __call__(self) -> asyncio.Protocol:
        if self._app is not None:
            return self._app()
        return _Starting(self._starting)


_STARTING_HEALTH = b'{"status": "starting"}'
_STARTING_PROBLEM = (
    b'{"type": "about:blank", "title": "Service Unavailable", "status": 503, '
    b'"detail": "ZTDP is starting; retry in a second"}'
)


class _Starting(asyncio.Protocol):
    """One connection while the application loads: each request is answered 503, come back
    in a second (`Retry-After: 1`), and the connection closed. Plain asyncio, since importing
    aiohttp is itself a good part of the start; it reads no more than a request's head."""

    def __init__(self, open_: set[_Starting]) -> None:
        self._open = open_
        self._buffer = b""
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass
        self._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer and len(self._buffer) < 65536:
            return
        words = self._buffer.split(b"\r\n", 1)[0].split()
        method = words[0] if words else b""
        path = words[1].split(b"?", 1)[0] if len(words) > 1 else b""
        health = path == b"/v1/healthz"
        body = _STARTING_HEALTH if health else _STARTING_PROBLEM
        kind = b"application/json" if health else b"application/problem+json"
        head = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n\r\n" % (kind, len(body))
        )
        assert self._transport is not None
        self._transport.write(head if method == b"HEAD" else head + body)
        self._transport.close()


def _warm_imports() -> None:
    """Import aiohttp, the application and the provider plugins (most of the start-up time)
    off the event loop, so that the "starting" answers are not held up by it."""
    importlib.import_module("aiohttp.web")
    importlib.import_module("ztdp.api.app")
    for found in entry_points(group="ztdp.providers"):
        with suppress(Exception):  # a broken plugin is reported by the start-up proper
            found.load()


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
