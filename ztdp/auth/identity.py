"""Who is asking, and what their roles let them do."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, GetJsonSchemaHandler, TypeAdapter, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ztdp.contracts import ANONYMOUS_PRINCIPAL, DnsLabel
from ztdp.errors import Forbidden


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    DEVELOPER = "developer"
    APPROVER = "approver"
    CI = "ci"
    VIEWER = "viewer"


_TEAM = "the team whose applications the grant is for"
_CHECKS = "the checks it may record results of; empty means every check"


class Grant(BaseModel):
    """One role, scoped where the role needs it: a developer's team, an approver's environments.

    Validation is this model's; its JSON schema is the union of one shape per role
    (`_GRANT_SHAPES`), so that the document states each role's needs as the model enforces them.
    """

    role: Role
    team: DnsLabel | None = Field(default=None, description="required for developer and ci")
    environments: list[DnsLabel] = Field(default_factory=list, description="for approver")
    checks: list[DnsLabel] = Field(
        default_factory=list,
        description="for ci: the checks it may record results of; empty means every check",
    )

    @model_validator(mode="after")
    def _scoped(self) -> Grant:
        if self.role in (Role.DEVELOPER, Role.CI) and self.team is None:
            raise ValueError(f"a {self.role.value} grant needs a team")
        if self.checks and self.role is not Role.CI:
            raise ValueError("only a ci grant lists checks")
        if self.role is Role.APPROVER and not self.environments:
            raise ValueError("an approver grant needs environments")
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(_GRANT_SHAPES.core_schema)


# --- the JSON schema of a grant: one shape per role, told apart by `role` ----------------------

_NoChecks = Annotated[
    list[DnsLabel],
    Field(default_factory=list, max_length=0, description="only a ci grant lists checks"),
]


class PlatformAdminGrant(BaseModel):
    """Everything, everywhere."""

    role: Literal[Role.PLATFORM_ADMIN]
    team: DnsLabel | None = Field(default=None, description="not used by this role")
    environments: list[DnsLabel] = Field(default_factory=list, description="not used by this role")
    checks: _NoChecks


class DeveloperGrant(BaseModel):
    """Change what the team owns, and deploy it."""

    role: Literal[Role.DEVELOPER]
    team: DnsLabel = Field(description=_TEAM)
    environments: list[DnsLabel] = Field(default_factory=list, description="not used by this role")
    checks: _NoChecks


class ApproverGrant(BaseModel):
    """Approve deploys to the environments listed."""

    role: Literal[Role.APPROVER]
    team: DnsLabel | None = Field(default=None, description="not used by this role")
    environments: list[DnsLabel] = Field(min_length=1, description="where it approves deploys")
    checks: _NoChecks


class CiGrant(BaseModel):
    """Record check results of the team's versions."""

    role: Literal[Role.CI]
    team: DnsLabel = Field(description=_TEAM)
    environments: list[DnsLabel] = Field(default_factory=list, description="not used by this role")
    checks: list[DnsLabel] = Field(default_factory=list, description=_CHECKS)


class ViewerGrant(BaseModel):
    """Read everything."""

    role: Literal[Role.VIEWER]
    team: DnsLabel | None = Field(default=None, description="not used by this role")
    environments: list[DnsLabel] = Field(default_factory=list, description="not used by this role")
    checks: _NoChecks


_GRANT_SHAPES: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        PlatformAdminGrant | DeveloperGrant | ApproverGrant | CiGrant | ViewerGrant,
        Field(discriminator="role"),
    ]
)


@dataclass(frozen=True)
class Identity:
    name: str  # as its source names it: a token's name, an OIDC subject
    grants: tuple[Grant, ...]
    source: Literal["token", "oidc", "anonymous"]
    token_id: str | None = None
    teams: frozenset[str] = field(init=False)
    principal: str = field(init=False)
    """The name as recorded (changes, events, tokens, approvals): `token:<name>`,
    `oidc:<subject>` or `anonymous`. Each source has its own namespace, so an OIDC subject
    `admin` is not the token `admin` and nobody is `system:ztdp`."""

    def __post_init__(self) -> None:
        teams = frozenset(g.team for g in self.grants if g.role is Role.DEVELOPER and g.team)
        object.__setattr__(self, "teams", teams)
        principal = (
            ANONYMOUS_PRINCIPAL if self.source == "anonymous" else f"{self.source}:{self.name}"
        )
        object.__setattr__(self, "principal", principal)

    @property
    def is_admin(self) -> bool:
        return any(g.role is Role.PLATFORM_ADMIN for g in self.grants)

    @property
    def records_any_check(self) -> bool:
        return any(g.role is Role.CI for g in self.grants)

    def records(self, team: str, check: str) -> bool:
        """May record results of `check` for versions of `team`'s applications."""
        return any(
            g.role is Role.CI and g.team == team and (not g.checks or check in g.checks)
            for g in self.grants
        )

    def approves(self, environment: str) -> bool:
        return any(g.role is Role.APPROVER and environment in g.environments for g in self.grants)

    # --- the checks every endpoint's access rule comes down to ------------------------------

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{self.principal} may not {what}: it needs the platform-admin role")

    def require_team(self, teams: set[str], what: str) -> None:
        if self.is_admin:
            return
        missing = sorted(teams - self.teams)
        if missing:
            raise Forbidden(
                f"{self.principal} may not {what}: "
                f"it is not a developer of team {', '.join(missing)}"
            )

    def require_writer(self, what: str) -> None:
        """Writing anything a team owns takes a developer grant (or admin): viewers never write."""
        if not self.is_admin and not self.teams:
            raise Forbidden(f"{self.name} may not {what}: it has no developer grant for any team")

    def require_recorder(self, teams: set[str], check: str, what: str) -> None:
        if self.is_admin:
            return
        missing = sorted(t for t in teams if not self.records(t, check))
        if missing:
            raise Forbidden(
                f"{self.name} may not {what}: recording a result of check {check} needs a ci "
                f"grant for team {', '.join(missing)}; developers may only declare it pending"
            )

    def require_approver(self, environment: str, what: str) -> None:
        if not self.approves(environment):
            raise Forbidden(
                f"{self.principal} may not {what}: it is not an approver for {environment}"
            )


ANONYMOUS = Identity(
    name="anonymous", grants=(Grant(role=Role.PLATFORM_ADMIN),), source="anonymous"
)
"""Who everyone is when authentication is off (the embedded default)."""
