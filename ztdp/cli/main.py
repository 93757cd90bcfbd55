"""The `ztdp` command.

Only typer is imported here: each command imports what it needs when it runs, so that
`ztdp --help` and the client commands start at once (the server's modules take a second).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ztdp import __version__
from ztdp.cli import commands

if TYPE_CHECKING:
    from ztdp.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # a line is a line, whatever the width


app.callback()(commands.main)
commands.register(app)


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
    import anyio
    from rich.console import Console

    from ztdp.cli.demo import DemoFailed, run_demo
    from ztdp.settings import Settings

    logging.basicConfig(level="WARNING")
    config = kubeconfig or Settings().kubeconfig
    try:
        anyio.run(run_demo, config, Console())
    except DemoFailed as exc:
        _console().print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None


class Sandbox(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


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
    sandbox: Annotated[
        Sandbox,
        typer.Option(
            envvar="ZTDP_SANDBOX",
            help="auto: with no kubeconfig set, the embedded default (memory store, actors "
            "here) starts a local Kubernetes API emulator and deploys there; on: always when "
            "no kubeconfig is set; off: never",
        ),
    ] = Sandbox.AUTO,
) -> None:
    """Serve the v1 REST API (settings from config/ztdp.toml and ZTDP_* variables).

    If it cannot start, it says why in one line and exits non-zero: 2 for a bad setting,
    1 for anything else (the port, Redis, a plugin).
    """
    from ztdp.cli.serving import StartFailed, find_sandbox, load_settings
    from ztdp.cli.serving import serve as serve_api

    console = _console()
    debug = debug or log_level is LogLevel.DEBUG
    logging.basicConfig(
        level=logging.DEBUG if debug else log_level.value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
        factory = None
        wanted = sandbox is Sandbox.ON or (sandbox is Sandbox.AUTO and not settings.distributed)
        if wanted and not settings.kubeconfig:
            factory = find_sandbox()
            if factory is None and sandbox is Sandbox.ON:
                raise StartFailed(
                    "ZTDP_SANDBOX=on but the Kubernetes sandbox is not installed: pip install "
                    "-e 'plugins/ztdp-kubernetes[sandbox]' (make setup does)",
                    exit_code=2,
                )
        serve_api(
            settings,
            ready=lambda s, box: _banner(console, s, box),
            keep_start_logs=debug,
            sandbox=factory,
        )
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
    import asyncio

    from ztdp.cli.process import loop_factory
    from ztdp.cli.serving import StartFailed, load_settings
    from ztdp.cli.worker import run_worker
    from ztdp.errors import ZtdpError

    console = _console()

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


def _banner(console: Any, settings: Settings, box: Any) -> None:
    """Said once the server is up, never before: a failed start says only why."""
    import asyncio

    from ztdp.cli.serving import SANDBOX_NOTE

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
    if box is not None:
        console.print(
            f"[bold yellow]Kubernetes: {SANDBOX_NOTE}[/bold yellow] on {box.url}, started "
            "because no kubeconfig is set (ZTDP_KUBECONFIG). Deployments are stored and reported "
            "Ready, but no container runs. See what was created:\n"
            f"  KUBECONFIG={box.kubeconfig} kubectl get namespaces,deployments,services -A\n"
            f"  curl {box.url}/apis/apps/v1/deployments"
        )
    elif settings.kubeconfig:
        console.print(f"Kubernetes: the cluster of kubeconfig {settings.kubeconfig}")
    else:
        console.print(
            "Kubernetes: none (no kubeconfig set, sandbox off): deploys to environments that "
            "name no cluster fail"
        )
    console.print(f"event loop: {type(asyncio.get_event_loop()).__module__.split('.')[0]}")
