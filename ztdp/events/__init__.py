"""Events: CloudEvents 1.0 on a pluggable bus (memory for now)."""

from ztdp.events.bus import EventBus, EventFilter, MemoryEventBus, make_event

__all__ = ["EventBus", "EventFilter", "MemoryEventBus", "make_event"]
