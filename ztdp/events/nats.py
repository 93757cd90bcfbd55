"""The event bus of every ZTDP process of one installation, on a NATS JetStream stream.

Each event is a message of the stream `<prefix>_EVENTS` on `<prefix>.events.<type>`, its
CloudEvents document as JSON, its id as `Nats-Msg-Id` (NATS drops a second copy within the
duplicate window). Each process follows the stream from its last `keep` events on with a
consumer of its own into a local `EventIndex`, and serves `query` and `subscribe` from there:
every process sees the events of all, in the stream's order.

Read-your-writes: `publish` returns once the stream has stored the event (its ack) *and* this
process's follower has taken it into the index, so a `query` right after it finds it. The
event is not added locally at once: then each process would order its own events before
others' published earlier, and processes would disagree about the order.

A process that answers no queries (a `ztdp worker`) connects with `follow=False`: it only
publishes, and `publish` returns at the stream's ack. Following every event of the
installation cost a worker about a tenth of its CPU, and waiting for the echo a round trip
per event.

The event store is fed from the stream, which is the durable outbox between a publisher and
the store: a store of the installation's own (Postgres, a plugin) by `feed`, one durable pull
consumer shared by every process (a work queue: each event reaches one process, which acks
it after the store took it, so an event whose process died comes again to another); a store
in each process's memory by the follower (`sink`), which sees every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
import nats.errors
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    Header,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import NotFoundError

from ztdp.errors import BackendUnavailable
from ztdp.events.bus import Event, EventFilter, EventIndex
from ztdp.events.store import EventStore
from ztdp.nats_client import UNREACHABLE

log = logging.getLogger("ztdp.events")
_HEADROOM = 4096  # bytes of a message NATS counts besides the payload (headers, id)

_FEED_AWAY: tuple[type[Exception], ...] = (*UNREACHABLE, BackendUnavailable)
_INFO_AWAY: tuple[type[Exception], ...] = (*UNREACHABLE, NotFoundError)


DAY = 86_400.0
HEARTBEAT = 0.5  # seconds between the server's idle heartbeats to a follower
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # seconds before a follower's next consumer, doubling
FEED_BATCH = 256  # events appended to the store at once by the feed
FEED_ACK_WAIT = 5.0  # seconds before an event the feed took but did not ack comes again
SYNC_POLL = 0.01  # seconds between looks at the feed's progress in `sync`


class NatsEventBus:
    """An `EventBus` on NATS JetStream; build it with `await NatsEventBus.connect(...)`.

    The follower is one asyncio task that this bus owns from `connect` to `aclose` (which
    cancels and awaits it). It is not in an anyio task group because the application may
    open and close the bus from different tasks, and a task group must be left by the task
    that entered it.
    """

    def __init__(
        self,
        nc: Client,
        *,
        url: str,
        prefix: str,
        keep: int,
        buffer: int,
        timeout: float,
        sink: Callable[[Sequence[Event]], object] | None = None,
        follow: bool = True,
    ) -> None:
        self._nc = nc
        self._follows = follow
        self._js: JetStreamContext = nc.jetstream(timeout=timeout)
        self._url = url
        self._stream = f"{prefix}_EVENTS"
        self._subjects = f"{prefix}.events."
        self._timeout = timeout
        self._index = EventIndex(keep=keep, buffer=buffer)
        self._taken = 0  # stream sequence of the last message the follower took
        # publishers waiting for their echo, by the stream sequence they wait for
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._waiter_ids = itertools.count()
        self._follower: asyncio.Task[None] | None = None
        self._lifetime = anyio.CancelScope()  # the follower's; cancelled when the bus closes
        self._consumer_scope: anyio.CancelScope | None = None  # cancelled: start a new one
        self._wake = False  # start the next consumer without waiting (NATS is back)
        self._closed = False
        self._sink = sink
        self._durable: str | None = None  # the store feed's consumer, once `feed` runs

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str,
        keep: int = 10_000,
        buffer: int = 1_000,
        timeout: float = 2.0,  # noqa: ASYNC109  (every NATS call's limit, for the bus's life)
        max_age: float = 30 * DAY,
        max_bytes: int = 1 << 30,
        sink: Callable[[Sequence[Event]], object] | None = None,
        follow: bool = True,
    ) -> NatsEventBus:
        """Connect, create or update the stream, and replay its last `keep` events.

        With a `sink` (a per-process event store's synchronous `add`), the follower replays
        the whole stream instead and hands the sink every event it takes, in order.
        `follow=False`: no follower, for a process that only publishes; `query` and
        `subscribe` then refuse (there is nothing to answer from).

        Raises BackendUnavailable naming `url` when NATS does not answer within `timeout`
        seconds. Once connected, the client reconnects forever. The stream keeps events for
        `max_age` seconds or up to `max_bytes` (which NATS reserves on its disk), whichever
        is reached first, oldest out first: the event history is the audit trail until a
        durable event store holds it.
        """
        nc = Client()
        if sink is not None and not follow:
            raise ValueError("a sink is fed by the follower: it needs follow=True")
        bus = cls(
            nc,
            url=url,
            prefix=prefix,
            keep=keep,
            buffer=buffer,
            timeout=timeout,
            sink=sink,
            follow=follow,
        )
        try:
            with anyio.fail_after(timeout):
                await nc.connect(
                    url,
                    connect_timeout=timeout,  # type: ignore[arg-type]  # seconds, float works
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]  # seconds, float works
                    ping_interval=5,
                    max_outstanding_pings=3,
                    error_cb=bus._on_error,
                    disconnected_cb=bus._on_disconnected,
                    reconnected_cb=bus._on_reconnected,
                )
        except UNREACHABLE as exc:
            await bus.aclose()
            raise BackendUnavailable(
                f"NATS at {url} did not answer within {timeout:g} s ({exc!r}); "
                "the event bus cannot start"
            ) from exc
        try:
            info = await bus._ensure_stream(prefix, max_age=max_age, max_bytes=max_bytes)
            if not follow:
                return bus
            last = info.state.last_seq
            bus._taken = max(0, info.state.first_seq - 1, last - keep if sink is None else 0)
            bus._follower = asyncio.create_task(bus._follow(), name=f"ztdp events {prefix}")
            if not await bus._reach(last):
                raise BackendUnavailable(
                    f"replaying the events of stream {bus._stream} from NATS at {url} stalled "
                    f"for {timeout:g} s at {bus._taken} of {last}"
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await bus.aclose()
            raise
        return bus

    def _shrunk(self, event: Event, size: int) -> tuple[Event, bytes]:
        """The event with its largest data fields replaced by a note, to fit NATS's payload
        limit: a graph change of a batch near the body limit, say. What happened (type,
        subject, actor, run, id) is kept and the record is not lost; the full batch stays in
        the graph store's change log."""
        data = dict(event.data)
        limit = self._nc.max_payload - _HEADROOM
        for key in sorted(data, key=lambda k: -len(json.dumps(data[k], default=str))):
            data[key] = f"(omitted: {size} bytes is over the event bus's limit of {limit})"
            shrunk = event._replace(data=data)
            payload = json.dumps(shrunk.cloudevent(), separators=(",", ":")).encode()
            if len(payload) <= limit:
                log.warning(
                    "event %s (%s on %s) is %d bytes, over NATS's limit: published without "
                    "its largest data fields",
                    event.id,
                    event.type,
                    event.subject,
                    size,
                )
                return shrunk, payload
        raise AssertionError("an event without data fits any NATS payload limit")

    async def _ensure_stream(self, prefix: str, *, max_age: float, max_bytes: int) -> StreamInfo:
        config = StreamConfig(
            name=self._stream,
            description="ZTDP events (CloudEvents 1.0 JSON)",
            subjects=[f"{self._subjects}>"],
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
            max_age=max_age,
            max_bytes=max_bytes,
        )
        try:
            try:
                return await self._js.update_stream(config)
            except NotFoundError:
                return await self._js.add_stream(config)  # another process may race us: same
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot create or update stream {self._stream} on NATS at {self._url}: {exc!r}"
            ) from exc

    async def publish(self, event: Event) -> None:
        """Store the event in the stream and wait until this process's index has it (with
        `follow=False`: until the stream has it).

        Raises BackendUnavailable if NATS is unreachable or does not acknowledge the event
        within the timeout; then the event may or may not have been stored, and publishing it
        again is harmless (NATS drops a repeated id).
        """
        if self._closed:
            raise anyio.ClosedResourceError
        subject = self._subjects + event.type.removeprefix("io.ztdp.")
        if not self._nc.is_connected:  # no buffering in nats-py for a later reconnect
            raise BackendUnavailable(
                f"NATS at {self._url} is unreachable: event {event.id} ({event.type}) was not "
                "published"
            )
        payload = json.dumps(event.cloudevent(), separators=(",", ":")).encode()
        if len(payload) > self._nc.max_payload - _HEADROOM:
            event, payload = self._shrunk(event, len(payload))
        try:
            ack = await self._js.publish(
                subject,
                payload,
                timeout=self._timeout,
                stream=self._stream,
                headers={Header.MSG_ID: event.id},
            )
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"NATS at {self._url} did not store event {event.id} ({event.type}) on "
                f"{subject}: {exc!r}"
            ) from exc
        if self._follows and not await self._reach(ack.seq) and not self._closed:
            log.warning(
                "event %s is stored in %s (message %d) but this process has not read it back "
                "within %g s; it will be visible here once the follower catches up",
                event.id,
                self._stream,
                ack.seq,
                self._timeout,
            )

    async def query(self, flt: EventFilter, *, limit: int) -> list[dict[str, Any]]:
        self._must_follow()
        return self._index.query(flt, limit=limit)

    def subscribe(
        self, flt: EventFilter
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[dict[str, Any]]]:
        self._must_follow()
        return self._index.subscribe(flt)

    def _must_follow(self) -> None:
        if not self._follows:  # an empty answer would look like "no events": refuse instead
            raise RuntimeError(
                f"this process's bus on {self._stream} only publishes (follow=False): it "
                "answers no queries"
            )

    async def feed(
        self,
        store: EventStore,
        *,
        durable: str,
        batch: int = FEED_BATCH,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Append every event of the stream to `store`, until cancelled.

        Through the durable pull consumer `durable`, shared by every process feeding the same
        store: each batch goes to one of them, is appended in one call and acknowledged only
        after it; an event delivered twice (its process died before the ack, the ack was lost)
        is appended twice, which the store ignores (idempotent on the id). A new consumer
        starts at the beginning of the stream, so a new store receives what the stream still
        holds. While the store cannot take a batch, the batch is given back (nak) and retried
        after a pause, doubling to `RETRY_MAX`: nothing is lost, the store catches up later.
        """
        self._durable = durable
        task_status.started()
        delay, failing = 0.0, False
        while not self._closed:
            if delay:
                await anyio.sleep(delay)
            try:
                sub = await self._js.pull_subscribe(
                    f"{self._subjects}>",
                    durable=durable,
                    stream=self._stream,
                    config=ConsumerConfig(
                        durable_name=durable,
                        description="ZTDP: feeds the event store",
                        deliver_policy=DeliverPolicy.ALL,
                        ack_policy=AckPolicy.EXPLICIT,
                        ack_wait=FEED_ACK_WAIT,
                        max_ack_pending=batch * 64,
                        filter_subject=f"{self._subjects}>",
                    ),
                )
                try:
                    while not self._closed:
                        try:
                            msgs = await sub.fetch(batch, timeout=1.0)
                        except nats.errors.TimeoutError:
                            continue  # nothing new
                        await self._append(store, msgs)
                        delay, failing = 0.0, False
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                        await sub.unsubscribe()
            except _FEED_AWAY as exc:
                report = log.debug if failing else log.warning
                report("cannot feed the event store from %s: %r; trying again", self._stream, exc)
                failing = True
                delay = min(max(delay * 2, RETRY_FIRST), RETRY_MAX)

    async def _append(self, store: EventStore, msgs: list[Msg]) -> None:
        """Append a batch, then acknowledge it; on failure give it back (nak) and raise.

        A batch the store refuses for another reason than being unreachable is tried event by
        event, so that one event it can never take (a bug, a limit of the store) does not stop
        the feed: that one is logged as an error and terminated (it stays in the stream).
        """
        events = []
        for msg in msgs:
            try:
                events.append(Event.from_cloudevent(json.loads(msg.data)))
            except ValueError as exc:
                log.warning(
                    "message %d of %s is not an event, not stored: %s",
                    msg.metadata.sequence.stream,
                    self._stream,
                    exc,
                )
        try:
            await store.append(events)
        except (BackendUnavailable, anyio.get_cancelled_exc_class()):
            await self._give_back(msgs)
            raise
        except Exception:
            log.exception("the event store refused a batch of %d; storing one by one", len(msgs))
            await self._one_by_one(store, msgs)
            return
        for msg in msgs:
            await msg.ack()

    async def _one_by_one(self, store: EventStore, msgs: list[Msg]) -> None:
        for n, msg in enumerate(msgs):
            try:
                event = Event.from_cloudevent(json.loads(msg.data))
            except ValueError:
                await msg.ack()  # said above
                continue
            try:
                await store.append([event])
            except (BackendUnavailable, anyio.get_cancelled_exc_class()):
                await self._give_back(msgs[n:])
                raise
            except Exception as exc:
                log.error(
                    "the event store cannot take event %s (%s): %r; it is not stored (it stays "
                    "in stream %s until the stream's limits remove it)",
                    event.id,
                    event.type,
                    exc,
                    self._stream,
                )
                await msg.term()
            else:
                await msg.ack()

    async def _give_back(self, msgs: list[Msg]) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
            for msg in msgs:  # now rather than after the ack wait
                with contextlib.suppress(*UNREACHABLE):
                    await msg.nak(delay=RETRY_MAX)

    async def sync(self) -> None:
        """Wait until the event store has every event this process has published or seen.

        Only the store `feed` feeds can lag behind; a per-process store (`sink`) is always
        there. Bounded by the timeout: past it, or if NATS does not answer, the caller reads
        the store as it is (the events come later).
        """
        durable = self._durable
        if durable is None or self._closed:
            return
        target = self._taken
        with anyio.move_on_after(self._timeout):
            while True:
                try:
                    info = await self._js.consumer_info(self._stream, durable)
                except _INFO_AWAY as exc:
                    log.debug("cannot tell how far the event store is fed: %r", exc)
                    return
                if (info.ack_floor.stream_seq or 0) >= target:
                    return
                await anyio.sleep(SYNC_POLL)

    async def aclose(self) -> None:
        """Stop following, end every subscriber's stream and close the connection; calling it
        again is harmless."""
        self._closed = True
        self._moved(everyone=True)
        self._lifetime.cancel()
        if self._follower is not None:
            await self._follower  # it ends once its consumer is deleted
            self._follower = None
        self._index.close()
        if not self._nc.is_closed:
            await self._nc.close()

    # The follower: the stream into the index, one consumer after another.

    async def _reach(self, sequence: int) -> bool:
        """Wait until the index holds stream message `sequence`; False if the follower made no
        progress for `timeout` seconds or stopped."""
        while self._taken < sequence:
            if self._closed or self._follower is None or self._follower.done():
                return False
            # Woken only when its own event is read (or the follower stops): a wake-up of
            # every publisher at every event made many concurrent publishes quadratic.
            arrived = anyio.Event()
            heapq.heappush(self._waiters, (sequence, next(self._waiter_ids), arrived))
            with anyio.move_on_after(self._timeout) as waited:
                await arrived.wait()
            if waited.cancelled_caught:
                return self._taken >= sequence
        return True

    def _moved(self, *, everyone: bool = False) -> None:
        """Wake the publishers whose events are read now (`everyone`: the follower stopped)."""
        waiters = self._waiters
        while waiters and (everyone or waiters[0][0] <= self._taken):
            heapq.heappop(waiters)[2].set()

    async def _follow(self) -> None:
        """The follower task: one consumer after another, until `aclose` cancels it."""
        delay, failing = 0.0, False
        with self._lifetime:
            try:
                while True:
                    with anyio.CancelScope() as self._consumer_scope:
                        if delay and not self._wake:
                            await anyio.sleep(delay)
                        self._wake = False
                        before = self._taken
                        try:
                            await self._consume()
                        except UNREACHABLE as exc:  # said once per outage, not per attempt
                            report = log.debug if failing else log.warning
                            report("cannot follow %s: %r; trying again", self._stream, exc)
                            failing = True
                        except Exception:  # nobody to raise it to: the bus would stop following
                            log.exception("the follower of %s failed; starting again", self._stream)
                        if self._taken > before:
                            delay, failing = RETRY_FIRST, False
                        else:
                            delay = min(max(delay * 2, RETRY_FIRST), RETRY_MAX)
                    self._consumer_scope = None
            finally:
                self._moved(everyone=True)  # publishers waiting for their echo stop waiting

    async def _consume(self) -> None:
        """Follow the stream with a new consumer from the message after the last one taken,
        until it fails (raises) or falls out of step with the stream (returns)."""
        last = (await self._js.stream_info(self._stream)).state.last_seq
        if last < self._taken:
            log.warning(
                "stream %s ends at message %d, before message %d this process read: NATS lost "
                "messages or the stream was recreated; following it from its end",
                self._stream,
                last,
                self._taken,
            )
            self._taken = last
        arrived, received = anyio.create_memory_object_stream[Msg](math.inf)

        async def deliver(msg: Msg) -> None:  # nats-py calls it in its own task
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                arrived.send_nowait(msg)

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=deliver)
        consumer: str | None = None
        try:
            info = await self._js.add_consumer(
                self._stream,
                ConsumerConfig(
                    deliver_subject=inbox,
                    filter_subject=f"{self._subjects}>",
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self._taken + 1,
                    ack_policy=AckPolicy.NONE,
                    flow_control=True,
                    idle_heartbeat=HEARTBEAT,
                    mem_storage=True,
                    num_replicas=1,
                    inactive_threshold=30.0,
                ),
            )
            consumer = info.name
            await self._take_from(received)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                arrived.close()
                received.close()
                await self._drop_consumer(sub, consumer)

    async def _take_from(self, received: MemoryObjectReceiveStream[Msg]) -> None:
        delivered = 0  # the consumer's own sequence: one more per message, or we missed one
        while True:
            with anyio.move_on_after(HEARTBEAT * 3) as waited:
                msg = await received.receive()
            if waited.cancelled_caught:
                log.info("no heartbeat from the follower of %s; starting again", self._stream)
                return
            status = msg.headers.get(Header.STATUS) if msg.headers else None
            if status is not None:
                assert msg.headers is not None
                if status != "100":
                    log.info("follower of %s ended: %s %s", self._stream, status, msg.headers)
                    return
                if msg.reply:  # flow control: everything before it is taken, ask for more
                    await self._nc.publish(msg.reply)
                    continue
                stalled = msg.headers.get(Header.CONSUMER_STALLED)
                if stalled:
                    await self._nc.publish(stalled)
                if int(msg.headers.get(Header.LAST_CONSUMER, delivered)) != delivered:
                    log.info("the follower of %s missed messages; starting again", self._stream)
                    return
                continue
            sequence = msg.metadata.sequence
            if sequence.consumer != delivered + 1:
                log.info("the follower of %s missed messages; starting again", self._stream)
                return
            delivered += 1
            if sequence.stream > self._taken:
                self._take(sequence.stream, msg.data)

    def _take(self, sequence: int, data: bytes) -> None:
        try:
            event = Event.from_cloudevent(json.loads(data))
        except ValueError as exc:  # JSON and UTF-8 errors are ValueErrors too
            log.warning(
                "message %d of %s is not an event, skipped: %s", sequence, self._stream, exc
            )
        else:
            self._index.add(event)
            if self._sink is not None:
                self._sink((event,))
        self._taken = sequence
        self._moved()

    async def _drop_consumer(self, sub: Subscription, consumer: str | None) -> None:
        """Unsubscribe and delete the consumer; if NATS cannot be told now, the consumer goes
        by itself when nobody has listened for its `inactive_threshold`."""
        try:
            await sub.unsubscribe()
            if consumer is not None and self._nc.is_connected:
                await self._js.delete_consumer(self._stream, consumer)
        except UNREACHABLE as exc:
            log.debug("could not delete consumer %s of %s: %r", consumer, self._stream, exc)

    # Connection callbacks (nats-py awaits them in its own tasks).

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS at %s: %r", self._url, exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("lost NATS at %s; reconnecting", self._url)

    async def _on_reconnected(self) -> None:
        log.warning("reconnected to NATS at %s; following %s again", self._url, self._stream)
        self._wake = True
        if self._consumer_scope is not None:
            self._consumer_scope.cancel()  # its consumer may be gone with a restarted server
