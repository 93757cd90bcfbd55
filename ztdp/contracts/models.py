"""The contracts application teams and the platform team declare.

Request bodies keep the shape the original ZTDP clients send (DESIGN.md, "The v1 REST API");
responses are the same models with the fields ZTDP fills in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ztdp.contracts.base import (
    DnsLabel,
    Envelope,
    Owner,
    SemVer,
    ShortText,
    Strict,
    Tag,
)
from ztdp.contracts.principal import Principal

# A container image reference: [registry[:port]/]path[:tag][@digest], as the Docker
# reference grammar allows (lower-case path components, tag of at most 128 characters).
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# The first path component is a registry only if it looks like a host: a dot, a port or localhost.
_REGISTRY = rf"(?:(?:localhost|{_LABEL}(?:\.{_LABEL})+)(?::[0-9]+)?|{_LABEL}:[0-9]+)/"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# ASCII only (`\w` would take any letter) and one pattern for the check and the JSON schema.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
IMAGE_PATTERN = (
    rf"^(?:{_REGISTRY})?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@sha256:[a-f0-9]{{64}})?$"
)
_IMAGE = re.compile(IMAGE_PATTERN)


def _check_image(value: str) -> str:
    if not _IMAGE.fullmatch(value):  # fullmatch: '$' alone would accept a trailing newline
        raise ValueError(f"{value!r} is not a valid container image reference")
    return value


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=253)]

ImageRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=512),
    Field(
        description="container image reference",
        examples=["ghcr.io/acme/checkout-api:1.0.0"],
        json_schema_extra={"pattern": IMAGE_PATTERN},
    ),
]


# --- Application ---------------------------------------------------------------------------


def _finite(value: Any, where: str = "") -> Any:
    """Free-form JSON is kept as given: so no number that JSON cannot carry back (1e400)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, f"{where}[{i}]")
    return value


class ApplicationSpec(Strict):
    description: ShortText = ""
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    lifecycle: Annotated[dict[str, Any], AfterValidator(_finite)] = Field(
        default_factory=dict, description="free-form lifecycle hints, kept as given"
    )


class Application(Envelope):
    KIND: ClassVar[str] = "Application"
    kind: Literal["Application", "application"] = "Application"
    spec: ApplicationSpec = Field(default_factory=ApplicationSpec)


# --- Service -------------------------------------------------------------------------------


class ServiceSpec(Strict):
    application: DnsLabel = Field(description="the owning application; must match the path")
    port: int | None = Field(default=None, ge=1, le=65535)
    public: bool = False
    description: ShortText = ""
    tags: list[Tag] = Field(default_factory=list, max_length=64)


class Service(Envelope):
    KIND: ClassVar[str] = "Service"
    OWNER_FROM_PARENT: ClassVar[bool] = True
    kind: Literal["Service", "service"] = "Service"
    spec: ServiceSpec


# --- ServiceVersion (flat, as the original clients send it) ------------------------------


# A secret's name: a DNS label; a provider-generated one is `<resource>.<output>`.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"
SecretName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=127, pattern=SECRET_NAME_PATTERN),
    Field(
        description="a secret's name: a DNS label, or `<resource>.<output>` for the outputs "
        "a resource's provider generated (e.g. orders-db.url)"
    ),
]


class SecretRef(Strict):
    """An environment variable whose value is a secret's, resolved only when it is applied."""

    secret: SecretName


EnvValue = Annotated[str, StringConstraints(max_length=32768)] | SecretRef

# Names and values that say "credential": such a value belongs in a secret, not in the graph
# (where every viewer reads it, and /v1/changes keeps it). Decided in docs/decisions.md.
_CREDENTIAL_NAME = re.compile(
    r"(^|_)(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|"
    r"SECRET_?KEY|CREDENTIALS?)(_|$)",
    re.IGNORECASE,
)
_CREDENTIAL_VALUES = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*-----"), "it holds a PEM block (-----BEGIN ...)"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "it holds an AWS access key id"),
    (
        re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
        "it is a URL with a password in it",
    ),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "it holds a GitHub token"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "it holds a Slack token"),
)


def credential_reason(name: str, value: str) -> str | None:
    """Why a plain environment variable looks like a credential, or None."""
    if value and _CREDENTIAL_NAME.search(name):
        return "its name says credential"
    for pattern, reason in _CREDENTIAL_VALUES:
        if pattern.search(value):
            return reason
    return None


def _refuse_plain_credentials(env: dict[str, str | SecretRef]) -> dict[str, str | SecretRef]:
    for name, value in env.items():
        reason = credential_reason(name, value) if isinstance(value, str) else None
        if reason is not None:
            raise ValueError(
                f"env.{name} refused in plain text: {reason}; store it as a secret and "
                'reference it: {"secret": "<name>"}'
            )
    return env


