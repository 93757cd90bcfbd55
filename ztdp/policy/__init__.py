"""The policy engine: built-in rule kinds and CEL expressions over transitions."""

from ztdp.policy.cel import compile_expression
from ztdp.policy.engine import (
    BUILTIN_ALLOWED,
    Decision,
    HealthOf,
    NodeHealth,
    PolicyResult,
    Transition,
    allowed_environments,
    deployments_of_service,
    evaluate,
)

__all__ = [
    "BUILTIN_ALLOWED",
    "Decision",
    "HealthOf",
    "NodeHealth",
    "PolicyResult",
    "Transition",
    "allowed_environments",
    "compile_expression",
    "deployments_of_service",
    "evaluate",
]
