"""Mailboxes on NATS JetStream: durable, deduplicated, redelivered until acknowledged.

Layout, under the installation's `nats_prefix` P:

- one stream `P_MBOX` on the subjects `P.mbox.*`, file storage, work-queue retention (a
  message is removed once acknowledged, so the stream holds what is still to do), and a
  duplicate window of two minutes: a send repeated with the same envelope id (`Nats-Msg-Id`)
  within it is stored once;
- per partition p, the subject `P.mbox.<p>` and a durable pull consumer `P-mbox-<p>` filtered
  on it: explicit acks, the `ack_wait` setting, unlimited deliveries. Consumers are created
  (or updated) the first time this process consumes or counts a partition: a process only
  touches the partitions it owns, and creating 1,024 of them up front costs about a second.

`send` returns once JetStream has stored the message (its publish acknowledgement), so it
survives the sender's crash and a NATS restart. It does not write while the connection is down:
it waits up to `timeout` for a reconnect, then raises `BackendUnavailable`, rather than leaving
the message in the client's buffer to be sent later behind the back of a caller that was told
it failed. A publish that times out may still have been stored; sending the same envelope again
(same id) within the duplicate window is then harmless.

Order. A partition's deliveries come in the order the messages were stored, and JetStream
gives a pull consumer the messages due for redelivery before new ones. "Due" is the catch:
a delivery that was not acknowledged becomes due only when its ack wait expires (or at once
when it is nacked); until then the consumer hands out newer messages. So when a worker takes
over a partition whose previous consumer left deliveries unacknowledged (it crashed, or gave
the partition up mid-message), `consume` first deletes that durable consumer and creates it
again: the stream holds only what was not acknowledged, and the new consumer delivers all of
it at once, oldest first, which keeps per-actor order across a failover without sitting out an
ack wait. Failover thus costs the lease TTL plus a renewal round. Handlers of long steps call
`in_progress()` to stay within the ack wait. Messages fetched in a batch and
not handed out yet may pass their ack wait behind a slow handler; that is harmless: JetStream
redelivers only in answer to a pull, a consumer pulls again only once its batch is handed out,
and an ack after the ack wait still counts. `nack(delay)` is the exception on purpose: newer
messages overtake a message nacked with a delay.

Outages. The connection reconnects forever, every fraction of a second, and picks up a
restarted NATS without a new mailbox object; a consumer's iterator waits through the outage
(logging a warning) and resumes. Acks lost with a dead connection are logged; their messages
are delivered again, and handlers are idempotent. A stream or consumer missing after NATS lost
its store is created again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext

from ztdp.errors import BackendUnavailable, MessageTooLarge, ZtdpError
from ztdp.nats_client import UNREACHABLE
from ztdp.runtime.mailbox.base import Envelope

log = logging.getLogger("ztdp.runtime.mailbox")

DUPLICATE_WINDOW = 120.0  # seconds within which a repeated envelope id is dropped
MAX_ACK_PENDING = 10_000  # deliveries out at once per partition
FETCH_BATCH = 256  # messages asked for per pull
FETCH_EXPIRY = 1.0  # seconds a pull waits on the server when the partition is empty
RECONNECT_WAIT = 0.25  # seconds between reconnect attempts
PING_INTERVAL = 5  # seconds; two unanswered pings mark a silent connection dead
RETRY_DELAY = 0.25  # seconds before a consumer retries after an unexpected error
POLL = 0.05  # seconds between looks at the connection while it is down
STREAM_EXISTS = 10058  # JetStream: stream name already in use with a different configuration


class NatsDelivery:
    """One message handed to a handler; settling it twice does nothing."""

    __slots__ = ("_msg", "_settled", "envelope", "redelivered", "sequence")

    def __init__(self, msg: Msg, envelope: Envelope, *, redelivered: bool = False) -> None:
        self._msg = msg
        self.envelope = envelope
        self.redelivered = redelivered or msg.metadata.num_delivered > 1
        self.sequence = msg.metadata.sequence.stream
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            try:
                await self._msg.ack()
            except nats.errors.Error as exc:
                self._lost("ack", exc)

    async def nack(self, delay: float = 0.0) -> None:
        if not self._settled:
            self._settled = True
            try:
                await self._msg.nak(delay=delay)
            except nats.errors.Error as exc:
                self._lost("nack", exc)

    async def in_progress(self) -> None:
        if not self._settled:
            try:
                await self._msg.in_progress()
            except nats.errors.Error as exc:
                self._lost("in-progress heartbeat", exc)

    def _lost(self, what: str, exc: Exception) -> None:
        log.warning(
            "%s of message %s (%s to %s) not sent: %r; JetStream delivers it again after its "
            "ack wait",
            what,
            self.envelope.id,
            self.envelope.kind,
            self.envelope.node,
            exc,
        )


class NatsMailbox:
    """The `Mailbox` seam on NATS JetStream; build it with `await NatsMailbox.connect(...)`."""

    def __init__(
        self, url: str, *, prefix: str, partitions: int, ack_wait: float, timeout: float
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.partitions = partitions
        self.ack_wait = ack_wait
        self.timeout = timeout
        self.stream = f"{prefix}_MBOX"
        self._nc = Client()
        self._js: JetStreamContext = self._nc.jetstream(timeout=timeout)
        self._consumers: set[int] = set()  # partitions whose consumer this process ensured
        self._consuming: set[int] = set()
        self._connected_once = False
        self._first_error: Exception | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str,
        partitions: int,
        ack_wait: float,
        timeout: float = 2.0,  # noqa: ASYNC109 - the mailbox's bound on every NATS call, kept
    ) -> NatsMailbox:
        """Connect and create or update the stream; `BackendUnavailable` if NATS is not there.

        The first connection must succeed within `timeout` (it fails at once on a refused
        connection); after that the client reconnects forever in the background.
        """
        box = cls(url, prefix=prefix, partitions=partitions, ack_wait=ack_wait, timeout=timeout)
        await box._connect()
        try:
            await box._ensure_stream()
        except BaseException:
            await box.aclose()
            raise
        return box

    # -- the seam --------------------------------------------------------------------------

    async def send(self, envelope: Envelope, *, partition: int) -> None:
        """Raises MessageTooLarge if the envelope is over what NATS takes in one message."""
        subject = self._subject(partition)
        headers = {**envelope.headers, "Nats-Msg-Id": envelope.id}
        payload = envelope.encode()
        deadline = time.monotonic() + self.timeout
        await self._until_connected(deadline, f"cannot send {envelope.kind} to {envelope.node}")
        # NATS counts the headers too (nats-py checks only the payload): a message over the
        # limit makes the server close the connection, for every partition of this process.
        size = len(payload) + _header_bytes(headers)
        if size > self._nc.max_payload:
            raise MessageTooLarge(
                f"{envelope.kind} for {envelope.node} is {size:,} bytes, over the "
                f"{self._nc.max_payload:,} bytes a message to NATS can hold; make its desired "
                "state smaller (or raise the server's max_payload)",
                node=envelope.node,
            )
        try:
            try:
                await self._js.publish(
                    subject, payload, timeout=self._left(deadline), headers=headers
                )
            except nats.js.errors.NoStreamResponseError:
                # No stream took it: NATS lost its store. Create the stream again, then retry.
                log.warning("stream %s is missing at %s; creating it again", self.stream, self.url)
                await self._ensure_stream()
                await self._js.publish(
                    subject, payload, timeout=self._left(deadline), headers=headers
                )
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot send {envelope.kind} to {envelope.node}: NATS at {self.url} did not "
                f"store it within {self.timeout:g}s ({exc!r}); send it again later (the same "
                "envelope id is deduplicated)"
            ) from exc

    @asynccontextmanager
    async def consume(self, partition: int) -> AsyncIterator[AsyncIterator[NatsDelivery]]:
        """The partition's deliveries (see `Mailbox.consume`).

        Entering needs NATS (`BackendUnavailable` otherwise) and may wait one ack wait for a
        previous consumer's deliveries (see the module's notes on order); once entered, the
        iterator waits through outages and ends only when the mailbox is closed.
        """
        durable = self._durable(partition)
        if partition in self._consuming:
            raise RuntimeError(f"partition {partition} already has a consumer")
        self._consuming.add(partition)
        try:
            redelivered_through = await self._await_previous_consumer(partition)
            try:
                sub = await self._js.pull_subscribe_bind(durable, stream=self.stream)
            except UNREACHABLE as exc:
                raise BackendUnavailable(
                    f"cannot consume partition {partition}: NATS at {self.url}: {exc!r}"
                ) from exc
            try:
                yield _Deliveries(self, partition, sub, redelivered_through)
            finally:
                # What was not acknowledged is delivered again after the ack wait.
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
                    try:
                        await sub.unsubscribe()
                    except nats.errors.Error as exc:
                        log.debug("unsubscribing from partition %d: %r", partition, exc)
        finally:
            self._consuming.discard(partition)

    async def pending(self, partition: int) -> int:
        """Queued plus delivered-but-unacknowledged. Acks are sent without waiting for the
        server, so a count read just after an ack may still include it for a moment."""
        info = await self._consumer_info(partition)
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def ping(self) -> None:
        if not self._nc.is_connected:
            raise BackendUnavailable(f"NATS at {self.url} is unreachable (reconnecting)")
        try:
            await self._nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # a float works
        except UNREACHABLE as exc:
            raise BackendUnavailable(f"NATS at {self.url} does not answer: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the connection, sending acks still buffered; calling it again does nothing."""
        if not self._nc.is_closed:
            await self._nc.close()

    # -- connection ------------------------------------------------------------------------

    async def _connect(self) -> None:
        failed = anyio.Event()

        async def on_error(exc: Exception) -> None:
            if not self._connected_once:
                self._first_error = self._first_error or exc
                failed.set()
            elif self._nc.is_connected:
                log.warning("NATS at %s: %r", self.url, exc)
            else:
                log.debug("NATS at %s, reconnecting: %r", self.url, exc)

        async with anyio.create_task_group() as tg:

            async def give_up_on_first_error() -> None:
                await failed.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(give_up_on_first_error)
            with anyio.move_on_after(self.timeout):
                await self._nc.connect(
                    self.url,
                    connect_timeout=self.timeout,  # type: ignore[arg-type]  # a float works
                    reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]  # likewise
                    max_reconnect_attempts=-1,
                    ping_interval=PING_INTERVAL,
                    error_cb=on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._connected_once = True
            tg.cancel_scope.cancel()
        if not self._connected_once:
            await self._nc.close()
            why = (
                repr(self._first_error) if self._first_error else f"no answer in {self.timeout:g}s"
            )
            raise BackendUnavailable(
                f"NATS at {self.url} cannot be reached: {why}; check that it runs and the "
                "nats_url setting"
            )

    async def _on_disconnected(self) -> None:
        if self._connected_once and not self._nc.is_closed:
            log.warning("NATS at %s: connection lost; reconnecting", self.url)

    async def _on_reconnected(self) -> None:
        log.warning("NATS at %s: reconnected", self.url)

    async def _until_connected(self, deadline: float, doing: str) -> None:
        while not self._nc.is_connected:
            if self._nc.is_closed:
                raise BackendUnavailable(f"{doing}: the mailbox is closed")
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"{doing}: NATS at {self.url} unreachable for {self.timeout:g}s; retry later"
                )
            await anyio.sleep(POLL)

    def _left(self, deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.001)

    # -- stream and consumers --------------------------------------------------------------

    def _subject(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
        return f"{self.prefix}.mbox.{partition}"

    def _durable(self, partition: int) -> str:
        self._subject(partition)  # checks the range
        return f"{self.prefix}-mbox-{partition}"

    async def _ensure_stream(self) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.mbox.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_EXISTS:
                    raise
                await self._js.update_stream(config)
        except nats.js.errors.APIError as exc:
            if exc.code == 503:
                raise BackendUnavailable(f"JetStream at {self.url} is not available") from exc
            raise ZtdpError(
                f"stream {self.stream} at {self.url} cannot be created or updated: "
                f"{exc.description}; remove it or choose another nats_prefix"
            ) from exc
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot create stream {self.stream}: NATS at {self.url}: {exc!r}"
            ) from exc
        self._consumers.clear()  # a new stream has no consumers yet

    async def _ensure_consumer(self, partition: int) -> None:
        if partition in self._consumers:
            return
        config = ConsumerConfig(
            durable_name=self._durable(partition),
            filter_subject=self._subject(partition),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING,
        )
        try:
            try:
                await self._js.add_consumer(self.stream, config)
            except nats.js.errors.NotFoundError:
                log.warning("stream %s is missing at %s; creating it again", self.stream, self.url)
                await self._ensure_stream()
                await self._js.add_consumer(self.stream, config)
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot create the consumer of partition {partition}: NATS at {self.url}: {exc!r}"
            ) from exc
        self._consumers.add(partition)

    async def _consumer_info(self, partition: int) -> ConsumerInfo:
        await self._ensure_consumer(partition)
        try:
            try:
                info: Any = await self._js.consumer_info(self.stream, self._durable(partition))
            except nats.js.errors.NotFoundError:
                self._consumers.discard(partition)
                await self._ensure_consumer(partition)
                info = await self._js.consumer_info(self.stream, self._durable(partition))
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot read the consumer of partition {partition}: NATS at {self.url}: {exc!r}"
            ) from exc
        return cast(ConsumerInfo, info)

    async def _await_previous_consumer(self, partition: int) -> int:
        """Make what a previous consumer left unacknowledged due at once, so it comes first;
        return the stream sequence up to which a delivery may have been delivered before.

        The consumer is deleted and created again: the stream keeps only what was not
        acknowledged (work-queue retention), and a new consumer delivers all of it from the
        start, in stream order, with no ack wait to sit out. Whoever consumed before has
        stopped handling (a live owner stops before it releases the lease; a dead one cannot
        handle), so nothing it still holds is handled twice at once. A new consumer counts
        deliveries from one again: what the stream held when it was renewed is marked as
        redelivered by its sequence instead (some of it never was: that costs a handler a
        look at its records, never a second effect)."""
        info = await self._consumer_info(partition)
        if not info.num_ack_pending:
            return 0
        log.info(
            "partition %d: %d deliveries of a previous consumer unacknowledged; renewing the "
            "consumer so that they are delivered again at once, before newer ones",
            partition,
            info.num_ack_pending,
        )
        self._consumers.discard(partition)
        try:
            held = await self._js.stream_info(self.stream)
            with suppress(nats.js.errors.NotFoundError):  # gone already: created again below
                await self._js.delete_consumer(self.stream, self._durable(partition))
        except UNREACHABLE as exc:
            raise BackendUnavailable(
                f"cannot renew the consumer of partition {partition}: NATS at {self.url}: {exc!r}"
            ) from exc
        await self._ensure_consumer(partition)
        return int(held.state.last_seq)