class ServiceVersionIn(Strict):
    version: SemVer
    config_ref: Annotated[str, StringConstraints(max_length=253)] = ""
    owner: Owner | None = Field(default=None, description="default: the service's owner")
    image: ImageRef | None = Field(
        default=None,
        description="defaults to '<service>:<version>' when omitted, with a '+' of the "
        "version written '_' (an image tag cannot hold '+')",
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        max_length=256,
        description="environment variables of the container: a plain value, or a reference "
        'to a secret of the application in the environment deployed to, {"secret": "<name>"}; '
        "a plain value that looks like a credential is refused",
    )

    _image = field_validator("image", mode="after")(
        lambda v: None if v is None else _check_image(v)
    )
    _env = field_validator("env", mode="after")(lambda v: _refuse_plain_credentials(v))


class ServiceVersion(ServiceVersionIn):
    owner: Owner
    application: DnsLabel
    service: DnsLabel
    image: ImageRef
    revision: int = Field(ge=0)
    updated_by: str | None = Field(default=None, description="identity that created it")
    environments: list[DnsLabel] = Field(
        default_factory=list, description="environments this version is deployed to now"
    )


# --- Environment ---------------------------------------------------------------------------


# A provider's section is free-form JSON its plugin validates (its `settings_model`); here it
# is only bounded, since any viewer reads it back and every run reads it again.
MAX_PROVIDER_SECTIONS = 16
MAX_SECTION_BYTES = 8192
MAX_SECTION_DEPTH = 8
# The environment's Kubernetes settings were `spec.kubernetes` before every provider had a
# section; that spelling is still read, as `spec.providers.kubernetes`.
OLD_SECTION = "kubernetes"

SectionField = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
]


def _bounded_section(value: dict[str, Any]) -> dict[str, Any]:
    _finite(value)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_SECTION_BYTES:
        raise ValueError(f"is {size} bytes of JSON; at most {MAX_SECTION_BYTES} are allowed")

    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        return 0

    if depth(value) > MAX_SECTION_DEPTH:
        raise ValueError(f"nests deeper than {MAX_SECTION_DEPTH} levels")
    return value


ProviderSection = Annotated[dict[SectionField, Any], AfterValidator(_bounded_section)]


