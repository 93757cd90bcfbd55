"""Runs live in the state store (`ztdp.state.runs`); re-exported here where the runtime uses them."""

from ztdp.state.runs import Run, RunStep, StepStatus, Trigger

__all__ = ["Run", "RunStep", "StepStatus", "Trigger"]
