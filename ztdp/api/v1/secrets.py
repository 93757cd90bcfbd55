"""Secrets of an application in an environment: write-only.

Values go in (create, rotate) and never come out: every read answers metadata. The values are
kept encrypted by the secret store (`ztdp.secrets`); events record the operation, its secret
and version, never the value.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from ztdp.api.access import READ, admin, path_app, team
from ztdp.api.keys import CATALOG, EVENTS, RUNTIME, SECRETS, SETTINGS, identity_of
from ztdp.api.routing import Reply
from ztdp.api.v1.common import READ_ERRORS, WRITE, param, router
from ztdp.contracts import DnsLabel, SecretName
from ztdp.errors import InvalidInput, NotFound
from ztdp.events import make_event
from ztdp.graph import NodeKind, node_id
from ztdp.secrets import SecretInfo

MAX_VALUE = 1_048_576  # the largest `secret_max_bytes` allows; the setting decides below it

SecretValue = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_VALUE),
    Field(description="the value; never shown again (at most secret_max_bytes bytes)"),
]


class NewSecret(BaseModel):
    model_config = {"extra": "forbid"}
    name: DnsLabel
    value: SecretValue


class SecretRotation(BaseModel):
    model_config = {"extra": "forbid"}
    value: SecretValue | None = Field(
        default=None,
        description="the new value; leave it out for a provider-generated secret, whose "
        "provider then generates a new one",
    )


class SecretMetadata(BaseModel):
    """What is shown of a secret: never its value."""

    application: DnsLabel
    environment: DnsLabel
    name: SecretName
    version: int = Field(ge=1, description="grows by one at each rotation")
    created_at: str
    updated_at: str
    created_by: str
    updated_by: str
    generated_by: str | None = Field(
        description="the node whose provider generated it (rotating it asks for a new one)"
    )


class SecretRotated(SecretMetadata):
    run: str | None = Field(
        default=None,
        description="a provider-generated secret: the run applying its resource again and "
        "the deployments using it (/v1/runs/{id}); its new value is the next version",
    )


BASE = "/v1/applications/{app}/environments/{env}/secrets"
ONE = BASE + "/{secret}"
MANAGE = team("manage this application's secrets", path_app)


async def _scope(request: web.Request) -> tuple[str, str]:
    """The path's application and environment, both existing (else 404)."""
    app, env = param(request, "app"), param(request, "env")
    graph = await request.app[CATALOG].graph()
    if node_id(NodeKind.APPLICATION, app) not in graph:
        raise NotFound(f"application {app} does not exist")
    if node_id(NodeKind.ENVIRONMENT, env) not in graph:
        raise NotFound(f"environment {env} does not exist")
    return app, env


def _checked(request: web.Request, value: str) -> str:
    limit = request.app[SETTINGS].secret_max_bytes
    size = len(value.encode())
    if size > limit:
        raise InvalidInput(
            f"value is {size} bytes; a secret holds at most {limit} (secret_max_bytes)",
            field="value",
        )
    return value


async def _record(request: web.Request, what: str, info: SecretInfo) -> None:
    """An event of the operation: the secret and its version, never its value."""
    actor = identity_of(request).principal
    await request.app[EVENTS].publish(
        make_event(
            f"secret.{what}",
            subject=f"secret/{info.application}/{info.name}@{info.environment}",
            data={"name": info.name, "version": info.version, "generated_by": info.generated_by},
            actor=actor,
        )
    )


def _shown(info: SecretInfo) -> SecretMetadata:
    return SecretMetadata(**info.as_json())


@router.add(
    "GET",
    BASE,
    "List an application's secrets in an environment (metadata only, never values)",
    tag="secrets",
    responses={200: list[SecretMetadata], **READ_ERRORS},
    access=READ,
)
async def list_secrets(request: web.Request, body: None) -> Reply:
    app, env = await _scope(request)
    found = await request.app[SECRETS].list(application=app, environment=env)
    return 200, [_shown(i) for i in found]


