"""ZTDP provider plugin: a `postgres` resource as a database and a login role of its own."""

from ztdp_postgres.names import database_name, quote_ident, quote_literal, scram_verifier
from ztdp_postgres.provider import PostgresProvider
from ztdp_postgres.settings import PostgresSettings

__all__ = [
    "PostgresProvider",
    "PostgresSettings",
    "database_name",
    "quote_ident",
    "quote_literal",
    "scram_verifier",
]
