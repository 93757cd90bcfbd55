"""The client commands of `ztdp`: apply, plan, get, describe, status, events, deploy, delete,
runs. Each talks to a running server over HTTP (ztdp.cli.client) and imports what it needs
when it runs.

Exit codes: 0 success, 1 failure (the server refused, a deployment failed, the server is
unreachable), 2 usage (typer's, and bad files or options), 3 a policy denial.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ztdp.cli.client import Api

F = TypeVar("F", bound=Callable[..., Any])

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="ZTDP_SERVER", help="the ZTDP API [default: http://127.0.0.1:8080]"
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="ZTDP_TOKEN", help="API token", show_default=False),
]


def main(ctx: typer.Context, server: ServerOption = None, token: TokenOption = None) -> None:
    """ZTDP, the Zero Touch Developer Platform.

    Client commands talk to a running `ztdp serve`: --server / ZTDP_SERVER / `server` in
    ~/.config/ztdp/config.toml, and --token / ZTDP_TOKEN / `token` there. Exit codes: 0 done,
    1 failed, 2 usage, 3 denied by policy.
    """
    ctx.obj = {"server": server, "token": token}


def _api(ctx: typer.Context) -> Api:
    from ztdp.cli.client import Api

    obj = ctx.find_root().obj or {}
    return Api.resolve(obj.get("server"), obj.get("token"))


def _out() -> Console:
    from rich.console import Console

    # Into a pipe or a file, a table row stays one line (rich would fold it at 80 columns).
    width = None if sys.stdout.isatty() else 1000
    return Console(soft_wrap=True, highlight=False, width=width)


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def one_line_errors(fn: F) -> F:
    """A `CliError` becomes one line on stderr and its exit code: never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ztdp.cli.client import CliError

        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            _err().print(f"[red]error:[/red] {exc}", markup=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err().print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# --- kinds -------------------------------------------------------------------------------


class Kind(StrEnum):
    environments = "environments"
    applications = "applications"
    services = "services"
    versions = "versions"
    resources = "resources"
    policies = "policies"
    deployments = "deployments"
    runs = "runs"
    checks = "checks"
    approvals = "approvals"
    tokens = "tokens"


ALIASES = {
    "env": "environments",
    "environment": "environments",
    "app": "applications",
    "application": "applications",
    "svc": "services",
    "service": "services",
    "version": "versions",
    "res": "resources",
    "resource": "resources",
    "policy": "policies",
    "deploy": "deployments",
    "deployment": "deployments",
    "run": "runs",
    "check": "checks",
    "approval": "approvals",
    "token": "tokens",
}

NAME_SHAPES = {
    "services": "APP/SVC",
    "versions": "APP/SVC/VERSION",
    "deployments": "ENV/APP/SVC",
}


def _kind(text: str) -> Kind:
    from ztdp.cli.client import USAGE, CliError

    name = ALIASES.get(text.lower(), text.lower())
    try:
        return Kind(name)
    except ValueError:
        known = ", ".join(k.value for k in Kind)
        raise CliError(f"unknown kind {text!r} (known: {known})", USAGE) from None


def _parts(kind: Kind, name: str, count: int) -> list[str]:
    from ztdp.cli.client import USAGE, CliError

    parts = name.split("/")
    if len(parts) != count or not all(parts):
        raise CliError(
            f"a {kind.value[:-1]} is named {NAME_SHAPES[kind.value]}, not {name!r}", USAGE
        )
    return parts


def _path(kind: Kind, name: str) -> str:
    """The API path that reads (and deletes) one object of `kind`."""
    if kind is Kind.services:
        app, svc = _parts(kind, name, 2)
        return f"/v1/applications/{app}/services/{svc}"
    if kind is Kind.versions:
        app, svc, version = _parts(kind, name, 3)
        return f"/v1/applications/{app}/services/{svc}/versions/{version}"
    if kind is Kind.deployments:
        env, app, svc = _parts(kind, name, 3)
        return f"/v1/environments/{env}/deployments/{app}/{svc}"
    return f"/v1/{kind.value}/{name}"


def _list(api: Api, kind: Kind) -> list[dict[str, Any]]:
    """Every object of a kind; nested kinds are gathered from their parents."""
    if kind in (Kind.services, Kind.versions):
        found: list[dict[str, Any]] = []
        for app in api.call("GET", "/v1/applications"):
            name = app["metadata"]["name"]
            services = api.call("GET", f"/v1/applications/{name}/services")
            if kind is Kind.services:
                found += services
                continue
            for svc in services:
                path = f"/v1/applications/{name}/services/{svc['metadata']['name']}/versions"
                found += api.call("GET", path)
        return found
    if kind is Kind.deployments:
        found = []
        for env in api.call("GET", "/v1/environments"):
            name = env["metadata"]["name"]
            for dep in api.call("GET", f"/v1/environments/{name}/deployments"):
                found.append({"environment": name, **dep})
        return found
    listed: list[dict[str, Any]] = api.call("GET", f"/v1/{kind.value}")
    return listed


def _name_of(item: dict[str, Any]) -> str:
    meta = item.get("metadata")
    if isinstance(meta, dict) and "name" in meta:
        return str(meta["name"])
    if "version" in item and "service" in item:
        return f"{item.get('application')}/{item['service']}/{item['version']}"
    for key in ("id", "name"):
        if key in item:
            return str(item[key])
    return "?"


STATUS_STYLE = {
    "Ready": "green",
    "Succeeded": "green",
    "Running": "cyan",
    "Progressing": "cyan",
    "Pending": "cyan",
    "Failed": "red",
    "Blocked": "red",
    "Degraded": "yellow",
    "Drifted": "yellow",
}


def _styled(status: Any) -> str:
    text = str(status) if status is not None else ""
    style = STATUS_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def _rows(kind: Kind, items: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A table of a kind: the columns an operator looks for first."""
    if kind is Kind.deployments:
        head = ["ENVIRONMENT", "APPLICATION", "SERVICE", "VERSION", "STATUS", "REASON"]
        rows = [
            [
                str(d.get("environment", "")),
                str(d.get("application", "")),
                str(d.get("service", "")),
                str(d.get("version", "")),
                _styled(d.get("status")),
                str(d.get("reason") or ""),
            ]
            for d in items
        ]
        return head, rows
    if kind is Kind.runs:
        head = ["ID", "TRIGGER", "APPLICATION", "ENVIRONMENT", "STATUS", "STEPS", "CREATED"]
        rows = [
            [
                str(r.get("id", "")),
                str(r.get("trigger") or ""),
                str(r.get("application") or ""),
                str(r.get("environment") or ""),
                _styled(r.get("status")),
                str(len(r.get("steps") or [])),
                str(r.get("created_at") or "")[:19].replace("T", " "),
            ]
            for r in items
        ]
        return head, rows
    if kind is Kind.versions:
        head = ["APPLICATION", "SERVICE", "VERSION", "IMAGE", "OWNER"]
        rows = [
            [
                str(v.get("application", "")),
                str(v.get("service", "")),
                str(v.get("version", "")),
                str(v.get("image") or ""),
                str(v.get("owner") or ""),
            ]
            for v in items
        ]
        return head, rows
    head = ["NAME", "KIND", "OWNER", "REVISION", "DETAIL"]
    rows = []
    for item in items:
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        detail = ""
        if kind is Kind.services:
            detail = f"application {spec.get('application')}, port {spec.get('port')}"
        elif kind is Kind.environments:
            detail = str((item.get("status") or {}).get("target") or "no cluster")
        elif kind is Kind.resources:
            detail = str(spec.get("type") or spec.get("provider") or "")
        elif kind is Kind.policies:
            detail = str((spec.get("rule") or {}).get("type") or "")
        rows.append(
            [
                _name_of(item),
                str(item.get("kind", "")),
                str(meta.get("owner") or item.get("owner") or ""),
                str(meta.get("revision") or item.get("revision") or ""),
                detail,
            ]
        )
    return head, rows


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _print(data: Any, output: Output, table: Callable[[], None]) -> None:
    if output is Output.json:
        import json

        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif output is Output.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        table()


def _table(head: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in head:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _out().print(table)


# --- reading ------------------------------------------------------------------------------


@one_line_errors
def get(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="environments, applications, services, ...")],
    name: Annotated[
        str | None,
        typer.Argument(help="one object: NAME, APP/SVC, APP/SVC/VERSION or ENV/APP/SVC"),
    ] = None,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """List the objects of a kind, or read one."""
    api, chosen = _api(ctx), _kind(kind)
    if name is None:
        items = _list(api, chosen)
        _print(items, output, lambda: _table(*_rows(chosen, items)))
        return
    item = api.call("GET", _path(chosen, name))
    if chosen is Kind.deployments:
        item = {"environment": name.split("/")[0], **item}
    _print(item, output, lambda: _table(*_rows(chosen, [item])))


@one_line_errors
def describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="environments, applications, services, ...")],
    name: Annotated[str, typer.Argument(help="NAME, APP/SVC, APP/SVC/VERSION or ENV/APP/SVC")],
) -> None:
    """One object in full, with what is deployed of it and its last events."""
    import yaml

    api, chosen = _api(ctx), _kind(kind)
    item = api.call("GET", _path(chosen, name))
    out = _out()
    out.print(f"[bold]{chosen.value[:-1]} {name}[/bold]")
    out.print(yaml.safe_dump(item, sort_keys=False).rstrip(), markup=False)
    node = _node_of(chosen, name)
    if chosen is Kind.environments:
        deployed = api.call("GET", f"/v1/environments/{name}/deployments")
        if deployed:
            out.print("\n[bold]deployed here[/bold]")
            _table(*_rows(Kind.deployments, [{"environment": name, **d} for d in deployed]))
    if node is not None:
        events = api.call("GET", "/v1/events", params={"node": node, "limit": "10"})
        if events:
            out.print("\n[bold]last events[/bold]")
            for event in events:
                out.print(_event_line(event))


def _node_of(kind: Kind, name: str) -> str | None:
    """The graph node an object is, for its events."""
    if kind is Kind.deployments:
        env, app, svc = name.split("/")
        return f"deployment/{app}/{svc}@{env}"
    prefix = {
        Kind.environments: "environment",
        Kind.applications: "application",
        Kind.services: "service",
        Kind.versions: "version",
        Kind.resources: "resource",
        Kind.policies: "policy",
    }.get(kind)
    return f"{prefix}/{name}" if prefix else None


def _event_line(event: dict[str, Any]) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    kind = str(event.get("type", "")).removeprefix("io.ztdp.")
    what = data.get("status") or data.get("action") or data.get("op") or ""
    reason = data.get("reason") or data.get("error") or ""
    subject = event.get("subject") or ""
    time = str(event.get("time", ""))[:19].replace("T", " ")
    line = f"[dim]{time}[/dim] {kind:<14} {subject} {_styled(what)}"
    return f"{line} [dim]{reason}[/dim]" if reason else line


@one_line_errors
def status(ctx: typer.Context) -> None:
    """The control plane: stores, where deployments land, what the graph holds, deployments."""
    api = _api(ctx)
    st = api.call("GET", "/v1/status")
    out = _out()
    out.print(f"ZTDP {st.get('version')} at {api.server}")
    out.print(
        f"graph store {st.get('graph_store')}, state store {st.get('state_store')}, "
        f"mailbox {st.get('mailbox')}, event store {st.get('event_store')}, "
        f"authentication {st.get('authentication')}"
    )
    target = st.get("target")
    out.print(
        f"deployments land on: [yellow]{target}[/yellow]"
        if target
        else "deployments land on: [red]nothing (no kubeconfig, no sandbox)[/red]"
    )
    nodes = ", ".join(f"{n} {k}" for k, n in sorted((st.get("nodes") or {}).items()))
    out.print(f"graph revision {st.get('revision')}: {nodes or 'empty'}")
    deployments = _list(api, Kind.deployments)
    if deployments:
        _table(*_rows(Kind.deployments, deployments))


@one_line_errors
def runs(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Argument(help="one run's id: its steps")] = None,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """The runs of the server, or one run and its steps."""
    api = _api(ctx)
    if run is None:
        items = api.call("GET", "/v1/runs")
        _print(items, output, lambda: _table(*_rows(Kind.runs, items)))
        return
    item = api.call("GET", f"/v1/runs/{run}")

    def table() -> None:
        _table(*_rows(Kind.runs, [item]))
        rows = [
            [
                str(s.get("node")),
                str(s.get("action")),
                _styled(s.get("status")),
                s.get("error") or "",
            ]
            for s in item.get("steps") or []
        ]
        _table(["NODE", "ACTION", "STATUS", "ERROR"], rows)

    _print(item, output, table)


@one_line_errors
def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream new events")] = False,
    node: Annotated[str | None, typer.Option(help="only about this node")] = None,
    run: Annotated[str | None, typer.Option(help="only of this run")] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="only types io.ztdp.<TYPE>*, e.g. actor.status")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """The latest events; with --follow, every new one as it happens (Ctrl-C stops; -o json
    writes one event a line)."""
    api = _api(ctx)
    params = {k: v for k, v in {"node": node, "run": run, "type": type_}.items() if v}
    out = _out()

    def show(event: dict[str, Any]) -> None:
        if output is Output.table:
            out.print(_event_line(event))
        elif output is Output.json:  # one event a line (JSON Lines), for tools to read
            import json

            sys.stdout.write(json.dumps(event) + "\n")
        else:
            _print(event, output, lambda: None)
            sys.stdout.write("---\n")
        sys.stdout.flush()

    if follow:
        for event in api.stream_events(params):
            show(event)
        return
    found = api.call("GET", "/v1/events", params={**params, "limit": str(limit)})
    if output is not Output.table:
        _print(found, output, lambda: None)
        return
    for event in found:
        show(event)


# --- changing -----------------------------------------------------------------------------


def load_contracts(paths: list[Path]) -> list[dict[str, Any]]:
    """Contracts from files and folders: YAML (documents separated by `---`) or JSON (an
    object or an array), each document a contract or a list of them. A folder gives its
    *.yaml, *.yml and *.json files in name order (not its subfolders)."""
    import json

    import yaml

    from ztdp.cli.client import USAGE, CliError

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if not found:
                raise CliError(f"{path}: no .yaml, .yml or .json file in it", USAGE)
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"{path}: no such file or folder", USAGE)
    contracts: list[dict[str, Any]] = []
    for file in files:
        try:
            text = file.read_text()
            docs = [json.loads(text)] if file.suffix == ".json" else list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise CliError(f"{file}: cannot read it: {reason}", USAGE) from exc
        for number, doc in enumerate(docs, 1):
            for item in doc if isinstance(doc, list) else [] if doc is None else [doc]:
                if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                    raise CliError(
                        f"{file} (document {number}): a contract is an object with a kind", USAGE
                    )
                contracts.append(item)
    if not contracts:
        raise CliError("no contracts in " + ", ".join(map(str, paths)), USAGE)
    return contracts


ACTION_STYLE = {
    "created": ("+", "green"),
    "create": ("+", "green"),
    "updated": ("~", "yellow"),
    "update": ("~", "yellow"),
    "deployed": ("→", "cyan"),
    "unchanged": ("=", "dim"),
    "denied": ("✗", "red"),
    "delete": ("-", "red"),
}


def _mark(action: str) -> str:
    sign, style = ACTION_STYLE.get(action, ("·", "white"))
    return f"[{style}]{sign} {action}[/{style}]"


def show_submission(out: Console, answer: dict[str, Any], *, dry: bool) -> None:
    """What a set of contracts does: per contract, then the plan per environment with each
    step's diff and policy verdicts."""
    from rich.markup import escape

    if answer.get("results"):
        out.print("[bold]Contracts[/bold]" + (" (dry run: nothing written)" if dry else ""))
    for result in answer.get("results", []):
        out.print(f"  {_mark(str(result.get('action')))} {result.get('kind')} {result.get('name')}")
        decision = result.get("decision")
        if isinstance(decision, dict):
            _show_decision(out, decision, indent="      ")
    for plan in answer.get("plans", []):
        env = plan.get("environment")
        app = plan.get("application")
        summary = ", ".join(f"{n} {a}" for a, n in (plan.get("summary") or {}).items() if n)
        out.print(f"\n[bold]Plan[/bold] {app or ''} in [bold]{env}[/bold]: {summary or 'nothing'}")
        for wave in plan.get("waves", []):
            for step in wave.get("steps", []):
                action = str(step.get("action"))
                if action in ("unchanged", "noop"):
                    continue
                out.print(f"  {_mark(action)} {step.get('node')}")
                for change in step.get("diff") or []:
                    before, after = change.get("before"), change.get("after")
                    line = f"      {escape(str(change.get('path')))}: "
                    if before is not None:
                        line += f"[red]- {escape(_short(before))}[/red] "
                    line += f"[green]+ {escape(_short(after))}[/green]"
                    out.print(line)
                decision = step.get("decision")
                if isinstance(decision, dict):
                    _show_decision(out, decision, indent="      ")
                if step.get("blocked_by"):
                    out.print(f"      [red]blocked: {escape(str(step['blocked_by']))}[/red]")


def _short(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _show_decision(out: Console, decision: dict[str, Any], *, indent: str) -> None:
    from rich.markup import escape

    failed = decision.get("failed")
    if failed is None:  # a full decision: its results
        failed = [r for r in decision.get("results") or [] if not r.get("passed")]
        passed = [r for r in decision.get("results") or [] if r.get("passed")]
    else:
        passed = []
    verdict = "[green]allowed[/green]" if decision.get("allowed") else "[red]denied[/red]"
    out.print(f"{indent}policy: {verdict}")
    for r in passed:
        out.print(f"{indent}  [green]✓[/green] {r.get('policy')} ({r.get('type')})")
    for r in failed:
        mode = r.get("mode")
        mark = "[yellow]! audit[/yellow]" if mode == "audit" else "[red]✗[/red]"
        out.print(
            f"{indent}  {mark} {r.get('policy')} ({r.get('type')}): {escape(str(r.get('reason')))}"
        )


def _denied(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in answer.get("results", []) if r.get("action") == "denied"]


def _watched_nodes(answer: dict[str, Any]) -> list[str]:
    """The nodes a set realises: each plan step that does something."""
    nodes: list[str] = []
    for plan in answer.get("plans", []):
        for wave in plan.get("waves", []):
            for step in wave.get("steps", []):
                if step.get("action") not in ("unchanged", "noop", "delete"):
                    nodes.append(str(step.get("node")))
    return list(dict.fromkeys(nodes))


DONE = {"Ready"}
BROKEN = {"Failed", "Blocked"}


def follow_progress(
    api: Api, out: Console, nodes: list[str], runs: list[str], timeout: float
) -> bool:
    """Show each node's status as it changes, from the event stream, until every one is
    Ready (True) or one is Failed or Blocked and the rest settled (False)."""
    import queue
    import threading
    import time

    from ztdp.cli.client import CliError

    if not nodes:
        return True
    seen: dict[str, str] = {}
    events: queue.Queue[dict[str, Any] | Exception] = queue.Queue()

    def listen() -> None:
        try:
            for event in api.stream_events({"type": "actor.status"}):
                events.put(event)
        except CliError as exc:
            events.put(exc)

    threading.Thread(target=listen, daemon=True).start()  # ends with the process

    def note(node: str, status: str, reason: str | None) -> None:
        if seen.get(node) == status:
            return
        seen[node] = status
        why = f" [dim]{reason}[/dim]" if reason and status not in DONE else ""
        out.print(f"  {node}: {_styled(status)}{why}")

    def poll() -> None:
        """What the API says now: catches what happened before the stream was open."""
        for node in nodes:
            found = _status_of(api, node)
            if found is not None:
                note(node, *found)

    deadline = time.monotonic() + timeout
    out.print("\n[bold]Progress[/bold]")
    poll()
    next_poll = time.monotonic() + 2.0
    while not all(seen.get(n) in DONE | BROKEN for n in nodes):
        if time.monotonic() > deadline:
            pending = [n for n in nodes if seen.get(n) not in DONE | BROKEN]
            raise CliError(f"timed out after {timeout:.0f} s waiting for {', '.join(pending)}")
        try:
            item = events.get(timeout=0.5)
        except queue.Empty:
            item = None
        if isinstance(item, Exception):
            raise item
        if item is not None:
            subject = str(item.get("subject", ""))
            data = item.get("data") if isinstance(item.get("data"), dict) else {}
            assert isinstance(data, dict)
            if subject in nodes and data.get("status"):
                note(subject, str(data["status"]), data.get("reason"))
        if time.monotonic() > next_poll:
            poll()
            next_poll = time.monotonic() + 2.0
    for run in runs:
        found_run = api.call("GET", f"/v1/runs/{run}")
        out.print(f"  run {run}: {_styled(found_run.get('status'))}")
    return all(seen.get(n) in DONE for n in nodes)


def _status_of(api: Api, node: str) -> tuple[str, str | None] | None:
    """A deployment's or a resource's status as the API reads it now, if it has one."""
    from ztdp.cli.client import CliError

    kind, _, rest = node.partition("/")
    name, _, env = rest.partition("@")
    if kind == "deployment" and env:
        try:
            dep = api.call("GET", f"/v1/environments/{env}/deployments/{name}")
        except CliError:
            return None
        return str(dep.get("status")), dep.get("reason")
    events = api.call(
        "GET", "/v1/events", params={"node": node, "type": "actor.status", "limit": "1"}
    )
    for event in events[-1:]:
        data = event.get("data") or {}
        if data.get("status"):
            return str(data["status"]), data.get("reason")
    return None


@one_line_errors
def apply(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Option("-f", "--file", help="a contract file (YAML or JSON) or a folder of them"),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the plan, change nothing")
    ] = False,
    wait: Annotated[bool, typer.Option(help="follow each node until it is Ready or failed")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for Ready")] = 300.0,
) -> None:
    """Apply contracts: show the plan and the policy verdicts, ask, apply, follow to Ready.

    Exit 0 when everything is Ready, 1 when something failed, 3 when policy denies a
    deployment (nothing is written then)."""
    from ztdp.cli.client import DENIED, FAILED, USAGE, CliError

    api = _api(ctx)
    contracts = load_contracts(files)
    out = _out()
    preview = api.call("POST", "/v1/contracts", body=contracts, params={"dry_run": "true"})
    show_submission(out, preview, dry=True)
    denied = _denied(preview)
    if denied:
        names = ", ".join(str(d.get("name")) for d in denied)
        raise CliError(f"denied by policy: {names}; nothing was applied", DENIED)
    changing = [r for r in preview.get("results", []) if r.get("action") != "unchanged"]
    if not changing:
        out.print("\nNothing to change: the server already holds these contracts.")
        if dry_run or not wait:
            return
    if dry_run:
        return
    if changing and not yes:
        if not sys.stdin.isatty():
            raise CliError("not a terminal: pass --yes to apply without asking", USAGE)
        if not typer.confirm("\nApply these changes?", default=False):
            out.print("Nothing applied.")
            raise typer.Exit(FAILED)
    answer = api.call("POST", "/v1/contracts", body=contracts) if changing else preview
    if changing:
        out.print(f"\n[green]Applied[/green]: graph revision {answer.get('revision')}")
    if not wait:
        return
    ok = follow_progress(api, out, _watched_nodes(preview), answer.get("runs", []), timeout)
    if not ok:
        raise CliError("not every node became Ready (see above)", FAILED)
    out.print("[green]All Ready.[/green]")


@one_line_errors
def plan(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--file", help="plan these contracts (a dry run of apply)"),
    ] = None,
    application: Annotated[
        str | None, typer.Option("--app", help="plan this application (with --env)")
    ] = None,
    environment: Annotated[str | None, typer.Option("--env", help="in this environment")] = None,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """The plan of a set of contracts (-f), or of an application in an environment."""
    from ztdp.cli.client import DENIED, USAGE, CliError

    api = _api(ctx)
    if files:
        contracts = load_contracts(files)
        answer = api.call("POST", "/v1/contracts", body=contracts, params={"dry_run": "true"})
        _print(answer, output, lambda: show_submission(_out(), answer, dry=True))
        if _denied(answer):
            raise typer.Exit(DENIED)
        return
    if not application:
        raise CliError("give -f FILE, or --app APP (and --env ENV)", USAGE)
    params = {"environment": environment} if environment else None
    found = api.call("GET", f"/v1/applications/{application}/plan", params=params)
    _print(found, output, lambda: show_submission(_out(), {"plans": [found]}, dry=True))


@one_line_errors
def deploy(
    ctx: typer.Context,
    application: Annotated[str, typer.Argument(metavar="APP")],
    service: Annotated[str, typer.Argument(metavar="SVC")],
    version: Annotated[str, typer.Argument(metavar="VERSION")],
    environment: Annotated[str, typer.Argument(metavar="ENV")],
    wait: Annotated[bool, typer.Option("--wait", help="follow it until Ready or failed")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="the decision and plan only")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for Ready")] = 300.0,
) -> None:
    """Deploy a version of a service to an environment, if policy allows (exit 3 if not)."""
    from ztdp.cli.client import DENIED, FAILED, CliError

    api = _api(ctx)
    path = f"/v1/applications/{application}/services/{service}/versions/{version}/deploy"
    body = {"environment": environment}
    out = _out()
    if dry_run:
        answer = api.call("POST", path, body=body, params={"dry_run": "true"})
        decision = answer.get("decision") or {}
        _show_decision(out, decision, indent="")
        if answer.get("plan"):
            show_submission(out, {"plans": [answer["plan"]]}, dry=True)
        if not decision.get("allowed", True):
            raise typer.Exit(DENIED)
        return
    answer = api.call("POST", path, body=body)
    run = answer.get("run")
    out.print(f"deploying {application}/{service} {version} to {environment}: run {run}")
    if not wait:
        return
    node = f"deployment/{application}/{service}@{environment}"
    if not follow_progress(api, out, [node], [run] if run else [], timeout):
        raise CliError(f"{node} did not become Ready (see above)", FAILED)


@one_line_errors
def delete(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="environments, applications, services, ...")],
    name: Annotated[str, typer.Argument(help="NAME, APP/SVC, APP/SVC/VERSION or ENV/APP/SVC")],
    cascade: Annotated[
        bool, typer.Option("--cascade", help="also delete what depends on it")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go")] = False,
) -> None:
    """Delete an object (a deployment: undeploy it). Refused while something depends on it,
    unless --cascade."""
    api = _api(ctx)
    chosen = _kind(kind)
    params = {k: "true" for k, on in (("cascade", cascade), ("dry_run", dry_run)) if on}
    answer = api.call("DELETE", _path(chosen, name), params=params or None)
    out = _out()
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {chosen.value[:-1]} {name}")
    if isinstance(answer, dict):
        for key in ("deleted", "unlinked"):
            for item in answer.get(key) or []:
                out.print(f"  {key}: {item}")
        for run in answer.get("runs") or []:
            out.print(f"  run {run}")


def register(app: typer.Typer) -> None:
    for command in (apply, plan, get, describe, status, events, deploy, delete, runs):
        app.command()(command)
