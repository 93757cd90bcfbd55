"""Each provider's settings section: the configured default (`Settings.providers`) overlaid by
the environment's `spec.providers.<kind>`, validated by the provider's `settings_model`, handed
over as `Target.settings`; the old `spec.kubernetes` still read; secrets never kept.

Providers are `ztdp.testing.FakeProvider`s in a real registry (the outer boundary)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tests.helpers import Api
from ztdp.api import create_app
from ztdp.api.keys import RUNTIME
from ztdp.errors import PermanentError
from ztdp.graph import NodeKind, PutNode, node_id
from ztdp.graph.store.memory import MemoryGraphStore
from ztdp.providers import Observation, ProviderInfo, ProviderRegistry, Resource, Target
from ztdp.providers.settings import resolve
from ztdp.runtime.actor import ActorState, decode_target, encode_resource, encode_target
from ztdp.settings import Settings
from ztdp.testing import FakeProvider

PASSWORD_IN_CONFIG = "s3cr3t-from-the-servers-config"


class PgSettings(BaseModel):
    """A Postgres-like section: a server URL (no password in an environment), a port."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^postgresql://", max_length=2048)
    port: int = Field(default=5432, ge=1, le=65535)
    sslmode: str = "prefer"

    @field_validator("url")
    @classmethod
    def _no_password_in_the_environment(cls, value: str, info: ValidationInfo) -> str:
        spec = (info.context or {}).get("spec", {})
        if (
            "@" in str(spec.get("url", "")).split("//", 1)[-1]
            and ":" in str(spec["url"]).split("//", 1)[-1].split("@")[0]
        ):
            raise ValueError("must not hold a password: configure it in ZTDP_PROVIDERS")
        return value


def Pg(kind: str = "postgres", **kw: Any) -> FakeProvider:
    return FakeProvider(kind, settings_model=PgSettings, **kw)


def registry(*providers: FakeProvider) -> ProviderRegistry:
    reg = ProviderRegistry()
    for p in providers:
        reg.register(p, ProviderInfo(p.kind, f"tests:{p.kind}", "tests", "0"))
    return reg


SETTINGS = Settings(
    step_timeout=2,
    retry_backoff=0.01,
    provider_retries=1,
    observe_interval=0,
    kubeconfig="/etc/ztdp/kubeconfig",
    providers={
        "postgres": {"url": f"postgresql://ztdp:{PASSWORD_IN_CONFIG}@db:5432/postgres"},
        "kubernetes": {"context": "configured"},
    },
)


@pytest.fixture
def kube() -> FakeProvider:
    return FakeProvider("kubernetes", settings_model=None)


@pytest.fixture
def pg() -> FakeProvider:
    return Pg("postgres", secret_outputs=("password",))


@pytest.fixture
def store() -> MemoryGraphStore:
    return MemoryGraphStore()


@pytest.fixture
async def client(
    kube: FakeProvider, pg: FakeProvider, store: MemoryGraphStore
) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(SETTINGS, store=store, providers=registry(kube, pg))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture
async def api(client: TestClient) -> Api:  # type: ignore[type-arg]
    api = Api(client)
    await api.application("checkout")
    await api.service("checkout", "checkout-api")
    await api.version("checkout", "checkout-api", "1.0.0")
    await api.ok(
        "POST",
        "/v1/resources",
        {"metadata": {"name": "pg-db", "owner": "team-x"}, "spec": {"type": "postgres"}},
    )
    await api.ok("POST", "/v1/applications/checkout/resources/pg-db", status=201)
    await api.ok(
        "POST", "/v1/applications/checkout/services/checkout-api/resources/pg-db", status=201
    )
    return api


async def environment(api: Api, name: str, spec: dict[str, Any]) -> tuple[int, Any]:
    body = {"metadata": {"name": name, "owner": "platform-team"}, "spec": spec}
    return await api.call("POST", "/v1/environments", body)


async def deploy(api: Api, env: str) -> dict[str, Any]:
    await api.ok("PUT", "/v1/applications/checkout/environments/allowed", [env], 200)
    code, accepted = await api.deploy("checkout", "checkout-api", "1.0.0", env)
    assert code == 202, accepted
    with anyio.fail_after(10):
        while True:
            run = await api.ok("GET", f"/v1/runs/{accepted['run']}")
            if run["status"] != "Running":
                return run  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


