"""The HTTP API (aiohttp)."""

from ztdp.api.app import create_app, openapi_document

__all__ = ["create_app", "openapi_document"]
