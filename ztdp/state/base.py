"""The state seam: everything the runtime knows, kept where every process can read it.

- observed state of realised nodes (the planner compares the desired graph with it),
- each actor's snapshot (desired and observed state, status, generation, where it was made),
- runs and their step records,
- leases: which worker owns which partition of the actors, each lease numbered by a fencing
  token that only grows.

Every write of an actor is a `commit` under a `Fence`: it succeeds only while the fence is the
partition's current lease, atomically with the check, so a worker that lost its lease (paused,
partitioned, too slow) cannot overwrite what the new owner wrote (Kleppmann's fencing tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ztdp.state.runs import Run, RunStep


@dataclass(slots=True, frozen=True)
class ObservedResource:
    """A plain record rather than a model: actors write one per step, from checked fields."""

    node: str  # realised node id, e.g. deployment/checkout/checkout-api@dev
    kind: str
    application: str
    environment: str
    source: str = ""  # the graph node it realised
    provider: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Fence:
    """Proof of owning a partition: the lease `owner` holds on it, numbered `token`."""

    partition: int
    owner: str
    token: int


# --- the writes of a commit --------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class PutActor:
    """An actor's snapshot (JSON-able), filed under the fence's partition."""

    node: str
    snapshot: Mapping[str, Any]


@dataclass(slots=True, frozen=True)
class PutObserved:
    resource: ObservedResource


@dataclass(slots=True, frozen=True)
class DeleteObserved:
    node: str
    environment: str


@dataclass(slots=True, frozen=True)
class PutStep:
    """A step's record in its run (only the step; the run's other fields are untouched)."""

    run: str
    step: RunStep


@dataclass(slots=True, frozen=True)
class PutRun:
    """A run's own fields (status, finished_at); its steps are written by `PutStep`."""

    run: Run


Write = PutActor | PutObserved | DeleteObserved | PutStep | PutRun


class StateStore(Protocol):
    """Memory (one process) or Redis (shared); one contract suite runs against both."""

    # --- observed state, for the planner ---------------------------------------------------

    async def observed(
        self, *, environment: str, application: str | None = None
    ) -> dict[str, ObservedResource]: ...

    # --- actors ----------------------------------------------------------------------------

    async def actor(self, node: str) -> dict[str, Any] | None:
        """The actor's last committed snapshot, or None if it never committed one."""
        ...

    async def actors(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The snapshots of those of `nodes` that have one (one round trip)."""
        ...

    async def nodes(self, partition: int) -> list[str]:
        """Every node with a snapshot filed under `partition` (what its owner observes)."""
        ...

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, run: Run, plan: Mapping[str, Mapping[str, Any]]) -> None:
        """Record a new run with its steps and, per node, what executing the step needs
        (the plan's step and the nodes it waits for). Unfenced: the id is new."""
        ...

    async def run(self, run_id: str) -> Run:
        """The run with its steps as last committed; `NotFound` if there is none."""
        ...

    async def run_plan(self, run_id: str) -> dict[str, dict[str, Any]]:
        """What `create_run` was given as the plan; `NotFound` if there is no such run."""
        ...

    async def runs(self, *, limit: int) -> list[Run]:
        """The newest `limit` runs, newest last."""
        ...

    # --- fenced writes ---------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], *, fence: Fence) -> None:
        """All `writes` at once if `fence` is its partition's current lease, else none of
        them and `Fenced`. A run whose steps no longer exist ignores its late step writes."""
        ...

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, partition: int, owner: str, *, ttl: float) -> Fence | None:
        """Take the partition's lease if nobody holds it: a fence with a token greater than
        any before it on that partition; None if someone else holds it."""
        ...

    async def renew(self, fences: Sequence[Fence], *, ttl: float) -> set[int]:
        """Extend these leases, in one round trip; the partitions whose lease is still the
        fence's (the others expired or were taken over)."""
        ...

    async def release(self, fence: Fence) -> None:
        """Give the lease up (if still held) so that another worker may take it at once."""
        ...

    async def holders(self) -> dict[int, str]:
        """Owner of each partition that has a live lease."""
        ...

    async def join(self, member: str, *, ttl: float) -> list[str]:
        """Say that `member` (a worker) is alive for `ttl` seconds; the live members, sorted."""
        ...

    async def leave(self, member: str) -> None: ...

    async def partitions(self, count: int) -> int:
        """Record `count` as the installation's number of partitions unless one is recorded;
        the recorded number (every process must use the same)."""
        ...

    # ---------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the backing service cannot be reached."""
        ...

    async def aclose(self) -> None: ...


def partition_of(node: str, partitions: int) -> int:
    """The partition of a node's actor: FNV-1a of its id, stable across processes and runs."""
    h = 0x811C9DC5
    for byte in node.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions
