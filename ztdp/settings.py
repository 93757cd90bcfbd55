"""Settings: defaults in config/ztdp.toml, overridden by ZTDP_* environment variables.

One object built at start-up and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("config/ztdp.toml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ZTDP_", extra="forbid", env_nested_delimiter="__", populate_by_name=True
    )

    graph_store: Literal["memory", "redis"] = "memory"
    state_store: Literal["memory", "redis"] | None = Field(
        default=None,
        description="actor state, runs and leases; unset: follows the graph store",
    )
    mailbox: Literal["memory", "nats"] = Field(
        default="memory", description="actor mailboxes: this process, or NATS JetStream"
    )
    event_bus: Literal["memory", "nats"] | None = Field(
        default=None, description="unset: follows the mailbox"
    )
    event_store: str = Field(
        default="memory",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=64,
        description="where events are kept: an event store plugin's name (entry-point group "
        "ztdp.event_stores); memory is built in",
    )
    event_store_url: str | None = Field(
        default=None, description="the event store's address, e.g. postgresql://host/db"
    )
    event_retention_days: float = Field(
        default=90.0, gt=0, description="events older than this are pruned from the event store"
    )
    event_prune_interval: float = Field(
        default=3600.0, gt=0, description="seconds between prunings of the event store"
    )
    nats_url: str = "nats://127.0.0.1:4222"
    nats_prefix: str = Field(
        default="ztdp",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=64,
        description="prefix of the JetStream streams, consumers and subjects",
    )
    partitions: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="actors are spread over this many partitions, each owned by one worker; "
        "every process of one installation must use the same number",
    )
    lease_ttl: float = Field(
        default=2.0, gt=0, description="seconds a worker's lease on a partition lasts unrenewed"
    )
    ack_wait: float = Field(
        default=3.0,
        gt=0,
        description="seconds before NATS redelivers a message whose handler did not answer",
    )
    actors: Literal["on", "off"] = Field(
        default="on", description="whether `ztdp serve` runs actors too, or only the API"
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(
        default="ztdp", pattern=r"^[A-Za-z0-9:._-]+$", description="key prefix in Redis"
    )
    redis_timeout: float = Field(
        default=2.0,
        gt=0,
        description="seconds to connect to Redis or wait for its answer; "
        "past that a request answers 503",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    seed_resource_types: dict[str, str] = Field(
        default_factory=lambda: {"postgres": "postgres"},
        description="resource types created at start-up when missing: name -> provider",
    )
    write_retries: int = Field(default=8, ge=1, description="retries of a write on a stale read")
    platform_team: str = Field(
        default="platform-team",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        max_length=253,
        description="owner of a new object that names none, when authentication is off or a "
        "platform-admin creates it",
    )

    auth: Literal["on", "off"] | None = Field(
        default=None,
        description="unset: off on the embedded default, on with any distributed backend",
    )
    token_ttl_days: int = Field(default=90, ge=1, le=3650)
    auth_max_failures: int = Field(
        default=10, ge=1, description="failed authentications per client"
    )
    auth_failure_window: float = Field(default=60.0, gt=0, description="seconds")
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="addresses or networks of reverse proxies whose X-Forwarded-For is "
        "believed when telling clients apart; empty: the peer address is the client",
    )
    oidc_issuer: str | None = None
    oidc_audience: str = "ztdp"
    oidc_jwks_url: str | None = Field(
        default=None, description="default <issuer>/.well-known/jwks.json"
    )
    oidc_roles_claim: str = "ztdp_roles"
    oidc_name_claim: str = "sub"
    cors_origins: list[str] = Field(default_factory=list, description="closed unless listed")

    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="uvloop where installed, else the standard asyncio loop"
    )
    apply_parallelism: int = Field(default=16, ge=0, description="steps at once; 0: unbounded")
    actor_concurrency: int = Field(
        default=0,
        ge=0,
        description="actor messages handled at once in one process (each actor still handles "
        "one at a time); the rest wait in their actors' queues, so a burst (a takeover, a "
        "resync) does not run the stores' connection pools dry. 0: unbounded",
    )
    worker_parallelism: int = Field(
        default=0,
        ge=0,
        description="provider calls at once in one process running actors, over all runs; "
        "0: unbounded (each run is still limited by apply_parallelism)",
    )
    step_timeout: float = Field(default=60.0, gt=0, description="seconds per plan step")
    provider_retries: int = Field(default=5, ge=0, description="retries of a temporary failure")
    retry_backoff: float = Field(default=0.5, gt=0, description="first retry delay, doubling")
    observe_interval: float = Field(
        default=30.0, ge=0, description="seconds between observations of each node; 0: never"
    )
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="each provider's configured settings, by kind: what an environment's "
        "spec.providers.<kind> overrides field by field. The place for a server's credentials "
        "(environments are readable by every viewer). JSON, or one field at a time: "
        "ZTDP_PROVIDERS__POSTGRES__URL",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="the configured providers.kubernetes.kubeconfig, as it was spelt first "
        "(ZTDP_PROVIDERS__KUBERNETES__KUBECONFIG wins when both are set)",
    )

    secret_store: Literal["memory", "redis"] | None = Field(
        default=None,
        description="where secrets are kept, encrypted; unset: follows the graph store",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="the key encrypting secrets: 32 random bytes in base64; required with the "
        "redis secret store, else a key is made for the process and dies with it",
    )
    secrets_keys: list[SecretStr] = Field(
        default_factory=list,
        description="older keys (base64, JSON list), still decrypting what they encrypted "
        "until every secret is encrypted again with secrets_key (docs/secrets.md)",
    )
    secret_max_bytes: int = Field(
        default=65536, ge=1, le=1_048_576, description="largest value of one secret, in bytes"
    )

    @field_validator("providers", mode="after")
    @classmethod
    def _kinds_in_lower_case(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Kinds are lower-case names; nested variables arrive so, JSON keys as written.
        return {kind.lower(): section for kind, section in value.items()}

    def provider_defaults(self, kind: str) -> dict[str, Any]:
        """The configured settings section of provider `kind`."""
        # ZTDP_KUBECONFIG predates provider sections; it stays, as one field of one section.
        old = {"kubeconfig": self.kubeconfig} if kind == "kubernetes" and self.kubeconfig else {}
        return {**old, **self.providers.get(kind, {})}

    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line, with trace and span ids"
    )
    otel_exporter: Literal["otlp", "console", "none"] | None = Field(
        default=None,
        description="where spans go; unset: otlp when an OTLP endpoint is set, else none "
        "(tracing off: no-op spans)",
    )
    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ztdp_otel_endpoint", "otel_exporter_otlp_endpoint"),
        description="OTLP/HTTP base address, e.g. http://127.0.0.1:4318; also read from the "
        "standard OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`ztdp worker` serves /metrics on this port (at ZTDP_HOST); unset: not",
    )
    metrics_public: bool = Field(
        default=False,
        description="serve /metrics without a token (for scrapers behind a network policy); "
        "by default it needs a token of any role when authentication is on",
    )

    @property
    def distributed(self) -> bool:
        return self.graph_store != "memory" or self.mailbox != "memory"

    @property
    def state_backend(self) -> Literal["memory", "redis"]:
        """The state store: as set, else where the graph is (so processes that share a graph
        share what was realised of it, instead of each repairing from its own memory)."""
        return self.state_store or self.graph_store

    @property
    def secrets_backend(self) -> Literal["memory", "redis"]:
        """The secret store: as set, else where the graph is."""
        return self.secret_store or self.graph_store

    @property
    def event_backend(self) -> Literal["memory", "nats"]:
        return self.event_bus or self.mailbox

    @property
    def auth_enabled(self) -> bool:
        if self.auth is not None:
            return self.auth == "on"
        return self.distributed

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("ZTDP_CONFIG_FILE", DEFAULT_CONFIG_FILE))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
        return (init_settings, env_settings, toml)