class _Deliveries:
    """A partition's deliveries, fetched in batches; waits through outages."""

    def __init__(
        self,
        box: NatsMailbox,
        partition: int,
        sub: JetStreamContext.PullSubscription,
        redelivered_through: int,
    ) -> None:
        self._box, self._partition, self._sub = box, partition, sub
        self._redelivered_through = redelivered_through  # see `_await_previous_consumer`
        self._buffer: deque[Msg] = deque()

    def __aiter__(self) -> _Deliveries:
        return self

    async def __anext__(self) -> NatsDelivery:
        while True:
            if self._buffer:
                delivery = await self._deliver(self._buffer.popleft())
                if delivery is not None:
                    return delivery
                continue
            if not await self._wait_connected():
                raise StopAsyncIteration  # the mailbox was closed
            try:
                msgs = await self._sub.fetch(FETCH_BATCH, timeout=FETCH_EXPIRY)
            except TimeoutError:
                continue  # nothing arrived in this pull: pull again
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise StopAsyncIteration from None
            except nats.errors.Error as exc:
                await self._recover(exc)
                continue
            self._buffer.extend(msgs)

    async def _deliver(self, msg: Msg) -> NatsDelivery | None:
        try:
            envelope = Envelope.decode(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            # Not an envelope: delivering it again would fail again, forever. Drop it.
            log.error(
                "partition %d: dropping undecodable message %d: %r",
                self._partition,
                msg.metadata.sequence.stream,
                exc,
            )
            try:
                await msg.term()
            except nats.errors.Error as term_exc:
                log.warning("terminating undecodable message: %r", term_exc)
            return None
        redelivered = msg.metadata.sequence.stream <= self._redelivered_through
        return NatsDelivery(msg, envelope, redelivered=redelivered)

    async def _wait_connected(self) -> bool:
        """Wait for the connection; False if the mailbox was closed."""
        nc = self._box._nc
        if nc.is_connected:
            return True
        log.warning(
            "partition %d: NATS at %s is unreachable; deliveries resume once it is back",
            self._partition,
            self._box.url,
        )
        while not nc.is_connected:
            if nc.is_closed:
                return False
            await anyio.sleep(POLL)
        log.warning("partition %d: NATS is back; resuming deliveries", self._partition)
        return True

    async def _recover(self, exc: Exception) -> None:
        """After an unexpected pull error, such as a consumer that NATS lost: ensure it again."""
        log.warning("partition %d: pulling failed: %r; retrying", self._partition, exc)
        await anyio.sleep(RETRY_DELAY)
        if isinstance(exc, nats.js.errors.APIError) and exc.code in (404, 503, None):
            self._box._consumers.discard(self._partition)
            try:
                await self._box._ensure_consumer(self._partition)
            except BackendUnavailable as again:
                log.warning("partition %d: %s", self._partition, again.detail)


def _header_bytes(headers: Mapping[str, str]) -> int:
    """The size of the header block NATS sends with a message (`NATS/1.0`, a line each)."""
    lines = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(b"NATS/1.0\r\n") + lines + 2
