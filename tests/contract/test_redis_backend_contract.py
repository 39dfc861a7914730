"""The backend contract on ``RedisCacheBackend``, plus what only Redis can get wrong.

The contract runs against the session's Redis (``redis_url``), each test on its
own prefix and index. The Redis-only tests cover the failure modes the engine
relies on: no I/O in the constructor, every error a ``CacheBackendError`` with
the password redacted, a killed server failing fast (bounded by the socket
timeout), and recovery after a restart that lost the index.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from costopt_core.cache.backend import CacheBackend
from costopt_core.cache.redis_backend import RedisCacheBackend
from costopt_core.errors import CacheBackendError
from tests.contract.backend_contract import (
    NOW,
    CacheBackendContract,
    assert_same_entry,
    keys_of,
    make_entry,
    vec,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

SECRET = "s3cret-Pa55"


def _unique_prefix() -> str:
    return f"costopt:test:{uuid.uuid4().hex[:12]}"


def _drop(url: str, backend: RedisCacheBackend) -> None:
    """Drop the test's index and its keys, so the session server stays small."""
    client = redis.Redis.from_url(url)
    try:
        client.execute_command("FT.DROPINDEX", backend.index_name, "DD")
    except redis.ResponseError:
        pass  # never created, or already gone
    finally:
        client.close()


class TestRedisBackendContract(CacheBackendContract):
    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url

    def make_backend(self) -> CacheBackend:
        # A generous timeout: the contract is about behaviour, not latency.
        return RedisCacheBackend(self.url, prefix=_unique_prefix(), socket_timeout_s=2.0)

    def teardown_backend(self, backend: CacheBackend) -> None:
        assert isinstance(backend, RedisCacheBackend)
        _drop(self.url, backend)
        backend.close()


class TestRedisBackendContractOverResp2(TestRedisBackendContract):
    """The same contract through a RESP2 connection (redis-py < 8 speaks RESP2 by default)."""

    def make_backend(self) -> CacheBackend:
        return RedisCacheBackend(
            f"{self.url}?protocol=2", prefix=_unique_prefix(), socket_timeout_s=2.0
        )


class TestRedisBackendContractOverResp3(TestRedisBackendContract):
    """The same contract with RESP3 asked for explicitly (``?protocol=3``).

    redis-py 8 negotiates RESP3 by default yet keeps RESP2-shaped module replies
    then; asked for explicitly, FT.SEARCH and FT.INFO come back as RESP3 maps,
    which redisvl's and redis-py's result objects cannot read: stats, the
    deletes and clear (sync and async) must not depend on them.
    """

    def make_backend(self) -> CacheBackend:
        return RedisCacheBackend(
            f"{self.url}?protocol=3", prefix=_unique_prefix(), socket_timeout_s=2.0
        )


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisCacheBackend]:
    b = RedisCacheBackend(redis_url, prefix=_unique_prefix(), socket_timeout_s=2.0)
    yield b
    _drop(redis_url, b)
    b.close()


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


# -- construction ----------------------------------------------------------------------


def test_constructor_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the constructor must not open a connection")

    url = f"redis://user:{SECRET}@127.0.0.1:{_closed_port()}/0"
    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", refuse)
        m.setattr(socket, "create_connection", refuse)
        started = time.perf_counter()
        backend = RedisCacheBackend(url, prefix=_unique_prefix())
        assert time.perf_counter() - started < 0.5
    assert SECRET not in repr(backend)
    assert "***" in repr(backend) and "127.0.0.1" in repr(backend)
    assert SECRET not in backend.url
    # First use is where the unreachable server shows up, as a CacheBackendError.
    started = time.perf_counter()
    with pytest.raises(CacheBackendError) as info:
        backend.get("k", now=NOW)
    assert time.perf_counter() - started < 2.0
    assert "get" in str(info.value)
    _assert_redacted(info.value)
    backend.close()


def test_constructor_creates_nothing_on_a_live_server(redis_url: str) -> None:
    backend = RedisCacheBackend(redis_url, prefix=_unique_prefix(), dims=4)
    raw = _raw(redis_url)
    try:
        assert backend.index_name not in raw.execute_command("FT._LIST")
        backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
        assert backend.index_name in raw.execute_command("FT._LIST")
        assert raw.exists(f"{backend.prefix}:k") == 1
    finally:
        _drop(redis_url, backend)
        raw.close()
        backend.close()


def test_bad_arguments_are_configuration_errors() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        RedisCacheBackend(dims=0)
    with pytest.raises(ConfigurationError):
        RedisCacheBackend(prefix=":")
    with pytest.raises(ConfigurationError):
        RedisCacheBackend(socket_timeout_s=0)
    for bad in (0, 1.5, True, "96"):
        with pytest.raises(ConfigurationError, match="ef_runtime"):
            RedisCacheBackend(ef_runtime=bad)  # type: ignore[arg-type]


def test_hnsw_candidates_grow_with_the_index_up_to_the_memory_backends() -> None:
    import re

    from costopt_core.cache.redis_backend import _search_args, _Sizes
    from costopt_core.cache.vector_index import DEFAULT_EF_SEARCH, VectorIndex

    def ef_sent(k: int, index_size: int, ef: int = DEFAULT_EF_SEARCH) -> int:
        sizes = _Sizes(index_size, index_size)
        query = _search_args("s", vec(1, 0, 0, 0), k, NOW, sizes, 0.9, ef)[0]
        found = re.search(r"EF_RUNTIME (\d+) ", query)
        assert found is not None, query
        return int(found.group(1))

    assert VectorIndex(4).ef_search == DEFAULT_EF_SEARCH
    assert ef_sent(4, 0) == ef_sent(4, 900) == 10  # RediSearch's own default
    assert ef_sent(4, 1_000) == 11
    assert ef_sent(4, 10_000) == 34
    assert ef_sent(4, 100_000) == ef_sent(4, 10**7) == DEFAULT_EF_SEARCH
    assert ef_sent(4, 100_000, ef=40) == 40  # ef_runtime is the most it keeps
    assert ef_sent(200, 1_000) == 200  # never fewer candidates than results


