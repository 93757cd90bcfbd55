"""Failover: SIGKILL one of two workers holding 10,000 actors; how long until its actors run
on the survivor.

Set-up (not measured; benchmarks/_cluster.py): `ztdp serve` with ZTDP_ACTORS=off and two
`ztdp worker`s on the Redis at 127.0.0.1:6379 (a fresh key prefix, deleted afterwards) and a
NATS server of this script's own, with ZTDP_PARTITIONS=16, ZTDP_LEASE_TTL=2, ZTDP_ACK_WAIT=3
(the defaults, said explicitly) and every other setting at its default. RESOURCES `recording`
resources are declared through `POST /v1/contracts` and realised by one `POST /v1/apply?env=dev`
(every step Ready), so that each has an actor with state: about half on each worker, which own
8 partitions each. Before that apply each worker loads the intent graph alone, in a warm-up
run of one of the resources (benchmarks/_cluster.py `warm_up`: 16 concurrent first loads of
a graph this size blocked a worker's event loop past its leases, and both workers crashed).
The script then waits until no partition has a message pending.

Measured, from the SIGKILL of the first worker (t = 0):

(a) until `GET /v1/status` (polled every 50 ms) shows every partition owned by the survivor,
    and until every one of those partitions has handled its first probe (below): the dead
    worker's actors running on the survivor;
(b) until a probe message to every actor of the dead worker's partitions has been handled.
    Right after the kill this script sends one probe message to each of those actors, through
    a `Supervisor` of its own with `run_actors=False` that only sends (`send_all`, 64 at once,
    as the runtime sends a run's steps); nobody consumes those partitions until the survivor
    takes them over. A message is acknowledged only after its actor handled it and committed
    the outcome, so "handled" is read from the mailbox: `pending()` (queued plus delivered and
    not acknowledged) of each of the dead worker's partitions, polled every 50 ms, reaching 0.
    The time the first probe of each partition was handled (its count dropping) separates
    taking the partitions over from working through the backlog of one message per actor.

Probes (second argument, comma-separated; one failover each, in order): `observe`: the actor
asks the recording provider for the object (an unchanged `Ready` actor commits and
publishes nothing); `reconcile`: the actor applies its last desired state again
through the provider (two status events). After (b), outside the clock, the script checks
that every probed actor did it, by the applies or observations the recording provider
recorded since the kill (the survivor's sweep of what it took over observes them too).
Between two
failovers a new worker starts in place of the dead one and the script waits until the two
own 8 partitions each and nothing is pending; the next failover kills the older worker.

Goal: < 5 s. The settings bound the ownership by lease_ttl + lease_ttl/6 (2.3 s), and (b) by
that plus the time to work through the probes: the survivor renews the partitions' consumers
instead of waiting for the ack wait of what the dead worker held (docs/runtime.md).

Run: `python benchmarks/failover.py [RESOURCES] [PROBES] [TIMEOUT]` (defaults 10,000,
`observe,reconcile`, 120 s for (b) of each failover). Redis must run at 127.0.0.1:6379;
NATS is started here.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import aiohttp
import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cluster import REDIS_URL, Cluster, apply, declare, finished, link, node, warm_up

from tests.nats_server import NatsServer
from ztdp.events import MemoryEventBus
from ztdp.providers import ProviderRegistry
from ztdp.runtime import Supervisor
from ztdp.runtime.mailbox import Envelope
from ztdp.runtime.mailbox.nats import NatsMailbox
from ztdp.settings import Settings
from ztdp.state import partition_of
from ztdp.state.redis import RedisStateStore

RESOURCES = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
PROBES = (sys.argv[2] if len(sys.argv) > 2 else "observe,reconcile").split(",")
TIMEOUT = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
PARTITIONS = 16
POLL = 0.05


def set_up(cluster: Cluster) -> None:
    started = time.monotonic()
    cluster.start_api()
    declare(cluster.url, RESOURCES)
    declared = time.monotonic()
    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_balanced(2)
    warm = warm_up(cluster, range(RESOURCES))
    link(cluster.url, (i for i in range(RESOURCES) if i not in warm))
    run_id, _ = apply(cluster.url)
    run = finished(cluster.url, run_id, seconds=3600)
    statuses = {s["status"] for s in run["steps"]}
    if run["status"] != "Succeeded" or not statuses <= {"Ready", "Unchanged"}:
        raise SystemExit(f"the set-up run {run_id}: {run['status']}, steps {statuses}")
    print(
        f"set-up: {RESOURCES:,} resources declared in {declared - started:.0f} s, applied by "
        f"two workers in {time.monotonic() - declared:.0f} s"
    )
    for worker in cluster.workers:
        if worker.proc is not None and worker.proc.poll() is not None:
            said = [line for line in worker.text().splitlines() if line[:1] not in "│╭╰ "]
            raise SystemExit("a worker crashed during the set-up:\n" + "\n".join(said[-12:]))
    cluster.wait_balanced(2)


async def measure(cluster: Cluster) -> None:
    settings = Settings(
        mailbox="nats",
        state_store="redis",
        event_bus="memory",
        nats_url=cluster.env["ZTDP_NATS_URL"],
        nats_prefix=cluster.env["ZTDP_NATS_PREFIX"],
        redis_url=REDIS_URL,
        redis_prefix=cluster.redis_prefix,
        partitions=PARTITIONS,
        observe_interval=0,
    )
    state = RedisStateStore.from_url(REDIS_URL, prefix=cluster.redis_prefix)
    box = await NatsMailbox.connect(
        settings.nats_url, prefix=settings.nats_prefix, partitions=PARTITIONS, ack_wait=3.0
    )
    sender = Supervisor(
        providers=ProviderRegistry(),
        state=state,
        events=MemoryEventBus(),
        mailbox=box,
        settings=settings,
        run_actors=False,
    )
    try:
        async with sender, aiohttp.ClientSession() as http:
            for i, probe in enumerate(PROBES):
                if i:  # a new worker in place of the dead one, and then the next failover
                    print()
                    cluster.start_worker()
                    cluster.wait_balanced(2)
                if not await _measure(cluster, sender, box, http, probe):
                    break
    finally:
        await box.aclose()
        await state.aclose()


async def _measure(
    cluster: Cluster,
    sender: Supervisor,
    box: NatsMailbox,
    http: aiohttp.ClientSession,
    probe_kind: str,
) -> bool:
    """One failover with `probe_kind` probes; False if it did not finish within TIMEOUT."""
    victim, survivor = [w for w in cluster.workers if w.proc is not None]
    assert victim.proc is not None and survivor.proc is not None
    owners = cluster.owners()
    dead_member = next(m for m in owners if f":{victim.proc.pid}:" in m)
    live_member = next(m for m in owners if f":{survivor.proc.pid}:" in m)
    dead = set(owners[dead_member])
    with anyio.fail_after(60):
        while sum([await box.pending(p) for p in range(PARTITIONS)]):  # noqa: ASYNC110
            await anyio.sleep(0.2)
    probes = [
        Envelope(node=node(i), kind=probe_kind)
        for i in range(RESOURCES)
        if partition_of(node(i), PARTITIONS) in dead
    ]
    count = {p: 0 for p in dead}
    for probe in probes:
        count[partition_of(probe.node, PARTITIONS)] += 1
    done_before = cluster.applies() if probe_kind == "reconcile" else cluster.observes()
    owned_at = sent_at = handled_at = 0.0
    first: dict[int, float] = {}
    emptied: dict[int, float] = {}

    said_before = len(survivor.text())
    start = time.perf_counter()
    victim.kill()  # SIGKILL

    async def status() -> None:
        nonlocal owned_at
        while True:
            async with http.get(f"{cluster.url}/v1/status") as resp:
                workers = (await resp.json())["workers"]
            if [(w["member"], w["partitions"]) for w in workers] == [
                (live_member, list(range(PARTITIONS)))
            ]:
                owned_at = time.perf_counter() - start
                return
            await anyio.sleep(POLL)

    async def pending() -> None:
        nonlocal handled_at
        while len(emptied) < len(dead):
            for p in sorted(dead - set(emptied)):
                left = await box.pending(p)
                now = time.perf_counter() - start
                if left < count[p]:
                    first.setdefault(p, now)
                if left == 0:
                    emptied[p] = now
            await anyio.sleep(POLL)
        handled_at = time.perf_counter() - start

    with anyio.move_on_after(TIMEOUT) as timer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(status)
            await sender.send_all(probes)
            sent_at = time.perf_counter() - start
            tg.start_soon(pending)

    print(
        f"{RESOURCES:,} actors on two workers, 8 partitions each; SIGKILL of one at t = 0: "
        f"its {len(dead)} partitions, {len(probes):,} actors"
    )
    print(f"{len(probes):,} {probe_kind} probes sent by t = {sent_at:.2f} s")
    if timer.cancelled_caught:
        left = sum([await box.pending(p) for p in dead])
        print(f"not done within {TIMEOUT:g} s: {left:,} probes still pending")
    print(f"(a) every partition owned by the survivor (GET /v1/status): {_at(owned_at)}")
    if first:
        print(
            f"    every partition handling (its first probe handled): {min(first.values()):.2f} to "
            f"{max(first.values()):.2f} s"
        )
    print(f"(b) every probe handled (pending 0 in each of its partitions): {_at(handled_at)}")
    print("goal: < 5 s (bound from the settings: owned 2.3 s; (b) that plus the backlog)")
    if not timer.cancelled_caught:
        _check(cluster, probe_kind, probes, done_before)
    _notes(survivor.text()[said_before:])
    if survivor.proc is None or survivor.proc.poll() is not None:
        print("the survivor crashed too")
        return False
    return not timer.cancelled_caught


def _at(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds else "-"


def _check(cluster: Cluster, probe_kind: str, probes: list[Envelope], done_before: int) -> None:
    """Outside the clock: every probed actor did what its probe asked."""
    nodes = [p.node for p in probes]
    kind = "applies" if probe_kind == "reconcile" else "observes"
    done = set(cluster.redis.lrange(f"{cluster.redis_prefix}:recording:{kind}", done_before, -1))
    missing = [n for n in nodes if n not in done]
    if missing:
        raise SystemExit(f"{len(missing)} probed actors did not {probe_kind}: {missing[:3]}...")
    print(f"checked: every probed actor did {probe_kind} after the kill")


def _notes(log: str) -> None:
    """What the survivor said after the kill, counted by kind."""
    kinds = {
        "paused (a backend refused: the message comes again)": " paused: ",
        "waited an ack wait for a previous consumer's deliveries": "(the ack wait)",
        "writes refused by a fence": "write refused",
        "leases lost": "lost the lease",
    }
    lines = log.splitlines()
    for what, needle in kinds.items():
        said = [line for line in lines if needle in line]
        if said:
            print(f"the survivor's log: {len(said)} x {what}, e.g. {said[0][24:][:160]}")


def main() -> None:
    server = NatsServer().start()
    cluster = Cluster(server.url)
    try:
        set_up(cluster)
        anyio.run(measure, cluster)
    finally:
        cluster.close()
        server.stop()
        shutil.rmtree(server.store, ignore_errors=True)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    main()
