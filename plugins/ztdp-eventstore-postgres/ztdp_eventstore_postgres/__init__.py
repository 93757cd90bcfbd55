"""ZTDP event store plugin: PostgreSQL (`ZTDP_EVENT_STORE=postgres`)."""

from ztdp_eventstore_postgres.store import PostgresEventStore, open_store

__all__ = ["PostgresEventStore", "open_store"]
