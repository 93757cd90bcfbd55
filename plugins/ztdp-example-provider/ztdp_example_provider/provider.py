"""An example provider to copy: a resource realised as a JSON file in a directory.

A resource whose resource type names the provider `files` becomes, in each environment, the
file `<directory>/<resource>@<environment>.json`, holding the resource's desired state and a
mark naming its node. `directory` is the provider's settings section: the server's configured
default (`ZTDP_PROVIDERS__FILES__DIRECTORY`) overlaid by the environment's
`spec.providers.files.directory`.

What it shows: a settings model; `validate` refusing what no retry can fix; idempotent calls;
`observe` reporting what exists (None when nothing does); `delete` removing only what carries
its mark; failures sorted into `TemporaryError` (a retry may fix it) and `PermanentError`.
It offers no `watch`: nothing tells it that a file changed, so the core polls with `observe`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ztdp.errors import PermanentError, TemporaryError, ZtdpError
from ztdp.planner import diff as field_diff
from ztdp.providers import Health, Observation, Resource, Target

MARK = "ztdp.io/node"  # whose file it is: apply and delete touch only files marked with the node
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # names become file names: no "../"
MAX_BYTES = 64 * 1024


class FilesSettings(BaseModel):
    """The settings section. The core validates it on every environment write (a 422 naming
    `spec.providers.files.directory`) and before every call, and hands it over as a dict."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, not ignored

    directory: str = Field(description="absolute path of the directory the files go in")

    @field_validator("directory")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value):  # relative to what? the server's working directory varies
            raise ValueError("must be an absolute path")
        return value


class FilesProvider:
    """The `files` provider (see the module). Its entry point's name must equal `kind`."""

    kind = "files"
    settings_model = FilesSettings

    async def validate(self, *, resource: Resource) -> None:
        # The core calls this before every apply: refuse here what no retry can fix.
        if not LABEL.match(resource.name):
            raise PermanentError(f"{resource.node}: the name must be a DNS label (a file name)")
        if not isinstance(resource.desired.get("config_ref"), str):
            raise PermanentError(f"{resource.node}: desired.config_ref must be a string")
        if len(json.dumps(resource.desired)) > MAX_BYTES:
            raise PermanentError(f"{resource.node}: the desired state exceeds {MAX_BYTES} bytes")

    async def diff(
        self, *, desired: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [dict(change) for change in field_diff(observed, desired)]

    async def apply(self, *, resource: Resource, target: Target) -> Observation:
        await self.validate(resource=resource)
        path = _path(resource, target)
        with _classified(resource.node):
            found = await asyncio.to_thread(_read, path)  # blocking I/O off the event loop
            if found is not None and found.get(MARK) != resource.node:
                raise PermanentError(f"{resource.node}: {path} exists and is not ZTDP's")
            if found is None or found.get("desired") != resource.desired:  # write only changes
                content = {MARK: resource.node, "desired": dict(resource.desired)}
                await asyncio.to_thread(_write, path, content)
        return Observation(state=dict(resource.desired), health="Ready", message=f"file {path}")

    async def observe(self, *, resource: Resource, target: Target) -> Observation | None:
        path = _path(resource, target)
        with _classified(resource.node):
            found = await asyncio.to_thread(_read, path)
        if found is None:
            return None
        if found.get(MARK) != resource.node:  # someone else's file: say so, never adopt it
            return Observation(state={}, health="Degraded", message=f"{path} is not ZTDP's")
        return Observation(state=found.get("desired", {}), health="Ready", message=f"file {path}")

    async def delete(self, *, resource: Resource, target: Target) -> None:
        path = _path(resource, target)
        with _classified(resource.node):
            found = await asyncio.to_thread(_read, path)
            if found is not None and found.get(MARK) == resource.node:  # ours only
                await asyncio.to_thread(path.unlink, missing_ok=True)  # gone already: fine

    async def health(self, *, resource: Resource, target: Target) -> Health:
        seen = await self.observe(resource=resource, target=target)
        return seen.health if seen is not None else "Degraded"

    async def aclose(self) -> None:
        """Nothing to release; a provider holding connections or tasks closes them here."""


def _path(resource: Resource, target: Target) -> Path:
    try:  # validated by the core already; parsed again to get a typed object
        settings = FilesSettings.model_validate(target.settings)
    except ValidationError as exc:
        raise PermanentError(
            f"{resource.node}: invalid files settings: {exc.errors()[0]['msg']}"
        ) from None
    if not LABEL.match(target.environment) or not LABEL.match(resource.name):
        raise PermanentError(f"{resource.node}: names must be DNS labels to make a file name")
    return Path(settings.directory) / f"{resource.name}@{target.environment}.json"


def _read(path: Path) -> dict[str, Any] | None:
    """The file's content ({} if it is not a JSON object), None if there is no file."""
    path.parent.stat()  # a missing directory raises: not mounted yet? (temporary)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _write(path: Path, content: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True))
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half
    finally:
        tmp.unlink(missing_ok=True)  # left only by a failed write (a full disk, say)


@contextmanager
def _classified(node: str) -> Iterator[None]:
    """What the file system raises, as the seam's two errors (anything else is permanent)."""
    try:
        yield
    except ZtdpError:
        raise
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:  # a human must fix
        raise PermanentError(f"{node}: {exc.strerror}: {exc.filename}") from None
    except OSError as exc:  # the directory missing, the disk full: a retry may succeed
        raise TemporaryError(f"{node}: {exc.strerror}: {exc.filename}", retry_after=5) from None
