"""The catalog: validated, atomic operations on declared intent."""

from ztdp.catalog.catalog import Catalog, Deployment, DeployResult, Linked, Removed

__all__ = ["Catalog", "DeployResult", "Deployment", "Linked", "Removed"]
