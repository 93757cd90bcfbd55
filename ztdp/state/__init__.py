"""State stores: observed state of realised nodes."""

from ztdp.state.base import ObservedResource, StateStore
from ztdp.state.memory import MemoryStateStore

__all__ = ["MemoryStateStore", "ObservedResource", "StateStore"]
