"""Events: CloudEvents 1.0 on a pluggable bus: memory, or NATS JetStream (`ztdp.events.nats`)."""

from ztdp.events.bus import Event, EventBus, EventFilter, MemoryEventBus, make_event

__all__ = ["Event", "EventBus", "EventFilter", "MemoryEventBus", "make_event"]
