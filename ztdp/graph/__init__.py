"""The intent graph and the stores that keep it."""

from ztdp.graph.model import (
    EDGE_RULES,
    DeleteEdge,
    DeleteNode,
    EdgeType,
    Graph,
    InvalidGraphWrite,
    NodeKind,
    Op,
    PutEdge,
    PutNode,
    node_id,
    op_from_json,
    op_to_json,
)

__all__ = [
    "EDGE_RULES",
    "DeleteEdge",
    "DeleteNode",
    "EdgeType",
    "Graph",
    "InvalidGraphWrite",
    "NodeKind",
    "Op",
    "PutEdge",
    "PutNode",
    "node_id",
    "op_from_json",
    "op_to_json",
]