async def test_sections_reach_their_providers_overlaid_on_the_configured_defaults(
    api: Api, kube: FakeProvider, pg: FakeProvider
) -> None:
    code, env = await environment(
        api,
        "dev",
        {
            "providers": {
                "postgres": {"url": "postgresql://db-dev:5432/postgres", "port": 6432},
                "kubernetes": {"namespace": "apps"},
            }
        },
    )
    assert code == 201, env
    assert env["spec"]["providers"]["postgres"]["port"] == 6432  # shown like any spec field
    run = await deploy(api, "dev")
    assert run["status"] == "Succeeded", run
    db = pg.targets["resource/pg-db@dev"]
    # The environment's fields win, the model's defaults fill in, validated as a plain dict.
    assert db.settings == {
        "url": "postgresql://db-dev:5432/postgres",
        "port": 6432,
        "sslmode": "prefer",
    }
    assert db.spec == {"url": "postgresql://db-dev:5432/postgres", "port": 6432}
    assert db.reconcile == "repair"
    # FakeProvider has no kubernetes model: the merged section as it is, old ZTDP_KUBECONFIG in.
    assert kube.targets["deployment/checkout/checkout-api@dev"].settings == {
        "kubeconfig": "/etc/ztdp/kubeconfig",
        "context": "configured",
        "namespace": "apps",
    }


async def test_the_configured_default_serves_an_environment_naming_none(
    api: Api, kube: FakeProvider, pg: FakeProvider
) -> None:
    code, _ = await environment(api, "qa", {"reconcile": "report-only"})
    assert code == 201
    assert (await deploy(api, "qa"))["status"] == "Succeeded"
    db = pg.targets["resource/pg-db@qa"]
    assert db.settings["url"].endswith(f"{PASSWORD_IN_CONFIG}@db:5432/postgres")
    assert db.spec == {} and db.reconcile == "report-only"
    assert PASSWORD_IN_CONFIG not in repr(db)  # the merged settings are not in its repr
    # A resource node carries its owning application, though its id does not name it.
    assert pg.resources["resource/pg-db@qa"].application == "checkout"
    assert kube.targets["deployment/checkout/checkout-api@qa"].settings == {
        "kubeconfig": "/etc/ztdp/kubeconfig",
        "context": "configured",
    }


async def test_the_old_spec_kubernetes_is_read_as_providers_kubernetes(
    api: Api, kube: FakeProvider
) -> None:
    code, env = await environment(api, "dev", {"kubernetes": {"namespace": "old"}})
    assert code == 201, env
    assert env["spec"]["providers"] == {"kubernetes": {"namespace": "old"}}
    assert "kubernetes" not in env["spec"]
    same = {"kubernetes": {"namespace": "old"}, "providers": {"kubernetes": {"namespace": "old"}}}
    code, _ = await environment(api, "same", same)
    assert code == 201
    both = {"kubernetes": {"namespace": "a"}, "providers": {"kubernetes": {"namespace": "b"}}}
    code, problem = await environment(api, "both", both)
    assert code == 422, problem
    assert problem["errors"][0]["loc"] == "spec.kubernetes"
    assert "spec.providers.kubernetes" in problem["errors"][0]["msg"]
    assert (await deploy(api, "dev"))["status"] == "Succeeded"
    assert kube.targets["deployment/checkout/checkout-api@dev"].settings["namespace"] == "old"


async def test_a_stored_environment_with_the_old_spelling_keeps_working(
    api: Api, kube: FakeProvider, store: MemoryGraphStore
) -> None:
    await environment(api, "legacy", {})
    env_id = node_id(NodeKind.ENVIRONMENT, "legacy")
    data = (await store.read()).data(env_id)
    assert data is not None
    old = {**data, "spec": {"description": "", "kubernetes": {"namespace": "kept"}}}
    rev = await api.revision()
    await store.commit([PutNode(env_id, NodeKind.ENVIRONMENT, old)], expected_revision=rev)
    assert (await deploy(api, "legacy"))["status"] == "Succeeded"
    target = kube.targets["deployment/checkout/checkout-api@legacy"]
    assert target.settings["namespace"] == "kept" and target.spec == {"namespace": "kept"}


