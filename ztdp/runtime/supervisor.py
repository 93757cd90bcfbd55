"""The supervisor: hosts the actors of the partitions this process owns, and sends messages.

For each partition it holds the lease of, it consumes the partition's mailbox and hands each
delivery to its actor; an actor handles one message at a time, and a task runs it only while
it has mail (a virtual actor, as in Orleans). A delivery is acknowledged after its actor
handled it and committed the outcome under the partition's fence, so a crash anywhere makes
the message come again, to whoever owns the partition then. Handlers are idempotent: a step
already finished is answered from the actor's record, providers apply by name.

Runs are coordinated by an actor of their own (`run/<id>`): it sends each step to its node's
actor when everything the step waits for has finished, at most `apply_parallelism` at once,
and finishes the run when every step has.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from ztdp.errors import (
    BackendUnavailable,
    Fenced,
    MessageTooLarge,
    NotFound,
    PermanentError,
    TemporaryError,
    ZtdpError,
)
from ztdp.events import Event, EventBus, MemoryEventBus, make_event
from ztdp.planner import waits
from ztdp.providers import (
    Observation,
    Provider,
    ProviderRegistry,
    Resource,
    Target,
    Watching,
)
from ztdp.providers.settings import resolve
from ztdp.runtime.actor import (
    RUN_PREFIX,
    ActorState,
    Status,
    StepHooks,
    decode_resource,
    decode_target,
    encode_resource,
    encode_target,
    run_node,
)
from ztdp.runtime.fairness import FairLimiter
from ztdp.runtime.mailbox import Delivery, Envelope, Mailbox, MemoryMailbox
from ztdp.runtime.ownership import Ownership
from ztdp.runtime.records import RecordLoader
from ztdp.runtime.telemetry import TracedMailbox, TracedProvider, handling, traced
from ztdp.secrets.redaction import scrubbed
from ztdp.settings import Settings
from ztdp.state import (
    DeleteObserved,
    Fence,
    ObservedResource,
    PutActor,
    PutObserved,
    PutRun,
    PutStep,
    Run,
    RunStep,
    StateStore,
    Write,
    partition_of,
)
from ztdp.telemetry import Telemetry

log = logging.getLogger("ztdp.runtime")

HEALTH_STATUS = {
    "Ready": Status.READY,
    "Progressing": Status.PROGRESSING,
    "Degraded": Status.DEGRADED,
}
MAX_BACKOFF = 30.0
PAUSE = 1.0  # seconds before a message is tried again while a backend is away
WATCH_BACKOFF = 0.5  # seconds before a broken watch starts again, doubling
IN_FLIGHT = 1024  # deliveries of one partition being handled at once
IDLE_WORKERS = 16  # worker tasks of one partition kept waiting for the next activation
SWEEP_BATCH = 64  # observations of one partition's sweep in flight at once
BACKLOG = 256  # messages in flight in a process above which its sweeps wait


START_DEADLINE = 30.0  # seconds a run's start waits for its record (see start_run)
START_RETRY = 0.2  # seconds before a start that found no record comes again
# A start usually arrives while its record is being written (sent first, see start_run): it
# looks again after these pauses, in place, before it is handed back for START_RETRY.
START_LOOKS = (0.005, 0.01, 0.02, 0.04, 0.08)


class _NotRecordedYet(Exception):
    """A run's start message arrived before its record: try again shortly."""


class ShuttingDown(BackendUnavailable):
    """The runtime is stopping and takes no new work: retry against another process."""

    title = "Shutting down"


