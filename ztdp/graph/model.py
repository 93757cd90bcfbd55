"""The intent graph: typed nodes and typed edges on a networkx MultiDiGraph.

A `Graph` only changes through `apply()` with a batch of operations that `check()` accepted,
so a store can validate a whole batch first and then apply it all or nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
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


_EMPTY: Mapping[str, None] = MappingProxyType({})


class InvalidGraphWrite(Conflict):
    """A batch would leave the graph inconsistent (an edge to a missing node, a wrong kind)."""


class Graph:
    """The current intent: read it freely, change it only through a store's `commit`."""

    def __init__(self, revision: int = 0) -> None:
        self.g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        self.revision = revision
        # Indexes beside the networkx graph: reads by node and edge type are the hot path of
        # planning and policy, and networkx's generic edge views cost ~10x a dict lookup.
        self._kind: dict[str, NodeKind] = {}
        self._data: dict[str, dict[str, Any]] = {}
        self._out: dict[str, dict[EdgeType, dict[str, None]]] = {}
        self._in: dict[str, dict[EdgeType, dict[str, None]]] = {}

    # --- reading ---------------------------------------------------------------------------

    def __contains__(self, nid: object) -> bool:
        return nid in self._kind

    def __len__(self) -> int:
        return len(self._kind)

    def counts(self) -> dict[str, int]:
        """Number of nodes of each kind."""
        return dict(Counter(k.value for k in self._kind.values()))

    def edge_count(self) -> int:
        return int(self.g.number_of_edges())

    def kind(self, nid: str) -> NodeKind | None:
        return self._kind.get(nid)

    def data(self, nid: str) -> dict[str, Any] | None:
        return self._data.get(nid)

    def nodes(self, kind: NodeKind | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for nid, k in self._kind.items():
            if kind is None or k is kind:
                yield nid, self._data[nid]

    def out(self, nid: str, edge: EdgeType) -> Mapping[str, None]:
        """Targets of `nid`'s edges of one type, as a read-only view (no copy: hot path)."""
        by_type = self._out.get(nid)
        return _EMPTY if by_type is None else by_type.get(edge, _EMPTY)

    def successors(self, nid: str, edge: EdgeType) -> list[str]:
        return list(self._out.get(nid, {}).get(edge, ()))

    def predecessors(self, nid: str, edge: EdgeType) -> list[str]:
        return list(self._in.get(nid, {}).get(edge, ()))

    def has_edge(self, source: str, target: str, edge: EdgeType) -> bool:
        return target in self._out.get(source, {}).get(edge, ())

    def edges(self) -> Iterator[tuple[str, str, EdgeType, dict[str, Any]]]:
        yield from self.g.edges(keys=True, data=True)

    def copy(self) -> Graph:
        """A graph to try a batch on (a preview): the structure is copied, node data shared."""
        other = Graph(self.revision)
        other.g = self.g.copy()
        other._kind, other._data = dict(self._kind), dict(self._data)
        other._out = {n: {t: dict(m) for t, m in by.items()} for n, by in self._out.items()}
        other._in = {n: {t: dict(m) for t, m in by.items()} for n, by in self._in.items()}
        return other

    # --- writing ---------------------------------------------------------------------------

    def expand(self, ops: Iterable[Op]) -> list[Op]:
        """Make implicit changes explicit: deleting a node first deletes its edges.

        Stores that replay batches elsewhere (Redis) then need no graph knowledge of their own.
        """
        out: list[Op] = []
        for op in ops:
            if isinstance(op, DeleteNode) and op.id in self.g:
                for s, t, k in [
                    *self.g.in_edges(op.id, keys=True),
                    *self.g.out_edges(op.id, keys=True),
                ]:
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
                    raise InvalidGraphWrite(
                        f"edge {op.type} {op.source} -> {op.target}: no node {missing}"
                    )
                if (sk, tk) not in EDGE_RULES[op.type]:
                    raise InvalidGraphWrite(f"an edge {op.type} cannot go from a {sk} to a {tk}")

    def apply(self, ops: Iterable[Op], revision: int) -> None:
        """Apply an already checked batch and move to `revision`."""
        g = self.g
        for op in ops:
            if isinstance(op, PutNode):
                kind = NodeKind(op.kind)
                data = dict(op.data)
                g.add_node(op.id, kind=kind, data=data)
                self._kind[op.id], self._data[op.id] = kind, data
            elif isinstance(op, DeleteNode):
                if op.id in self._kind:
                    for s, t, k in [*g.in_edges(op.id, keys=True), *g.out_edges(op.id, keys=True)]:
                        self._unlink(s, t, k)
                    g.remove_node(op.id)
                    del self._kind[op.id], self._data[op.id]
                    self._out.pop(op.id, None)
                    self._in.pop(op.id, None)
            elif isinstance(op, PutEdge):
                etype = EdgeType(op.type)
                g.add_edge(op.source, op.target, key=etype, **dict(op.data))
                self._out.setdefault(op.source, {}).setdefault(etype, {})[op.target] = None
                self._in.setdefault(op.target, {}).setdefault(etype, {})[op.source] = None
            elif g.has_edge(op.source, op.target, key=op.type):
                g.remove_edge(op.source, op.target, key=op.type)
                self._unlink(op.source, op.target, op.type)
        self.revision = revision

    def _unlink(self, source: str, target: str, edge: EdgeType) -> None:
        self._out.get(source, {}).get(edge, {}).pop(target, None)
        self._in.get(target, {}).get(edge, {}).pop(source, None)

    def to_dict(self) -> dict[str, Any]:
        """The whole graph as JSON-ready data, sorted so equal graphs give equal documents."""
        return {
            "revision": self.revision,
            "nodes": [
                {"id": nid, "kind": self._kind[nid].value, "data": self._data[nid]}
                for nid in sorted(self._kind)
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
        return {
            "op": "put_edge",
            "source": op.source,
            "target": op.target,
            "type": op.type.value,
            "data": op.data,
        }
    return {"op": "delete_edge", "source": op.source, "target": op.target, "type": op.type.value}


def op_from_json(raw: Mapping[str, Any]) -> Op:
    match raw["op"]:
        case "put_node":
            return PutNode(raw["id"], NodeKind(raw["kind"]), raw["data"])
        case "delete_node":
            return DeleteNode(raw["id"])
        case "put_edge":
            return PutEdge(
                raw["source"], raw["target"], EdgeType(raw["type"]), raw.get("data") or {}
            )
        case "delete_edge":
            return DeleteEdge(raw["source"], raw["target"], EdgeType(raw["type"]))
    raise ValueError(f"unknown graph operation {raw['op']!r}")
