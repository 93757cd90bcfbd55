"""The plugin authors' kit (`ztdp.testing`): the fake provider passes the contract suite, and
its switches and watches do what they say."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers import Provider, Resource, Target, Watching
from ztdp.testing import FakeProvider, ProviderContract


def make(name: str, **desired: object) -> Resource:
    return Resource(
        node=f"resource/shop/{name}@dev",
        kind="resource",
        name=name,
        application="shop",
        desired={"size": 1, **desired},
    )


class TestFakeProviderContract(ProviderContract):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[Provider]:
        p = FakeProvider(secret_outputs=("password",))
        yield p
        await p.aclose()

    @pytest.fixture
    async def target(self) -> Target:
        return Target(environment="dev")

    def make_resource(self, name: str) -> Resource:
        return make(name)

    async def unreachable_target(self) -> Target:
        return Target(environment="dev", settings={"unreachable": True})

    def invalid_resource(self) -> Resource:
        return make("bad", invalid=True)


async def test_the_fake_is_a_provider_that_watches() -> None:
    fake = FakeProvider()
    assert isinstance(fake, Provider) and isinstance(fake, Watching)
    await fake.aclose()


async def test_temporary_failures_run_out_and_permanent_ones_last_until_healed() -> None:
    fake, t = FakeProvider(), Target(environment="dev")
    fake.fail("temporary", times=2, methods={"apply"})
    for _ in range(2):
        with pytest.raises(TemporaryError, match=r"fake\.apply of resource/shop/a@dev"):
            await fake.apply(resource=make("a"), target=t)
    assert (await fake.apply(resource=make("a"), target=t)).state == {"size": 1}
    fake.fail("permanent", methods={"observe"}, message="refused")
    for _ in range(3):
        with pytest.raises(PermanentError, match="refused"):
            await fake.observe(resource=make("a"), target=t)
    await fake.delete(resource=make("a"), target=t)  # other methods are unaffected
    fake.heal()
    assert await fake.observe(resource=make("a"), target=t) is None
    with pytest.raises(ValueError, match="no method"):
        fake.fail("temporary", methods={"launch"})


async def test_secrets_are_generated_once_and_kept_when_handed_back() -> None:
    fake, t = FakeProvider(secret_outputs=("password",)), Target(environment="dev")
    first = await fake.apply(resource=make("db"), target=t)
    assert len(first.secrets["password"]) >= 24
    assert first.secrets["password"] not in repr(first)
    kept = await fake.apply(
        resource=Resource(**{**make("db").__dict__, "secrets": first.secrets}), target=t
    )
    assert kept.secrets == first.secrets
    rotated = await fake.apply(resource=make("db"), target=t)  # none handed back: new ones
    assert rotated.secrets["password"] != first.secrets["password"]


async def test_spaces_keep_environments_apart() -> None:
    fake = FakeProvider()
    await fake.apply(resource=make("a"), target=Target(environment="dev"))
    other = Target(environment="dev", settings={"space": "elsewhere"})
    assert await fake.observe(resource=make("a"), target=other) is None


async def test_watch_sees_apply_delete_and_changes_by_hand() -> None:
    fake, t = FakeProvider(), Target(environment="dev")
    seen: list[tuple[str, str]] = []
    async with fake.watch(target=t) as changes:
        await fake.apply(resource=make("a"), target=t)
        await fake.apply(resource=make("a"), target=t)
        await fake.apply(resource=make("b"), target=Target(environment="prod"))  # not watched
        await fake.tamper(node="resource/shop/a@dev", target=t, state={"size": 9})
        await fake.delete(resource=make("a"), target=t)
        with anyio.fail_after(5):
            async for change in changes:
                seen.append((change.node, change.event))
                if change.event == "deleted":
                    break
    a = "resource/shop/a@dev"
    assert seen == [(a, "added"), (a, "modified"), (a, "modified"), (a, "deleted")]
    await fake.aclose()