class _Sweep:
    """The observations of one batch of a sweep that are not handled yet."""

    __slots__ = ("done", "left")

    def __init__(self, left: int) -> None:
        self.left, self.done = left, anyio.Event()

    def settle(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()


class _Local:
    """A delivery that never went through the mailbox (observations this worker schedules)."""

    __slots__ = ("envelope", "redelivered", "sweep")

    def __init__(self, envelope: Envelope, sweep: _Sweep | None = None) -> None:
        self.envelope, self.redelivered, self.sweep = envelope, False, sweep

    async def ack(self) -> None:
        if self.sweep is not None:
            self.sweep.settle()

    async def nack(self, delay: float = 0.0) -> None:
        if self.sweep is not None:
            self.sweep.settle()

    async def in_progress(self) -> None:
        return None


@dataclass(slots=True)
class _Progress:
    """A run's coordinator state: the run's steps, what each waits for, what is in flight.

    A step is finished once its actor answered (its record has `finished_at`), whatever its
    status: a deployment may answer Progressing and turn Ready later, by observation.
    """

    run: Run
    plan: dict[str, dict[str, Any]]
    status: dict[str, str]
    errors: dict[str, str | None]
    dependents: dict[str, list[str]]
    done: set[str] = field(default_factory=set)
    ready: deque[str] = field(default_factory=deque)
    flying: int = 0  # steps sent to their actors and not answered yet
    unrecorded: list[str] = field(default_factory=list)  # failures their actors could not record

    @classmethod
    def of(cls, run: Run, plan: dict[str, dict[str, Any]]) -> _Progress:
        status: dict[str, str] = {s.node: s.status for s in run.steps}
        dependents: dict[str, list[str]] = {n: [] for n in plan}
        for node, entry in plan.items():
            for before in entry["after"]:
                dependents[before].append(node)
        progress = cls(run, plan, status, {s.node: s.error for s in run.steps}, dependents)
        progress.done = {s.node for s in run.steps if s.finished_at is not None}
        progress.flying = sum(
            1 for s in run.steps if s.finished_at is None and s.status != "Pending"
        )
        progress.ready.extend(
            n for n, s in status.items() if s == "Pending" and progress.can_start(n)
        )
        return progress

    def can_start(self, node: str) -> bool:
        return all(b in self.done for b in self.plan[node]["after"])

    def queued(self, node: str) -> None:
        self.status[node] = "Queued"
        self.flying += 1

    def finished(self, node: str, status: str, error: str | None) -> None:
        if node in self.done:
            return  # said twice (a redelivery): counted once
        if self.status[node] != "Pending":
            self.flying -= 1
        self.done.add(node)
        self.status[node], self.errors[node] = status, error
        self.ready.extend(
            d for d in self.dependents[node] if self.status[d] == "Pending" and self.can_start(d)
        )

    def complete(self) -> bool:
        return len(self.done) == len(self.status)

    def failed_before(self, node: str) -> str | None:
        return next(
            (b for b in self.plan[node]["after"] if self.status[b] in ("Failed", "Blocked")), None
        )


@dataclass(slots=True)
class _StepRun:
    """A run's step that its actor carries out. Its records ride on the actor's own commits:
    the intent (Progressing) on the one before the provider call, the outcome on the one
    after it, so that a step costs two commits."""

    body: Mapping[str, Any]  # the step message's
    started_at: datetime | None = None  # when its intent was committed
    finished: bool = False  # its outcome is committed and the coordinator told

    @property
    def run(self) -> str:
        return str(self.body["run"])


@dataclass(slots=True)
class _Idle:
    """A worker task waiting for its next activation: waking one costs a fraction of
    spawning a task (anyio's start_soon costs ~25 us), which a plan's wave does by hundreds."""

    wake: anyio.Event = field(default_factory=anyio.Event)
    node: str | None = None  # the actor to run, set when woken


@dataclass(slots=True)
class _Owned:
    """A partition this worker holds the lease of, and the work going on in it."""

    fence: Fence
    records: RecordLoader
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # all of its work
    intake: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # its consumer only
    stopped: anyio.Event = field(default_factory=anyio.Event)
    tg: TaskGroup | None = None
    actors: dict[str, ActorState] = field(default_factory=dict)  # cache of the state store
    runs: dict[str, _Progress] = field(default_factory=dict)
    queues: dict[str, deque[Delivery]] = field(default_factory=dict)  # active actors' mail
    idle: list[_Idle] = field(default_factory=list)  # its workers waiting for an activation
    handling: set[Delivery] = field(default_factory=set)
    # every delivery taken and not settled yet, by envelope id: queued behind its actor's
    # current message or being handled; all get heartbeats, and a redelivered copy is dropped
    unsettled: dict[str, Delivery] = field(default_factory=dict)
    slots: anyio.Semaphore = field(default_factory=lambda: anyio.Semaphore(IN_FLIGHT))
    sweeping: bool = False  # a sweep of its nodes is under way


class Supervisor:
    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        state: StateStore,
        events: EventBus,
        mailbox: Mailbox,
        settings: Settings,
        run_actors: bool = True,
        exclusive: bool | None = None,
        member: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.providers = providers
        self.state = state
        self.telemetry = telemetry = telemetry or Telemetry()
        self._local = isinstance(mailbox, MemoryMailbox)  # in-process: sends cost no round trip
        self.mailbox = TracedMailbox(mailbox, telemetry) if telemetry.tracing.enabled else mailbox
        self._traced: dict[str, TracedProvider] = {}  # providers behind their interceptor
        self.hooks: StepHooks | None = None  # set by the layer above before any step runs
        self._events = events
        self._settings = settings
        self._run_actors = run_actors
        self.member = member or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._ownership = Ownership(
            state,
            member=self.member,
            partitions=mailbox.partitions,
            ttl=settings.lease_ttl,
            exclusive=(settings.mailbox == "memory") if exclusive is None else exclusive,
            take=self._take,
            drop=self._drop,
        )
        self._owned: dict[int, _Owned] = {}
        self._ids, self._sent = f"{uuid.uuid4().hex}-", itertools.count(1)
        limit = settings.worker_parallelism
        self._calls = anyio.CapacityLimiter(limit) if limit else None  # provider calls at once
        # Messages handled at once, over all partitions: the backlog of a takeover or a
        # resync waits its turn in the actors' queues (heartbeats keep it), instead of
        # thousands of handlers at once timing out on the stores' connection pools.
        bound = settings.actor_concurrency
        # Shared in turn by the partitions (ztdp/runtime/fairness.py).
        self._handlers = FairLimiter(bound) if bound else None
        self._accepting = False
        self._stopping: dict[int, anyio.Event] = {}  # partitions lost and still stopping
        self._quiet: anyio.Event | None = None  # set when sweeps waiting for mail may go on
        self._reconciling = run_actors and settings.observe_interval > 0
        self._watch_nodes: dict[str, set[str]] = {}  # watched target -> its nodes known here
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        try:
            if self._run_actors:
                await self._ownership.start()
                if self._ownership.exclusive:
                    await self._resume_runs()
                self._tg.start_soon(self._ownership.run, name="ztdp ownership")
                self._tg.start_soon(self._heartbeats, name="ztdp heartbeats")
                if self._settings.observe_interval > 0:
                    self._tg.start_soon(self._observe_forever, name="ztdp observation")
        except BaseException:
            self._tg.cancel_scope.cancel()
            stack, self._stack = self._stack, None
            await stack.aclose()
            raise
        self._accepting = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop intake, let queued messages finish within `grace`, hand the partitions over."""
        if self._stack is None:
            return  # already closed: calling twice is harmless
        self._accepting = False
        self._ownership.stopping = True
        if self._settings.mailbox != "memory":
            # Take nothing more: what is not delivered yet goes to whoever owns it next.
            for owned in self._owned.values():
                owned.intake.cancel()
        with anyio.move_on_after(grace):
            # Polled: what is queued is counted by the mailbox, which has no event to wait on.
            while any([await self._busy(p) for p in list(self._owned)]):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        await stack.aclose()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._ownership.stop()

    async def _busy(self, partition: int) -> bool:
        owned = self._owned.get(partition)
        if owned is None:
            return False
        if owned.handling or owned.queues:
            return True
        # With in-process mailboxes nobody else will ever handle what is queued: finish it.
        return self._settings.mailbox == "memory" and await self.mailbox.pending(partition) > 0

    @property
    def events(self) -> EventBus:
        return self._events

    @property
    def owned(self) -> list[int]:
        """The partitions this worker owns now."""
        return sorted(self._owned)

    async def _take(self, fence: Fence) -> None:
        assert self._tg is not None
        owned = _Owned(fence, RecordLoader(self.state))
        self._owned[fence.partition] = owned
        self._tg.start_soon(self._serve_partition, owned, name=f"partition {fence.partition}")

    async def _drop(self, partition: int) -> None:
        owned = self._owned.pop(partition, None)
        if owned is not None:
            owned.scope.cancel()
            self._maybe_quiet()  # its mail in flight no longer counts
            await owned.stopped.wait()

    async def _lost(self, owned: _Owned, exc: Fenced) -> None:
        if not owned.scope.cancel_called:  # said once, not by each of its refused writes
            log.warning("partition %d: %s", owned.fence.partition, exc.detail)
        self._ownership.fences.pop(owned.fence.partition, None)
        if self._owned.get(owned.fence.partition) is owned:
            del self._owned[owned.fence.partition]
            self._maybe_quiet()  # its mail in flight no longer counts
        self._stopping[owned.fence.partition] = owned.stopped  # a new tenure waits for it
        owned.scope.cancel()

    # --- sending ---------------------------------------------------------------------------

    def partition(self, node: str) -> int:
        return _partition(node, self.mailbox.partitions)

    async def send(self, envelope: Envelope) -> None:
        await self.mailbox.send(envelope, partition=self.partition(envelope.node))

    async def send_all(self, envelopes: Iterable[Envelope]) -> None:
        """Send many at once (a round trip each over NATS, so not one after another)."""
        await _at_once(list(envelopes), self.send, concurrently=not self._local)

    async def tell(
        self, node: str, kind: str, body: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> None:
        """Queue a message for a node's actor, wherever it runs."""
        if not self._accepting:
            raise ShuttingDown(f"the runtime is stopping; {kind} for {node} refused")
        if id is None:
            # Unique without a random draw per message: this process's random prefix, counted.
            id = f"{self._ids}{next(self._sent):x}"
        await self.send(Envelope(node=node, kind=kind, body=dict(body or {}), id=id))

    async def apply(self, resource: Resource, target: Target, *, provider: str) -> None:
        """Make a resource as desired (outside any run)."""
        body = {"resource": encode_resource(resource), "target": encode_target(target)}
        await self.tell(resource.node, "apply", {**body, "provider": provider})

    async def start_run(
        self,
        run: Run,
        waves: Sequence[Mapping[str, Any]],
        *,
        environments: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Record a run of a plan's waves and hand it to its coordinator; follow it through
        the state store. `environments` holds deleted environments' last data, for deleting
        what was made in them."""
        if not self._accepting:
            raise ShuttingDown(f"the runtime is stopping; run {run.id} refused")
        after = waits(waves)
        plan: dict[str, dict[str, Any]] = {}
        for wave in waves:
            for step in wave["steps"]:
                node = step["node"]
                plan[node] = {
                    "step": dict(step),
                    "after": after[node],
                    "wave": wave["index"],
                    "environment": (environments or {}).get(node.rsplit("@", 1)[-1]),
                }
        # The start message first, then the record: a process killed in between leaves either
        # a message that finds no run (dropped after its deadline; the request was never
        # answered) or a run that starts, never a run that nobody will ever start.
        start = Envelope(
            node=run_node(run.id),
            kind="advance",
            id=f"{run.id}:start",
            deadline=time.time() + START_DEADLINE,
        )
        await self.send(start)
        await self.state.create_run(run, plan)

    async def _resume_runs(self) -> None:
        """With in-process mailboxes a crash loses the messages of the runs that were going
        on; their records survive in a shared store: wake their coordinators again."""
        resumed = [r for r in await self.state.runs(limit=1000) if r.status == "Running"]
        for run in resumed:
            await self.send(Envelope(node=run_node(run.id), kind="advance", body={"resume": True}))
        if resumed:
            log.warning("resuming %d run(s) left running by a previous process", len(resumed))

    async def gauges(self) -> tuple[dict[str, int], dict[int, int]]:
        """This process's actors by status (those of the partitions it owns, as cached) and
        the messages waiting in each partition it owns: what the metrics' gauges show."""
        actors: dict[str, int] = {}
        depth: dict[int, int] = {}
        for partition, owned in list(self._owned.items()):
            for state in owned.actors.values():
                actors[state.status.value] = actors.get(state.status.value, 0) + 1
            try:
                depth[partition] = await self.mailbox.pending(partition)
            except BackendUnavailable:
                continue  # not known now: absent from this scrape rather than a wrong zero
        return actors, depth

    async def owners(self) -> dict[str, list[int]]:
        """Each worker that holds leases, with the partitions it owns."""
        out: dict[str, list[int]] = {}
        for partition, member in sorted((await self.state.holders()).items()):
            out.setdefault(member, []).append(partition)
        return out

    async def ping(self) -> None:
        """Raise `BackendUnavailable` if the state store or the mailboxes cannot be reached."""
        await self.state.ping()
        await self.mailbox.ping()

    async def actor(self, node: str) -> ActorState | None:
        """A node's actor as last committed, from the state store (any process's answer)."""
        raw = await self.state.actor(node)
        return None if raw is None else ActorState.from_snapshot(raw)

    async def actor_states(self, nodes: Sequence[str]) -> dict[str, ActorState]:
        found = await self.state.actors(nodes)
        return {n: ActorState.from_snapshot(raw) for n, raw in found.items()}

    # --- consuming -------------------------------------------------------------------------

    async def _serve_partition(self, owned: _Owned) -> None:
        partition = owned.fence.partition
        try:
            with owned.scope:
                previous = self._stopping.pop(partition, None)
                if previous is not None:  # taken again before the last tenure had stopped
                    await previous.wait()

                async with anyio.create_task_group() as tg:
                    owned.tg = tg
                    if self._reconciling:  # what it owns is observed from the moment it does
                        self._sweep(owned)
                    with owned.intake:  # cancelled at shutdown: what is being handled finishes
                        while True:
                            try:
                                async with self.mailbox.consume(partition) as deliveries:
                                    async for delivery in deliveries:
                                        try:  # without a checkpoint while there is room
                                            owned.slots.acquire_nowait()
                                        except anyio.WouldBlock:
                                            await owned.slots.acquire()
                                        self._dispatch(owned, delivery)
                            except BackendUnavailable as exc:
                                log.warning("partition %d: %s", partition, exc.detail)
                                await anyio.sleep(PAUSE)
                            except Exception:  # a consumer that broke: not the whole worker
                                log.exception("partition %d: its consumer broke", partition)
                                await anyio.sleep(PAUSE)
        finally:
            owned.tg = None
            owned.stopped.set()

    def _dispatch(self, owned: _Owned, delivery: Delivery) -> None:
        node = delivery.envelope.node
        if not isinstance(delivery, _Local):
            if delivery.envelope.id in owned.unsettled:
                # A copy of a message this worker holds (redelivered while it waited behind
                # its actor's current one): the original is handled and acknowledged.
                owned.slots.release()
                return
            owned.unsettled[delivery.envelope.id] = delivery
        queue = owned.queues.get(node)
        if queue is not None:
            queue.append(delivery)  # the actor is active: it gets to it in order
            return
        owned.queues[node] = deque([delivery])
        if owned.idle:
            idle = owned.idle.pop()  # the most recently idle: likeliest still in the caches
            idle.node = node
            idle.wake.set()
        else:
            assert owned.tg is not None
            owned.tg.start_soon(self._worker, owned, node)

    async def _worker(self, owned: _Owned, node: str) -> None:
        """Run activations one after another, waiting idle in between while few others wait."""
        while True:
            await self._drain(owned, node)
            if len(owned.idle) >= IDLE_WORKERS:
                return
            idle = _Idle()
            owned.idle.append(idle)
            try:
                await idle.wake.wait()
            finally:
                if idle.node is None:  # cancelled while waiting: the partition is stopping
                    owned.idle.remove(idle)
            assert idle.node is not None  # woken only with an activation
            node = idle.node

    async def _drain(self, owned: _Owned, node: str) -> None:
        """One activation: handle the actor's mail until there is none, then go idle.

        A run's coordinator takes all of its waiting mail at once: the steps that finished
        meanwhile are noted together, and what they let start is committed and sent once."""
        queue = owned.queues[node]
        coordinator = node.startswith(RUN_PREFIX)
        while queue:
            if coordinator:
                batch = list(queue)
                queue.clear()
            else:
                batch = [queue.popleft()]
            owned.handling.update(batch)
            try:
                if self._handlers is None:
                    await self._deliver(owned, batch)
                else:
                    try:  # without a checkpoint while there is room (most of the time)
                        self._handlers.acquire_nowait()
                    except anyio.WouldBlock:
                        await self._handlers.acquire(owned.fence.partition)
                    try:
                        await self._deliver(owned, batch)
                    finally:
                        self._handlers.release()
            except Fenced as exc:
                await self._lost(owned, exc)  # cancels this task too
                return
            finally:
                for delivery in batch:
                    owned.handling.discard(delivery)
                    if not isinstance(delivery, _Local):
                        owned.unsettled.pop(delivery.envelope.id, None)
                        owned.slots.release()
                self._maybe_quiet()
        del owned.queues[node]  # no await since the empty check: no message slipped in

    async def _deliver(self, owned: _Owned, batch: list[Delivery]) -> None:
        """Handle one message of an actor, or a run coordinator's messages (acknowledged
        together, after their outcome is committed).

        While a backend is away the same message is tried again, in place, before anything
        newer for the actor: put back in the mailbox it would come after them, and an older
        apply could overwrite a newer one. Heartbeats keep it from being redelivered."""
        while not await self._try(owned, batch):  # noqa: ASYNC110 - a backend comes back
            await anyio.sleep(PAUSE)

    async def _try(self, owned: _Owned, batch: list[Delivery]) -> bool:
        """One attempt at `_deliver`; False if a backend was away and it must be tried again."""
        envelope = batch[0].envelope
        try:
            with handling(self.telemetry, batch):
                await self._handle_batch(owned, batch)
        except Fenced:
            raise
        except _NotRecordedYet:
            for delivery in batch:
                await _quietly(delivery.nack(START_RETRY))
            return True
        except BackendUnavailable as exc:
            # A store or the bus is away: the outcome is not recorded, so the message must come
            # again; what it did is idempotent. The cache may be ahead of the store: reload.
            log.warning("%s for %s paused: %s", envelope.kind, envelope.node, exc.detail)
            owned.actors.pop(envelope.node, None)
            owned.runs.pop(envelope.node.removeprefix(RUN_PREFIX), None)
            return False
        except Exception as exc:
            # A message nobody can handle (a bug): said, dropped, rather than redelivered for
            # ever or taking the partition down; a step still answers its run, as Failed.
            log.exception("%s for %s could not be handled", envelope.kind, envelope.node)
            if envelope.kind == "step":
                await self._answer_unrecorded(envelope, f"internal error: {exc!r}")
        for delivery in batch:
            await _quietly(delivery.ack())
        return True

    async def _handle_batch(self, owned: _Owned, batch: list[Delivery]) -> None:
        envelope = batch[0].envelope
        if envelope.node.startswith(RUN_PREFIX):
            try:
                await self._advance(
                    owned, [d.envelope for d in batch], any(d.redelivered for d in batch)
                )
            except (BackendUnavailable, Fenced, _NotRecordedYet):
                raise
            except NotFound as exc:  # trimmed, or never recorded (its start expired)
                log.warning("%s: dropped", exc.detail)
            except Exception as exc:  # a broken run fails alone
                await self._run_broke(owned, envelope.node.removeprefix(RUN_PREFIX), exc)
        else:
            await self._handle(owned, envelope, batch[0].redelivered)

    async def _answer_unrecorded(self, envelope: Envelope, error: str) -> None:
        """Tell a step's run it failed when the actor could not record it: the coordinator
        records it (under its own lease), so that the run does not wait for ever."""
        try:
            await self.send(_unrecorded(envelope, error))
        except Exception:
            log.exception(
                "step %s of run %s: its failure could not be told",
                envelope.node,
                envelope.body["run"],
            )

    async def _heartbeats(self) -> None:
        """Tell the mailbox that long handlers are alive, so it does not redeliver their mail."""
        while True:
            await anyio.sleep(self._settings.ack_wait / 3)
            for owned in list(self._owned.values()):
                for delivery in list(owned.unsettled.values()):
                    await _quietly(delivery.in_progress())

    # --- node actors -----------------------------------------------------------------------

    async def _load(self, owned: _Owned, node: str, provider: str | None) -> ActorState:
        state = owned.actors.get(node)
        if state is None:
            raw = await owned.records.get(node)
            state = ActorState(node, provider) if raw is None else ActorState.from_snapshot(raw)
            owned.actors[node] = state
            self._watched(state)
        if provider is not None:
            state.provider = provider
        return state

    # --- watches: a provider's notifications make an actor observe at once -----------------

    def _settled(self, provider: Any, target: Target) -> Target:
        """`target` with its provider's settings: the configured default overlaid by the
        environment's section, validated again (a kept target keeps only the section)."""
        settings = resolve(
            provider,
            provider.kind,
            environment=target.environment,
            configured=self._settings.provider_defaults(provider.kind),
            spec=target.spec,
        )
        return dataclasses.replace(target, settings=settings)

    def _watched(self, state: ActorState) -> None:
        """Make sure the target of a realised node is watched, if its provider can."""
        if not self._reconciling or state.target is None or state.status is Status.DELETED:
            return
        provider = self._provider(state)
        if not isinstance(provider, Watching):
            return
        key = _target_key(provider.kind, state.target)
        nodes = self._watch_nodes.get(key)
        if nodes is None:
            nodes = self._watch_nodes[key] = set()
            assert self._tg is not None
            self._tg.start_soon(self._watch, provider, state.target, key, name=f"watch {key}")
        nodes.add(state.node)

    async def _watch(self, provider: Watching, target: Target, key: str) -> None:
        """Follow one target's changes for as long as this process runs actors; after every
        (re)start observe its known nodes once, since changes may have been missed."""
        backoff = WATCH_BACKOFF
        while True:
            try:
                async with provider.watch(target=self._settled(provider, target)) as changes:
                    backoff = WATCH_BACKOFF
                    for node in list(self._watch_nodes.get(key, ())):
                        self._notify(node)
                    async for change in changes:
                        self._notify(change.node)
            except ZtdpError as exc:
                log.warning("watch of %s: %s; starting again", key, exc.detail)
            except Exception:
                log.exception("watch of %s broke; starting again", key)
            await anyio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _notify(self, node: str) -> None:
        """A change of `node` was seen: its actor observes it now, if this worker owns it."""
        owned = self._owned.get(self.partition(node))
        if (
            self._accepting
            and owned is not None
            and owned.tg is not None
            and not owned.intake.cancel_called
        ):
            self._dispatch(owned, _Local(Envelope(node=node, kind="observe")))

    async def _handle(self, owned: _Owned, envelope: Envelope, redelivered: bool = False) -> None:
        body = envelope.body
        provider = body.get("provider")
        if envelope.kind == "step":
            provider = body["step"]["provider"]
        try:
            state = await self._load(owned, envelope.node, provider)
        except (BackendUnavailable, Fenced):
            raise
        except Exception as exc:  # a record this version cannot read: start afresh, say why
            state = owned.actors[envelope.node] = ActorState(envelope.node, provider)
            await self._crashed(owned, state, envelope, exc)
            return
        try:
            match envelope.kind:
                case "apply":
                    _desire(state, decode_resource(body["resource"]), decode_target(body["target"]))
                    await self._apply(owned, state, None)
                case "delete":
                    state.resource = decode_resource(body["resource"])
                    state.target = decode_target(body["target"])
                    await self._delete(owned, state, None)
                case "step":
                    await self._step(owned, state, body, redelivered)
                case "block":
                    await self._status(
                        owned, state, Status.BLOCKED, error=body["error"], run=body["run"]
                    )
                case "observe":
                    await self._observe(owned, state)
                case "reconcile":
                    if state.resource is not None and state.status not in (
                        Status.DELETED,
                        Status.DELETING,
                    ):
                        await self._apply(owned, state, None)
                case other:
                    log.error("actor %s: unknown message %r dropped", envelope.node, other)
        except (BackendUnavailable, Fenced):
            raise
        except Exception as exc:  # the actor itself broke, not its provider
            await self._crashed(owned, state, envelope, exc)

    async def _crashed(
        self, owned: _Owned, state: ActorState, envelope: Envelope, exc: Exception
    ) -> None:
        """Fail the message that crashed the actor, then restart it after a backoff."""
        state.restarts += 1
        log.exception("actor %s crashed", state.node)
        error = f"actor crashed: {exc!r}"
        try:
            await self._status(owned, state, Status.FAILED, error=error)
            if envelope.kind == "step":
                await self._step_outcome(owned, state, envelope.body, "Failed", error)
        except (BackendUnavailable, Fenced):
            raise
        except Exception:
            state.status, state.last_error = Status.FAILED, error
            log.exception("actor %s: its crash could not be reported", state.node)
            if envelope.kind == "step":
                await self._answer_unrecorded(envelope, error)
        await anyio.sleep(
            min(self._settings.retry_backoff * 2 ** (state.restarts - 1), MAX_BACKOFF)
        )

    async def _save(self, owned: _Owned, state: ActorState, *also: Write) -> None:
        await self.state.commit([PutActor(state.node, state.snapshot()), *also], fence=owned.fence)
        self._watched(state)

    async def _publish(self, event: Any) -> None:
        await self._events.publish(event)
        self.telemetry.metrics.event(event.type)

    async def _status(
        self,
        owned: _Owned,
        state: ActorState,
        status: Status,
        *,
        error: str | None = None,
        message: str = "",
        run: str | None = None,
        also: Sequence[Write] = (),
        intent: _StepRun | None = None,
        outcome: _StepRun | None = None,
    ) -> None:
        """Commit the actor's new status (with `also`), then say so. With `intent`, the
        commit records that step's start as well; with `outcome`, it records the step's
        outcome (this status), and the coordinator is told after."""
        changed = status is not state.status
        error = _clipped(error)  # it travels in the run's messages and records
        state.status, state.last_error, state.message = status, error, message
        state.updated_at = now = datetime.now(UTC)
        if changed or state.since is None:
            state.since = now
        writes = list(also)
        started = finished = None
        if intent is not None:
            started = _record(intent.body, status="Progressing", started_at=now)
            intent.started_at = now
            writes.append(PutStep(intent.run, started))
        if outcome is not None:
            result = _step_status(status)
            finished = _record(
                outcome.body, status=result, error=error, started_at=outcome.started_at
            )
            finished.finished_at = now
            state.remember(outcome.run, result, error)
            writes.append(PutStep(outcome.run, finished))
        await self._save(owned, state, *writes)
        if intent is not None and started is not None:
            await self._step_event(intent.run, intent.body["actor"], started)
        if changed or error:
            await self._publish(
                make_event(
                    "actor.status",
                    subject=state.node,
                    run=run,
                    data={
                        "status": status.value,
                        "error": error,
                        "message": message,
                        "generation": state.generation,
                    },
                )
            )
        if outcome is not None and finished is not None:
            outcome.finished = True
            await self._step_event(outcome.run, outcome.body["actor"], finished)
            await self._answer(outcome.run, state.node, finished.status, error)

    async def _step(
        self, owned: _Owned, state: ActorState, body: Mapping[str, Any], redelivered: bool
    ) -> None:
        run_id, step = body["run"], body["step"]
        done = state.steps_done.get(run_id)
        if done is not None:  # finished before a crash lost the acknowledgement: answer again
            if redelivered:  # and its handler may have died before it said so: say it again
                record = _record(body, status=done[0], error=done[1])
                await self._step_event(run_id, body["actor"], record)
            await self._answer(run_id, state.node, done[0], done[1])
            return
        if redelivered and await self._settled_elsewhere(run_id, state.node):
            return
        hooks = self.hooks
        assert hooks is not None, "the supervisor has no step hooks"
        status: str
        error: str | None
        try:
            refusal = await hooks.check(body["actor"], step)
            if refusal is not None:
                raise PermanentError(refusal)
            resource, target = await hooks.target(step, body.get("environment"))
        except (BackendUnavailable, Fenced):
            raise
        except ZtdpError as exc:
            status, error = "Failed", exc.detail
        except Exception as exc:  # a bug in the hooks fails the step, not the actor
            log.exception("step %s of run %s", state.node, run_id)
            status, error = "Failed", f"internal error: {exc!r}"
        else:
            if step["action"] == "noop":
                if state.resource is not None:  # observe it where its environment says now
                    state.target = target
                status, error = "Unchanged", None
            else:
                # The intent is committed with the actor's starting status, before the
                # provider is called: a crash leaves it Progressing and the step runs again,
                # wherever its partition goes. The outcome is committed with the actor's
                # outcome, and the coordinator told after.
                carried = _StepRun(body)
                if step["action"] == "delete":
                    state.resource, state.target = resource, target
                    await self._delete(owned, state, run_id, carried)
                else:
                    _desire(state, resource, target)
                    await self._apply(owned, state, run_id, carried)
                if carried.finished:
                    return
                status, error = _step_status(state.status), state.last_error
        await self._step_outcome(owned, state, body, status, error)

    async def _settled_elsewhere(self, run_id: str, node: str) -> bool:
        """A step delivered again that this actor no longer remembers (it remembers its last
        runs only): if its run's record says it is finished, or the run is, answer from the
        record instead of doing it again, which would roll the node back to an old version."""
        try:
            run = await self.state.run(run_id)
        except NotFound:
            return True  # its run is gone: nothing waits for it
        record = next((s for s in run.steps if s.node == node), None)
        if record is not None and record.finished_at is not None:
            await self._answer(run_id, node, record.status, record.error)
            return True
        return run.status != "Running"

    async def _step_outcome(
        self,
        owned: _Owned,
        state: ActorState,
        body: Mapping[str, Any],
        status: str,
        error: str | None,
    ) -> None:
        """The outcome of a step not committed with the actor's own status: refused, unchanged
        (a noop), or its actor crashed."""
        run_id = body["run"]
        record = _record(body, status=status, error=error)
        record.finished_at = record.started_at
        state.remember(run_id, status, error)
        await self._save(owned, state, PutStep(run_id, record))
        await self._step_event(run_id, body["actor"], record)
        await self._answer(run_id, state.node, status, error)

    async def _answer(self, run_id: str, node: str, status: str, error: str | None) -> None:
        await self.send(_answer_message(run_id, node, status, error))

    def _provider(self, state: ActorState) -> Provider | None:
        return self.provider(state.provider)

    def provider(self, kind: str | None) -> Provider | None:
        """The installed provider of `kind`, behind its telemetry interceptor."""
        provider = self.providers.get(kind or "")
        if provider is None:
            return None
        wrapped = self._traced.get(provider.kind)
        if wrapped is None or wrapped.inner is not provider:
            wrapped = self._traced[provider.kind] = traced(provider, self.telemetry)
        return wrapped

    async def _call(
        self,
        owned: _Owned,
        state: ActorState,
        run: str | None,
        provider: Provider,
        call: Callable[[], Awaitable[Observation]],
        what: str,
        step: _StepRun | None,
    ) -> Observation | None:
        """One provider call with the step timeout and retries; a failure sets Failed."""
        try:
            if self._calls is not None:
                await self._calls.acquire()
            try:
                with _deadline(self._settings.step_timeout):
                    return await self._retrying(state, run, call)
            finally:
                if self._calls is not None:
                    self._calls.release()
            error = f"{what} timed out after {self._settings.step_timeout:g} s"
        except (BackendUnavailable, Fenced):
            raise
        except ZtdpError as exc:
            error = exc.detail
        except Exception as exc:  # a provider bug is that provider's failure, not ours
            error = f"provider {provider.kind} failed: {exc!r}"
        await self._status(owned, state, Status.FAILED, run=run, error=error, outcome=step)
        return None

    async def _provider_step(
        self,
        owned: _Owned,
        state: ActorState,
        run: str | None,
        starting: Status,
        what: str,
        action: Callable[[Provider, Resource, Target], Awaitable[Observation]],
        step: _StepRun | None,
    ) -> Observation | None:
        """Find the node's provider, report `starting`, then run `action` as one call."""
        provider = self._provider(state)
        if provider is None:
            error = self.providers.missing(state.provider)
            await self._status(owned, state, Status.FAILED, run=run, error=error, outcome=step)
            return None
        assert state.resource is not None and state.target is not None
        resource, target = state.resource, state.target
        await self._status(owned, state, starting, run=run, intent=step)

        async def call() -> Observation:
            # Secrets are read for each attempt (an apply, not a delete): never kept.
            settled = self._settled(provider, target)
            given = (
                resource
                if action is _delete_resource
                else await self._resolved(resource, settled, provider)
            )
            try:
                return await action(provider, given, settled)
            except Exception as exc:  # its text may quote a secret: never pass that on
                if not given.secrets or isinstance(exc, BackendUnavailable | Fenced):
                    raise
                raise scrubbed(exc, given.secrets.values(), f"provider {provider.kind}") from None

        return await self._call(owned, state, run, provider, call, what, step)

    async def _resolved(self, resource: Resource, target: Target, provider: Provider) -> Resource:
        # Hooks without secrets (a test's own, say) hand the resource over as it is; so does a
        # resource whose provider generates nothing (no store to read on its every call).
        resolve = getattr(self.hooks, "resolve", None)
        if resolve is None or (resource.kind == "resource" and not _outputs(provider)):
            return resource
        resolved: Resource = await resolve(resource, target)
        return resolved

    async def _apply(
        self, owned: _Owned, state: ActorState, run: str | None, step: _StepRun | None = None
    ) -> None:
        observation = await self._provider_step(
            owned, state, run, Status.PROGRESSING, "apply", _apply, step
        )
        if observation is not None:
            # What an apply generated is kept there and nowhere else. Not what an observation
            # echoes: it may predate a rotation asked for since (and would undo it).
            keep = getattr(self.hooks, "generated", None)
            if observation.secrets and keep is not None and state.resource and state.target:
                await keep(state.resource, state.target, observation.secrets)
            await self._observed(owned, state, observation, run, step)

    async def _retrying(
        self, state: ActorState, run: str | None, call: Callable[[], Awaitable[Observation]]
    ) -> Observation:
        retries = self._settings.provider_retries
        for attempt in range(retries + 1):
            try:
                return await call()
            except TemporaryError as exc:
                if attempt == retries:
                    raise TemporaryError(
                        f"{exc.detail} (gave up after {retries} retries)",
                        retry_after=exc.retry_after,
                    ) from exc
                delay = max(exc.retry_after, self._settings.retry_backoff * 2**attempt)
                delay = min(delay, MAX_BACKOFF) * (0.8 + 0.4 * random.random())
                state.last_error = exc.detail
                await self._publish(
                    make_event(
                        "actor.retry",
                        subject=state.node,
                        run=run,
                        data={
                            "error": exc.detail,
                            "attempt": attempt + 1,
                            "delay": round(delay, 3),
                        },
                    )
                )
                await anyio.sleep(delay)
        raise AssertionError("unreachable")

    async def _observed(
        self,
        owned: _Owned,
        state: ActorState,
        observation: Observation,
        run: str | None,
        step: _StepRun | None = None,
    ) -> None:
        status = HEALTH_STATUS[observation.health]
        if (
            step is None
            and status is state.status
            and state.last_error is None
            and observation.message == state.message
            and state.observed_generation == state.generation
            and state.observed == observation.state
        ):
            return  # an observation that changes nothing writes nothing (nor says anything)
        state.observed = dict(observation.state)
        state.observed_generation = state.generation
        await self._status(
            owned,
            state,
            status,
            message=observation.message,
            run=run,
            also=[_seen(state, observation.state)],
            outcome=step,
        )

    async def _delete(
        self, owned: _Owned, state: ActorState, run: str | None, step: _StepRun | None = None
    ) -> None:
        done = await self._provider_step(
            owned, state, run, Status.DELETING, "delete", _delete_resource, step
        )
        if done is None:
            return
        assert state.target is not None
        state.observed = None
        await self._status(
            owned,
            state,
            Status.DELETED,
            run=run,
            also=[DeleteObserved(state.node, state.target.environment)],
            outcome=step,
        )

    async def _observe(self, owned: _Owned, state: ActorState) -> None:
        provider = self._provider(state)
        if provider is None or state.resource is None or state.target is None:
            return
        if state.status in (Status.DELETED, Status.DELETING, Status.PENDING):
            return
        try:
            with anyio.fail_after(self._settings.step_timeout):
                target = self._settled(provider, state.target)
                resource = await self._resolved(state.resource, target, provider)
                try:
                    seen = await provider.observe(resource=resource, target=target)
                except Exception as exc:  # its text may quote a secret
                    if not resource.secrets:
                        raise
                    raise scrubbed(exc, resource.secrets.values(), provider.kind) from None
                changes = (
                    []
                    if seen is None
                    else await provider.diff(desired=resource.desired, observed=seen.state)
                )
        except (ZtdpError, TimeoutError, OSError) as exc:
            await self._publish(
                make_event("actor.observe_failed", subject=state.node, data={"error": str(exc)})
            )
            return
        if seen is None or changes:
            repair = state.target.reconcile == "repair"
            if repair or state.status is not Status.DRIFTED:
                await self._publish(
                    make_event(
                        "drift.detected",
                        subject=state.node,
                        data={"missing": seen is None, "changes": changes},
                    )
                )
            if repair:
                await self._apply(owned, state, None)
                if state.status is Status.FAILED:  # the repair itself failed: say so, and why
                    event = make_event(
                        "drift.repair_failed", subject=state.node, data={"error": state.last_error}
                    )
                else:
                    event = make_event("drift.repaired", subject=state.node, data={})
                await self._publish(event)
            else:
                # Report-only: it is not what was asked for any more, so it is not Ready (a
                # promotion must not pass on it); said once, not at every observation. What
                # is there is recorded as observed, so that a plan shows what an apply would
                # put back (it planned "noop" for a drifted object before).
                paths = [str(c["path"]) for c in changes]
                more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
                what = "missing" if seen is None else ", ".join(paths[:5]) + more
                observed = {} if seen is None else dict(seen.state)
                message = f"drifted: {what}"
                if state.status is Status.DRIFTED and (state.message, state.observed) == (
                    message,
                    observed,
                ):
                    return  # nothing new: nothing written
                state.observed = observed
                # A missing object is recorded as an empty state, not as none: what reads the
                # record (an undeploy's deletions) must still find it.
                await self._status(
                    owned, state, Status.DRIFTED, message=message, also=[_seen(state, observed)]
                )
            return
        await self._observed(owned, state, seen, None)

    async def _observe_forever(self) -> None:
        """Observe every node of the owned partitions, each about once per interval: the
        safety net under the watches, for changes they missed or providers without them."""
        interval = self._settings.observe_interval
        while True:
            await anyio.sleep(interval * (0.8 + 0.4 * random.random()))  # jitter
            for owned in list(self._owned.values()):
                self._sweep(owned)

    def _in_flight(self) -> int:
        """Messages from the mailbox taken and not settled yet, over the owned partitions."""
        return sum(len(owned.unsettled) for owned in self._owned.values())

    def _maybe_quiet(self) -> None:
        """Let waiting sweeps go on once the mail in flight leaves room."""
        if self._quiet is not None and self._in_flight() <= BACKLOG:
            self._quiet.set()
            self._quiet = None

    def _sweep(self, owned: _Owned) -> None:
        """Start observing every node of a partition, unless a sweep of it is under way."""
        if owned.tg is not None and not owned.sweeping:
            owned.sweeping = True
            owned.tg.start_soon(self._observe_partition, owned)

    async def _observe_partition(self, owned: _Owned) -> None:
        """A sweep: the partition's nodes, SWEEP_BATCH at a time, while the process's mail
        leaves room (at most BACKLOG messages in flight).

        Mail comes first: a takeover's backlog (or a run's steps) is what somebody waits
        for, and thousands of observations at once would make it wait behind them (and
        keep the event loop from renewing the leases in time)."""
        try:
            try:
                nodes = await self.state.nodes(owned.fence.partition)
            except BackendUnavailable as exc:
                log.warning(
                    "observation of partition %d skipped: %s", owned.fence.partition, exc.detail
                )
                return
            for start in range(0, len(nodes), SWEEP_BATCH):
                while self._in_flight() > BACKLOG:
                    if self._quiet is None:
                        self._quiet = anyio.Event()
                    await self._quiet.wait()
                if not self._accepting or owned.tg is None or owned.intake.cancel_called:
                    return
                batch = nodes[start : start + SWEEP_BATCH]
                sweep = _Sweep(len(batch))
                for node in batch:
                    self._dispatch(owned, _Local(Envelope(node=node, kind="observe"), sweep))
                await sweep.done.wait()
        finally:
            owned.sweeping = False

    # --- run coordinators ------------------------------------------------------------------

    async def _advance(
        self, owned: _Owned, envelopes: Sequence[Envelope], redelivered: bool
    ) -> None:
        """A run's coordinator: note the steps that finished, start what may start now."""
        run_id = envelopes[0].node.removeprefix(RUN_PREFIX)
        progress = owned.runs.get(run_id)
        loaded = progress is None or redelivered or any(e.body.get("resume") for e in envelopes)
        if loaded:
            run = await self._run_record(run_id, envelopes)
            if run.status != "Running":  # finished before a crash lost the acknowledgement
                owned.runs.pop(run_id, None)
                if redelivered:  # and maybe before it said so: say it again
                    await self._publish(_finished(run))
                return
            progress = owned.runs[run_id] = _Progress.of(run, await self.state.run_plan(run_id))
        assert progress is not None
        for envelope in envelopes:
            await self._note(progress, envelope)
        writes: list[Write] = []
        sends: list[Envelope] = []
        while progress.unrecorded:
            node = progress.unrecorded.pop()
            writes.append(PutStep(run_id, self._record_of(progress, node)))
        if loaded:
            # Steps sent before a crash may never have reached their actors, or died with them
            # (in-process mailboxes): send them again. A duplicate is dropped by its id, or
            # waits behind the original in its actor and is answered from the actor's record.
            sends.extend(
                self._step_message(progress, n)
                for n, s in progress.status.items()
                if n not in progress.done and s in ("Queued", "Progressing")
            )
        await self._start_ready(progress, writes, sends)
        if writes:
            await self.state.commit(writes, fence=owned.fence)
        await self._queue_steps(progress.run, writes, sends)
        if progress.complete():
            await self._finish_run(owned, progress)

    async def _queue_steps(
        self, run: Run, writes: Sequence[Write], sends: Sequence[Envelope]
    ) -> None:
        """Publish the step records just committed and send the steps, 64 at once, each
        step's record (Queued, Blocked) just before the step, so that its actor's events come
        after it; the records no step goes with (failures their actors could not record)
        first, before the Blocked records they caused. While a backend is away, what is left
        is tried again here after a pause: the records are committed, so a step not sent now
        would never be."""
        unpublished = {w.step.node: w.step for w in writes if isinstance(w, PutStep)}
        unsent = {e.id: e for e in sends}
        concurrently = not self._local or not isinstance(self._events, MemoryEventBus)

        async def publish(record: RunStep) -> None:
            await self._step_event(run.id, run.actor, record)
            unpublished.pop(record.node, None)

        async def queue_step(envelope: Envelope) -> None:
            record = unpublished.get(envelope.node)
            if record is not None:
                await publish(record)
            try:
                await self.send(envelope)
            except MessageTooLarge as exc:  # this step fails alone, saying why; not the run
                if envelope.kind != "step":
                    raise
                log.warning("run %s: %s", run.id, exc.detail)
                await self.send(_unrecorded(envelope, exc.detail))  # an outage: tried again
            del unsent[envelope.id]

        while True:
            try:
                with_steps = {e.node for e in unsent.values()}
                alone = [r for node, r in unpublished.items() if node not in with_steps]
                await _at_once(alone, publish, concurrently=concurrently)
                await _at_once(list(unsent.values()), queue_step, concurrently=concurrently)
                return
            except BackendUnavailable as exc:
                log.warning("run %s: %s; trying again", run.id, exc.detail)
                await anyio.sleep(PAUSE)

    async def _run_record(self, run_id: str, envelopes: Sequence[Envelope]) -> Run:
        """The run's record. A start is sent before the record is written (see start_run),
        so it usually arrives first: it looks again after each of START_LOOKS, in place,
        unless other messages wait for its handler slot; then it is handed back to the
        mailbox (`_NotRecordedYet`) to come again after START_RETRY."""
        starting = any(e.id.endswith(":start") and not e.expired() for e in envelopes)
        busy = self._handlers is not None and self._handlers.waiting > 0
        for pause in START_LOOKS if starting and not busy else ():
            try:
                return await self.state.run(run_id)
            except NotFound:
                await anyio.sleep(pause)
        try:
            return await self.state.run(run_id)
        except NotFound:
            if starting:
                raise _NotRecordedYet(run_id) from None
            raise

    async def _note(self, progress: _Progress, envelope: Envelope) -> None:
        """One message to a run's coordinator: a step finished, or the run starts."""
        body = envelope.body
        if "node" in body:
            if body.get("unrecorded") and body["node"] not in progress.done:
                progress.unrecorded.append(body["node"])
            progress.finished(body["node"], body["status"], body["error"])
        elif envelope.id.endswith(":start") and not any(
            s != "Pending" for s in progress.status.values()
        ):
            run = progress.run
            await self._publish(
                make_event(
                    "run.started",
                    subject=run.environment,
                    run=run.id,
                    actor=run.actor,
                    data={
                        "trigger": run.trigger,
                        "application": run.application,
                        "steps": len(run.steps),
                    },
                )
            )

    @staticmethod
    def _record_of(progress: _Progress, node: str) -> RunStep:
        """The step's record as the coordinator knows it (for what its actor could not write)."""
        step = progress.plan[node]["step"]
        return RunStep(
            node=node,
            source=step["source"],
            kind=step["kind"],
            action=step["action"],
            provider=step["provider"],
            wave=progress.plan[node]["wave"],
            status=progress.status[node],
            error=progress.errors[node],
            finished_at=datetime.now(UTC),
        )

    async def _run_broke(self, owned: _Owned, run_id: str, exc: Exception) -> None:
        """Fail a run whose coordination broke (not its steps: its own bookkeeping), each
        unfinished step saying why, instead of leaving it Running for ever."""
        log.error("run %s broke: %r", run_id, exc, exc_info=exc)
        owned.runs.pop(run_id, None)
        run = await self.state.run(run_id)
        if run.status != "Running":
            return
        now = datetime.now(UTC)
        writes: list[Write] = []
        for rs in run.steps:
            if rs.finished_at is None:
                rs.status, rs.error, rs.finished_at = "Failed", f"the run broke: {exc!r}", now
                writes.append(PutStep(run.id, rs))
        run.status, run.finished_at = "Failed", now
        writes.append(PutRun(run))
        await self.state.commit(writes, fence=owned.fence)
        self._ended(run)
        try:
            await self._publish(_finished(run))  # whoever follows the run learns it ended
        except (BackendUnavailable, Fenced):
            raise
        except Exception:
            log.exception("run %s: its end could not be published", run_id)

    async def _start_ready(
        self, progress: _Progress, writes: list[Write], sends: list[Envelope]
    ) -> None:
        parallelism = self._settings.apply_parallelism
        while progress.ready and (not parallelism or progress.flying < parallelism):
            node = progress.ready.popleft()
            if progress.status[node] != "Pending":
                continue
            entry = progress.plan[node]
            cause = progress.failed_before(node)
            if cause is not None:
                error = _clipped(
                    f"blocked by {cause}: {progress.errors[cause] or progress.status[cause]}"
                )
                record = RunStep(
                    node=node,
                    source=entry["step"]["source"],
                    kind=entry["step"]["kind"],
                    action=entry["step"]["action"],
                    provider=entry["step"]["provider"],
                    wave=entry["wave"],
                    status="Blocked",
                    error=error,
                    finished_at=datetime.now(UTC),
                )
                writes.append(PutStep(progress.run.id, record))
                # The actor says why too: its deployment's status is read from it.
                sends.append(
                    Envelope(
                        node=node,
                        kind="block",
                        body={
                            "run": progress.run.id,
                            "error": error,
                            "provider": entry["step"]["provider"],
                        },
                        id=f"{progress.run.id}:{node}:block",
                    )
                )
                progress.finished(node, "Blocked", error)
                continue
            progress.queued(node)
            record = RunStep(
                node=node,
                source=entry["step"]["source"],
                kind=entry["step"]["kind"],
                action=entry["step"]["action"],
                provider=entry["step"]["provider"],
                wave=entry["wave"],
                status="Queued",
            )
            writes.append(PutStep(progress.run.id, record))
            sends.append(self._step_message(progress, node))

    def _step_message(self, progress: _Progress, node: str) -> Envelope:
        entry = progress.plan[node]
        return Envelope(
            node=node,
            kind="step",
            body={
                "run": progress.run.id,
                "actor": progress.run.actor,
                "wave": entry["wave"],
                "step": entry["step"],
                "environment": entry.get("environment"),
            },
            id=f"{progress.run.id}:{node}",
        )

    async def _finish_run(self, owned: _Owned, progress: _Progress) -> None:
        run = progress.run
        failed = sorted(n for n, s in progress.status.items() if s in ("Failed", "Blocked"))
        run.status = "Failed" if failed else "Succeeded"
        run.finished_at = datetime.now(UTC)
        await self.state.commit([PutRun(run)], fence=owned.fence)
        owned.runs.pop(run.id, None)
        self._ended(run)
        await self._publish(_finished(run, failed))

    def _ended(self, run: Run) -> None:
        if run.finished_at is not None:
            metrics = self.telemetry.metrics
            metrics.runs.labels(run.trigger, run.status).inc()
            seconds = (run.finished_at - run.created_at).total_seconds()
            metrics.run_seconds.labels(run.trigger, run.status).observe(max(seconds, 0.0))

    async def _step_event(self, run_id: str, actor: str, rs: RunStep) -> None:
        if rs.finished_at is not None and rs.started_at is not None:
            seconds = (rs.finished_at - rs.started_at).total_seconds()
            self.telemetry.metrics.step_seconds.labels(rs.action, rs.status).observe(
                max(seconds, 0.0)
            )
        await self._publish(
            make_event(
                "run.step",
                subject=rs.node,
                run=run_id,
                actor=actor,
                data={"action": rs.action, "status": rs.status, "error": rs.error, "wave": rs.wave},
            )
        )


def _finished(run: Run, failed: Sequence[str] | None = None) -> Event:
    """The event of a run's end; `failed` read from its steps' records if not given."""
    if failed is None:
        failed = sorted(s.node for s in run.steps if s.status in ("Failed", "Blocked"))
    return make_event(
        "run.finished",
        subject=run.environment,
        run=run.id,
        actor=run.actor,
        data={"status": run.status, "failed": list(failed)},
    )


ERROR_MAX = 16_384  # characters of an error carried in a run's messages and records


def _clipped(error: str | None) -> str | None:
    """An error short enough to travel in a message (a provider's may quote megabytes)."""
    if error is None or len(error) <= ERROR_MAX:
        return error
    return f"{error[:ERROR_MAX]}... ({len(error) - ERROR_MAX:,} more characters)"


def _answer_message(
    run_id: str, node: str, status: str, error: str | None, *, unrecorded: bool = False
) -> Envelope:
    """The message telling a step's run how the step ended; `unrecorded`: its actor could
    not record that, its coordinator records it."""
    body: dict[str, Any] = {"node": node, "status": status, "error": _clipped(error)}
    if unrecorded:
        body["unrecorded"] = True
    return Envelope(node=run_node(run_id), kind="advance", body=body, id=f"{run_id}:{node}:done")


def _unrecorded(step: Envelope, error: str) -> Envelope:
    """The message telling a step's run that it failed, for its coordinator to record."""
    return _answer_message(step.body["run"], step.node, "Failed", error, unrecorded=True)


def _seen(state: ActorState, observed: Mapping[str, Any]) -> PutObserved:
    """The write recording what the provider observed of the actor's node."""
    assert state.resource is not None and state.target is not None
    return PutObserved(
        ObservedResource(
            node=state.node,
            source=state.node,
            kind=state.resource.kind,
            application=state.resource.application,
            environment=state.target.environment,
            provider=state.provider,
            state=dict(observed),
            depends_on=list(state.resource.depends_on),
        )
    )


def _target_key(provider: str, target: Target) -> str:
    """One watch per provider and target: what tells targets apart is all they hold that is
    their own (the merged settings may hold the server's credentials; the key is logged)."""
    return json.dumps(
        [provider, target.environment, target.spec],
        sort_keys=True,
        default=str,
    )


def _record(
    body: Mapping[str, Any],
    *,
    status: Any,
    error: str | None = None,
    started_at: datetime | None = None,
) -> RunStep:
    step = body["step"]
    return RunStep(
        node=step["node"],
        source=step["source"],
        kind=step["kind"],
        action=step["action"],
        provider=step["provider"],
        wave=body["wave"],
        status=status,
        error=error,
        started_at=started_at or datetime.now(UTC),
    )


T = TypeVar("T")
AT_ONCE = 64  # round trips of one batch of sends or publishes in flight at once


async def _at_once(
    items: Sequence[T], do: Callable[[T], Awaitable[None]], *, concurrently: bool
) -> None:
    """`do(item)` for each item, `AT_ONCE` at a time if `concurrently` (each a round trip),
    else in order (in-process backends: a task each would cost more than the call). The
    first failure is raised as itself, not in a group, for the callers' `except
    BackendUnavailable`; the others still in flight are cancelled."""
    if len(items) <= 1 or not concurrently:
        for item in items:
            await do(item)
        return
    queue = iter(items)
    failed: list[Exception] = []

    async def take() -> None:  # one of AT_ONCE tasks, each taking the next item in turn
        for item in queue:
            try:
                await do(item)
            except Exception as exc:
                failed.append(exc)
                tg.cancel_scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        for _ in range(min(AT_ONCE, len(items))):
            tg.start_soon(take)
    if failed:
        raise failed[0]


async def _quietly(settle: Awaitable[None]) -> None:
    """Acknowledge; if the mailbox is away, the message comes again and is answered again."""
    try:
        await settle
    except Exception as exc:
        log.warning("could not settle a delivery: %r", exc)


async def _apply(provider: Provider, resource: Resource, target: Target) -> Observation:
    await provider.validate(resource=resource)
    return await provider.apply(resource=resource, target=target)


async def _delete_resource(provider: Provider, resource: Resource, target: Target) -> Observation:
    await provider.delete(resource=resource, target=target)
    return Observation(state={}, health="Ready")


def _desire(state: ActorState, resource: Resource, target: Target) -> None:
    state.resource, state.target = resource, target
    state.desired = dict(resource.desired)
    state.generation += 1


def _deadline(seconds: float) -> anyio.CancelScope:
    """A scope cancelled after `seconds`; code after its block runs only if that happened.

    `anyio.fail_after` without its generator wrapper: it is on the path of every step.
    """
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


@lru_cache(maxsize=4096)
def _partition(node: str, partitions: int) -> int:
    """`partition_of`, remembered for the nodes messages went to lately (two sends a step)."""
    return partition_of(node, partitions)


def _step_status(status: Status | None) -> Any:
    if status is None or status in (Status.FAILED, Status.BLOCKED, Status.DELETING):
        return "Failed"
    return status.value


__all__ = ["ShuttingDown", "Supervisor"]


def _outputs(provider: Provider) -> tuple[str, ...]:
    """What a provider says it generates (`outputs`, e.g. a database's password and url)."""
    return tuple(getattr(provider, "outputs", ()) or ())
