"""The envelope every ZTDP object shares, and the constrained scalar types it is built from."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

import semver
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
API_VERSION = "ztdp/v1"

DnsLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN),
    Field(
        description="a DNS-1123 label: lower-case letters, digits and '-', at most 63 "
        "characters, starting and ending with a letter or digit",
        examples=["checkout"],
    ),
]

Owner = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"),
    Field(description="the team or person that owns the object", examples=["team-x"]),
]

# Kubernetes label syntax, as patterns of the JSON schema and the checks below alike: a key is
# an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"^(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?{_LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^(?:{_LABEL_NAME})?$"
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    # fullmatch: with match, '$' would also accept a trailing newline.
    for key, value in labels.items():
        if len(key) > 253:
            raise ValueError(f"label key {key[:40]!r}... has {len(key)} characters, at most 253")
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if len(value) > 63:
            raise ValueError(f"label value of {key!r} has {len(value)} characters, at most 63")
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(
                f"label value {value!r} of {key!r} is not a valid Kubernetes label value"
            )
    return labels


def _check_semver(value: str) -> str:
    try:
        semver.Version.parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH)") from None
    return value


# What `semver.Version.parse` accepts (the grammar of semver.org), for the JSON schema.
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRE = rf"(?:{_NUMBER}|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER_PATTERN = (
    rf"^{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-{_PRE}(?:\.{_PRE})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

SemVer = Annotated[
    str,
    StringConstraints(min_length=5, max_length=128),
    AfterValidator(_check_semver),
    Field(
        description="a semantic version, MAJOR.MINOR.PATCH[-pre][+build]",
        examples=["1.0.0"],
        json_schema_extra={"pattern": SEMVER_PATTERN},
    ),
]

Labels = Annotated[
    dict[str, str],
    AfterValidator(_check_labels),
    WithJsonSchema(
        {
            "type": "object",
            "description": "Kubernetes labels: keys are an optional DNS-subdomain prefix and "
            "'/', then a name of at most 63 letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit; values are such a name or empty",
            "propertyNames": {"maxLength": 253, "pattern": LABEL_KEY_PATTERN},
            "additionalProperties": {
                "type": "string",
                "maxLength": 63,
                "pattern": LABEL_VALUE_PATTERN,
            },
            "examples": [{"tier": "web", "example.com/team": "payments"}],
        }
    ),
]

ShortText = Annotated[str, StringConstraints(max_length=2048)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not be silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(Strict):
    name: DnsLabel
    owner: Owner | None = Field(
        default=None,
        description="the team that owns the object. When omitted (as the original clients "
        "may), a service takes its application's owner and an update keeps the stored one; "
        "a new top-level object takes the caller's team, or the platform team's "
        "(docs/api.md, 'Owners')",
    )
    labels: Labels = Field(default_factory=dict)
    revision: int | None = Field(
        default=None,
        ge=0,
        description="graph revision of the last change to this object; set by ZTDP. "
        "Send it back on an update to refuse the update if someone changed the object since.",
    )
    updated_by: str | None = Field(
        default=None, description="identity that made the last change; set by ZTDP"
    )


class Envelope(Strict):
    """`{"apiVersion", "kind", "metadata", "spec"}`: the shape of every enveloped object."""

    KIND: ClassVar[str]
    # A child object (a service) takes its parent's owner when it names none, not the caller's.
    OWNER_FROM_PARENT: ClassVar[bool] = False
    api_version: str = Field(
        default=API_VERSION, alias="apiVersion", pattern=r"^ztdp/v1$", description="ztdp/v1"
    )
    kind: str
    metadata: Metadata

    @field_validator("kind", mode="after")
    @classmethod
    def _canonical_kind(cls, value: str) -> str:
        # The original clients send lower-case kinds ("resource"); store the canonical spelling.
        if value.replace("_", "").lower() == cls.KIND.lower():
            return cls.KIND
        return value
