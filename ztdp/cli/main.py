"""The `ztdp` command."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Annotated

import anyio
import typer
from rich.console import Console

from ztdp import __version__
from ztdp.cli.serving import StartFailed, load_settings
from ztdp.cli.serving import serve as serve_api
from ztdp.settings import Settings

app = typer.Typer(help="ZTDP, the Zero Touch Developer Platform.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # a line is a line, whatever the width


@app.callback()
def main() -> None:
    """ZTDP, the Zero Touch Developer Platform."""


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def demo(
    kubeconfig: Annotated[
        str | None, typer.Option(help="a real cluster; default: a local sandbox [ZTDP_KUBECONFIG]")
    ] = None,
) -> None:
    """Run the README flow end to end and narrate it: declare, plan, deploy, Ready, deny."""
    from ztdp.cli.demo import DemoFailed, run_demo

    logging.basicConfig(level="WARNING")
    config = kubeconfig or Settings().kubeconfig
    try:
        anyio.run(run_demo, config, Console())
    except DemoFailed as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [ZTDP_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [ZTDP_PORT]")] = None,
    log_level: Annotated[
        LogLevel, typer.Option(envvar="ZTDP_LOG_LEVEL", help="debug also shows tracebacks")
    ] = LogLevel.INFO,
    debug: Annotated[
        bool, typer.Option("--debug", help="log at debug level; a failure shows its traceback")
    ] = False,
) -> None:
    """Serve the v1 REST API (settings from config/ztdp.toml and ZTDP_* variables).

    If it cannot start, it says why in one line and exits non-zero: 2 for a bad setting,
    1 for anything else (the port, Redis, a plugin).
    """
    debug = debug or log_level is LogLevel.DEBUG
    logging.basicConfig(
        level=logging.DEBUG if debug else log_level.value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
        serve_api(settings, ready=lambda: _banner(settings), keep_start_logs=debug)
    except StartFailed as exc:
        if debug:
            console.print_exception()
        typer.echo(f"ztdp serve: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def worker(
    log_level: Annotated[
        LogLevel, typer.Option(envvar="ZTDP_LOG_LEVEL", help="debug also shows tracebacks")
    ] = LogLevel.INFO,
) -> None:
    """Run actors without the API, sharing them with the other workers (needs NATS and Redis).

    Stops on SIGINT or SIGTERM, handing its actors to the other workers at once.
    """
    from ztdp.cli.process import loop_factory
    from ztdp.cli.worker import run_worker
    from ztdp.errors import ZtdpError

    logging.basicConfig(
        level=log_level.value.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()

        def ready(supervisor: object) -> None:
            console.print(
                f"ZTDP {__version__} worker: mailboxes on NATS {settings.nats_url}, "
                f"state in Redis {settings.redis_url}, {settings.partitions} partitions"
            )

        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(run_worker(settings, ready))
    except StartFailed as exc:
        typer.echo(f"ztdp worker: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except ZtdpError as exc:
        typer.echo(f"ztdp worker: {' '.join(exc.detail.split())}", err=True)
        raise typer.Exit(1) from None


def _banner(settings: Settings) -> None:
    """Said once the server listens, never before: a failed start says only why."""
    where = settings.redis_url if settings.graph_store == "redis" else "this process's memory"
    console.print(f"ZTDP {__version__}: graph store [bold]{settings.graph_store}[/bold] ({where})")
    actors = "on NATS, shared with workers" if settings.mailbox == "nats" else "in this process"
    if settings.actors == "off":
        actors = "none here: `ztdp worker`s run them"
    console.print(f"state store {settings.state_backend}, actors {actors}")
    console.print(f"API on http://{settings.host}:{settings.port}/v1, docs at /docs")
    if settings.auth_enabled:
        console.print("authentication ON: send Authorization: Bearer <token>")
    else:
        console.print(
            "[bold yellow]authentication OFF[/bold yellow]: anyone who reaches this port acts "
            "as platform-admin (set ZTDP_AUTH=on to require tokens)"
        )
    console.print(f"event loop: {type(asyncio.get_event_loop()).__module__.split('.')[0]}")
