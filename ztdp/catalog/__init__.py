"""The catalog: validated, atomic operations on declared intent."""

from ztdp.catalog.catalog import Catalog, DeployResult, Deployment

__all__ = ["Catalog", "DeployResult", "Deployment"]
