"""The catalog: validated, atomic operations on declared intent."""

from ztdp.catalog.catalog import Catalog, Deployment, DeployResult, Removed

__all__ = ["Catalog", "DeployResult", "Deployment", "Removed"]
