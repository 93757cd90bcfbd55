"""The v1 REST API: thin handlers that call the catalog and the runtime; routes as in DESIGN.md.

One module per kind of object. Each declares its routes, with their access rules, into the one
route table in `common`; importing them here registers them in this order (a fixed path such
as `/v1/applications/schema` must come before `/v1/applications/{app}`).
"""

from ztdp.api.v1 import (  # noqa: F401  (imported to register their routes)
    applications,
    contracts,
    environments,
    graph,
    identity,
    observation,
    policies,
    resources,
    secrets,
    services,
    system,
)
from ztdp.api.v1.common import router
from ztdp.api.v1.resources import ResourceBody

__all__ = ["ResourceBody", "router"]
