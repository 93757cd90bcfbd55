"""Actor messages per second over NATS mailboxes, beside raw nats-py JetStream in the same run.

Both sides carry NODES x PER_NODE messages (1,000 nodes x 20 by default, message i to node
i mod NODES) through one NATS server of this script's own (`tests/nats_server.py`), over
one connection each, with the same concurrency:

- **actors**: a `ztdp.runtime.Supervisor` as a worker runs it, memory-free apart from its
  events: `RedisStateStore` (the Redis at 127.0.0.1:6379 under a fresh key prefix, deleted
  afterwards), `NatsMailbox` with ZTDP_PARTITIONS=16 and a memory event bus (an `observe` of
  a node that was never realised publishes no event). It holds the leases of all 16
  partitions and consumes their mailboxes. SENDERS tasks call `supervisor.tell(node,
  "observe")` one after another (each `tell` builds the envelope and returns once JetStream
  stored it, as `Supervisor.send_all` does with the same limit of 64). Meanwhile the supervisor
  pulls each partition in batches, hands each delivery to its node's actor (one message at a
  time per actor, many actors at once; the first message of a node loads its record from
  Redis, later ones find it cached) and acknowledges it once handled.
- **raw**: the same stream and the same 16 durable pull consumers (configured as the mailbox
  configures them), the same encoded envelopes with their `Nats-Msg-Id` published to the same
  partition subjects by SENDERS tasks each awaiting its publish acknowledgement; 16 tasks
  pull batches of 256 and acknowledge each message as it comes. No decoding, no actor.

The clock starts once every partition has a consumer bound and stops when the last of the
messages has been acknowledged and a round trip to the server (flush / ping) has carried the
acks there. The actor side knows a message was handled by counting the acks the supervisor
sends, through a `NatsMailbox` subclass whose deliveries add one to a counter in `ack()`
(nothing on the wire, no polling); afterwards, outside the clock, `pending()` of every
partition is checked to be 0 and no delivery to have been nacked. Each round uses fresh
streams and a fresh Redis prefix; the figure is the median of ROUNDS rounds, raw and actors
interleaved, after a warm-up of each. Goal: actors / raw >= 0.5.

Run: `python benchmarks/actors_nats.py [PER_NODE]` (default 20), on the loop ZTDP_EVENT_LOOP
names (uvloop by default), as `ztdp worker` runs, with the start-up heap frozen.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
import redis
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.nats_server import NatsServer
from ztdp.cli.process import loop_factory, settle_heap
from ztdp.events import MemoryEventBus
from ztdp.providers import ProviderRegistry
from ztdp.runtime import Supervisor
from ztdp.runtime.mailbox import Delivery, Envelope
from ztdp.runtime.mailbox.nats import (
    DUPLICATE_WINDOW,
    FETCH_BATCH,
    FETCH_EXPIRY,
    MAX_ACK_PENDING,
    NatsMailbox,
)
from ztdp.settings import Settings
from ztdp.state import partition_of
from ztdp.state.redis import RedisStateStore

NODES = 1_000
PER_NODE = int(sys.argv[1]) if len(sys.argv) > 1 else 20
PARTITIONS = 16
SENDERS = 64  # as Supervisor.send_all
ROUNDS = 3
ACK_WAIT = 30.0  # long enough that nothing is redelivered during a round
REDIS_URL = "redis://127.0.0.1:6379/0"

NODE_IDS = [f"resource/r{i:04d}@dev" for i in range(NODES)]


async def concurrently(n: int, send: Callable[[int], Awaitable[None]]) -> None:
    """Send messages 0..n-1 from SENDERS tasks, each awaiting one send before the next."""
    next_index = 0

    async def sender() -> None:
        nonlocal next_index
        while next_index < n:
            i, next_index = next_index, next_index + 1
            await send(i)

    async with anyio.create_task_group() as tg:
        for _ in range(SENDERS):
            tg.start_soon(sender)


# --- the actor side ----------------------------------------------------------------------


class _Counted:
    """A delivery that counts its acknowledgement; otherwise the mailbox's own."""

    __slots__ = ("_box", "_inner", "envelope", "redelivered")

    def __init__(self, inner: Delivery, box: CountingMailbox) -> None:
        self._inner, self._box = inner, box
        self.envelope, self.redelivered = inner.envelope, inner.redelivered

    async def ack(self) -> None:
        await self._inner.ack()
        self._box.acked += 1
        if self._box.acked >= self._box.expected:
            self._box.all_acked.set()

    async def nack(self, delay: float = 0.0) -> None:
        self._box.nacked += 1
        await self._inner.nack(delay)

    async def in_progress(self) -> None:
        await self._inner.in_progress()


class _CountedDeliveries:
    """The partition's deliveries, each wrapped in `_Counted` (no extra frame per message)."""

    __slots__ = ("_box", "_inner")

    def __init__(self, inner: AsyncIterator[Delivery], box: CountingMailbox) -> None:
        self._inner, self._box = inner, box

    def __aiter__(self) -> _CountedDeliveries:
        return self

    async def __anext__(self) -> Delivery:
        return _Counted(await self._inner.__anext__(), self._box)


class CountingMailbox(NatsMailbox):
    """`NatsMailbox` whose deliveries count their acks, and which says when it consumes."""

    expected = 0
    acked = 0
    nacked = 0
    all_acked: anyio.Event
    consuming: set[int]

    @asynccontextmanager
    async def consume(self, partition: int) -> AsyncIterator[AsyncIterator[Delivery]]:  # type: ignore[override]
        async with super().consume(partition) as deliveries:
            self.consuming.add(partition)
            try:
                yield _CountedDeliveries(deliveries, self)
            finally:
                self.consuming.discard(partition)


