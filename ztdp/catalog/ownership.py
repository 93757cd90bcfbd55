"""Which team owns each node of the graph: what authorization of deletes and cascades reads.

An application's services and versions belong to the application's team, and so do the checks
and approvals recorded about its versions; every other object names its owner itself.
"""

from __future__ import annotations

from ztdp.graph import Graph, NodeKind, node_id


def application_of(graph: Graph, nid: str) -> str | None:
    """The application a node belongs to, if it belongs to one."""
    kind = graph.kind(nid)
    if kind is NodeKind.APPLICATION:
        return nid.split("/", 1)[1]
    if kind in (NodeKind.SERVICE, NodeKind.VERSION):
        return nid.split("/")[1]
    if kind in (NodeKind.CHECK, NodeKind.APPROVAL):
        app = (graph.data(nid) or {}).get("spec", {}).get("subject", {}).get("application")
        return str(app) if app else None
    return None


def owning_team(graph: Graph, nid: str) -> str | None:
    """The team owning a node; None for a node that is not there."""
    app = application_of(graph, nid)
    data = graph.data(node_id(NodeKind.APPLICATION, app) if app else nid)
    if data is None:
        return None
    return str(data.get("metadata", {}).get("owner", "")) or None
