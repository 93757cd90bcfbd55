"""The planner: ordered waves of create, update, delete and no-op steps with diffs."""

from ztdp.planner.planner import (
    Desired,
    FieldChange,
    Plan,
    PlanStep,
    PlanWave,
    deletions,
    deployment_node,
    desired_application,
    desired_in_environment,
    diff,
    generations,
    make_plan,
    resource_node,
)

__all__ = [
    "Desired",
    "FieldChange",
    "Plan",
    "PlanStep",
    "PlanWave",
    "deletions",
    "deployment_node",
    "desired_application",
    "desired_in_environment",
    "diff",
    "generations",
    "make_plan",
    "resource_node",
]