@router.add(
    "POST",
    BASE,
    "Create a secret (write-only: its value is never shown again)",
    tag="secrets",
    body=NewSecret,
    responses={201: SecretMetadata, **WRITE},
    access=MANAGE,
)
async def create_secret(request: web.Request, body: NewSecret) -> Reply:
    app, env = await _scope(request)
    info = await request.app[SECRETS].put(
        application=app,
        environment=env,
        name=body.name,
        value=_checked(request, body.value),
        actor=identity_of(request).principal,
    )
    await _record(request, "created", info)
    return 201, _shown(info)


@router.add(
    "GET",
    ONE,
    "Read a secret's metadata (never its value)",
    tag="secrets",
    responses={200: SecretMetadata, **READ_ERRORS},
    access=READ,
)
async def get_secret(request: web.Request, body: None) -> Reply:
    app, env = await _scope(request)
    info = await request.app[SECRETS].info(
        application=app, environment=env, name=param(request, "secret")
    )
    return 200, _shown(info)


@router.add(
    "POST",
    ONE + "/rotate",
    "Rotate a secret: a new value, the next version; deployments using it are rolled",
    tag="secrets",
    body=SecretRotation,
    responses={200: SecretRotated, **WRITE},
    access=MANAGE,
)
async def rotate_secret(request: web.Request, body: SecretRotation) -> Reply:
    """A provider-generated secret is rotated without a value: its resource is applied again
    without its former outputs, so its provider generates new ones."""
    app, env = await _scope(request)
    name = param(request, "secret")
    store = request.app[SECRETS]
    current = await store.info(application=app, environment=env, name=name)
    run = None
    if body.value is None:
        if current.generated_by is None:
            raise InvalidInput(
                f"value: required to rotate secret {name}, which no provider generated",
                field="value",
            )
        info, started = await request.app[RUNTIME].regenerate(current)
        run = None if started is None else started.id
    else:
        if current.generated_by is not None:
            raise InvalidInput(
                f"value: secret {name} is generated by {current.generated_by}; rotate it "
                "without a value and its provider generates the next one",
                field="value",
            )
        info = await store.rotate(
            application=app,
            environment=env,
            name=name,
            value=_checked(request, body.value),
            actor=identity_of(request).principal,
        )
    await _record(request, "rotated", info)
    return 200, SecretRotated(**info.as_json(), run=run)


@router.add(
    "DELETE",
    ONE,
    "Delete a secret; answers what it was (deployments referencing it then fail to apply)",
    tag="secrets",
    responses={200: SecretMetadata, **READ_ERRORS},
    access=MANAGE,
)
async def delete_secret(request: web.Request, body: None) -> Reply:
    app, env = await _scope(request)
    name = param(request, "secret")
    store = request.app[SECRETS]
    info = await store.info(application=app, environment=env, name=name)
    await store.delete(application=app, environment=env, name=name)
    await _record(request, "deleted", info)
    return 200, _shown(info)


class Reencrypted(BaseModel):
    reencrypted: int = Field(description="values encrypted again with the current key")


@router.add(
    "POST",
    "/v1/secrets/reencrypt",
    "Encrypt every secret again with the current key (after a key rotation)",
    tag="secrets",
    responses={200: Reencrypted},
    access=admin("re-encrypt every secret"),
)
async def reencrypt_secrets(request: web.Request, body: None) -> Reply:
    """Values encrypted with an older key (`ZTDP_SECRETS_KEYS`) are encrypted with
    `ZTDP_SECRETS_KEY`; versions do not change. Afterwards the older keys can be removed."""
    count = await request.app[SECRETS].reencrypt()
    await request.app[EVENTS].publish(
        make_event(
            "secret.reencrypted",
            subject="secrets",
            data={"count": count},
            actor=identity_of(request).principal,
        )
    )
    return 200, Reencrypted(reencrypted=count)
