"""The HTTP API (aiohttp)."""

from ztdp.api.app import PARSER_LIMIT, create_app, openapi_document

__all__ = ["PARSER_LIMIT", "create_app", "openapi_document"]
