"""Plan time for 10,000 services against networkx.topological_generations on the same graph.

100 applications x 100 services, 3 environments, about 3 dependencies per service, every
service's version deployed to dev. The graph is built through the catalog (the same code path
as the API, minus HTTP). Prints the plan time and its ratio to the baseline. Goal: ratio <= 3.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time

import networkx as nx

from ztdp.catalog import Catalog
from ztdp.contracts import Application, Environment, Service, ServiceVersionIn
from ztdp.graph.store import MemoryGraphStore
from ztdp.state import MemoryStateStore

APPS, SERVICES, DEPS, ROUNDS = 100, 100, 3, 5


async def build(catalog: Catalog, rng: random.Random) -> None:
    for env in ("dev", "staging", "prod"):
        await catalog.create_environment(
            Environment.model_validate({"metadata": {"name": env, "owner": "platform"}})
        )
    for a in range(APPS):
        app = f"app-{a}"
        await catalog.create_application(
            Application.model_validate({"metadata": {"name": app, "owner": "team"}})
        )
        await catalog.set_allowed(app, ["dev", "staging", "prod"], replace=True)
        for s in range(SERVICES):
            svc = f"svc-{s}"
            await catalog.create_service(
                app,
                Service.model_validate(
                    {
                        "metadata": {"name": svc, "owner": "team"},
                        "spec": {"application": app, "port": 8080},
                    }
                ),
            )
            await catalog.create_version(
                app, svc, ServiceVersionIn.model_validate({"version": "1.0.0", "owner": "team"})
            )
            for dep in rng.sample(range(s), min(DEPS, s)):  # only earlier services: a DAG
                await catalog.add_dependency(app, svc, app, f"svc-{dep}")
            await catalog.deploy(app, svc, "1.0.0", "dev")


def best(fn: object, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


async def main() -> None:
    catalog = Catalog(MemoryGraphStore(), MemoryStateStore())
    started = time.perf_counter()
    await build(catalog, random.Random(7))
    graph = await catalog.graph()
    print(
        f"built {len(graph)} nodes, {graph.g.number_of_edges()} edges "
        f"in {time.perf_counter() - started:.1f} s"
    )

    # Baseline: the dependency graph of the 10,000 deployments, as a plain DiGraph.
    dag: nx.DiGraph[str] = nx.DiGraph()
    for sid, _ in graph.nodes():
        if sid.startswith("service/"):
            dag.add_node(sid)
            dag.add_edges_from((dep, sid) for dep in graph.successors(sid, "uses"))  # type: ignore[arg-type]
    baseline = best(lambda: list(nx.topological_generations(dag)))
    # Second baseline: the stored intent graph itself (every node and edge the plan reads).
    whole = best(lambda: list(nx.topological_generations(graph.g)))

    async def time_plans(label: str) -> None:
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            plan = await catalog.plan_environment("dev")
            times.append(time.perf_counter() - start)
        steps = sum(len(w["steps"]) for w in plan.waves)
        per_app = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            await catalog.plan("app-0", "dev")
            per_app.append(time.perf_counter() - start)
        print(f"[{label}] plan: {steps} steps in {len(plan.waves)} waves")
        print(
            f"[{label}] plan of the whole environment: {min(times) * 1000:8.1f} ms "
            f"(median {statistics.median(times) * 1000:.1f} ms)"
        )
        print(f"[{label}] plan of one application:       {min(per_app) * 1000:8.1f} ms")
        print(
            f"[{label}] ratio plan / topological_generations: {min(times) / baseline:.2f} "
            f"on the deployments' dependency graph, {min(times) / whole:.2f} on the whole "
            "intent graph  (goal <= 3)"
        )

    print(f"topological_generations, deployments' dependency graph: {baseline * 1000:8.1f} ms")
    print(f"topological_generations, whole intent graph:            {whole * 1000:8.1f} ms")
    await time_plans("gc default")
    # A long-running control plane holds the graph for its lifetime; freezing that heap keeps
    # the cyclic GC from re-scanning 10,000s of long-lived objects on every plan.
    gc.collect()
    gc.freeze()
    await time_plans("graph heap frozen")


if __name__ == "__main__":
    asyncio.run(main())