async def test_a_section_its_provider_refuses_is_a_422_naming_the_field(api: Api) -> None:
    for section, loc in [
        ({"url": "mysql://db"}, "spec.providers.postgres.url"),
        ({"port": 0}, "spec.providers.postgres.port"),
        ({"port": "many"}, "spec.providers.postgres.port"),
        ({"colour": "blue"}, "spec.providers.postgres.colour"),
    ]:
        code, problem = await environment(api, "dev", {"providers": {"postgres": section}})
        assert code == 422, (section, problem)
        assert problem["errors"][0]["loc"] == loc, problem
        assert loc in problem["detail"]
    # The environment's own section may not carry a credential; the configuration may.
    leaky = {"url": "postgresql://u:hunter2@db/postgres"}
    code, problem = await environment(api, "dev", {"providers": {"postgres": leaky}})
    assert code == 422 and problem["errors"][0]["loc"] == "spec.providers.postgres.url"
    assert "hunter2" not in json.dumps(problem)
    # An update is checked too.
    code, _ = await environment(api, "dev", {})
    assert code == 201
    body = {"metadata": {"name": "dev"}, "spec": {"providers": {"postgres": {"port": -1}}}}
    code, problem = await api.call("PUT", "/v1/environments/dev", body)
    assert code == 422 and problem["errors"][0]["loc"] == "spec.providers.postgres.port"


async def test_a_section_of_a_provider_not_installed_is_kept_and_the_plan_says_so(
    api: Api,
) -> None:
    spec = {"providers": {"mongodb": {"uri": "mongodb://db"}}}
    code, env = await environment(api, "dev", spec)
    assert code == 201 and env["spec"]["providers"]["mongodb"] == {"uri": "mongodb://db"}


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"providers": {f"p{i}": {} for i in range(17)}}, "spec.providers"),
        ({"providers": {"x": {"blob": "a" * 9000}}}, "spec.providers.x"),
        ({"providers": {"x": {"deep": json.loads("[" * 20 + "]" * 20)}}}, "spec.providers.x"),
        ({"providers": {"Bad Kind": {}}}, "spec.providers.Bad Kind"),
        ({"providers": {"x": {"bad key!": 1}}}, "spec.providers.x.bad key!"),
        ({"providers": {"x": []}}, "spec.providers.x"),
        ({"kubernetes": {"blob": "a" * 9000}}, "spec.kubernetes"),
    ],
)
async def test_hostile_sections_are_bounded(api: Api, spec: dict[str, Any], loc: str) -> None:
    code, problem = await environment(api, "dev", spec)
    assert code == 422, problem
    assert any(e["loc"].startswith(loc) for e in problem["errors"]), problem


async def test_apply_validates_again_and_fails_naming_the_environment_and_field(
    api: Api, pg: FakeProvider, store: MemoryGraphStore
) -> None:
    """A section written before its provider was installed (or by hand) fails the step."""
    await environment(api, "dev", {})
    env_id = node_id(NodeKind.ENVIRONMENT, "dev")
    data = (await store.read()).data(env_id)
    assert data is not None
    bad = {**data, "spec": {"providers": {"postgres": {"port": "many"}}}}
    await store.commit(
        [PutNode(env_id, NodeKind.ENVIRONMENT, bad)], expected_revision=await api.revision()
    )
    run = await deploy(api, "dev")
    step = next(s for s in run["steps"] if s["node"] == "resource/pg-db@dev")
    assert step["status"] == "Failed"
    assert "environment dev: spec.providers.postgres.port" in step["error"]
    assert ("dev", "resource/pg-db@dev") not in pg.objects  # the provider was never called


def test_resolve_names_the_field_and_never_the_value() -> None:
    with pytest.raises(PermanentError) as caught:
        resolve(
            Pg("postgres"),
            "postgres",
            environment="prod",
            configured={"url": f"ftp://x:{PASSWORD_IN_CONFIG}@db"},
            spec={},
        )
    assert "environment prod: spec.providers.postgres.url" in caught.value.detail
    assert PASSWORD_IN_CONFIG not in caught.value.detail


def test_configured_sections_come_from_json_or_one_field_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZTDP_PROVIDERS", '{"postgres": {"url": "postgresql://a"}}')
    monkeypatch.setenv("ZTDP_PROVIDERS__POSTGRES__PORT", "6432")
    monkeypatch.setenv("ZTDP_KUBECONFIG", "/k/old")
    s = Settings()
    assert s.provider_defaults("postgres") == {"url": "postgresql://a", "port": "6432"}
    assert s.provider_defaults("kubernetes") == {"kubeconfig": "/k/old"}
    monkeypatch.setenv("ZTDP_PROVIDERS__KUBERNETES__KUBECONFIG", "/k/new")
    assert Settings().provider_defaults("kubernetes") == {"kubeconfig": "/k/new"}
    assert Settings().provider_defaults("nothing") == {}