def test_the_hybrid_policy_follows_the_scopes_share_of_the_index() -> None:
    from costopt_core.cache.redis_backend import _search_plan

    def policy(scope_size: int, index_size: int) -> str | None:
        return _search_plan(scope_size, index_size, 4, 96)[0].get("hybrid_policy")

    assert policy(1_000, 1_000) == "BATCHES"  # the scope is most of the index
    assert policy(1_000, 1_500) == "BATCHES"
    assert policy(5_000, 1_000_000) == "BATCHES"  # large enough on its own
    assert policy(1_000, 100_000) is None  # RediSearch brute-forces the scope
    assert policy(1_000, 0) == "BATCHES"  # an index older than its total counter
    assert _search_plan(10_000, 10_000, 4, None) == ({"hybrid_policy": "BATCHES"}, None)


async def test_an_injected_client_is_used_and_left_open(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    b = RedisCacheBackend(client=client, prefix=_unique_prefix())
    try:
        assert "127.0.0.1" in b.url
        b.put(make_entry("k", vector=vec(1, 0, 0, 0)))
        # The async twins talk to the same server through a derived asyncio client.
        assert await b.aget("k", now=NOW) is not None
        assert keys_of(await b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
        await b.aclose()
        assert client.ping()  # still usable: the caller owns it
    finally:
        _drop(redis_url, b)
        client.close()


# -- errors ---------------------------------------------------------------------------


def _assert_redacted(error: BaseException) -> None:
    seen: BaseException | None = error
    while seen is not None:
        assert SECRET not in str(seen), f"password leaked in {type(seen).__name__}: {seen}"
        assert SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__


async def test_errors_are_cache_backend_errors_with_the_password_redacted(redis_url: str) -> None:
    # No such ACL user on the server, so AUTH fails: a real driver error, with the
    # password in the URL the backend was given.
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    backend = RedisCacheBackend(f"redis://no-such-user:{SECRET}@{host_port}/0")
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: backend.get("k", now=NOW),
        "search": lambda: backend.search("s", vec(1, 0, 0, 0), 1, now=NOW),
        "put": lambda: backend.put(make_entry("k", vector=vec(1, 0, 0, 0))),
        "delete": lambda: backend.delete(["k"]),
        "delete_tag": lambda: backend.delete_tag("t"),
        "delete_scope": lambda: backend.delete_scope("s"),
        "delete_namespace": lambda: backend.delete_namespace("n"),
        "clear": backend.clear,
        "stats": backend.stats,
    }
    for op, call in calls.items():
        with pytest.raises(CacheBackendError) as info:
            call()
        assert op in str(info.value)
        assert "***" in str(info.value)
        _assert_redacted(info.value)
    acalls: dict[str, Callable[[], Awaitable[Any]]] = {
        "aget": lambda: backend.aget("k", now=NOW),
        "asearch": lambda: backend.asearch("s", vec(1, 0, 0, 0), 1, now=NOW),
        "aput": lambda: backend.aput(make_entry("k", vector=vec(1, 0, 0, 0))),
        "adelete": lambda: backend.adelete(["k"]),
        "adelete_tag": lambda: backend.adelete_tag("t"),
        "aclear": backend.aclear,
        "astats": backend.astats,
    }
    for op, acall in acalls.items():
        with pytest.raises(CacheBackendError) as info:
            await acall()
        assert op in str(info.value)
        _assert_redacted(info.value)
    assert SECRET not in repr(backend)
    await backend.aclose()


def test_dimension_mismatches_are_cache_backend_errors(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    assert backend.dims == 4
    with pytest.raises(CacheBackendError, match="dims"):
        backend.put(make_entry("k3", vector=vec(1, 0, 0)))
    with pytest.raises(CacheBackendError, match="dims"):
        backend.search("scope-a", vec(1, 0, 0), 1, now=NOW)
    # Another process configured for another model, on the same prefix and index.
    other = RedisCacheBackend(redis_url, prefix=backend.prefix, dims=8)
    with pytest.raises(CacheBackendError, match="4-dim"):
        other.search("scope-a", vec(*range(1, 9)), 1, now=NOW)
    other.close()


def test_a_foreign_index_with_our_name_is_refused(redis_url: str) -> None:
    raw = _raw(redis_url)
    name = f"foreign-{uuid.uuid4().hex[:8]}"
    raw.execute_command(
        "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", "other:", "SCHEMA", "x", "TAG"
    )
    backend = RedisCacheBackend(redis_url, prefix=_unique_prefix(), index_name=name)
    try:
        with pytest.raises(CacheBackendError, match="not a costopt cache index"):
            backend.delete_tag("t")
    finally:
        raw.execute_command("FT.DROPINDEX", name)
        raw.close()
        backend.close()


# -- layout and Redis specifics -----------------------------------------------------------


def test_a_second_process_adopts_the_existing_index(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    backend.put(make_entry("k", vector=vec(0, 1, 0, 0), tags=("t",)))
    other = RedisCacheBackend(redis_url, prefix=backend.prefix)
    try:
        assert other.dims is None
        assert keys_of(other.search("scope-a", vec(0, 1, 0, 0), 1, now=NOW)) == ["k"]
        assert other.dims == 4
        assert other.delete_tag("t") == 1
        assert backend.get("k", now=NOW) is None
    finally:
        other.close()


def test_entries_without_vectors_work_before_dims_are_known(backend: RedisCacheBackend) -> None:
    plain = make_entry("plain", vector=None, tags=("t",))
    backend.put(plain)
    assert backend.dims is None
    assert_same_entry(backend.get("plain", now=NOW), plain)
    assert backend.stats().entries == 1
    # The first vector adds the vector field to the existing index.
    backend.put(make_entry("semantic", vector=vec(1, 0, 0, 0), tags=("t",)))
    assert backend.dims == 4
    assert keys_of(backend.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW)) == ["semantic"]
    assert backend.delete_tag("t") == 2


def _calls(raw: redis.Redis) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_a_semantic_search_is_one_round_trip_that_reads_only_what_can_be_served(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    q = vec(1, 0, 0, 0)
    backend.put(make_entry("near", vector=vec(0.95, 0.05, 0, 0)))
    backend.put(make_entry("far", vector=vec(0, 1, 0, 0)))
    backend.search("scope-a", q, 4, now=NOW)  # index ready, scope size known
    raw = _raw(redis_url)
    try:
        before = _calls(raw)
        hits = backend.search("scope-a", q, 4, now=NOW, min_similarity=0.9)
        after = _calls(raw)
    finally:
        raw.close()
    assert keys_of(hits) == ["near"]
    assert_same_entry(hits[0][0], make_entry("near", vector=vec(0.95, 0.05, 0, 0)))
    sent = {c: after[c] - before.get(c, 0) for c in after if after[c] != before.get(c, 0)}
    sent.pop("info", None)
    assert sent == {"FT.AGGREGATE": 1}


def test_search_rows_deleted_between_match_and_load_are_skipped() -> None:

    from costopt_core.cache.redis_backend import _candidates, _encode

    fields, _ = _encode(make_entry("k", vector=vec(1, 0, 0, 0)))
    row = {"vector_distance": b"0.25", **{str(f): v for f, v in fields.items()}}
    gone = {"vector_distance": b"0.1"}  # matched by the index, hash deleted before LOAD
    resp3 = {b"results": [{b"extra_attributes": gone}, {b"extra_attributes": row}]}
    flat = [x for kv in row.items() for x in (kv[0].encode(), kv[1])]
    resp2 = [2, [b"vector_distance", b"0.1"], flat]  # [count, row, row]
    for result in (resp3, resp2):
        [(entry, sim)] = _candidates(result, NOW)
        assert entry.key == "k" and sim == pytest.approx(0.75)
        assert entry.vector is not None and entry.vector.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_the_distance_filter_runs_before_any_entry_is_loaded() -> None:
    # redis-py's AggregateRequest sends LOAD first, which would read every
    # candidate's answer (a miss too) before the distance filter drops it.
    from costopt_core.cache.redis_backend import _search_args, _Sizes

    sizes = _Sizes(10, 10)
    args = [str(a) for a in _search_args("s", vec(1, 0, 0, 0), 4, NOW, sizes, 0.9)]
    assert args.index("FILTER") < args.index("SORTBY") < args.index("LOAD")
    assert args[args.index("FILTER") + 1] == "@vector_distance <= 0.100001000"
    assert args[args.index("SORTBY") : args.index("SORTBY") + 6] == [
        "SORTBY", "2", "@vector_distance", "ASC", "MAX", "4",
    ]  # fmt: skip
    unfiltered = _search_args("s", vec(1, 0, 0, 0), 4, NOW, sizes, None)
    assert "FILTER" not in [str(a) for a in unfiltered]
    assert "EF_RUNTIME" not in _search_args("s", vec(1, 0, 0, 0), 4, NOW, sizes, 0.9, None)[0]


def test_an_existing_flat_index_is_searched_without_hnsw_options(redis_url: str) -> None:
    from redisvl.index import SearchIndex

    from costopt_core.cache.redis_backend import _build_schema

    prefix = _unique_prefix()
    schema = _build_schema(f"{prefix}:idx", f"{prefix}:", 4).to_dict()
    for field in schema["fields"]:
        if field["name"] == "vector":
            field["attrs"]["algorithm"] = "flat"
    from redisvl.schema import IndexSchema

    SearchIndex(IndexSchema.from_dict(schema), redis_url=redis_url).create()
    b = RedisCacheBackend(redis_url, prefix=prefix, socket_timeout_s=2.0)
    try:
        b.put(make_entry("k", vector=vec(1, 0, 0, 0)))
        assert keys_of(b.search("scope-a", vec(1, 0.1, 0, 0), 4, now=NOW, min_similarity=0.9)) == [
            "k"
        ]
    finally:
        _drop(redis_url, b)
        b.close()


def test_native_ttl_follows_the_entry_lifetime(redis_url: str, backend: RedisCacheBackend) -> None:
    raw = _raw(redis_url)
    key = f"{backend.prefix}:k"
    try:
        backend.put(make_entry("k", vector=vec(1, 0, 0, 0), created_at=100.0, expires_at=160.0))
        assert 58_000 < raw.pttl(key) <= 60_000
        backend.put(make_entry("k", vector=vec(1, 0, 0, 0), expires_at=None))
        assert raw.pttl(key) == -1  # the replacement never expires
    finally:
        raw.close()


def test_clear_leaves_other_data_alone(redis_url: str, backend: RedisCacheBackend) -> None:
    raw = _raw(redis_url)
    neighbour = RedisCacheBackend(redis_url, prefix=backend.prefix + "-neighbour")
    unrelated = f"unrelated:{uuid.uuid4().hex}"
    try:
        raw.set(unrelated, "keep me")
        backend.put(make_entry("mine", vector=vec(1, 0, 0, 0)))
        neighbour.put(make_entry("theirs", vector=vec(1, 0, 0, 0)))
        backend.clear()
        assert backend.get("mine", now=NOW) is None
        assert neighbour.get("theirs", now=NOW) is not None
        assert raw.get(unrelated) == "keep me"
    finally:
        raw.delete(unrelated)
        _drop(redis_url, neighbour)
        neighbour.close()
        raw.close()


def test_an_index_lost_by_the_server_is_rebuilt(redis_url: str, backend: RedisCacheBackend) -> None:
    entry = make_entry("k", vector=vec(1, 0, 0, 0), tags=("t",))
    backend.put(entry)
    raw = _raw(redis_url)
    try:
        raw.execute_command("FT.DROPINDEX", backend.index_name)  # keys stay
    finally:
        raw.close()
    hits = backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)
    assert keys_of(hits) == ["k"]  # recreated, and the existing keys indexed again
    assert backend.delete_tag("t") == 1


async def test_a_combined_read_rebuilds_a_lost_index(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    entry = make_entry("k", vector=vec(1, 0, 0, 0))
    backend.put(entry)
    raw = _raw(redis_url)
    for attempt in ("sync", "async"):
        raw.execute_command("FT.DROPINDEX", backend.index_name)  # keys stay
        q = ("k", "scope-a", vec(1, 0, 0, 0), 1)
        if attempt == "sync":
            found, hits = backend.get_and_search(*q, now=NOW)
        else:
            found, hits = await backend.aget_and_search(*q, now=NOW)
        assert_same_entry(found, entry)
        assert keys_of(hits) == ["k"], attempt
    raw.close()


def test_a_combined_read_is_one_round_trip_and_nothing_else(
    redis_url: str, backend: RedisCacheBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.connection

    backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    backend.search("scope-a", vec(1, 0, 0, 0), 4, now=NOW)  # index ready, sizes known
    client = backend._sync_client()
    sent: list[str] = []
    real_pack = redis.connection.AbstractConnection.pack_commands

    def pack_commands(self: Any, commands: Any) -> Any:
        sent.append(",".join(str(c[0]) for c in commands))
        return real_pack(self, commands)

    def alone(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"a command on its own: {args[:1]}")

    monkeypatch.setattr(redis.connection.AbstractConnection, "pack_commands", pack_commands)
    monkeypatch.setattr(client, "execute_command", alone)
    monkeypatch.setattr(client, "pipeline", alone)
    found, hits = backend.get_and_search("k", "scope-a", vec(1, 0, 0, 0), 4, now=NOW)
    assert found is not None and keys_of(hits) == ["k"]
    assert sent == ["HGETALL,FT.AGGREGATE"]


def test_a_combined_read_reads_both_replies_before_raising(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    # An error reply to the search must not leave the second reply unread on the
    # pooled connection, where the next command would read it as its own.
    from costopt_core.cache.redis_backend import _both

    backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    client = backend._sync_client()
    with pytest.raises(redis.ResponseError):
        _both(client, ("FT.AGGREGATE", "no-such-index", "*"), ("HGETALL", backend._rkey("k")))
    assert client.execute_command("PING") in (True, b"PONG", "PONG")
    assert client.hgetall(backend._rkey("k"))[b"key"]


def test_puts_count_each_scope_and_the_whole_index(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    from costopt_core.cache.redis_backend import _search_plan

    for i in range(3):
        backend.put(make_entry(f"a{i}", vector=vec(1, 0, 0, i)))
    backend.put(make_entry("b0", scope="scope-b", vector=vec(0, 1, 0, 0)))
    assert backend._sizes("scope-a") == (3, 4, False)
    assert backend._sizes("scope-b") == (1, 4, False)
    assert backend._sizes("scope-c") == (0, 4, False)
    # An index from before the total counter: the plan does not guess the share.
    raw = _raw(redis_url)
    try:
        raw.hdel(backend._sizes_key, "~all", "~exp-counted")
    finally:
        raw.close()
    backend._size_hints.clear()
    # ... nor that no entry of it expires.
    assert backend._sizes("scope-a") == (3, None, True)
    assert _search_plan(3, None, 4, 96) == ({}, 96)
    assert keys_of(backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["a0"]


def test_the_expiry_range_is_in_the_query_only_where_an_entry_may_expire() -> None:
    from costopt_core.cache.redis_backend import _search_args, _Sizes

    def query(sizes: _Sizes) -> str:
        return str(_search_args("s", vec(1, 0, 0, 0), 4, NOW, sizes, 0.9)[0])

    assert "@expires_at:[(1000.000000 +inf]" in query(_Sizes(10, 10, expiring=True))
    assert "@expires_at" not in query(_Sizes(10, 10, expiring=False))
    assert "@expires_at" in query(_Sizes(10, 10))  # unknown: filtered


def test_puts_with_an_expiry_are_counted_per_scope(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    backend.put(make_entry("a0", vector=vec(1, 0, 0, 0)))
    backend.put(make_entry("b0", scope="scope-b", vector=vec(0, 1, 0, 0), expires_at=NOW + 60))
    assert backend._sizes("scope-a") == (1, 2, False)
    assert backend._sizes("scope-b") == (1, 2, True)
    # Another process (its own hints) reads the same counts.
    other = RedisCacheBackend(redis_url, prefix=backend.prefix)
    try:
        assert other._sizes("scope-b") == (1, 2, True)
        assert other._sizes("scope-a") == (1, 2, False)
    finally:
        other.close()
    backend.clear()
    backend._size_hints.clear()
    assert backend._sizes("scope-b") == (0, None, False)  # cleared: counted afresh
    backend.put(make_entry("a1", vector=vec(1, 0, 0, 0)))
    backend._size_hints.clear()
    assert backend._sizes("scope-b") == (0, 1, False)


def test_an_index_written_before_the_expiry_counts_is_always_filtered(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    # Entries an older version stored may expire, and no count knows of them:
    # only an index this code created empty (or cleared) skips the range.
    backend.put(make_entry("live", vector=vec(1, 0.2, 0, 0)))
    assert backend._sizes("scope-a").expiring is False
    raw = _raw(redis_url)
    try:
        raw.hdel(backend._sizes_key, "~exp-counted")
        # What an older version left: an expired entry it never counted.
        backend.put(make_entry("gone", vector=vec(1, 0, 0, 0), expires_at=NOW + 1))
        raw.hdel(backend._sizes_key, "~exp:" + "x" + b"scope-a".hex())
    finally:
        raw.close()
    backend._size_hints.clear()
    assert backend._sizes("scope-a").expiring is True
    assert keys_of(backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW + 2)) == ["live"]
    backend.clear()
    backend._size_hints.clear()
    assert backend._sizes("scope-a").expiring is False  # nothing left uncounted


def test_an_index_created_over_existing_entries_is_always_filtered(redis_url: str) -> None:
    prefix = _unique_prefix()
    first = RedisCacheBackend(redis_url, prefix=prefix)
    first.put(make_entry("a", vector=vec(1, 0, 0, 0)))
    assert first._sizes("scope-a").expiring is False
    raw = _raw(redis_url)
    try:
        raw.execute_command("FT.DROPINDEX", first.index_name)  # the entries stay
        raw.delete(first._sizes_key)
    finally:
        raw.close()
    first.close()
    again = RedisCacheBackend(redis_url, prefix=prefix)
    try:
        assert keys_of(again.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["a"]
        again.put(make_entry("b", vector=vec(0, 1, 0, 0)))  # counted; "a" is not
        again._size_hints.clear()
        assert again._sizes("scope-a") == (1, 1, True)
    finally:
        _drop(redis_url, again)
        again.close()


def test_an_expired_entry_takes_no_slot_right_after_this_process_put_it(
    backend: RedisCacheBackend,
) -> None:
    # The scope's hint says "nothing expires" until this put: the next search
    # must filter expiry at once, or the expired (not yet evicted) entry is the
    # one nearest result and the live one behind it is never seen.
    backend.put(make_entry("live", vector=vec(1, 0.2, 0, 0)))
    assert backend._sizes("scope-a").expiring is False
    backend.put(make_entry("gone", vector=vec(1, 0, 0, 0), expires_at=NOW + 1))
    assert keys_of(backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW + 2)) == ["live"]
    found, hits = backend.get_and_search("gone", "scope-a", vec(1, 0, 0, 0), 1, now=NOW + 2)
    assert found is None and keys_of(hits) == ["live"]


async def test_an_async_put_with_an_expiry_turns_the_filter_on_at_once(
    backend: RedisCacheBackend,
) -> None:
    await backend.aput(make_entry("live", vector=vec(1, 0.2, 0, 0)))
    assert (await backend._asizes("scope-a")).expiring is False
    await backend.aput(make_entry("gone", vector=vec(1, 0, 0, 0), expires_at=NOW + 1))
    hits = await backend.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW + 2)
    assert keys_of(hits) == ["live"]


def test_a_far_future_clock_still_searches(backend: RedisCacheBackend) -> None:
    # repr(1e16) is "1e+16", which the query language cannot read.
    backend.put(make_entry("forever", vector=vec(1, 0, 0, 0)))
    backend.put(make_entry("soon", vector=vec(1, 0.1, 0, 0), expires_at=NOW + 1))
    assert keys_of(backend.search("scope-a", vec(1, 0, 0, 0), 4, now=1e16)) == ["forever"]


# -- a dying server -----------------------------------------------------------------------

FAIL_FAST_S = 2.0


def _sync_ops(b: RedisCacheBackend) -> dict[str, Callable[[], Any]]:
    return {
        "get": lambda: b.get("k", now=NOW),
        "search": lambda: b.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW),
        "get_and_search": lambda: b.get_and_search("k", "scope-a", vec(1, 0, 0, 0), 1, now=NOW),
        "put": lambda: b.put(make_entry("k2", vector=vec(0, 1, 0, 0))),
        "delete": lambda: b.delete(["k"]),
        "delete_tag": lambda: b.delete_tag("t"),
        "delete_scope": lambda: b.delete_scope("scope-a"),
        "delete_namespace": lambda: b.delete_namespace("ns-1"),
        "clear": b.clear,
        "stats": b.stats,
    }


def _async_ops(b: RedisCacheBackend) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "aget": lambda: b.aget("k", now=NOW),
        "asearch": lambda: b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW),
        "aget_and_search": lambda: b.aget_and_search("k", "scope-a", vec(1, 0, 0, 0), 1, now=NOW),
        "aput": lambda: b.aput(make_entry("k2", vector=vec(0, 1, 0, 0))),
        "adelete": lambda: b.adelete(["k"]),
        "adelete_tag": lambda: b.adelete_tag("t"),
        "adelete_scope": lambda: b.adelete_scope("scope-a"),
        "adelete_namespace": lambda: b.adelete_namespace("ns-1"),
        "aclear": b.aclear,
        "astats": b.astats,
    }


async def test_a_killed_server_fails_fast_and_a_restarted_one_recovers(
    own_redis_server: RedisServer,
) -> None:
    server = own_redis_server
    b = RedisCacheBackend(server.url, prefix=_unique_prefix(), socket_timeout_s=0.25)
    entry = make_entry("k", vector=vec(1, 0, 0, 0), tags=("t",))
    b.put(entry)
    await b.aput(entry)  # both clients hold live pooled connections now
    assert keys_of(b.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    assert keys_of(await b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]

    server.kill()
    for op, call in _sync_ops(b).items():
        started = time.perf_counter()
        with pytest.raises(CacheBackendError, match=op):
            call()
        assert time.perf_counter() - started < FAIL_FAST_S, op
    for op, acall in _async_ops(b).items():
        started = time.perf_counter()
        with pytest.raises(CacheBackendError, match=op):
            await asyncio.wait_for(acall(), timeout=10)
        assert time.perf_counter() - started < FAIL_FAST_S, op

    server.restart()  # same port, empty: no persistence, no index
    assert b.get("k", now=NOW) is None
    assert b.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW) == []
    b.put(entry)
    assert_same_entry(b.get("k", now=NOW), entry)
    assert keys_of(b.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    assert keys_of(await b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    assert await b.adelete_tag("t") == 1
    assert (await b.astats()).entries == 0
    await b.aclose()


async def test_async_side_recovers_when_it_sees_the_restart_first(
    own_redis_server: RedisServer,
) -> None:
    server = own_redis_server
    b = RedisCacheBackend(server.url, prefix=_unique_prefix(), socket_timeout_s=0.25)
    await b.aput(make_entry("k", vector=vec(1, 0, 0, 0)))
    server.restart()
    # The index is gone with the data; the first async put must recreate it.
    await b.aput(make_entry("k", vector=vec(1, 0, 0, 0)))
    assert keys_of(await b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    await b.aclose()


async def test_a_hung_server_fails_within_the_socket_timeout(
    own_redis_server: RedisServer,
) -> None:
    # SIGSTOP: the kernel still accepts connections, nothing answers, so only the
    # socket timeout (0.25 s, one retry) bounds each call.
    server = own_redis_server
    b = RedisCacheBackend(server.url, prefix=_unique_prefix(), socket_timeout_s=0.25)
    b.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    await b.aput(make_entry("k", vector=vec(1, 0, 0, 0)))
    server.freeze()
    try:
        # Each failing call costs 2 x 0.25 s (one retry), so only a sample of the
        # operations runs here; the killed-server test covers all of them.
        for op in ("get", "search"):
            started = time.perf_counter()
            with pytest.raises(CacheBackendError, match=op):
                _sync_ops(b)[op]()
            assert time.perf_counter() - started < FAIL_FAST_S, op
        for op in ("aput", "asearch"):
            started = time.perf_counter()
            with pytest.raises(CacheBackendError, match=op):
                await asyncio.wait_for(_async_ops(b)[op](), timeout=10)
            assert time.perf_counter() - started < FAIL_FAST_S, op
    finally:
        server.thaw()
    assert b.get("k", now=NOW) is not None  # same server, data intact
    assert keys_of(await b.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    await b.aclose()


def test_stats_are_the_sum_of_every_replica(redis_url: str) -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.cache.entry import CachedResponse
    from costopt_core.cache.keys import CacheRequest
    from costopt_core.testing import FakeEmbedder
    from costopt_core.types import Message, Usage

    prefix = _unique_prefix()
    replicas = [
        SemanticCache(RedisCacheBackend(redis_url, prefix=prefix), embedder=FakeEmbedder(dim=4))
        for _ in range(2)
    ]
    req = CacheRequest(messages=(Message("user", "How do I reset my password?"),), tenant="a")
    answer = CachedResponse("Settings > Security.", usage=Usage(10, 5), finish_reason="stop")
    assert replicas[0].lookup(req) is None
    replicas[0].store(req, answer)
    assert replicas[1].lookup(req) is not None  # an answer stored by the other replica
    replicas[1].store(req, CachedResponse("", usage=Usage(10, 0), finish_reason="stop"))
    # each replica sends its increments at most a second late; stats() sends its own
    replicas[1].flush_stats()
    for r in replicas:
        s = r.stats()
        assert (s.lookups, s.exact_hits, s.misses, s.stores) == (2, 1, 1, 1)
        assert s.entries == 1 and s.skipped_stores == {"empty": 1}
    replicas[0].backend.clear()


def test_another_process_finds_the_answer_with_the_same_scope_and_expiry(redis_url: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from costopt_core.cache import SemanticCache
    from costopt_core.cache.entry import CachedResponse
    from costopt_core.cache.keys import CacheRequest
    from costopt_core.testing import FakeEmbedder
    from costopt_core.types import Message, Usage

    prefix = _unique_prefix()
    cache = SemanticCache(RedisCacheBackend(redis_url, prefix=prefix), embedder=FakeEmbedder(dim=4))
    req = CacheRequest(
        messages=(Message("system", "Be brief."), Message("user", "Refund window?")),
        model="gpt-4o-mini",
        params={"temperature": 0.2},
        tenant="acme",
    )
    cache.store(req, CachedResponse("30 days.", usage=Usage(10, 3), finish_reason="stop"), ttl_s=60)
    code = (
        "import sys, json\n"
        "from costopt_core.cache import SemanticCache\n"
        "from costopt_core.cache.keys import CacheRequest\n"
        "from costopt_core.cache.redis_backend import RedisCacheBackend\n"
        "from costopt_core.testing import FakeEmbedder\n"
        "from costopt_core.types import Message\n"
        "url, prefix, tenant = sys.argv[1:4]\n"
        "c = SemanticCache(RedisCacheBackend(url, prefix=prefix), embedder=FakeEmbedder(dim=4))\n"
        "req = CacheRequest(messages=(Message('system', 'Be brief.'), "
        "Message('user', 'Refund window?')), model='gpt-4o-mini', "
        "params={'temperature': 0.2}, tenant=tenant)\n"
        "hit = c.lookup(req)\n"
        "print(json.dumps(None if hit is None else [hit.tier, hit.response.text, "
        "hit.entry.expires_at]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "shared"), str(root)])}

    def other_process(tenant: str) -> object:
        out = subprocess.run(
            [sys.executable, "-c", code, redis_url, prefix, tenant],
            capture_output=True, text=True, env=env, timeout=120, check=True,
        )  # fmt: skip
        return json.loads(out.stdout)

    import json

    tier, text, expires_at = other_process("acme")  # type: ignore[misc]
    assert (tier, text) == ("exact", "30 days.")
    mine = cache.lookup(req)
    assert mine is not None and mine.entry.expires_at == expires_at
    assert other_process("globex") is None  # another tenant never gets it
    cache.backend.clear()


# -- protocols, odd data and configuration -------------------------------------------------


async def test_an_injected_resp3_client_runs_every_index_operation(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, protocol=3)
    b = RedisCacheBackend(client=client, prefix=_unique_prefix())

    def put_all() -> None:
        b.put(make_entry("a", vector=vec(1, 0, 0, 0), tags=("t",)))
        b.put(make_entry("b", vector=vec(0, 1, 0, 0), tags=("t",), namespace="ns-2"))
        b.put(make_entry("c", scope="scope-b", vector=vec(0, 0, 1, 0), namespace="ns-2"))

    try:
        put_all()
        stats = b.stats()
        assert stats.entries == 3 and stats.bytes > 3 * 200
        assert (await b.astats()).entries == 3
        assert b.delete_tag("t", namespace="ns-1") == 1
        assert await b.adelete_scope("scope-b") == 1
        assert b.delete_namespace("ns-2") == 1
        assert b.stats() == (await b.astats()) and b.stats().entries == 0
        put_all()
        assert await b.adelete_tag("t") == 2
        assert await b.adelete_namespace("ns-2") == 1
        put_all()
        b.clear()
        assert b.stats().entries == 0 and b.get("a", now=NOW) is None
        put_all()
        await b.aclear()
        assert (await b.astats()).entries == 0
        await b.aclose()
    finally:
        _drop(redis_url, b)
        client.close()


def test_search_pages_are_read_from_either_protocol() -> None:
    from costopt_core.cache.redis_backend import _search_page

    resp3 = {
        b"attributes": [],
        b"total_results": 7,
        b"results": [{b"id": b"p:a", b"values": []}, {b"id": b"p:b", b"values": []}],
    }
    assert _search_page(resp3) == (7, [b"p:a", b"p:b"])
    assert _search_page([7, b"p:a", b"p:b"]) == (7, [b"p:a", b"p:b"])
    assert _search_page({b"total_results": 0, b"results": []}) == (0, [])
    assert _search_page([0]) == (0, [])


def test_a_sweep_pages_past_keys_it_cannot_unlink_and_stops_at_its_backstop() -> None:
    from costopt_core.cache.redis_backend import _SWEEP_BATCH, _Sweep

    sweep = _Sweep("idx", "*")
    assert sweep.keys([2, b"a", b"b"]) == [b"a", b"b"]
    sweep.unlinked(2, 0)  # both already gone: the next page must not be the same one
    assert sweep.command()[5] == 2
    sweep.unlinked(2, 2)
    assert sweep.command()[5] == 0 and sweep.deleted == 2
    sweep.deleted = _SWEEP_BATCH + 10  # writers keep adding what it deletes
    assert sweep.keys([1, b"c"]) == []


_CORRUPTIONS: dict[str, dict[str, Any]] = {
    "response is a JSON list": {"response": "[]"},
    "response is JSON null": {"response": "null"},
    "response is not JSON": {"response": "{oops"},
    "response is not UTF-8": {"response": b"\xff\xfe"},
    "created_at is not a number": {"created_at": "yesterday"},
    "key is not a token": {"key": "zz"},
    "vector is not float32s": {"vector": b"\x00\x01\x02"},
}


@pytest.mark.parametrize("corruption", list(_CORRUPTIONS))
async def test_a_corrupt_entry_is_skipped_by_every_read(
    redis_url: str, backend: RedisCacheBackend, corruption: str
) -> None:
    good = make_entry("good", vector=vec(1, 0.1, 0, 0))
    backend.put(good)
    backend.put(make_entry("bad", vector=vec(1, 0, 0, 0)))
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.hset(f"{backend.prefix}:bad", mapping=_CORRUPTIONS[corruption])
    finally:
        raw.close()
    q = vec(1, 0, 0, 0)
    assert backend.get("bad", now=NOW) is None
    assert await backend.aget("bad", now=NOW) is None
    assert keys_of(backend.search("scope-a", q, 4, now=NOW)) == ["good"]
    assert keys_of(await backend.asearch("scope-a", q, 4, now=NOW)) == ["good"]
    found, hits = backend.get_and_search("bad", "scope-a", q, 4, now=NOW)
    assert found is None and keys_of(hits) == ["good"]
    found, hits = await backend.aget_and_search("bad", "scope-a", q, 4, now=NOW)
    assert found is None and keys_of(hits) == ["good"]
    assert_same_entry(backend.get("good", now=NOW), good)


async def test_a_lifetime_too_long_for_pexpire_is_stored_whole(
    redis_url: str, backend: RedisCacheBackend
) -> None:
    raw = _raw(redis_url)
    key = f"{backend.prefix}:k"
    try:
        for put in (backend.put, backend.aput):
            backend.put(make_entry("k", vector=vec(1, 0, 0, 0), expires_at=NOW + 60))
            forever = make_entry("k", vector=vec(0, 1, 0, 0), expires_at=NOW + 1e16)
            result = put(forever)
            if asyncio.iscoroutine(result):
                await result
            assert_same_entry(backend.get("k", now=NOW), forever)
            assert raw.pttl(key) > 10**15  # a (clamped) TTL, not the old entry's or none
    finally:
        raw.close()


def test_native_ttls_are_ones_redis_accepts() -> None:
    from costopt_core.cache.redis_backend import _MAX_TTL_MS, _native_ttl_ms

    assert _native_ttl_ms(100.0, None) is None
    assert _native_ttl_ms(100.0, math.inf) is None
    assert _native_ttl_ms(100.0, 160.0) == 60_000
    assert _native_ttl_ms(100.0, 50.0) == 1000  # born expired: evicted soon
    assert _native_ttl_ms(0.0, 1e16) == _native_ttl_ms(-1e300, 1e300) == _MAX_TTL_MS
    assert _MAX_TTL_MS + int(time.time() * 1000) < 2**63 - 1


def test_every_secret_in_the_url_is_redacted() -> None:
    url = (
        f"rediss://default:{SECRET}@127.0.0.1:{_closed_port()}/0"
        f"?ssl_keyfile=/tmp/k.pem&ssl_password={SECRET}x&db=0"
    )
    backend = RedisCacheBackend(url, socket_timeout_s=0.1)
    assert SECRET not in repr(backend) and SECRET not in backend.url
    assert "ssl_password=***" in backend.url and "ssl_keyfile=/tmp/k.pem" in backend.url
    with pytest.raises(CacheBackendError) as info:
        backend.get("k", now=NOW)
    _assert_redacted(info.value)
    backend.close()


def test_an_injected_clients_ssl_password_is_scrubbed_too() -> None:
    client = redis.Redis(host="127.0.0.1", port=_closed_port(), ssl=True, ssl_password=SECRET)
    backend = RedisCacheBackend(client=client)
    assert backend._scrub(f"could not open the key with {SECRET}") == (
        "could not open the key with ***"
    )
    client.close()


def test_event_loops_taking_turns_each_keep_their_connection(redis_url: str) -> None:
    name = f"loops-{uuid.uuid4().hex[:8]}"
    backend = RedisCacheBackend(f"{redis_url}?client_name={name}", prefix=_unique_prefix())
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    raw = _raw(redis_url)

    def dialled() -> int:
        return int(raw.info("stats")["total_connections_received"])

    def named() -> int:
        return sum(1 for c in raw.client_list() if c.get("name") == name)

    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        before = dialled()
        for _ in range(20):
            for loop in loops:
                assert loop.run_until_complete(backend.aget("k", now=NOW)) is not None
        assert dialled() - before == 2  # one per loop, not one per switch
        assert named() == 3  # the sync client and one per loop
        backend.close()  # closes each loop's client on that loop
        deadline = time.monotonic() + 2.0
        while named() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert named() == 0
    finally:
        for loop in loops:
            loop.close()
        _drop(redis_url, backend)
        raw.close()


def test_finished_event_loops_do_not_pile_up(backend: RedisCacheBackend) -> None:
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0)))
    for _ in range(5):
        assert asyncio.run(backend.aget("k", now=NOW)) is not None
    assert len(backend._async) <= 1  # each new loop drops the finished ones


def test_clients_that_decode_replies_are_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from costopt_core.errors import ConfigurationError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the constructor must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisCacheBackend(client=redis.Redis.from_url(url, decode_responses=True))
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisCacheBackend(
            url, async_client=redis.asyncio.Redis.from_url(url, decode_responses=True)
        )
    with pytest.raises(ConfigurationError, match="remove decode_responses"):
        RedisCacheBackend(f"{url}?decode_responses=True")
    with pytest.raises(ConfigurationError, match="remove decode_responses"):
        RedisCacheBackend(f"{url}?decode_responses=false")  # redis-py decodes then too
    RedisCacheBackend(client=redis.Redis.from_url(url)).close()


def test_a_server_that_cannot_be_reached_is_said_to_be_unreachable(redis_url: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = RedisCacheBackend(f"redis://127.0.0.1:{port}", socket_timeout_s=0.2)
    with pytest.raises(CacheBackendError) as caught:
        down.get("k", now=NOW)
    assert caught.value.unreachable is True
    # A refusal by a server that answers is not.
    up = RedisCacheBackend(redis_url, prefix=_unique_prefix())
    with pytest.raises(CacheBackendError) as refused:
        up.search("scope-a", [[0.0, 0.0, 0.0]], 4, now=NOW)  # type: ignore[arg-type]
    assert refused.value.unreachable is False


def test_a_stale_size_read_never_turns_the_expiry_filter_off() -> None:
    from costopt_core.cache.redis_backend import _Sizes

    backend = RedisCacheBackend("redis://127.0.0.1:1/0")  # no I/O until used
    backend._size_hints["s"] = (_Sizes(1, 1, expiring=True), time.monotonic())
    # Sent before this process's put with an expiry, answered after it.
    assert backend._remember_sizes("s", [b"1", b"1", None, b"1"]).expiring is True
    assert backend._remember_sizes("t", [b"1", b"1", None, b"1"]).expiring is False
