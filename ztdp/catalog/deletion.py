"""What deleting one object, or one link, takes with it: computed on a graph, changing nothing.

Three kinds of things go with an object:
- its own edges (an application's links to resources, a version's deploys): always;
- records about it that mean nothing without it (checks and approvals of a deleted version,
  approvals of a deleted policy or environment): always;
- **dependents**, other objects that would be deleted or changed with it (an application's
  services, another service's dependency on a deleted service, a policy naming a deleted
  environment): only when the request asks to cascade; otherwise the delete is refused with a
  409 that lists them. A cascade is authorized like any write: the caller must be allowed to
  change every dependent (`ztdp.catalog.guard.check_changes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ztdp.catalog.ownership import application_of
from ztdp.graph import DeleteEdge, DeleteNode, EdgeType, Graph, NodeKind, Op


@dataclass
class Removal:
    """The ops of a delete, and what it touches besides its target."""

    nodes: list[str] = field(default_factory=list)  # node ids deleted, target first
    edges: list[DeleteEdge] = field(default_factory=list)  # edges deleted on their own
    dependents: dict[str, str] = field(default_factory=dict)  # node id -> why it depends

    def ops(self) -> list[Op]:
        # Edges of deleted nodes are expanded by the store (Graph.expand).
        return [*self.edges, *(DeleteNode(n) for n in self.nodes)]

    def depend(self, nid: str, why: str) -> None:
        self.dependents.setdefault(nid, why)

    def node(self, nid: str) -> None:
        if nid not in self.nodes:
            self.nodes.append(nid)

    def edge(self, source: str, target: str, etype: EdgeType) -> None:
        edge = DeleteEdge(source, target, etype)
        if edge not in self.edges:
            self.edges.append(edge)


def _records_about(graph: Graph, versions: Iterable[str]) -> list[str]:
    """Checks and approvals whose subject is one of the versions."""
    subjects = set()
    for vid in versions:
        _, app, svc, version = vid.split("/", 3)
        subjects.add((app, svc, version))
    out = []
    for kind in (NodeKind.CHECK, NodeKind.APPROVAL):
        for nid, data in graph.nodes(kind):
            s = data.get("spec", {}).get("subject", {})
            if (s.get("application"), s.get("service"), s.get("version")) in subjects:
                out.append(nid)
    return sorted(out)


def _name(nid: str) -> str:
    return nid.split("/", 1)[1]


def version(graph: Graph, vid: str, r: Removal | None = None) -> Removal:
    r = r or Removal()
    r.node(vid)
    for record in _records_about(graph, [vid]):
        r.node(record)
    return r


def service(
    graph: Graph, sid: str, r: Removal | None = None, *, dependent: bool = False
) -> Removal:
    r = r or Removal()
    r.node(sid)
    for vid in sorted(graph.successors(sid, EdgeType.HAS_VERSION)):
        r.depend(vid, f"version {_name(vid)} of {_name(sid)}")
        version(graph, vid, r)
    for user in sorted(graph.predecessors(sid, EdgeType.USES)):
        if user not in r.nodes:
            r.depend(user, f"service {_name(user)} uses {_name(sid)}")
            r.edge(user, sid, EdgeType.USES)
    return r


def application(graph: Graph, aid: str) -> Removal:
    r = Removal()
    r.node(aid)
    services = [
        s for s in graph.successors(aid, EdgeType.OWNS) if graph.kind(s) is NodeKind.SERVICE
    ]
    for sid in sorted(services):
        r.depend(sid, f"service {_name(sid)} of {_name(aid)}")
        r.node(sid)  # first, so that uses between its own services are not dependents
    for sid in sorted(services):
        service(graph, sid, r)
    for pid in sorted(graph.predecessors(aid, EdgeType.POLICY)):
        r.depend(pid, f"policy {_name(pid)} guards {_name(aid)}")
        policy(graph, pid, r)
    return r


def environment(graph: Graph, eid: str) -> Removal:
    r = Removal()
    r.node(eid)
    env = _name(eid)
    for vid in sorted(graph.predecessors(eid, EdgeType.DEPLOY)):
        r.depend(vid, f"version {_name(vid)} is deployed to {env}")
        r.edge(vid, eid, EdgeType.DEPLOY)
    for aid in sorted(graph.predecessors(eid, EdgeType.ALLOWED_IN)):
        r.depend(aid, f"application {_name(aid)} is allowed in {env}")
        r.edge(aid, eid, EdgeType.ALLOWED_IN)
    for pid in sorted(graph.predecessors(eid, EdgeType.POLICY)):
        r.depend(pid, f"policy {_name(pid)} guards {env}")
        policy(graph, pid, r)
    for nid, data in graph.nodes(NodeKind.APPROVAL):
        if data.get("spec", {}).get("environment") == env:
            r.node(nid)  # an approval for deploys to it means nothing without it
    return r


def policy(graph: Graph, pid: str, r: Removal | None = None) -> Removal:
    r = r or Removal()
    r.node(pid)
    for approval in sorted(graph.predecessors(pid, EdgeType.SATISFIES)):
        r.node(approval)  # approvals for this policy mean nothing without it
    return r


def resource(graph: Graph, rid: str) -> Removal:
    r = Removal()
    r.node(rid)
    for user in sorted(graph.predecessors(rid, EdgeType.USES)):
        r.depend(user, f"service {_name(user)} uses {_name(rid)}")
    for owner in sorted(graph.predecessors(rid, EdgeType.OWNS)):
        r.depend(owner, f"application {_name(owner)} has {_name(rid)}")
    return r


def resource_type(graph: Graph, tid: str) -> Removal:
    r = Removal()
    r.node(tid)
    name = _name(tid)
    for rid, data in sorted(graph.nodes(NodeKind.RESOURCE)):
        if data.get("spec", {}).get("type") == name:
            r.depend(rid, f"resource {_name(rid)} is a {name}")
            for other in resource(graph, rid).dependents.items():
                r.depend(*other)
            r.node(rid)
    return r


def single(nid: str) -> Removal:
    """A check or an approval: nothing depends on it."""
    return Removal(nodes=[nid])


def resource_link(graph: Graph, aid: str, rid: str) -> Removal:
    """An application's link to a resource; its services' uses of it depend on the link."""
    r = Removal()
    r.edge(aid, rid, EdgeType.OWNS)
    for sid in sorted(graph.successors(aid, EdgeType.OWNS)):
        if graph.has_edge(sid, rid, EdgeType.USES):
            r.depend(sid, f"service {_name(sid)} uses {_name(rid)}")
            r.edge(sid, rid, EdgeType.USES)
    return r


def edge(source: str, target: str, etype: EdgeType) -> Removal:
    r = Removal()
    r.edge(source, target, etype)
    return r


def affected_applications(graph: Graph, r: Removal) -> set[str]:
    """The applications whose realised state a removal may change (to plan their runs)."""
    touched = set(r.nodes)
    for e in r.edges:
        touched.update((e.source, e.target))
    apps: set[str] = set()
    for nid in touched:
        app = application_of(graph, nid)
        if app is not None:
            apps.add(app)
        elif graph.kind(nid) is NodeKind.RESOURCE:
            apps.update(a.split("/", 1)[1] for a in graph.predecessors(nid, EdgeType.OWNS))
    return apps
