"""One contract suite for every secret store (memory and real Redis), and its keys."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from ztdp.errors import AlreadyExists, InvalidInput, NotFound
from ztdp.secrets import (
    EncryptedSecretStore,
    Keyring,
    MemoryRecords,
    SecretStore,
    SecretUnreadable,
    key_id,
    new_key,
    open_secret_store,
)
from ztdp.secrets.records import Records
from ztdp.secrets.redis import RedisRecords
from ztdp.settings import Settings

PLAIN = "s3cr3t-hunter2-value"
SCOPE = {"application": "shop", "environment": "dev"}
MakeStore = Callable[[Keyring], SecretStore]


@pytest.fixture(params=["memory", "redis"])
async def records(request: pytest.FixtureRequest) -> AsyncIterator[Records]:
    if request.param == "memory":
        yield MemoryRecords()
        return
    url = request.getfixturevalue("redis_url")
    found = RedisRecords.from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    yield found
    await found.aclose()


class _Unclosed:
    """The records without closing them: several stores of one test share them."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def make_store(records: Records) -> MakeStore:
    def make(keys: Keyring) -> SecretStore:
        return EncryptedSecretStore(_Unclosed(records), keys)  # type: ignore[arg-type]

    return make


@pytest.fixture
def store(make_store: MakeStore) -> SecretStore:
    return make_store(Keyring(new_key()))


async def test_put_then_value_and_info(store: SecretStore) -> None:
    info = await store.put(**SCOPE, name="db-pass", value=PLAIN, actor="user:ann")
    assert (info.name, info.version, info.created_by, info.generated_by) == (
        "db-pass",
        1,
        "user:ann",
        None,
    )
    assert await store.value(**SCOPE, name="db-pass") == PLAIN
    assert await store.info(**SCOPE, name="db-pass") == info
    assert PLAIN not in json.dumps(info.as_json()) and PLAIN not in repr(info)


async def test_put_twice_is_refused(store: SecretStore) -> None:
    await store.put(**SCOPE, name="a", value="1", actor="x")
    with pytest.raises(AlreadyExists, match="secret a of application shop"):
        await store.put(**SCOPE, name="a", value="2", actor="x")
    assert await store.value(**SCOPE, name="a") == "1"


async def test_rotate_increases_the_version(store: SecretStore) -> None:
    await store.put(**SCOPE, name="a", value="one", actor="user:ann")
    second = await store.rotate(**SCOPE, name="a", value="two", actor="user:bob")
    third = await store.rotate(**SCOPE, name="a", value="three", actor="user:bob")
    assert (second.version, third.version) == (2, 3)
    assert (third.created_by, third.updated_by) == ("user:ann", "user:bob")
    assert await store.value(**SCOPE, name="a") == "three"


async def test_concurrent_rotations_each_get_a_version(store: SecretStore) -> None:
    await store.put(**SCOPE, name="a", value="0", actor="x")
    done = await asyncio.gather(
        *(store.rotate(**SCOPE, name="a", value=str(i), actor="x") for i in range(1, 9))
    )
    assert sorted(i.version for i in done) == list(range(2, 10))
    assert (await store.info(**SCOPE, name="a")).version == 9


async def test_missing_secret_is_not_found(store: SecretStore) -> None:
    for call in (store.value, store.info, store.delete):
        with pytest.raises(NotFound, match="secret nope of application shop in environment dev"):
            await call(**SCOPE, name="nope")
    with pytest.raises(NotFound):
        await store.rotate(**SCOPE, name="nope", value="v", actor="x")


async def test_scopes_are_apart(store: SecretStore) -> None:
    await store.put(application="shop", environment="dev", name="a", value="dev", actor="x")
    await store.put(application="shop", environment="prod", name="a", value="prod", actor="x")
    await store.put(application="blog", environment="dev", name="b", value="blog", actor="x")
    assert [i.name for i in await store.list(**SCOPE)] == ["a"]
    assert await store.value(application="shop", environment="prod", name="a") == "prod"
    with pytest.raises(NotFound):
        await store.value(application="blog", environment="dev", name="a")
    await store.delete(**SCOPE, name="a")
    assert await store.list(**SCOPE) == []
    assert await store.value(application="shop", environment="prod", name="a") == "prod"


async def test_list_is_metadata_by_name(store: SecretStore) -> None:
    for name in ("zeta", "alpha"):
        await store.put(**SCOPE, name=name, value=PLAIN, actor="x", generated_by="resource/db@dev")
    listed = await store.list(**SCOPE)
    assert [i.name for i in listed] == ["alpha", "zeta"]
    assert all(i.generated_by == "resource/db@dev" for i in listed)


async def test_wrong_key_fails_loudly(make_store: MakeStore) -> None:
    await make_store(Keyring(new_key())).put(**SCOPE, name="a", value=PLAIN, actor="x")
    other = make_store(Keyring(new_key()))
    with pytest.raises(SecretUnreadable, match="not configured: add that key to ZTDP_SECRETS_KEYS"):
        await other.value(**SCOPE, name="a")


