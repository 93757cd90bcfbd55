"""One contract suite for every graph store (memory and real Redis)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from ztdp.errors import StaleRevision
from ztdp.graph import DeleteNode, EdgeType, InvalidGraphWrite, NodeKind, PutEdge, PutNode
from ztdp.graph.store import GraphStore
from ztdp.graph.store.redis import RedisGraphStore

APP = "application/checkout"
SVC = "service/checkout/api"


async def seed(store: GraphStore) -> int:
    return await store.commit(
        [
            PutNode(
                APP, NodeKind.APPLICATION, {"metadata": {"name": "checkout"}, "spec": {"tags": []}}
            ),
            PutNode(SVC, NodeKind.SERVICE, {"metadata": {"name": "api"}}),
            PutEdge(APP, SVC, EdgeType.OWNS),
        ],
        expected_revision=0,
    )


async def test_commit_applies_a_batch_and_bumps_the_revision(graph_store: GraphStore) -> None:
    assert await seed(graph_store) == 1
    graph = await graph_store.read()
    assert graph.revision == 1
    assert graph.successors(APP, EdgeType.OWNS) == [SVC]
    assert graph.data(APP) == {"metadata": {"name": "checkout"}, "spec": {"tags": []}}


async def test_a_stale_revision_is_refused_and_changes_nothing(graph_store: GraphStore) -> None:
    await seed(graph_store)
    with pytest.raises(StaleRevision):
        await graph_store.commit(
            [PutNode("environment/dev", NodeKind.ENVIRONMENT, {})], expected_revision=0
        )
    graph = await graph_store.read()
    assert graph.revision == 1 and "environment/dev" not in graph


async def test_an_invalid_batch_is_refused_whole(graph_store: GraphStore) -> None:
    await seed(graph_store)
    batch = [
        PutNode("environment/dev", NodeKind.ENVIRONMENT, {}),
        PutEdge(APP, "environment/missing", EdgeType.ALLOWED_IN),
    ]
    with pytest.raises(InvalidGraphWrite, match="environment/missing"):
        await graph_store.commit(batch, expected_revision=1)
    graph = await graph_store.read()
    assert graph.revision == 1 and "environment/dev" not in graph


async def test_edges_must_join_the_kinds_their_type_allows(graph_store: GraphStore) -> None:
    await seed(graph_store)
    with pytest.raises(InvalidGraphWrite, match="cannot go from a service to a application"):
        await graph_store.commit([PutEdge(SVC, APP, EdgeType.OWNS)], expected_revision=1)


async def test_deleting_a_node_deletes_its_edges(graph_store: GraphStore) -> None:
    await seed(graph_store)
    await graph_store.commit([DeleteNode(SVC)], expected_revision=1)
    graph = await graph_store.read()
    assert SVC not in graph and graph.successors(APP, EdgeType.OWNS) == []
    assert list(graph.edges()) == []


@pytest.mark.redis
async def test_redis_store_survives_a_restart(redis_url: str, redis_prefix: str) -> None:
    first = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    await seed(first)
    await first.aclose()
    second = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    graph = await second.read()
    assert graph.revision == 1
    assert graph.data(APP) == {"metadata": {"name": "checkout"}, "spec": {"tags": []}}
    assert graph.has_edge(APP, SVC, EdgeType.OWNS)
    await second.aclose()


@pytest.mark.redis
async def test_two_processes_share_one_graph_and_race_safely(
    redis_url: str, redis_prefix: str
) -> None:
    a = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    b = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    await seed(a)
    assert (await b.read()).has_edge(APP, SVC, EdgeType.OWNS)  # b catches up from the log
    await b.commit([PutNode("environment/dev", NodeKind.ENVIRONMENT, {})], expected_revision=1)
    with pytest.raises(StaleRevision):  # a has not seen b's write yet: its write is stale
        await a.commit([PutNode("environment/prod", NodeKind.ENVIRONMENT, {})], expected_revision=1)
    graph = await a.read()
    assert graph.revision == 2 and "environment/dev" in graph and "environment/prod" not in graph
    await a.aclose()
    await b.aclose()


@pytest.mark.redis
async def test_redis_store_reloads_when_the_log_was_trimmed(
    redis_url: str, redis_prefix: str
) -> None:
    a = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    b = RedisGraphStore.from_url(redis_url, prefix=redis_prefix)
    await b.read()
    await seed(a)
    await a.commit(
        [PutNode("environment/dev", NodeKind.ENVIRONMENT, {"x": [1]})], expected_revision=1
    )
    raw = aioredis.Redis.from_url(redis_url)
    await raw.delete(f"{redis_prefix}:graph:log")
    await raw.aclose()
    graph = await b.read()
    assert graph.revision == 2 and graph.data("environment/dev") == {"x": [1]}
    await a.aclose()
    await b.aclose()
