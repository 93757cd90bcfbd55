"""The intent graph: typed nodes and typed edges on a networkx MultiDiGraph.

A `Graph` only changes through `apply()` with a batch of operations that `check()` accepted,
so a store can validate a whole batch first and then apply it all or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import networkx as nx

from ztdp.errors import Conflict


class NodeKind(StrEnum):
    APPLICATION = "application"
    SERVICE = "service"
    VERSION = "version"
    ENVIRONMENT = "environment"
    RESOURCE_TYPE = "resourcetype"
    RESOURCE = "resource"
    POLICY = "policy"
    CHECK = "check"
    APPROVAL = "approval"


class EdgeType(StrEnum):
    OWNS = "owns"
    HAS_VERSION = "has_version"
    ALLOWED_IN = "allowed_in"
    DEPLOY = "deploy"
    USES = "uses"
    POLICY = "policy"
    SATISFIES = "satisfies"


K = NodeKind
# Which kinds each edge type may connect (source kind, target kind).
EDGE_RULES: Mapping[EdgeType, frozenset[tuple[NodeKind, NodeKind]]] = {
    EdgeType.OWNS: frozenset({(K.APPLICATION, K.SERVICE), (K.APPLICATION, K.RESOURCE)}),
    EdgeType.HAS_VERSION: frozenset({(K.SERVICE, K.VERSION)}),
    EdgeType.ALLOWED_IN: frozenset({(K.APPLICATION, K.ENVIRONMENT)}),
    EdgeType.DEPLOY: frozenset({(K.VERSION, K.ENVIRONMENT)}),
    EdgeType.USES: frozenset({(K.SERVICE, K.RESOURCE), (K.SERVICE, K.SERVICE)}),
    EdgeType.POLICY: frozenset({(K.POLICY, K.ENVIRONMENT), (K.POLICY, K.APPLICATION)}),
    EdgeType.SATISFIES: frozenset({(K.CHECK, K.POLICY), (K.APPROVAL, K.POLICY)}),
}


def node_id(kind: NodeKind, *names: str) -> str:
    """`service/checkout/checkout-api`: the kind, then the names from the outermost scope in."""
    return "/".join((kind.value, *names))


@dataclass(frozen=True, slots=True)
class PutNode:
    id: str
    kind: NodeKind
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteNode:
    id: str


@dataclass(frozen=True, slots=True)
class PutEdge:
    source: str
    target: str
    type: EdgeType
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteEdge:
    source: str
    target: str
    type: EdgeType


Op = PutNode | DeleteNode | PutEdge | DeleteEdge


class InvalidGraphWrite(Conflict):
    """A batch would leave the graph inconsistent (an edge to a missing node, a wrong kind)."""


class Graph:
    """The current intent: read it freely, change it only through a store's `commit`."""

    def __init__(self, revision: int = 0) -> None:
        self.g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        self.revision = revision

    # --- reading ---------------------------------------------------------------------------

    def __contains__(self, nid: object) -> bool:
        return nid in self.g

    def __len__(self) -> int:
        return int(self.g.number_of_nodes())

    def kind(self, nid: str) -> NodeKind | None:
        attrs = self.g.nodes.get(nid)
        return None if attrs is None else attrs["kind"]  # type: ignore[no-any-return]

    def data(self, nid: str) -> dict[str, Any] | None:
        attrs = self.g.nodes.get(nid)
        return None if attrs is None else attrs["data"]  # type: ignore[no-any-return]

    def nodes(self, kind: NodeKind | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for nid, attrs in self.g.nodes(data=True):
            if kind is None or attrs["kind"] is kind:
                yield nid, attrs["data"]

    def successors(self, nid: str, edge: EdgeType) -> list[str]:
        if nid not in self.g:
            return []
        return [t for _, t, k in self.g.out_edges(nid, keys=True) if k == edge]

    def predecessors(self, nid: str, edge: EdgeType) -> list[str]:
        if nid not in self.g:
            return []
        return [s for s, _, k in self.g.in_edges(nid, keys=True) if k == edge]

    def has_edge(self, source: str, target: str, edge: EdgeType) -> bool:
        return bool(self.g.has_edge(source, target, key=edge))

    def edges(self) -> Iterator[tuple[str, str, EdgeType, dict[str, Any]]]:
        for s, t, k, d in self.g.edges(keys=True, data=True):
            yield s, t, k, d

    # --- writing ---------------------------------------------------------------------------

    def expand(self, ops: Iterable[Op]) -> list[Op]:
        """Make implicit changes explicit: deleting a node first deletes its edges.

        Stores that replay batches elsewhere (Redis) then need no graph knowledge of their own.
        """
        out: list[Op] = []
        for op in ops:
            if isinstance(op, DeleteNode) and op.id in self.g:
                for s, t, k in [*self.g.in_edges(op.id, keys=True), *self.g.out_edges(op.id, keys=True)]:
                    out.append(DeleteEdge(s, t, EdgeType(k)))
            out.append(op)
        return out

    def check(self, ops: Sequence[Op]) -> None:
        """Refuse a batch that would break the graph's rules; the graph stays untouched."""
        kinds: dict[str, NodeKind | None] = {}  # what the batch has done to nodes so far

        def kind_of(nid: str) -> NodeKind | None:
            return kinds[nid] if nid in kinds else self.kind(nid)

        for op in ops:
            if isinstance(op, PutNode):
                existing = kind_of(op.id)
                if existing is not None and existing is not op.kind:
                    raise InvalidGraphWrite(f"node {op.id} is a {existing}, not a {op.kind}")
                kinds[op.id] = op.kind
            elif isinstance(op, DeleteNode):
                kinds[op.id] = None
            else:
                sk, tk = kind_of(op.source), kind_of(op.target)
                if isinstance(op, DeleteEdge):
                    continue
                if sk is None or tk is None:
                    missing = op.source if sk is None else op.target
                    raise InvalidGraphWrite(f"edge {op.type} {op.source} -> {op.target}: no node {missing}")
                if (sk, tk) not in EDGE_RULES[op.type]:
                    raise InvalidGraphWrite(f"an edge {op.type} cannot go from a {sk} to a {tk}")

    def apply(self, ops: Iterable[Op], revision: int) -> None:
        """Apply an already checked batch and move to `revision`."""
        g = self.g
        for op in ops:
            if isinstance(op, PutNode):
                g.add_node(op.id, kind=NodeKind(op.kind), data=dict(op.data))
            elif isinstance(op, DeleteNode):
                if op.id in g:
                    g.remove_node(op.id)
            elif isinstance(op, PutEdge):
                g.add_edge(op.source, op.target, key=EdgeType(op.type), **dict(op.data))
            elif g.has_edge(op.source, op.target, key=op.type):
                g.remove_edge(op.source, op.target, key=op.type)
        self.revision = revision

    def to_dict(self) -> dict[str, Any]:
        """The whole graph as JSON-ready data, sorted so equal graphs give equal documents."""
        return {
            "revision": self.revision,
            "nodes": [
                {"id": nid, "kind": attrs["kind"].value, "data": attrs["data"]}
                for nid, attrs in sorted(self.g.nodes(data=True), key=lambda item: item[0])
            ],
            "edges": [
                {"source": s, "target": t, "type": k.value}
                for s, t, k in sorted(self.g.edges(keys=True))
            ],
        }


def op_to_json(op: Op) -> dict[str, Any]:
    if isinstance(op, PutNode):
        return {"op": "put_node", "id": op.id, "kind": op.kind.value, "data": op.data}
    if isinstance(op, DeleteNode):
        return {"op": "delete_node", "id": op.id}
    if isinstance(op, PutEdge):
        return {"op": "put_edge", "source": op.source, "target": op.target, "type": op.type.value, "data": op.data}
    return {"op": "delete_edge", "source": op.source, "target": op.target, "type": op.type.value}


def op_from_json(raw: Mapping[str, Any]) -> Op:
    match raw["op"]:
        case "put_node":
            return PutNode(raw["id"], NodeKind(raw["kind"]), raw["data"])
        case "delete_node":
            return DeleteNode(raw["id"])
        case "put_edge":
            return PutEdge(raw["source"], raw["target"], EdgeType(raw["type"]), raw.get("data") or {})
        case "delete_edge":
            return DeleteEdge(raw["source"], raw["target"], EdgeType(raw["type"]))
    raise ValueError(f"unknown graph operation {raw['op']!r}")
