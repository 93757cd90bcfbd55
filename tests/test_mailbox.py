"""One contract suite for every mailbox (memory and NATS JetStream), then NATS outages.

Deliveries are awaited under `anyio.fail_after`; the only sleeps are a slow handler's work
and the absence of a delivery, which nothing else can show.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import nats
import pytest

from tests.nats_server import NatsServer
from tests.ports import free_port
from ztdp.errors import BackendUnavailable, MessageTooLarge
from ztdp.runtime.mailbox import Delivery, Envelope, Mailbox, MemoryMailbox
from ztdp.runtime.mailbox.nats import NatsMailbox

ACK_WAIT = 1.0  # seconds, for the NATS mailboxes of these tests
PARTITIONS = 4
WAIT = 5.0  # seconds a test waits for a delivery before failing


@pytest.fixture(params=["memory", "nats"])
async def mailbox(request: pytest.FixtureRequest) -> AsyncIterator[Mailbox]:
    """A fresh mailbox of each kind: NATS ones on this test's own stream and consumers."""
    box: Mailbox
    if request.param == "memory":
        box = MemoryMailbox(partitions=PARTITIONS)
    else:
        box = await NatsMailbox.connect(
            request.getfixturevalue("nats_url"),
            prefix=request.getfixturevalue("nats_prefix"),
            partitions=PARTITIONS,
            ack_wait=ACK_WAIT,
        )
    yield box
    await box.aclose()


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    """A NATS server of this test's own, to kill and start again."""
    server = NatsServer().start()
    yield server
    server.kill()
    shutil.rmtree(server.store, ignore_errors=True)


async def connect(server: NatsServer, prefix: str = "t") -> NatsMailbox:
    return await NatsMailbox.connect(
        server.url, prefix=prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )


def message(n: int, node: str = "service/a/api") -> Envelope:
    return Envelope(node=node, kind="apply", body={"n": n})


