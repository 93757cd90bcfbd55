"""ZTDP example provider plugin: a resource as a JSON file in a directory (see `provider`)."""

from ztdp_example_provider.provider import FilesProvider, FilesSettings

__all__ = ["FilesProvider", "FilesSettings"]
