"""The planner: ordered waves of create, update, delete and no-op steps with diffs."""

from ztdp.planner.planner import (
    Desired,
    FieldChange,
    Plan,
    PlanStep,
    PlanWave,
    StepDecision,
    StepPolicyResult,
    deployment_node,
    desired_application,
    desired_in_environment,
    diff,
    generations,
    make_plan,
    mark_blocked,
    resource_node,
    waits,
)

__all__ = [
    "Desired",
    "FieldChange",
    "Plan",
    "PlanStep",
    "PlanWave",
    "StepDecision",
    "StepPolicyResult",
    "deployment_node",
    "desired_application",
    "desired_in_environment",
    "diff",
    "generations",
    "make_plan",
    "mark_blocked",
    "resource_node",
    "waits",
]