async def receive(deliveries: AsyncIterator[Delivery], within: float = WAIT) -> Delivery:
    with anyio.fail_after(within):
        return await anext(deliveries)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    """Wait until `check()` holds (for counts that NATS updates a moment after an ack)."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - NATS signals no event for these counts
            await anyio.sleep(0.02)


def numbers(deliveries: list[Delivery]) -> list[int]:
    return [d.envelope.body["n"] for d in deliveries]


# -- the contract ---------------------------------------------------------------------------


async def test_an_envelope_survives_the_wire_with_nested_data(mailbox: Mailbox) -> None:
    sent = Envelope(
        node="resource/pg-db",
        kind="step",
        body={
            "run": "r-1",
            "step": {"action": "create", "deps": ["a", "b"], "spec": {"size": 3, "ha": True}},
            "nothing": None,
            "ratio": 0.25,
            "text": "grüße ✓",
        },
        deadline=time.time() + 60,
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    await mailbox.send(sent, partition=1)
    async with mailbox.consume(1) as deliveries:
        got = await receive(deliveries)
        await got.ack()
    assert got.envelope == sent
    assert not got.redelivered


async def test_deliveries_come_in_send_order_within_a_partition(mailbox: Mailbox) -> None:
    for n in range(50):
        await mailbox.send(message(n), partition=0)
    got = []
    async with mailbox.consume(0) as deliveries:
        for _ in range(50):
            delivery = await receive(deliveries)
            got.append(delivery)
            await delivery.ack()
    assert numbers(got) == list(range(50))


async def test_partitions_are_independent(mailbox: Mailbox) -> None:
    await mailbox.send(message(0), partition=0)
    await mailbox.send(message(1), partition=1)
    await mailbox.send(message(2), partition=0)
    async with mailbox.consume(1) as deliveries:
        only = await receive(deliveries)
        await only.ack()
    assert numbers([only]) == [1]
    await eventually(lambda: _pending_is(mailbox, 1, 0))
    assert await mailbox.pending(0) == 2
    async with mailbox.consume(0) as deliveries:
        got = [await receive(deliveries), await receive(deliveries)]
    assert numbers(got) == [0, 2]


async def test_a_duplicate_id_within_the_window_is_dropped(mailbox: Mailbox) -> None:
    first = message(1)
    await mailbox.send(first, partition=0)
    await mailbox.send(first, partition=0)  # a sender retrying after a lost answer
    await mailbox.send(
        Envelope(node=first.node, kind="apply", body={"n": 2}, id=first.id), partition=0
    )
    await mailbox.send(message(3), partition=0)
    async with mailbox.consume(0) as deliveries:
        got = [await receive(deliveries), await receive(deliveries)]
        for delivery in got:
            await delivery.ack()
    assert numbers(got) == [1, 3]
    await eventually(lambda: _pending_is(mailbox, 0, 0))


async def test_an_acknowledged_message_is_not_delivered_again(mailbox: Mailbox) -> None:
    await mailbox.send(message(1), partition=0)
    async with mailbox.consume(0) as deliveries:
        await (await receive(deliveries)).ack()
    await eventually(lambda: _pending_is(mailbox, 0, 0))
    await mailbox.send(message(2), partition=0)
    async with mailbox.consume(0) as deliveries:
        after = await receive(deliveries)
    assert numbers([after]) == [2]
    assert not after.redelivered


async def test_unacknowledged_deliveries_come_again_first_to_the_next_consumer(
    mailbox: Mailbox,
) -> None:
    await mailbox.send(message(1), partition=0)
    await mailbox.send(message(2), partition=0)
    async with mailbox.consume(0) as deliveries:
        held = await receive(deliveries)  # its handler died: never settled
    assert numbers([held]) == [1]
    await mailbox.send(message(3), partition=0)
    async with mailbox.consume(0) as deliveries:
        got = [await receive(deliveries) for _ in range(3)]
        for delivery in got:
            await delivery.ack()
    assert numbers(got) == [1, 2, 3]
    assert got[0].redelivered
    await eventually(lambda: _pending_is(mailbox, 0, 0))


async def test_nack_redelivers_after_the_delay(mailbox: Mailbox) -> None:
    await mailbox.send(message(1), partition=0)
    async with mailbox.consume(0) as deliveries:
        first = await receive(deliveries)
        nacked_at = time.monotonic()
        await first.nack(delay=0.5)
        again = await receive(deliveries)
        waited = time.monotonic() - nacked_at
        await again.ack()
    assert again.envelope == first.envelope
    assert again.redelivered
    assert 0.4 <= waited < WAIT


async def test_in_progress_keeps_a_slow_handlers_message_from_redelivery(
    mailbox: Mailbox,
) -> None:
    """While a handler works for 2.5 ack waits and says so, its message is not redelivered,
    even though the consumer is asking for the next message the whole time."""
    await mailbox.send(message(1), partition=0)
    got: list[Delivery] = []
    async with mailbox.consume(0) as deliveries:
        slow = await receive(deliveries)

        async def next_one() -> None:
            got.append(await anext(deliveries))

        with anyio.fail_after(WAIT + 3 * ACK_WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(next_one)
                working_until = time.monotonic() + 2.5 * ACK_WAIT
                while time.monotonic() < working_until:
                    await slow.in_progress()
                    await anyio.sleep(ACK_WAIT / 4)  # the handler's slow work
                assert got == [], "redelivered while its handler was still working"
                await slow.ack()
                await mailbox.send(message(2), partition=0)
    assert numbers(got) == [2]
    assert not got[0].redelivered


async def test_pending_counts_queued_and_unacknowledged(mailbox: Mailbox) -> None:
    for n in range(3):
        await mailbox.send(message(n), partition=2)
    assert await mailbox.pending(2) == 3
    async with mailbox.consume(2) as deliveries:
        first = await receive(deliveries)
        assert await mailbox.pending(2) == 3  # two queued, one being handled
        await first.ack()
        await eventually(lambda: _pending_is(mailbox, 2, 2))
        for _ in range(2):
            await (await receive(deliveries)).ack()
        await eventually(lambda: _pending_is(mailbox, 2, 0))
    assert await mailbox.pending(3) == 0


async def test_a_second_consumer_of_a_partition_is_refused(mailbox: Mailbox) -> None:
    async with mailbox.consume(0):
        with pytest.raises(RuntimeError, match="already has a consumer"):
            async with mailbox.consume(0):
                pass


async def _pending_is(mailbox: Mailbox, partition: int, count: int) -> bool:
    return await mailbox.pending(partition) == count


# -- NATS: failover, restarts and outages ---------------------------------------------------


async def test_a_dead_consumers_deliveries_come_first_to_its_successor(
    nats_url: str, nats_prefix: str
) -> None:
    """A worker dies holding a message (no ack, no leave): the next owner, elsewhere, gets it
    again before anything newer, without sitting out the ack wait."""
    dead = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    for n in (1, 2):
        await dead.send(message(n), partition=0)
    async with dead.consume(0) as deliveries:
        held = await receive(deliveries)
        await dead.aclose()  # its process is gone
    successor = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    try:
        await successor.send(message(3), partition=0)
        started = time.monotonic()
        async with successor.consume(0) as deliveries:
            got = [await receive(deliveries) for _ in range(3)]
            for delivery in got:
                await delivery.ack()
    finally:
        await successor.aclose()
    assert numbers([held]) == [1]
    assert numbers(got) == [1, 2, 3]
    assert got[0].redelivered
    assert time.monotonic() - started < ACK_WAIT / 2


async def test_the_ack_wait_redelivers_a_silent_handlers_message(
    nats_url: str, nats_prefix: str
) -> None:
    box = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    try:
        await box.send(message(1), partition=0)
        async with box.consume(0) as deliveries:
            silent = await receive(deliveries)
            started = time.monotonic()
            again = await receive(deliveries, within=ACK_WAIT + WAIT)
            await again.ack()
    finally:
        await box.aclose()
    assert again.envelope == silent.envelope
    assert again.redelivered
    assert time.monotonic() - started >= ACK_WAIT * 0.9


async def test_an_undecodable_message_is_dropped_not_redelivered_forever(
    nats_url: str, nats_prefix: str
) -> None:
    box = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    raw = await nats.connect(nats_url)
    try:
        await raw.jetstream().publish(f"{nats_prefix}.mbox.0", b"not an envelope")
        await box.send(message(1), partition=0)
        async with box.consume(0) as deliveries:
            good = await receive(deliveries)
            await good.ack()
        assert numbers([good]) == [1]
        await eventually(lambda: _pending_is(box, 0, 0))
    finally:
        await raw.close()
        await box.aclose()


async def test_messages_survive_a_nats_restart(own_nats: NatsServer) -> None:
    box = await connect(own_nats)
    try:
        for n in range(3):
            await box.send(message(n), partition=1)
        own_nats.kill()
        own_nats.start()
        await eventually(_answers(box), within=10)
        async with box.consume(1) as deliveries:
            got = [await receive(deliveries) for _ in range(3)]
            for delivery in got:
                await delivery.ack()
    finally:
        await box.aclose()
    assert numbers(got) == [0, 1, 2]


async def test_a_consumer_goes_on_delivering_after_a_nats_restart(own_nats: NatsServer) -> None:
    box = await connect(own_nats)
    try:
        async with box.consume(0) as deliveries:
            await box.send(message(1), partition=0)
            await (await receive(deliveries)).ack()
            own_nats.kill()
            own_nats.start()
            await eventually(_answers(box), within=10)
            await box.send(message(2), partition=0)
            after = await receive(deliveries, within=10)
            if after.redelivered and numbers([after]) == [1]:
                # The server died before it wrote down the ack: at least once, not exactly.
                await after.ack()
                after = await receive(deliveries)
            await after.ack()
    finally:
        await box.aclose()
    assert numbers([after]) == [2]


async def test_an_envelope_over_the_nats_payload_limit_is_refused_naming_it(
    nats_url: str, nats_prefix: str
) -> None:
    """Refused before it is sent, as MessageTooLarge (422 where a request caused it), not
    as the client's MaxPayloadError; the mailbox goes on carrying the rest."""
    box = await NatsMailbox.connect(
        nats_url, prefix=nats_prefix, partitions=PARTITIONS, ack_wait=ACK_WAIT
    )
    try:
        huge = Envelope(node="resource/db@dev", kind="apply", body={"blob": "x" * 1_100_000})
        with pytest.raises(
            MessageTooLarge, match=r"apply for resource/db@dev is 1,1\d\d,\d+ bytes"
        ):
            await box.send(huge, partition=0)
        # The payload fits, the headers (a caller's trace state, say) do not: the server
        # would close the connection over it, for every partition of the process.
        fits = Envelope(node="resource/db@dev", kind="apply", body={"blob": ""})
        room = 1024 * 1024 - len(fits.encode())
        near = Envelope(
            node="resource/db@dev",
            kind="apply",
            body={"blob": "x" * (room - 12000)},
            headers={"tracestate": "y" * 6000},
        )
        with pytest.raises(MessageTooLarge, match="apply for resource/db@dev"):
            await box.send(near, partition=0)
        await box.send(message(1), partition=0)
        assert await box.pending(0) == 1
    finally:
        await box.aclose()


