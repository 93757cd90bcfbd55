"""The CLI's side of the API: where the server is, the token, one call, one readable error.

Settings of the client, first found wins: the command-line option (`--server`, `--token`),
the variable (`ZTDP_SERVER`, `ZTDP_TOKEN`), the file `$XDG_CONFIG_HOME/ztdp/config.toml`
(`~/.config/ztdp/config.toml`; another with `ZTDP_CLIENT_CONFIG`) with keys `server` and
`token`, then `http://127.0.0.1:8080` without a token.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"
RETRY_FOR = 20.0  # seconds a 503 with Retry-After is retried

# Exit codes (README, "The CLI"): typer's own usage errors are 2 as well.
OK, FAILED, USAGE, DENIED = 0, 1, 2, 3


class CliError(Exception):
    """A failure the CLI reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


def config_file() -> Path:
    explicit = os.environ.get("ZTDP_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ztdp" / "config.toml"


def read_config() -> dict[str, Any]:
    path = config_file()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the CLI configuration {path}: {exc}", USAGE) from exc
    unknown = set(data) - {"server", "token"}
    if unknown:
        raise CliError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: server, token)", USAGE
        )
    return data


@dataclass
class Api:
    server: str
    token: str | None
    timeout: float = 30.0

    @classmethod
    def resolve(cls, server: str | None, token: str | None) -> Api:
        """From the options (typer has already read ZTDP_SERVER and ZTDP_TOKEN into them)."""
        config = read_config() if server is None or token is None else {}
        chosen = server or config.get("server") or DEFAULT_SERVER
        if not isinstance(chosen, str) or not chosen.startswith(("http://", "https://")):
            raise CliError(f"the server must be an http(s) URL, not {chosen!r}", USAGE)
        secret = token or config.get("token")
        return cls(server=chosen.rstrip("/"), token=secret if isinstance(secret, str) else None)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **(extra or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """The decoded answer of a 2xx; otherwise a `CliError` naming the problem.

        A 503 with `Retry-After` (a server still starting, a store briefly away) is tried
        again after the time it asks, for up to `RETRY_FOR` seconds: ZTDP applies nothing it
        answers 503 to, so a write is retried as safely as a read."""
        give_up = time.monotonic() + RETRY_FOR
        while True:
            try:
                response = httpx.request(
                    method,
                    self.server + path,
                    json=body,
                    params=params,
                    headers=self._headers(),
                    timeout=self.timeout,
                )
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach ZTDP at {self.server}: {_reason(exc)}") from exc
            wait = _retry_after(response)
            if wait is None or time.monotonic() + wait > give_up:
                break
            time.sleep(wait)
        if response.status_code >= 400:
            raise problem_error(method, path, response.status_code, response.content)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"{method} {path}: the server's answer is not JSON") from exc

    def stream_events(self, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen (Server-Sent Events), until the server ends the stream."""
        headers = self._headers({"Accept": "text/event-stream"})
        timeout = httpx.Timeout(self.timeout, read=None)  # a quiet stream is not a failure
        try:
            with httpx.stream(
                "GET", self.server + "/v1/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise problem_error("GET", "/v1/events", response.status_code, response.content)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = _json("\n".join(data))
                        data = []
                        if isinstance(event, dict):
                            yield event
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach ZTDP at {self.server}: {_reason(exc)}") from exc


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 503 asks to wait before trying again; None for any other answer."""
    if response.status_code != 503:
        return None
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 0.1), 5.0)
    except ValueError:
        return None


def _json(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return None


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or unreachable ({text})"
    return text


def problem_error(method: str, path: str, status: int, content: bytes) -> CliError:
    """One line from a problem+json answer (its title and detail), with the exit code: 3 for
    a policy denial (a 403 carrying a `decision`), 1 otherwise."""
    problem = _json(content.decode("utf-8", "replace")) if content else None
    if not isinstance(problem, dict):
        return CliError(f"{method} {path}: HTTP {status}")
    title = problem.get("title") or f"HTTP {status}"
    detail = problem.get("detail") or ""
    fields = [
        f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg', '')}"
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    message = f"{title}: {detail}" if detail else title
    if fields and not detail:
        message += ": " + "; ".join(fields[:5])
    if status == 401:
        message += " (set ZTDP_TOKEN, --token or the token in the CLI configuration)"
    code = DENIED if status == 403 and problem.get("decision") else FAILED
    return CliError(f"{message} [{status}]", code)
