"""Two workers against one: the makespan of one apply of 1,000 steps, as a ratio 2 / 1.

Each measurement is a fresh installation (benchmarks/_cluster.py): `ztdp serve` with
ZTDP_ACTORS=off, RESOURCES `recording` resources declared through `POST /v1/contracts`, the
recording provider taking ZTDP_RECORDING_DELAY=0.02 s per apply and recording it in Redis,
then 1 or 2 `ztdp worker`s, waited for until they own the 16 partitions in equal shares
(8 + 8). Each worker first loads the intent graph alone, in a warm-up run of one extra
resource per worker (`warm_up`: concurrent first loads are a known problem, reported apart);
then the RESOURCES resources are linked to the application, so that `dev`'s plan is one wave
of RESOURCES independent creates (and the warm-up's resources, unchanged). The makespan
runs from just before `POST /v1/apply?env=dev` (planning and recording the run included) to
the run's `finished_at` as its coordinator recorded it (same clock; `GET /v1/runs/{id}` is
polled every 0.1 s only to know when to read it). The run must succeed with
RESOURCES steps Ready.

Two cases:
(a) ZTDP_APPLY_PARALLELISM=0: every step at once. Goal: 2 workers not worse, ratio <= ~1.05.
(b) ZTDP_APPLY_PARALLELISM=0 with ZTDP_WORKER_PARALLELISM=16, provider calls per process:
    one worker's ideal is RESOURCES x 20 ms / 16, two workers' half of it. Goal: ratio
    approaching 0.5.

Beside each makespan: the CPU seconds every process of the installation used from the apply to
the run's end (the API, the workers, NATS, Redis; read from /proc), and for the ratio the
machine's bound: two workers cannot finish before the one-worker run's CPU spread over all of
this machine's cores (if a second worker cost nothing more), nor before their ideal, so
`max(ideal / 2, CPU of 1 worker's run / cores) / makespan of 1 worker` is the best ratio this
machine allows. Where one worker's run is CPU-bound, that bound, not 0.5, is what "approach
half" can reach here.

Per case the figure is the median over ROUNDS rounds, 1 and 2 workers alternating which goes
first; the ratio is of the medians, with each round's own ratio beside it. A run that does
not finish within TIMEOUT is reported with how far it got (steps Ready, applies repeated,
workers that crashed), counts as the longest, and is not tried again in later rounds.

Run: `python benchmarks/distributed.py [RESOURCES] [ROUNDS]` (defaults 1,000 and 3). Redis must
run at 127.0.0.1:6379; NATS is started here.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cluster import Cluster, apply, declare, finished, link, request, warm_up

from tests.nats_server import NatsServer

RESOURCES = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TIMEOUT = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0  # seconds per run
DELAY = 0.02
LIMIT = 16
CASES = {
    "(a) unbounded": {"ZTDP_APPLY_PARALLELISM": "0"},
    f"(b) worker limit {LIMIT}": {
        "ZTDP_APPLY_PARALLELISM": "0",
        "ZTDP_WORKER_PARALLELISM": str(LIMIT),
    },
}


@dataclass
class Outcome:
    seconds: float | None  # None: the run did not finish within TIMEOUT
    applies: int  # recorded by the provider: more than RESOURCES when steps ran again
    crashed: int  # workers that exited by themselves
    note: str = ""
    cpu: float = 0.0  # CPU seconds of every process of the installation during the run

    def __str__(self) -> str:
        took = f"{self.seconds:.2f} s" if self.seconds is not None else f"> {TIMEOUT:g} s"
        more = f", {self.applies - RESOURCES} applies repeated" if self.applies > RESOURCES else ""
        dead = f", {self.crashed} worker(s) crashed" if self.crashed else ""
        cpu = f" (CPU {self.cpu:.2f} s)" if self.cpu else ""
        return f"{took}{cpu}{more}{dead}{self.note}"


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(cluster: Cluster, nats: NatsServer) -> list[int]:
    """The installation's processes: API, workers, NATS and the machine's Redis."""
    procs = [cluster.api, *cluster.workers]
    pids = [p.proc.pid for p in procs if p is not None and p.proc is not None]
    assert nats.proc is not None
    redis = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    return [*pids, nats.proc.pid, *(int(pid) for pid in redis.stdout.split())]


def makespan(nats: NatsServer, workers: int, settings: dict[str, str]) -> Outcome:
    cluster = Cluster(nats.url, ZTDP_RECORDING_DELAY=str(DELAY), **settings)
    try:
        cluster.start_api()
        declare(cluster.url, RESOURCES)
        for _ in range(workers):
            cluster.start_worker()
        cluster.wait_balanced(workers)
        warm = warm_up(cluster, range(RESOURCES, 2 * RESOURCES + 100))
        link(cluster.url, range(RESOURCES))
        applied = cluster.applies()
        pids = _pids(cluster, nats)
        cpu = sum(map(_cpu_seconds, pids))
        run_id, posted = apply(cluster.url)
        try:
            run = finished(cluster.url, run_id, seconds=TIMEOUT)
        except TimeoutError:
            run = request(f"{cluster.url}/v1/runs/{run_id}")
            done = sum(1 for s in run["steps"] if s["status"] == "Ready")
            note = f" ({done} of {RESOURCES} steps Ready by then)"
            return Outcome(None, cluster.applies() - applied, cluster.crashed(), note)
        statuses = Counter(s["status"] for s in run["steps"])
        if run["status"] != "Succeeded" or statuses != {"Ready": RESOURCES, "Unchanged": len(warm)}:
            raise SystemExit(f"run {run_id}: {run['status']}, steps {dict(statuses)}")
        seconds = datetime.fromisoformat(run["finished_at"]).timestamp() - posted
        cpu = sum(map(_cpu_seconds, pids)) - cpu
        return Outcome(seconds, cluster.applies() - applied, cluster.crashed(), cpu=cpu)
    finally:
        cluster.close()


def main() -> None:
    server = NatsServer().start()
    results: dict[str, dict[int, list[Outcome]]] = {case: {1: [], 2: []} for case in CASES}
    try:
        for r in range(ROUNDS):
            for case, settings in CASES.items():
                for workers in (1, 2) if r % 2 == 0 else (2, 1):
                    before = results[case][workers]
                    if before and before[-1].seconds is None:  # it did not finish: not again
                        results[case][workers].append(before[-1])
                        continue
                    outcome = makespan(server, workers, settings)
                    results[case][workers].append(outcome)
                    print(f"round {r + 1}, {case}, {workers} worker(s): {outcome}")
    finally:
        server.stop()
        shutil.rmtree(server.store, ignore_errors=True)
    print(
        f"\n{RESOURCES:,} independent steps, {DELAY * 1000:g} ms per apply, 16 partitions, "
        f"median of {ROUNDS} round(s) (s; '-': a run did not finish within {TIMEOUT:g} s)"
    )
    cores = os.cpu_count() or 1
    print(
        f"{'':26}{'1 worker':>10}{'2 workers':>11}{'ratio':>8}{'bound':>8}   rounds' ratios "
        f"(bound: the best ratio {cores} cores allow, see the docstring)"
    )
    for case, by in results.items():
        one, two = _median(by[1]), _median(by[2])
        rounds = ", ".join(_ratio(a.seconds, b.seconds) for a, b in zip(by[1], by[2], strict=True))
        ideal = RESOURCES * DELAY / (LIMIT if "limit" in case else RESOURCES)
        cpu = statistics.median(o.cpu for o in by[1] if o.seconds is not None) if one else 0.0
        floor = _ratio(one, max(ideal / 2, cpu / cores)) if one else "-"
        print(f"{case:26}{_s(one):>10}{_s(two):>11}{_ratio(one, two):>8}{floor:>8}   {rounds}")
    ideal = RESOURCES * DELAY / LIMIT
    print(
        f"goals: (a) ratio <= ~1.05; (b) ratio approaching 0.5 (ideal {ideal:.2f} s with 1 "
        f"worker, {ideal / 2:.2f} s with 2)"
    )


def _median(outcomes: list[Outcome]) -> float | None:
    """The median, a run that did not finish counting as the longest."""
    middle = statistics.median(math.inf if o.seconds is None else o.seconds for o in outcomes)
    return None if math.isinf(middle) else middle


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _ratio(one: float | None, two: float | None) -> str:
    return "-" if one is None or two is None else f"{two / one:.2f}"


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    main()