def provider_section(spec: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The environment's own settings section for provider `kind`, from a spec as stored
    (stored environments may still spell the Kubernetes one `spec.kubernetes`)."""
    section = (spec.get("providers") or {}).get(kind)
    if section is None and kind == OLD_SECTION:
        section = spec.get(OLD_SECTION)
    return dict(section or {})


class EnvironmentSpec(Strict):
    description: ShortText = ""
    providers: dict[DnsLabel, ProviderSection] = Field(
        default_factory=dict,
        max_length=MAX_PROVIDER_SECTIONS,
        description="each provider's settings in this environment, by provider kind (e.g. "
        "kubernetes: kubeconfig, context, namespace); each overrides the server's configured "
        "default field by field and is validated by its provider. Readable by every viewer: "
        "never put credentials here (docs/providers.md)",
        examples=[{"kubernetes": {"namespace": "dev"}}],
    )
    kubernetes: ProviderSection | None = Field(
        default=None,
        exclude=True,
        description="the former spelling of providers.kubernetes, read as that",
    )
    reconcile: Literal["repair", "report-only"] = Field(
        default="repair", description="on drift: repair it, or only record it"
    )

    @model_validator(mode="after")
    def _old_spelling(self) -> EnvironmentSpec:
        given = self.providers.get(OLD_SECTION)
        if self.kubernetes is not None and given in (None, self.kubernetes):
            self.providers[OLD_SECTION] = self.kubernetes
            self.kubernetes = None
        # Still set: the two spellings differ, which the catalog refuses naming the field (a
        # rule between two fields, which the JSON schema cannot state).
        return self

    def conflict(self) -> str | None:
        """Why the spec cannot be stored as it is, naming the field; None if it can."""
        if self.kubernetes is None:
            return None
        return (
            "spec.kubernetes: differs from spec.providers.kubernetes; "
            "give only spec.providers.kubernetes"
        )


class Environment(Envelope):
    KIND: ClassVar[str] = "Environment"
    kind: Literal["Environment", "environment"] = "Environment"
    spec: EnvironmentSpec = Field(default_factory=EnvironmentSpec)


# --- Resources -----------------------------------------------------------------------------


class ResourceTypeSpec(Strict):
    provider: DnsLabel = Field(description="the provider plugin that realises this type")
    description: ShortText = ""


class ResourceType(Envelope):
    KIND: ClassVar[str] = "ResourceType"
    kind: Literal["ResourceType", "resourcetype", "resource_type"]
    spec: ResourceTypeSpec


class ResourceSpec(Strict):
    type: DnsLabel = Field(
        description="name of a resource type, e.g. 'postgres'. A type that does not exist (yet), "
        "or whose provider is not installed, is accepted: the plan says what is missing"
    )
    config_ref: Annotated[str, StringConstraints(max_length=253)] = ""
    description: ShortText = ""
    shared: bool = Field(
        default=False,
        description="set by the platform team (needs platform-admin): any team may link it "
        "to its applications; otherwise linking needs the resource's team too",
    )
    inject_as: EnvName | None = Field(
        default=None,
        description="the environment variable in which a service using this resource gets "
        "the URL its provider generated (through a Kubernetes Secret); default DATABASE_URL",
    )


class Resource(Envelope):
    KIND: ClassVar[str] = "Resource"
    kind: Literal["Resource", "resource"] = "Resource"
    spec: ResourceSpec


# --- Policies, checks, approvals -----------------------------------------------------------


class TransitionSelector(Strict):
    """Which transitions a policy guards. Unset fields match anything."""

    edge: Literal["deploy"] = "deploy"
    environment: DnsLabel | None = None
    application: DnsLabel | None = None


class AllowedEnvironmentsRule(Strict):
    type: Literal["allowed-environments"]
    environments: list[DnsLabel] | None = Field(
        default=None,
        description="the environments allowed; when omitted, the application's allowed list",
    )


# ASCII digits only: `\d` would also take Arabic-Indic digits for ten minutes.
_DURATION = re.compile(
    r"^(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,6})s)?$"
)


def parse_duration(text: str) -> timedelta:
    """`10m`, `1h30m`, `2d`, `45s`: days, hours, minutes, seconds, in that order."""
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as '10m', '1h30m' or '2d'")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str,
    StringConstraints(min_length=2, max_length=32, pattern=_DURATION.pattern),
    AfterValidator(_check_duration),
    Field(description="a duration such as '10m', '1h30m' or '2d'", examples=["10m"]),
]


class PromotionRule(Strict):
    type: Literal["promotion"]
    requires: list[DnsLabel] = Field(
        min_length=1,
        description="environments where the version must be deployed and Ready first",
    )
    min_ready: Duration | None = Field(
        default=None,
        description="how long the version must have been Ready in each required environment",
    )


class ApprovalRule(Strict):
    type: Literal["approval"]
    required: int = Field(default=1, ge=1, le=100, description="distinct approvals needed")
    approvers: list[Principal] = Field(
        default_factory=list, description="who may approve; empty means anyone"
    )


class CheckRule(Strict):
    type: Literal["check"]
    checks: list[DnsLabel] = Field(min_length=1, description="checks that must have succeeded")


class ExpressionRule(Strict):
    type: Literal["expression"]
    expression: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="a CEL expression over the transition that must be true"
    )
    message: ShortText = Field(default="", description="said when the expression is false")


PolicyRule = Annotated[
    AllowedEnvironmentsRule | PromotionRule | ApprovalRule | CheckRule | ExpressionRule,
    Field(discriminator="type"),
]


PolicyMode = Literal["enforce", "audit"]
"""enforce: a failure denies the transition; audit: a failure is reported, never denies."""


class PolicySpec(Strict):
    transition: TransitionSelector = Field(default_factory=TransitionSelector)
    rule: PolicyRule
    mode: PolicyMode = Field(
        default="enforce",
        description="enforce: a failure denies the transition; audit: a failure never denies, "
        "it is reported in decisions and plans and recorded as a policy.audit_denied event",
    )
    description: ShortText = ""


class Policy(Envelope):
    KIND: ClassVar[str] = "Policy"
    kind: Literal["Policy", "policy"] = "Policy"
    spec: PolicySpec


class VersionRef(Strict):
    application: DnsLabel
    service: DnsLabel
    version: SemVer


class CheckSpec(Strict):
    check: DnsLabel = Field(description="the check's name as policies list it, e.g. 'unit-tests'")
    subject: VersionRef
    status: Literal["pending", "succeeded", "failed"] = "pending"
    details: ShortText = ""


class Check(Envelope):
    KIND: ClassVar[str] = "Check"
    kind: Literal["Check", "check"] = "Check"
    spec: CheckSpec


class ApprovalSpec(Strict):
    policy: DnsLabel = Field(description="the approval policy this approval satisfies")
    subject: VersionRef
    environment: DnsLabel
    approver: Principal = Field(description="who approves: with authentication on, the caller")
    comment: ShortText = ""


class Approval(Envelope):
    KIND: ClassVar[str] = "Approval"
    kind: Literal["Approval", "approval"] = "Approval"
    spec: ApprovalSpec


# --- Small request bodies ------------------------------------------------------------------


class DeployRequest(Strict):
    environment: DnsLabel


class DependencyRequest(Strict):
    service: DnsLabel
    application: DnsLabel | None = Field(
        default=None, description="the other service's application; defaults to this one"
    )


class ResourceLinkRequest(Strict):
    resource: DnsLabel


AllowedEnvironments = Annotated[list[DnsLabel], Field(max_length=256)]


class TransitionRequest(Strict):
    """A transition to evaluate without making it (`POST /v1/policies/evaluate`)."""

    application: DnsLabel
    service: DnsLabel
    version: SemVer
    environment: DnsLabel