async def test_key_rotation_reencrypts(make_store: MakeStore) -> None:
    old, new = new_key(), new_key()
    before = make_store(Keyring(old))
    await before.put(**SCOPE, name="a", value="one", actor="x")
    await before.put(application="blog", environment="prod", name="b", value="two", actor="x")
    rotated = make_store(Keyring(new, [old]))
    assert await rotated.value(**SCOPE, name="a") == "one"  # the old key still reads
    assert await rotated.reencrypt() == 2
    assert await rotated.reencrypt() == 0  # nothing left under the old key
    only_new = make_store(Keyring(new))
    assert await only_new.value(**SCOPE, name="a") == "one"
    assert await only_new.value(application="blog", environment="prod", name="b") == "two"
    assert (await only_new.info(**SCOPE, name="a")).version == 1  # same value, same version
    with pytest.raises(SecretUnreadable):
        await make_store(Keyring(old)).value(**SCOPE, name="a")


async def test_ciphertext_moved_to_another_secret_fails(records: Records) -> None:
    store = EncryptedSecretStore(_Unclosed(records), Keyring(new_key()))  # type: ignore[arg-type]
    await store.put(**SCOPE, name="a", value=PLAIN, actor="x")
    await store.put(**SCOPE, name="b", value="other", actor="x")
    a, b = await records.get("shop", "dev", "a"), await records.get("shop", "dev", "b")
    assert a is not None and b is not None
    moved = {**json.loads(b), "sealed": json.loads(a)["sealed"]}
    assert await records.replace("shop", "dev", "b", b, json.dumps(moved))
    with pytest.raises(SecretUnreadable, match="fails its integrity check"):
        await store.value(**SCOPE, name="b")


async def test_redis_holds_no_plaintext(redis_url: str, redis_prefix: str) -> None:
    store = EncryptedSecretStore(
        RedisRecords.from_url(redis_url, prefix=redis_prefix), Keyring(new_key())
    )
    try:
        await store.put(**SCOPE, name="a", value=PLAIN, actor="x")
        await store.rotate(**SCOPE, name="a", value=PLAIN + "-2", actor="x")
    finally:
        await store.aclose()
    client = aioredis.Redis.from_url(redis_url)
    try:
        stored = b""
        async for key in client.scan_iter(f"{redis_prefix}:*"):
            kind = await client.type(key)
            if kind == b"hash":
                stored += b"".join(k + v for k, v in (await client.hgetall(key)).items())
            elif kind == b"set":
                stored += b"".join(await client.smembers(key))
        assert b"sealed" in stored and PLAIN.encode() not in stored
    finally:
        await client.aclose()


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_redis_store_without_key_refuses_to_start() -> None:
    with pytest.raises(InvalidInput, match="ZTDP_SECRETS_KEY is not set"):
        open_secret_store(Settings(secret_store="redis", secrets_key=None))


def test_memory_store_without_key_makes_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="ztdp.secrets"):
        open_secret_store(Settings(secret_store="memory", secrets_key=None))
    assert "ZTDP_SECRETS_KEY is not set" in caplog.text


def test_secret_store_follows_the_graph_store() -> None:
    assert Settings(graph_store="redis").secrets_backend == "redis"
    assert Settings().secrets_backend == "memory"


@pytest.mark.parametrize(
    ("raw", "rule"), [("not base64!", "not base64"), (_b64(b"short"), "decodes to 5 bytes")]
)
def test_bad_key_is_refused(raw: str, rule: str) -> None:
    with pytest.raises(InvalidInput, match=rule):
        open_secret_store(Settings(secrets_key=SecretStr(raw)))


def test_configured_keys_are_used() -> None:
    current, older = new_key(), new_key()
    settings = Settings(secrets_key=SecretStr(_b64(current)), secrets_keys=[SecretStr(_b64(older))])
    assert key_id(current) != key_id(older)
    assert _b64(current) not in repr(settings)  # a key never reaches a log through settings
    store = open_secret_store(settings)
    assert isinstance(store, EncryptedSecretStore)


def test_serve_on_redis_without_a_key_is_one_line_naming_it(redis_url: str) -> None:
    from tests.test_serve import one_line, serve_fails

    code, out = serve_fails(
        {"ZTDP_GRAPH_STORE": "redis", "ZTDP_REDIS_URL": redis_url, "ZTDP_SECRETS_KEY": ""}
    )
    assert code == 1
    assert "ZTDP_SECRETS_KEY is not set" in one_line(out), out


async def test_purge_deletes_what_it_matches(store: SecretStore) -> None:
    await store.put(**SCOPE, name="a", value="1", actor="x")
    await store.put(**SCOPE, name="db.url", value="2", actor="x", generated_by="resource/db@dev")
    await store.put(application="blog", environment="dev", name="a", value="3", actor="x")
    assert await store.purge(match=lambda i: i.generated_by is not None) == 1
    assert [i.name for i in await store.list(**SCOPE)] == ["a"]
    assert await store.purge(match=lambda i: i.application == "shop") == 1
    assert await store.list(**SCOPE) == []
    assert await store.value(application="blog", environment="dev", name="a") == "3"