# --- secrets are handed over, never kept ------------------------------------------------------


def test_a_kept_actor_holds_no_secret_and_no_merged_settings() -> None:
    resource = Resource(
        node="resource/pg-db@dev",
        kind="resource",
        name="pg-db",
        application="checkout",
        desired={"type": "postgres"},
        secrets={"password": "handed-over-pw"},
    )
    target = Target(
        environment="dev",
        settings={"url": f"postgresql://u:{PASSWORD_IN_CONFIG}@db"},
        spec={"port": 6432},
    )
    state = ActorState("resource/pg-db@dev", "postgres", resource=resource, target=target)
    kept = json.dumps(state.snapshot())
    assert "handed-over-pw" not in kept and PASSWORD_IN_CONFIG not in kept
    assert "handed-over-pw" not in repr(resource) and PASSWORD_IN_CONFIG not in repr(target)
    assert "secrets" not in encode_resource(resource)
    back = decode_target(encode_target(target))
    assert back.spec == {"port": 6432} and back.reconcile == "repair"
    # A target kept before sections: its settings were the section plus "reconcile".
    old = {
        "environment": "dev",
        "settings": {"namespace": "n", "reconcile": "report-only"},
        "defaults": {"kubeconfig": "/k"},
    }
    assert decode_target(old) == Target(
        environment="dev",
        settings={"namespace": "n"},
        reconcile="report-only",
        spec={"namespace": "n"},
    )


async def test_generated_secrets_reach_neither_snapshots_nor_observed_state(
    api: Api,
    client: TestClient,
    pg: FakeProvider,  # type: ignore[type-arg]
) -> None:
    await environment(api, "dev", {})
    assert (await deploy(api, "dev"))["status"] == "Succeeded"
    generated = pg.objects[("dev", "resource/pg-db@dev")].secrets["password"]
    supervisor = client.app[RUNTIME].supervisor
    raw = await supervisor.state.actor("resource/pg-db@dev")
    assert raw is not None and generated not in json.dumps(raw)
    assert PASSWORD_IN_CONFIG not in json.dumps(raw)
    for path in ["/v1/environments/dev/deployments", "/v1/runs", "/v1/environments/dev"]:
        code, body = await api.call("GET", path)
        assert code == 200 and generated not in json.dumps(body)
        assert PASSWORD_IN_CONFIG not in json.dumps(body)
    # What the provider observes now (its secrets included) is not kept either.
    seen = await pg.observe(
        resource=pg.resources["resource/pg-db@dev"], target=pg.targets["resource/pg-db@dev"]
    )
    assert isinstance(seen, Observation) and seen.secrets["password"] == generated
    actor = await supervisor.actor("resource/pg-db@dev")
    assert actor is not None and generated not in json.dumps(actor.view())


class Fragile(BaseModel):
    """A plugin's model with a bug: it raises something pydantic does not turn into an error."""

    url: str = ""

    @field_validator("url")
    @classmethod
    def _crash(cls, value: str) -> str:
        raise TypeError(f"cannot handle {value}")


async def test_a_broken_settings_model_is_the_sections_422_and_a_permanent_error() -> None:
    fragile = FakeProvider("fragile", settings_model=Fragile)
    reg = registry(fragile)
    app = create_app(SETTINGS, providers=reg)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        api = Api(c)
        spec = {"providers": {"fragile": {"url": "postgresql://u:hunter2@x"}}}
        code, problem = await environment(api, "dev", spec)
        assert code == 422, problem
        assert problem["errors"][0]["loc"] == "spec.providers.fragile"
        assert "hunter2" not in json.dumps(problem)
    with pytest.raises(PermanentError, match="settings model of provider fragile") as caught:
        resolve(fragile, "fragile", environment="dev", configured={}, spec={"url": "hunter2"})
    assert "hunter2" not in caught.value.detail


def test_configured_kinds_are_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTDP_PROVIDERS", '{"Postgres": {"url": "postgresql://a"}}')
    assert Settings().provider_defaults("postgres") == {"url": "postgresql://a"}
