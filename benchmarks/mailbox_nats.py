"""Messages per second through `NatsMailbox`, beside raw nats-py JetStream in the same run.

Both sides do the same work against the same NATS server (one of this script's own, started
from `tests/nats_server.py`): N messages to one partition's subject, sent by SENDERS tasks at
once, each awaiting its publish acknowledgement before sending the next (so each message is
durable before its send returns, as `Mailbox.send` promises); then all N pulled in batches of
256 by one durable pull consumer and acknowledged one by one. Stream and consumer are
configured alike (file storage, work-queue retention, two-minute duplicate window,
`Nats-Msg-Id` on every message, explicit acks, the same ack wait and max ack pending), and
the raw side publishes the very bytes and headers that the mailbox sends. What the mailbox
adds is its own cost: encoding and decoding each envelope, the `Delivery` wrapper and the
connection checks. Each round uses fresh streams; the figure is the median of ROUNDS rounds,
raw and mailbox interleaved. Goal: mailbox / raw >= 0.5.

Run: `python benchmarks/mailbox_nats.py [N]` (default 20,000), on the loop ZTDP_EVENT_LOOP
names (uvloop by default), as `ztdp serve` runs.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import nats
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
from ztdp.cli.process import loop_factory
from ztdp.runtime.mailbox import Envelope
from ztdp.runtime.mailbox.nats import (
    DUPLICATE_WINDOW,
    FETCH_BATCH,
    FETCH_EXPIRY,
    MAX_ACK_PENDING,
    NatsMailbox,
)
from ztdp.settings import Settings

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
SENDERS = 64
ROUNDS = 3
ACK_WAIT = 30.0  # long enough that nothing is redelivered during a round
PARTITION = 0


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope(node=f"service/app/svc-{i % 100}", kind="apply", body={"run": "r1", "i": i})
        for i in range(n)
    ]


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


async def raw(url: str, prefix: str, batch: list[Envelope]) -> tuple[float, float]:
    """nats-py JetStream with nothing in between; seconds to send, then to consume, the batch."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream, subject, durable = f"{prefix}_MBOX", f"{prefix}.mbox.{PARTITION}", f"{prefix}-mbox-0"
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"{prefix}.mbox.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
    )
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING,
        ),
    )
    payloads = [e.encode() for e in batch]  # the mailbox encodes inside its send

    async def send(i: int) -> None:
        headers = {**batch[i].headers, "Nats-Msg-Id": batch[i].id}
        await js.publish(subject, payloads[i], headers=headers)

    started = time.perf_counter()
    await concurrently(len(batch), send)
    sent = time.perf_counter()
    sub = await js.pull_subscribe_bind(durable, stream=stream)
    received = 0
    while received < len(batch):
        try:
            msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_EXPIRY)
        except TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
        received += len(msgs)
    await nc.flush()  # the acks reached the server
    consumed = time.perf_counter()
    await sub.unsubscribe()
    await nc.close()
    return sent - started, consumed - sent


async def mailbox(url: str, prefix: str, batch: list[Envelope]) -> tuple[float, float]:
    """The same through `NatsMailbox.send` and `consume` / `ack`."""
    box = await NatsMailbox.connect(url, prefix=prefix, partitions=1, ack_wait=ACK_WAIT)

    async def send(i: int) -> None:
        await box.send(batch[i], partition=PARTITION)

    started = time.perf_counter()
    await concurrently(len(batch), send)
    sent = time.perf_counter()
    received = 0
    async with box.consume(PARTITION) as deliveries:
        async for delivery in deliveries:
            await delivery.ack()
            received += 1
            if received == len(batch):
                break
    await box.ping()  # a round trip: the acks reached the server, as on the raw side
    consumed = time.perf_counter()
    await box.aclose()
    return sent - started, consumed - sent


async def main() -> None:
    server = NatsServer().start()
    try:
        await raw(server.url, "warmraw", envelopes(1_000))
        await mailbox(server.url, "warmbox", envelopes(1_000))
        raws, boxes = [], []
        for r in range(ROUNDS):
            raws.append(await raw(server.url, f"raw{r}", envelopes(N)))
            boxes.append(await mailbox(server.url, f"box{r}", envelopes(N)))
    finally:
        server.stop()
        shutil.rmtree(server.store, ignore_errors=True)
    print(f"{N:,} messages, {SENDERS} concurrent senders, median of {ROUNDS} rounds (msg/s)")
    print(f"{'':24}{'send':>10}{'consume':>10}{'overall':>10}")
    raw_rate = _report("raw nats-py JetStream", raws)
    box_rate = _report("NatsMailbox", boxes)
    print(f"ratio (overall): {box_rate / raw_rate:.2f} (goal >= 0.5)")


def _report(name: str, rounds: list[tuple[float, float]]) -> float:
    send = statistics.median(N / s for s, _ in rounds)
    consume = statistics.median(N / c for _, c in rounds)
    overall = statistics.median(N / (s + c) for s, c in rounds)
    print(f"{name:24}{send:10,.0f}{consume:10,.0f}{overall:10,.0f}")
    return overall


if __name__ == "__main__":
    loop = Settings().event_loop
    print(f"event loop: {loop}")
    anyio.run(main, backend_options={"loop_factory": loop_factory(loop)})
