"""The `ztdp` command."""

from __future__ import annotations

import logging
from typing import Annotated

import anyio
import typer
from aiohttp import web
from pydantic import ValidationError
from rich.console import Console

from ztdp import __version__
from ztdp.api.app import PARSER_LIMIT, create_app
from ztdp.cli.process import loop_factory, settle_heap
from ztdp.settings import Settings

app = typer.Typer(help="ZTDP, the Zero Touch Developer Platform.", no_args_is_help=True)
console = Console(stderr=True)


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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [ZTDP_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [ZTDP_PORT]")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve the v1 REST API (settings from config/ztdp.toml and ZTDP_* variables)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    where = settings.redis_url if settings.graph_store == "redis" else "this process's memory"
    console.print(f"ZTDP {__version__}: graph store [bold]{settings.graph_store}[/bold] ({where})")
    console.print(f"API on http://{settings.host}:{settings.port}/v1, docs at /docs")
    if settings.auth_enabled:
        console.print("authentication ON: send Authorization: Bearer <token>")
    else:
        console.print(
            "[bold yellow]authentication OFF[/bold yellow]: anyone who reaches this port acts "
            "as platform-admin (set ZTDP_AUTH=on to require tokens)"
        )
    loop = loop_factory(settings.event_loop)()
    console.print(f"event loop: {type(loop).__module__.split('.')[0]}")
    api = create_app(settings)

    async def settle(_: web.Application) -> None:
        settle_heap()  # last of the start-up hooks: the stores and plugins are loaded

    api.on_startup.append(settle)
    web.run_app(
        api,
        host=settings.host,
        port=settings.port,
        print=None,
        loop=loop,
        max_line_size=PARSER_LIMIT,
        max_field_size=PARSER_LIMIT,
    )
