"""The provider's watch against a Kubernetes API over a real socket (the sandbox, and a real
cluster when ZTDP_TEST_KUBECONFIG is set): what it reports within 2 s, what it does not report,
how it recovers from broken streams and expired versions, and that it leaves nothing behind.

Tests that call `sandbox_only` need the sandbox to break connections, forget versions or refuse
requests on demand; the others run against a cluster too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers import Change, Resource, Target, Watching
from ztdp_kubernetes import KubernetesProvider, object_name

IMAGE = os.environ.get("ZTDP_TEST_IMAGE", "registry.k8s.io/pause:3.10")
NODE = "deployment/shop/api@dev"
NAME = object_name("shop", "api")
SOON = 2.0  # seconds: a change must be reported within this


def resource(application: str = "shop", **changes: Any) -> Resource:
    desired = {"version": "1.0.0", "image": IMAGE, "port": 8080, "replicas": 1, **changes}
    return Resource(
        node=f"deployment/{application}/api@dev",
        kind="deployment",
        name="api",
        application=application,
        desired=desired,
    )


def target(kube: Any, namespace: str) -> Target:
    return Target(
        environment="dev",
        settings={"namespace": namespace, "kubeconfig": kube.kubeconfig},
    )


def sandbox_only(kube: Any) -> None:
    if not hasattr(kube, "emulator"):
        pytest.skip("needs the sandbox to break watches or forget versions on demand")


def deployment_path(namespace: str, name: str = NAME) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def service_path(namespace: str, name: str = NAME) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def about(kind: str, namespace: str, name: str = NAME) -> str:
    return f"{kind} {name} in namespace {namespace}"


@pytest.fixture
async def provider() -> AsyncIterator[KubernetesProvider]:
    # Quick retries, so that a watch that cannot resume says so within a test's patience.
    p = KubernetesProvider(reconnect_delays=(0.0, 0.1, 0.2))
    yield p
    await p.aclose()


async def next_change(
    changes: AsyncIterator[Change], where: Callable[[Change], bool] = lambda _: True
) -> Change:
    """The next change that satisfies `where`, within SOON seconds; every one before it must
    be of the node NODE (nothing else is in the namespace)."""
    with anyio.fail_after(SOON):
        async for change in changes:
            assert change.node == NODE, change
            if where(change):
                return change
    raise AssertionError("the watch ended")


async def connected(kube: Any, streams: int = 2) -> None:
    """Until the sandbox has `streams` watches open (the watch connects after it is entered)."""
    with anyio.fail_after(SOON):
        while kube.emulator.watching != streams:  # noqa: ASYNC110 - polls the sandbox
            await anyio.sleep(0.01)


async def patch(kube: Any, path: str, body: dict[str, Any]) -> None:
    code, answer = await kube.request("PATCH", path, body, merge=True)
    assert code == 200, answer


def test_the_provider_offers_watches() -> None:
    """How the runtime finds out (mypy checks the signature: see the end of provider.py)."""
    assert isinstance(KubernetesProvider(), Watching)


async def test_the_deployment_turning_ready_is_reported(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        await kube.mark_ready(namespace, NAME)  # the controller writes the status
        change = await next_change(changes)
    assert change == Change(NODE, "modified", about("Deployment", namespace))
    assert await provider.health(resource=resource(), target=t) == "Ready"


async def test_an_outside_edit_of_the_image_is_reported(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        container = {"name": "api", "image": "evil:1", "ports": [{"containerPort": 8080}]}
        template = {"spec": {"containers": [container]}}
        await patch(kube, deployment_path(namespace), {"spec": {"template": template}})
        change = await next_change(changes)
    assert change == Change(NODE, "modified", about("Deployment", namespace))
    seen = await provider.observe(resource=resource(), target=t)  # what the runtime does next
    assert seen is not None and seen.state["image"] == "evil:1"


async def test_an_outside_deletion_is_reported(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        assert (await kube.request("DELETE", deployment_path(namespace)))[0] in (200, 202)
        change = await next_change(changes, lambda c: c.event == "deleted")
    assert change == Change(NODE, "deleted", about("Deployment", namespace))


async def test_a_change_of_its_service_is_reported(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        await patch(kube, service_path(namespace), {"metadata": {"labels": {"someone": "else"}}})
        change = await next_change(changes, lambda c: c.detail.startswith("Service"))
    assert change == Change(NODE, "modified", about("Service", namespace))


async def put(kube: Any, namespace: str, kind: str, name: str, labels: dict[str, str]) -> str:
    """A Deployment or Service made behind ZTDP's back, without a `ztdp.io/node` annotation."""
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if kind == "Deployment":
        collection = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"made-by": "hand"}},
                "template": {
                    "metadata": {"labels": {"made-by": "hand"}},
                    "spec": {"containers": [{"name": "theirs", "image": IMAGE}]},
                },
            },
        }
    else:
        collection = f"/api/v1/namespaces/{namespace}/services"
        body = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"ports": [{"port": 1}]},
        }
    code, made = await kube.request("POST", collection, body)
    assert code in (200, 201), made
    return f"{collection}/{name}"