async def actors(nats_url: str, n: int) -> tuple[float, float]:
    """Seconds until every `tell` returned, and until every message was handled and acked."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(
        mailbox="nats",
        state_store="redis",
        event_bus="memory",
        nats_url=nats_url,
        nats_prefix=prefix,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        partitions=PARTITIONS,
        ack_wait=ACK_WAIT,
        observe_interval=0,
    )
    state = RedisStateStore.from_url(REDIS_URL, prefix=prefix)
    box = await CountingMailbox.connect(
        nats_url, prefix=prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    box.expected, box.all_acked, box.consuming = n, anyio.Event(), set()
    events = MemoryEventBus()
    sup = Supervisor(
        providers=ProviderRegistry(), state=state, events=events, mailbox=box, settings=settings
    )
    try:
        async with sup:
            with anyio.fail_after(30):
                while len(box.consuming) < PARTITIONS:  # noqa: ASYNC110 - a start-up wait
                    await anyio.sleep(0.01)

            async def send(i: int) -> None:
                await sup.tell(NODE_IDS[i % NODES], "observe")

            started = time.perf_counter()
            await concurrently(n, send)
            sent = time.perf_counter()
            with anyio.fail_after(300):
                await box.all_acked.wait()
            await box.ping()  # a round trip: the acks reached the server
            handled = time.perf_counter()
            left = sum([await box.pending(p) for p in range(PARTITIONS)])
            if left or box.nacked or box.acked != n:
                raise SystemExit(f"actors: {left} pending, {box.nacked} nacked, {box.acked} acked")
    finally:
        await box.aclose()
        await events.aclose()
        await state.aclose()
        _delete_keys(prefix)
    return sent - started, handled - started


def _delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


# --- the raw side ------------------------------------------------------------------------


async def raw(nats_url: str, n: int) -> tuple[float, float]:
    """The same through nats-py with nothing in between."""
    prefix = f"raw{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}_MBOX"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"{prefix}.mbox.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
    )
    for p in range(PARTITIONS):
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=f"{prefix}-mbox-{p}",
                filter_subject=f"{prefix}.mbox.{p}",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_deliver=-1,
                max_ack_pending=MAX_ACK_PENDING,
            ),
        )
    batch = [Envelope(node=NODE_IDS[i % NODES], kind="observe") for i in range(n)]
    payloads = [e.encode() for e in batch]
    subjects = [f"{prefix}.mbox.{partition_of(e.node, PARTITIONS)}" for e in batch]
    acked = 0
    all_acked = anyio.Event()
    bound = 0

    async def consumer(p: int) -> None:
        nonlocal acked, bound
        sub = await js.pull_subscribe_bind(f"{prefix}-mbox-{p}", stream=stream)
        bound += 1
        while True:
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_EXPIRY)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                acked += 1
                if acked >= n:
                    all_acked.set()

    async def send(i: int) -> None:
        await js.publish(subjects[i], payloads[i], headers={"Nats-Msg-Id": batch[i].id})

    async with anyio.create_task_group() as tg:
        for p in range(PARTITIONS):
            tg.start_soon(consumer, p)
        with anyio.fail_after(30):
            while bound < PARTITIONS:  # noqa: ASYNC110 - a start-up wait
                await anyio.sleep(0.01)
        started = time.perf_counter()
        await concurrently(n, send)
        sent = time.perf_counter()
        with anyio.fail_after(300):
            await all_acked.wait()
        await nc.flush()  # the acks reached the server
        handled = time.perf_counter()
        tg.cancel_scope.cancel()
    await nc.close()
    return sent - started, handled - started


async def main() -> None:
    n = NODES * PER_NODE
    server = NatsServer().start()
    try:
        await raw(server.url, NODES)  # warm-up: one message per node
        await actors(server.url, NODES)
        raws, acts = [], []
        for _ in range(ROUNDS):
            raws.append(await raw(server.url, n))
            acts.append(await actors(server.url, n))
    finally:
        server.stop()
        shutil.rmtree(server.store, ignore_errors=True)
    print(
        f"{n:,} messages ({NODES:,} nodes x {PER_NODE}), {PARTITIONS} partitions, "
        f"{SENDERS} concurrent senders, median of {ROUNDS} rounds"
    )
    print(f"{'':28}{'sent (msg/s)':>14}{'handled (msg/s)':>17}{'seconds':>9}")
    raw_rate = _report("raw nats-py JetStream", n, raws)
    actor_rate = _report("Supervisor.tell -> actors", n, acts)
    print(f"ratio (handled): {actor_rate / raw_rate:.2f} (goal >= 0.5)")


def _report(name: str, n: int, rounds: list[tuple[float, float]]) -> float:
    sent = statistics.median(n / s for s, _ in rounds)
    handled = statistics.median(n / h for _, h in rounds)
    seconds = statistics.median(h for _, h in rounds)
    print(f"{name:28}{sent:14,.0f}{handled:17,.0f}{seconds:9.2f}")
    return handled


if __name__ == "__main__":
    loop = Settings().event_loop
    print(f"event loop: {loop}")
    settle_heap()
    anyio.run(main, backend_options={"loop_factory": loop_factory(loop)})
