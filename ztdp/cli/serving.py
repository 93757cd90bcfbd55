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
import json
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager, suppress
from importlib.metadata import EntryPoint, entry_points
from logging.handlers import MemoryHandler
from typing import Any

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from pydantic import ValidationError

from ztdp.cli.process import loop_factory, settle_heap
from ztdp.errors import ZtdpError
from ztdp.settings import Settings

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
    loop = loop_factory(settings.event_loop)()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(settings, ready, keep_start_logs, sandbox))
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
    starting = web.Server(_starting, access_log=None)
    front = _Front(starting)
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
                app_module = importlib.import_module("ztdp.api.app")
                notice = SANDBOX_NOTE if box is not None else None
                api = await asyncio.to_thread(app_module.create_app, settings, sandbox=notice)

                async def settle(_: web.Application) -> None:
                    settle_heap()  # last of the start-up hooks: the stores and plugins are loaded

                api.on_startup.append(settle)
                limit = app_module.PARSER_LIMIT
                runner = web.AppRunner(
                    api, handle_signals=True, max_line_size=limit, max_field_size=limit
                )
                try:
                    await runner.setup()
                except ZtdpError as exc:  # plugins, stores: ZTDP says what is wrong
                    raise StartFailed(exc.detail) from exc
                except Exception as exc:
                    raise StartFailed(f"{type(exc).__name__}: {exc}") from exc
                assert runner.server is not None
                front.serve(runner.server)  # new connections reach the application
                await starting.shutdown(1.0)
                ready(settings, box)
                release()
            await asyncio.Event().wait()  # until a signal ends it
    finally:
        listener.close()
        if runner is not None:
            await runner.cleanup()
        await starting.shutdown(0.1)
        sock.close()


def _graceful_exit() -> None:
    raise GracefulExit()


class _Front:
    """The listening socket's protocol factory: the "starting" server until the application
    is up, then the application's. A connection stays with the server that accepted it."""

    def __init__(self, factory: web.Server) -> None:
        self._factory = factory

    def serve(self, factory: web.Server) -> None:
        self._factory = factory

    def __call__(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self._factory()
        return protocol


async def _starting(request: web.BaseRequest) -> web.StreamResponse:
    """Every answer while the application loads: 503, come back in a second."""
    headers = {"Retry-After": "1", "Connection": "close"}
    if request.path == "/v1/healthz":
        body: dict[str, Any] = {"status": "starting"}
        return web.json_response(body, status=503, headers=headers)
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "ZTDP is starting; retry in a second",
    }
    return web.Response(
        text=json.dumps(body),
        status=503,
        content_type="application/problem+json",
        headers=headers,
    )


def _warm_imports() -> None:
    """Import the application and the provider plugins (most of the start-up time) off the
    event loop, so that the "starting" answers are not held up by it."""
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
