"""Who is asking, and what their roles let them do."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ztdp.contracts import ANONYMOUS_PRINCIPAL, DnsLabel
from ztdp.errors import Forbidden


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    DEVELOPER = "developer"
    APPROVER = "approver"
    VIEWER = "viewer"


class Grant(BaseModel):
    """One role, scoped where the role needs it: a developer's team, an approver's environments."""

    role: Role
    team: DnsLabel | None = Field(default=None, description="required for developer")
    environments: list[DnsLabel] = Field(default_factory=list, description="for approver")

    @model_validator(mode="after")
    def _scoped(self) -> Grant:
        if self.role is Role.DEVELOPER and self.team is None:
            raise ValueError("a developer grant needs a team")
        if self.role is Role.APPROVER and not self.environments:
            raise ValueError("an approver grant needs environments")
        return self


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

    def require_approver(self, environment: str, what: str) -> None:
        if not self.approves(environment):
            raise Forbidden(
                f"{self.principal} may not {what}: it is not an approver for {environment}"
            )


ANONYMOUS = Identity(
    name="anonymous", grants=(Grant(role=Role.PLATFORM_ADMIN),), source="anonymous"
)
"""Who everyone is when authentication is off (the embedded default)."""
