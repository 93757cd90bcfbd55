"""Runs live in the state store (`ztdp.state.runs`); re-exported for the runtime's users."""

from ztdp.state.runs import Run, RunStep, StepStatus, Trigger

__all__ = ["Run", "RunStep", "StepStatus", "Trigger"]