async def test_objects_ztdp_did_not_make_are_not_reported(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Neither objects without ZTDP's label, nor labelled ones without the `ztdp.io/node`
    annotation: made, changed and deleted before a change of the node's own Deployment and
    Service, they must not show up before those do."""
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        for kind in ("Deployment", "Service"):
            for name, labels in (
                ("plain", {"made-by": "hand"}),
                ("labelled", {"app.kubernetes.io/managed-by": "ztdp"}),
            ):
                path = await put(kube, namespace, kind, f"{name}-{kind.lower()}", labels)
                await patch(kube, path, {"metadata": {"labels": {"changed": "yes"}}})
                assert (await kube.request("DELETE", path))[0] in (200, 202)
        marker = {"metadata": {"labels": {"marker": "1"}}}
        await patch(kube, deployment_path(namespace), marker)
        await patch(kube, service_path(namespace), marker)
        # next_change fails on any change that is not of NODE
        await next_change(changes, lambda c: c.detail.startswith("Deployment"))
        await next_change(changes, lambda c: c.detail.startswith("Service"))


async def test_an_object_handed_to_another_node_is_reported_to_both(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    other = "deployment/other/api@dev"
    async with provider.watch(target=t) as changes:
        await patch(
            kube, deployment_path(namespace), {"metadata": {"annotations": {"ztdp.io/node": other}}}
        )
        with anyio.fail_after(SOON):
            first, second = await anext(changes), await anext(changes)
    detail = about("Deployment", namespace)
    assert [first, second] == [Change(NODE, "deleted", detail), Change(other, "added", detail)]


async def test_leaving_the_watch_stops_it_and_closes_its_connections(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Cancelled while it waits for a change: no task is left (the `no_leaks` fixture checks
    that, and unclosed sessions), and the API server sees its two streams closed."""
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    with anyio.move_on_after(0.5) as waited:
        async with provider.watch(target=t) as changes:
            await anext(changes)  # nothing changes: this waits until cancelled
    assert waited.cancelled_caught
    if hasattr(kube, "emulator"):
        await connected(kube, 0)  # the server noticed both streams close


async def test_many_watches_leave_applies_their_connections(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Each watch holds two connections for as long as it runs; 51 environments on one cluster
    hold 102, more than a client's pool (100): they have a pool of their own."""
    async with AsyncExitStack() as watches:
        for i in range(51):
            await watches.enter_async_context(
                provider.watch(target=target(kube, f"{namespace}-{i}"))
            )
        if hasattr(kube, "emulator"):
            await connected(kube, 102)
        with anyio.fail_after(SOON):
            await provider.apply(resource=resource(), target=target(kube, namespace))


async def test_an_error_in_the_callers_code_leaves_the_watch_as_itself(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Not wrapped in an exception group by the watch's own tasks."""
    with pytest.raises(LookupError, match="the caller's"):
        async with provider.watch(target=target(kube, namespace)):
            raise LookupError("the caller's")


async def test_a_watch_resumes_after_its_streams_end(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """Streams that the API server ends after `timeoutSeconds` (1 s here) are resumed from the
    last version, and what happens after is reported; nothing is reported for nothing."""
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    quick = KubernetesProvider(watch_timeout=1.0)
    try:
        async with quick.watch(target=t) as changes:
            with anyio.move_on_after(2.5):  # two streams end meanwhile
                change = await anext(changes)
                raise AssertionError(f"nothing changed, yet the watch reported {change}")
            await patch(kube, deployment_path(namespace), {"spec": {"replicas": 2}})
            change = await next_change(changes)
    finally:
        await quick.aclose()
    assert change == Change(NODE, "modified", about("Deployment", namespace))
    if hasattr(kube, "emulator"):
        watches = [
            r for r in kube.emulator if r.action == "WATCH" and r.resource.plural == "deployments"
        ]
        assert len(watches) >= 2 and all(r.params.get("resourceVersion") for r in watches)


async def test_a_watch_resumes_after_its_connection_breaks_and_misses_nothing(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    """The connections break while the Deployment changes; the watch reconnects from the last
    version it saw, and the change made while it was away is reported."""
    sandbox_only(kube)
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        await connected(kube)
        with kube.watches_held():  # reconnections wait until the change is made
            await kube.drop_watches(abort=True)
            await patch(kube, deployment_path(namespace), {"spec": {"replicas": 3}})
        change = await next_change(changes)
    assert change == Change(NODE, "modified", about("Deployment", namespace))
    relisted = [
        r for r in kube.emulator if r.action == "LIST" and r.resource.plural == "deployments"
    ]
    assert len(relisted) == 1  # the watch's first list: it resumed, it did not list again


@pytest.mark.parametrize("outside", ["modified", "deleted"])
async def test_a_watch_whose_version_expired_lists_again_and_reports_the_difference(
    kube: Any, namespace: str, provider: KubernetesProvider, outside: str
) -> None:
    """The connections break, the Deployment changes (or goes), and the API server forgets
    the versions in between (410 Gone when the watch resumes): the watch lists again and
    reports what differs from what it knew."""
    sandbox_only(kube)
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        await connected(kube)
        with kube.watches_held():
            await kube.drop_watches(abort=True)
            if outside == "modified":
                await patch(kube, deployment_path(namespace), {"spec": {"replicas": 3}})
            else:
                assert (await kube.request("DELETE", deployment_path(namespace)))[0] == 200
            kube.forget_history()
        change = await next_change(changes, lambda c: c.detail.startswith("Deployment"))
        assert (change.node, change.event) == (NODE, outside)
        await patch(kube, service_path(namespace), {"metadata": {"labels": {"after": "1"}}})
        await next_change(changes, lambda c: c.detail.startswith("Service"))  # still watching
    relisted = [
        r for r in kube.emulator if r.action == "LIST" and r.resource.plural == "deployments"
    ]
    assert len(relisted) == 2  # when it started, and after 410 Gone


async def test_a_watch_that_cannot_reach_the_cluster_does_not_start(
    tmp_path: Any, namespace: str, provider: KubernetesProvider
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    t = Target(
        environment="dev",
        settings={"namespace": namespace, "kubeconfig": str(kubeconfig)},
    )
    with pytest.raises(TemporaryError, match="cannot reach the cluster"):
        async with provider.watch(target=t):
            raise AssertionError("started")


async def test_a_watch_without_a_cluster_is_permanent(provider: KubernetesProvider) -> None:
    with pytest.raises(PermanentError, match="names no cluster"):
        async with provider.watch(target=Target(environment="dev")):
            raise AssertionError("started")


FORBIDDEN = {
    "apiVersion": "v1",
    "kind": "Status",
    "status": "Failure",
    "reason": "Forbidden",
    "message": 'deployments.apps is forbidden: User "ztdp" cannot watch resource "deployments"',
    "code": 403,
}


async def test_a_watch_refused_by_rbac_from_the_start_is_permanent(
    kube: Any, namespace: str, provider: KubernetesProvider
) -> None:
    sandbox_only(kube)
    kube.emulator["list apps/v1/deployments"] << 403 << FORBIDDEN
    with pytest.raises(PermanentError, match="403 Forbidden"):
        async with provider.watch(target=target(kube, namespace)):
            raise AssertionError("started")


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (403, PermanentError, "403 Forbidden"),  # RBAC changed: a retry will not help
        (503, TemporaryError, "could not be resumed \\(3 attempts\\).*503"),
    ],
)
async def test_a_watch_that_cannot_be_resumed_says_why(
    kube: Any,
    namespace: str,
    provider: KubernetesProvider,
    status: int,
    error: type[Exception],
    message: str,
) -> None:
    """The stream breaks and every attempt to resume it is refused: iterating raises a ZTDP
    error, so that the caller starts a new watch later (and observes everything again)."""
    sandbox_only(kube)
    t = target(kube, namespace)
    await provider.apply(resource=resource(), target=t)
    async with provider.watch(target=t) as changes:
        await connected(kube)
        kube.emulator["watch apps/v1/deployments"] << status << {**FORBIDDEN, "code": status}
        await kube.drop_watches(abort=True)
        with pytest.raises(error, match=message), anyio.fail_after(SOON):
            await anext(changes)
