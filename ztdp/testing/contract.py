"""`ProviderContract`: the provider seam's contract suite, for any provider (needs pytest).

A plugin's test subclasses it and says how to make what the suite needs::

    class TestMyProvider(ProviderContract):
        @pytest.fixture
        async def provider(self) -> AsyncIterator[Provider]:
            p = MyProvider()
            yield p
            await p.aclose()

        @pytest.fixture
        async def target(self) -> Target:
            return Target(environment="dev", settings={"url": ...})

        def make_resource(self, name: str) -> Resource:  # a fresh, valid resource
            return Resource(node=f"resource/shop/{name}@dev", kind="resource", name=name,
                            application="shop", desired={...})

        # optional: a target whose backend is down (else that test is skipped)
        async def unreachable_target(self) -> Target: ...
        # optional: a resource the provider refuses (else that test is skipped)
        def invalid_resource(self) -> Resource: ...

Each test makes its own resources (names unique per run) and deletes them at its end. The
suite holds a provider to: idempotent apply, observe after apply returns what apply returned,
observe before apply returns None, delete removes only its resource, delete twice is harmless,
and failures are `TemporaryError` (an unreachable backend) or `PermanentError` (a resource
`validate` refuses: the core validates before every apply). Generated secrets are handed back on the
next calls as the core does (`Resource.secrets`), and must then stay the same.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from ztdp.errors import PermanentError, TemporaryError
from ztdp.providers.base import Observation, Provider, Resource, Target

__all__ = ["ProviderContract"]


class ProviderContract:
    """The contract suite (see the module). Fixtures `provider` and `target` come from the
    subclass; so does `make_resource`."""

    def make_resource(self, name: str) -> Resource:
        raise NotImplementedError(f"{type(self).__name__} must define make_resource(name)")

    async def unreachable_target(self) -> Target:
        pytest.skip(f"{type(self).__name__} defines no unreachable_target()")

    def invalid_resource(self) -> Resource:
        pytest.skip(f"{type(self).__name__} defines no invalid_resource()")

    # --- helpers ---------------------------------------------------------------------------

    def fresh(self) -> Resource:
        """A new resource with a name of its own (short, lowercase, DNS-safe)."""
        return self.make_resource(f"ct{uuid.uuid4().hex[:8]}")

    @staticmethod
    def handed_back(resource: Resource, seen: Observation) -> Resource:
        """The resource as the core passes it on after an apply: with the generated secrets."""
        return dataclasses.replace(resource, secrets=dict(seen.secrets))

    @staticmethod
    async def cleanup(provider: Provider, target: Target, *resources: Resource) -> None:
        for r in resources:
            await provider.delete(resource=r, target=target)

    # --- the contract ----------------------------------------------------------------------

    async def test_observe_before_apply_is_none(self, provider: Provider, target: Target) -> None:
        assert await provider.observe(resource=self.fresh(), target=target) is None

    async def test_apply_is_idempotent(self, provider: Provider, target: Target) -> None:
        r = self.fresh()
        try:
            first = await provider.apply(resource=r, target=target)
            again = self.handed_back(r, first)
            second = await provider.apply(resource=again, target=target)
            assert second.state == first.state, "a second apply changed the observed state"
            assert dict(second.secrets) == dict(first.secrets), (
                "apply given its earlier secrets generated new ones"
            )
            third = await provider.apply(resource=again, target=target)
            assert third.state == first.state
            seen = await provider.observe(resource=again, target=target)
            assert seen is not None and seen.state == first.state
        finally:
            await self.cleanup(provider, target, r)

    async def test_observe_after_apply_returns_what_apply_returned(
        self, provider: Provider, target: Target
    ) -> None:
        r = self.fresh()
        try:
            applied = await provider.apply(resource=r, target=target)
            seen = await provider.observe(resource=self.handed_back(r, applied), target=target)
            assert seen is not None, "observe after apply found nothing"
            assert seen.state == applied.state
            assert seen.health in ("Ready", "Progressing", "Degraded")
            for name, value in seen.secrets.items():  # what observe reports, apply made
                assert applied.secrets.get(name) == value, f"secret {name!r} changed"
        finally:
            await self.cleanup(provider, target, r)

    async def test_diff_of_what_apply_returned_is_empty(
        self, provider: Provider, target: Target
    ) -> None:
        r = self.fresh()
        try:
            applied = await provider.apply(resource=r, target=target)
            assert await provider.diff(desired=r.desired, observed=applied.state) == []
        finally:
            await self.cleanup(provider, target, r)

    async def test_delete_removes_only_that_resource(
        self, provider: Provider, target: Target
    ) -> None:
        doomed, sibling = self.fresh(), self.fresh()
        try:
            await provider.apply(resource=doomed, target=target)
            kept = await provider.apply(resource=sibling, target=target)
            await provider.delete(resource=doomed, target=target)
            assert await provider.observe(resource=doomed, target=target) is None
            seen = await provider.observe(resource=self.handed_back(sibling, kept), target=target)
            assert seen is not None, "deleting one resource removed its sibling"
            assert seen.state == kept.state
        finally:
            await self.cleanup(provider, target, doomed, sibling)

    async def test_delete_twice_and_delete_of_nothing_are_harmless(
        self, provider: Provider, target: Target
    ) -> None:
        r = self.fresh()
        await provider.apply(resource=r, target=target)
        await provider.delete(resource=r, target=target)
        await provider.delete(resource=r, target=target)
        await provider.delete(resource=self.fresh(), target=target)
        assert await provider.observe(resource=r, target=target) is None

    async def test_recreate_after_delete(self, provider: Provider, target: Target) -> None:
        r = self.fresh()
        try:
            first = await provider.apply(resource=r, target=target)
            await provider.delete(resource=r, target=target)
            again = await provider.apply(resource=r, target=target)
            assert again.state == first.state
        finally:
            await self.cleanup(provider, target, r)

    async def test_unreachable_backend_is_a_temporary_error(self, provider: Provider) -> None:
        down = await self.unreachable_target()
        r = self.fresh()
        with pytest.raises(TemporaryError):
            await provider.apply(resource=r, target=down)
        with pytest.raises(TemporaryError):
            await provider.observe(resource=r, target=down)
        with pytest.raises(TemporaryError):
            await provider.delete(resource=r, target=down)

    async def test_refused_resource_is_a_permanent_error(self, provider: Provider) -> None:
        # The core validates before every apply, so validate is where a refusal must show.
        with pytest.raises(PermanentError):
            await provider.validate(resource=self.invalid_resource())