async def test_send_while_nats_is_down_raises_backend_unavailable(own_nats: NatsServer) -> None:
    box = await connect(own_nats)
    try:
        own_nats.kill()
        with anyio.fail_after(5), pytest.raises(BackendUnavailable, match=own_nats.url):
            await box.send(message(1), partition=0)
        with pytest.raises(BackendUnavailable):
            await box.ping()
    finally:
        await box.aclose()


async def test_a_stream_lost_with_the_nats_store_is_created_again(own_nats: NatsServer) -> None:
    """NATS comes back without its store: the next send creates the stream again, and a
    consumer that was running goes on with a new consumer."""
    box = await connect(own_nats)
    try:
        async with box.consume(0) as deliveries:
            await box.send(message(1), partition=0)
            await (await receive(deliveries)).ack()
            own_nats.kill()
            shutil.rmtree(own_nats.store)
            own_nats.start()
            await eventually(_answers(box), within=10)
            await box.send(message(2), partition=0)
            after = await receive(deliveries, within=10)
            await after.ack()
    finally:
        await box.aclose()
    assert numbers([after]) == [2]


async def test_connect_to_no_server_raises_backend_unavailable() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with anyio.fail_after(3), pytest.raises(BackendUnavailable, match=url):
        await NatsMailbox.connect(url, prefix="t", partitions=PARTITIONS, ack_wait=ACK_WAIT)


def _answers(box: NatsMailbox) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await box.ping()
        except BackendUnavailable:
            return False
        return True

    return check
