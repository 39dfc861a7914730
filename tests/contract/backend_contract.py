"""The one contract every ``CacheBackend`` passes, as a mixin test class.

The cache engine trusts its backend for a few things it cannot check afterwards:
search stays inside the scope (filtering inside the query, so other scopes never
take the k slots), an expired entry is never returned, similarities are true
cosine similarities, puts replace, deletes count. This suite pins those down once
for all backends (memory, SQLite, Redis), through the sync methods and through
their async twins, with the same assertions.

Use it like cachetools' test mixins: subclass, provide ``make_backend()`` (a fresh,
empty backend per test) and optionally ``teardown_backend()``::

    class TestMemoryBackendContract(CacheBackendContract):
        def make_backend(self) -> CacheBackend:
            return MemoryCacheBackend()

Every test runs twice, ``[sync]`` and ``[async]``: the ``ops`` fixture calls
either the plain methods or the ``a``-prefixed twins behind one awaitable API.
Times are small fake clock values (``now=1000.0``); nothing sleeps.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from costopt_core.cache.backend import BackendStats, CacheBackend, CombinedLookup
from costopt_core.cache.entry import CachedResponse, CacheEntry
from costopt_core.errors import CacheBackendError
from costopt_core.types import Usage

__all__ = ["BackendOps", "CacheBackendContract", "assert_same_entry", "make_entry", "vec"]

NOW = 1000.0
Mode = Literal["sync", "async"]


def vec(*values: float) -> npt.NDArray[np.float32]:
    """A float32 vector (the contract uses 4 dimensions throughout)."""
    return np.asarray(values, dtype=np.float32)


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def make_entry(
    key: str,
    *,
    scope: str = "scope-a",
    namespace: str = "ns-1",
    vector: npt.NDArray[np.float32] | None = None,
    tags: tuple[str, ...] = (),
    created_at: float = NOW - 10.0,
    expires_at: float | None = None,
    text: str | None = None,
    prompt: str | None = None,
) -> CacheEntry:
    """A small entry; the answer text defaults to ``"answer for <key>"``."""
    return CacheEntry(
        key=key,
        scope=scope,
        namespace=namespace,
        prompt_text=prompt if prompt is not None else f"prompt for {key}",
        response=CachedResponse(text=text if text is not None else f"answer for {key}"),
        vector=vector,
        tags=tags,
        created_at=created_at,
        expires_at=expires_at,
    )


def assert_same_entry(got: CacheEntry | None, want: CacheEntry) -> None:
    """Field-by-field equality (``CacheEntry.__eq__`` cannot compare numpy arrays)."""
    assert got is not None, f"entry {want.key!r} missing"
    assert got.key == want.key
    assert got.scope == want.scope
    assert got.namespace == want.namespace
    assert got.prompt_text == want.prompt_text
    assert got.response == want.response
    assert tuple(got.tags) == tuple(want.tags)
    assert got.created_at == want.created_at
    assert got.expires_at == want.expires_at
    if want.vector is None:
        assert got.vector is None
    else:
        assert got.vector is not None
        assert got.vector.dtype == np.float32
        np.testing.assert_array_equal(got.vector, want.vector)


def keys_of(hits: Sequence[tuple[CacheEntry, float]]) -> list[str]:
    return [entry.key for entry, _ in hits]


class BackendOps:
    """One awaitable API over a backend's sync methods or its async twins."""

    def __init__(self, backend: CacheBackend, mode: Mode) -> None:
        self.backend = backend
        self.mode = mode

    async def get(self, key: str, *, now: float = NOW) -> CacheEntry | None:
        if self.mode == "sync":
            return self.backend.get(key, now=now)
        return await self.backend.aget(key, now=now)

    async def search(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float = NOW,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        if self.mode == "sync":
            return self.backend.search(scope, vector, k, now=now, min_similarity=min_similarity)
        return await self.backend.asearch(scope, vector, k, now=now, min_similarity=min_similarity)

    async def get_and_search(
        self,
        key: str,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float = NOW,
        min_similarity: float | None = None,
    ) -> tuple[CacheEntry | None, list[tuple[CacheEntry, float]]]:
        b = self.backend
        if not isinstance(b, CombinedLookup):
            pytest.skip("the backend reads the two tiers separately (no CombinedLookup)")
        args = (key, scope, vector, k)
        if self.mode == "sync":
            return b.get_and_search(*args, now=now, min_similarity=min_similarity)
        return await b.aget_and_search(*args, now=now, min_similarity=min_similarity)

    async def put(self, *entries: CacheEntry) -> None:
        for entry in entries:
            if self.mode == "sync":
                self.backend.put(entry)
            else:
                await self.backend.aput(entry)

    async def delete(self, keys: Sequence[str]) -> int:
        if self.mode == "sync":
            return self.backend.delete(keys)
        return await self.backend.adelete(keys)

    async def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        if self.mode == "sync":
            return self.backend.delete_tag(tag, namespace)
        return await self.backend.adelete_tag(tag, namespace)

    async def delete_scope(self, scope: str) -> int:
        if self.mode == "sync":
            return self.backend.delete_scope(scope)
        return await self.backend.adelete_scope(scope)

    async def delete_namespace(self, namespace: str) -> int:
        if self.mode == "sync":
            return self.backend.delete_namespace(namespace)
        return await self.backend.adelete_namespace(namespace)

    async def clear(self) -> None:
        if self.mode == "sync":
            self.backend.clear()
        else:
            await self.backend.aclear()

    async def stats(self) -> BackendStats:
        # The protocol has no async stats; use a backend's ``astats`` when it has one.
        astats: Any = getattr(self.backend, "astats", None)
        if self.mode == "async" and astats is not None:
            result: BackendStats = await astats()
            return result
        return self.backend.stats()

    async def present(self, *keys: str) -> set[str]:
        """Which of ``keys`` ``get`` still finds."""
        return {k for k in keys if await self.get(k) is not None}


class CacheBackendContract:
    """Mixin: the ``CacheBackend`` contract. Subclasses provide ``make_backend()``."""

    def make_backend(self) -> CacheBackend:
        """A fresh, empty backend for one test."""
        raise NotImplementedError

    def teardown_backend(self, backend: CacheBackend) -> None:
        """Release what ``make_backend`` created (default: ``backend.close()``)."""
        backend.close()

    @pytest.fixture
    async def backend(self) -> AsyncIterator[CacheBackend]:
        backend = self.make_backend()
        yield backend
        # Async clients are closed on the loop that made them, before the sync teardown.
        aclose: Any = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()
        self.teardown_backend(backend)

    @pytest.fixture(params=["sync", "async"])
    def ops(self, request: pytest.FixtureRequest, backend: CacheBackend) -> BackendOps:
        return BackendOps(backend, request.param)

    # -- storage ---------------------------------------------------------------------------

    async def test_backend_satisfies_the_protocol(self, backend: CacheBackend) -> None:
        assert isinstance(backend, CacheBackend)

    async def test_put_get_round_trip_keeps_every_field(self, ops: BackendOps) -> None:
        response = CachedResponse(
            text="Paris is the capital of France. ✓ «ünïcödé» 中文",
            model="gpt-4o-mini-2024-07-18",
            usage=Usage(
                input_tokens=1200,
                output_tokens=345,
                cache_read_tokens=1000,
                cache_write_5m_tokens=100,
                cache_write_1h_tokens=50,
                reasoning_tokens=120,
            ),
            finish_reason="tool_calls",
            tool_calls=(
                {
                    "id": "call_1",
                    "name": "get_weather",
                    "args": {"city": "Paris", "days": 3, "units": ["C", "F"], "x": None},
                },
                {"id": "call_2", "name": "noop", "args": {}},
            ),
            structured={"answer": "Paris", "confidence": 0.93, "alts": ["Lyon"], "ok": True},
            payload='[{"lc": 1, "type": "constructor", "kwargs": {"text": "Paris"}}]',
            payload_format="langchain-dumps-v1",
        )
        entry = CacheEntry(
            key="k-full",
            scope="scope-a",
            namespace="tenant-1",
            prompt_text="What is the capital of France?\nAnswer briefly. 🇫🇷",
            response=response,
            vector=vec(0.1, -0.2, 0.3, 0.9),
            tags=("geo", "faq"),
            created_at=NOW - 5.25,
            expires_at=NOW + 3600.5,
        )
        await ops.put(entry)
        got = await ops.get("k-full")
        assert_same_entry(got, entry)
        assert got is not None
        assert got.response.usage.cache_read_tokens == 1000
        assert got.response.usage.cache_write_1h_tokens == 50
        assert got.response.tool_calls[0]["args"]["units"] == ["C", "F"]

    async def test_round_trip_of_a_minimal_entry(self, ops: BackendOps) -> None:
        # No vector (an exact-tier-only entry), no tags, no expiry, unknown usage.
        entry = make_entry("k-min", vector=None, prompt="", text="")
        await ops.put(entry)
        got = await ops.get("k-min")
        assert_same_entry(got, entry)
        assert got is not None
        assert got.response.usage == Usage()

    async def test_get_of_a_missing_key_is_none(self, ops: BackendOps) -> None:
        assert await ops.get("never-stored") is None
        await ops.put(make_entry("k1", vector=vec(1, 0, 0, 0)))
        assert await ops.get("k2") is None

    async def test_put_of_the_same_key_replaces_the_entry(self, ops: BackendOps) -> None:
        old = make_entry("k", scope="scope-a", vector=vec(1, 0, 0, 0), tags=("old",), text="v1")
        new = make_entry("k", scope="scope-b", vector=vec(0, 1, 0, 0), tags=("new",), text="v2")
        await ops.put(old, new)
        assert_same_entry(await ops.get("k"), new)
        assert await ops.search("scope-a", vec(1, 0, 0, 0), 5) == []
        assert keys_of(await ops.search("scope-b", vec(0, 1, 0, 0), 5)) == ["k"]
        assert await ops.delete_tag("old") == 0
        assert (await ops.stats()).entries == 1

    async def test_replacement_without_vector_drops_the_old_vector(self, ops: BackendOps) -> None:
        await ops.put(make_entry("k", vector=vec(1, 0, 0, 0), expires_at=NOW + 50))
        plain = make_entry("k", vector=None, expires_at=None, text="exact only")
        await ops.put(plain)
        assert_same_entry(await ops.get("k"), plain)
        assert await ops.search("scope-a", vec(1, 0, 0, 0), 5) == []

    # -- expiry ---------------------------------------------------------------------------

    async def test_get_never_returns_an_expired_entry(self, ops: BackendOps) -> None:
        await ops.put(make_entry("k", vector=vec(1, 0, 0, 0), created_at=100.0, expires_at=110.0))
        assert await ops.get("k", now=100.0) is not None
        assert await ops.get("k", now=109.999) is not None
        assert await ops.get("k", now=110.0) is None  # expiry is inclusive
        assert await ops.get("k", now=5000.0) is None

    async def test_entries_without_expiry_never_expire(self, ops: BackendOps) -> None:
        await ops.put(make_entry("k", vector=vec(1, 0, 0, 0), expires_at=None))
        assert await ops.get("k", now=1e12) is not None
        assert keys_of(await ops.search("scope-a", vec(1, 0, 0, 0), 1, now=1e12)) == ["k"]

    async def test_search_never_returns_an_expired_entry(self, ops: BackendOps) -> None:
        q = vec(1, 0, 0, 0)
        await ops.put(
            make_entry("expired-near", vector=vec(1, 0, 0, 0), created_at=100, expires_at=110),
            make_entry("live-far", vector=vec(0.6, 0.8, 0, 0), created_at=100, expires_at=500),
            make_entry("live-forever", vector=vec(0, 0, 1, 0), created_at=100),
        )
        # Time only moves forward (a backend may evict what it saw expire).
        assert keys_of(await ops.search("scope-a", q, 1, now=105.0)) == ["expired-near"]
        # The expired entry is the nearest, yet it must not take the single slot.
        assert keys_of(await ops.search("scope-a", q, 1, now=200.0)) == ["live-far"]
        assert keys_of(await ops.search("scope-a", q, 10, now=200.0)) == [
            "live-far",
            "live-forever",
        ]
        assert keys_of(await ops.search("scope-a", q, 10, now=500.0)) == ["live-forever"]

    # -- search ---------------------------------------------------------------------------

    async def test_search_returns_k_best_first_with_exact_similarities(
        self, ops: BackendOps
    ) -> None:
        q = vec(1, 0, 0, 0)
        s = math.sqrt(0.75)
        known = {
            "same": vec(2, 0, 0, 0),  # scaled: cosine ignores length -> 1.0
            "cos-0.8": vec(0.8, 0.6, 0, 0),
            "cos-0.6": vec(0.6, 0, 0.8, 0),
            "orthogonal": vec(0, 0, 0, 3),
            "cos-minus-0.5": vec(-0.5, s, 0, 0),
        }
        await ops.put(*(make_entry(k, vector=v) for k, v in known.items()))
        top3 = await ops.search("scope-a", q, 3)
        assert keys_of(top3) == ["same", "cos-0.8", "cos-0.6"]
        everything = await ops.search("scope-a", q, 10)
        assert keys_of(everything) == ["same", "cos-0.8", "cos-0.6", "orthogonal", "cos-minus-0.5"]
        for entry, similarity in everything:
            assert similarity == pytest.approx(cosine(q, known[entry.key]), abs=1e-4)
        assert [round(sim, 4) for _, sim in everything] == [1.0, 0.8, 0.6, 0.0, -0.5]

    async def test_search_similarity_is_cosine_not_dot_product(self, ops: BackendOps) -> None:
        q = vec(3, 4, 0, 0)  # length 5
        await ops.put(
            make_entry("short", vector=vec(0.3, 0.4, 0, 0)),
            make_entry("long-off-axis", vector=vec(100, 0, 0, 0)),
        )
        hits = await ops.search("scope-a", q, 2)
        assert keys_of(hits) == ["short", "long-off-axis"]
        assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
        assert hits[1][1] == pytest.approx(0.6, abs=1e-4)

    async def test_search_returns_full_entries(self, ops: BackendOps) -> None:
        entry = make_entry(
            "k", vector=vec(0.5, 0.5, 0.5, 0.5), tags=("t1", "t2"), expires_at=NOW + 60
        )
        await ops.put(entry)
        [(got, similarity)] = await ops.search("scope-a", vec(0.5, 0.5, 0.5, 0.5), 1)
        assert_same_entry(got, entry)
        assert similarity == pytest.approx(1.0, abs=1e-4)

    async def test_search_with_min_similarity_keeps_every_candidate_at_or_above_it(
        self, ops: BackendOps
    ) -> None:
        # A backend may leave out what is below min_similarity (the engine would
        # not serve it) but never what is at or above it, and entries stay whole.
        q = vec(1, 0, 0, 0)
        known = {
            "same": vec(1, 0, 0, 0),
            "cos-0.8": vec(0.8, 0.6, 0, 0),
            "cos-0.6": vec(0.6, 0, 0.8, 0),
            "orthogonal": vec(0, 0, 0, 1),
        }
        entries = {k: make_entry(k, vector=v, tags=("doc-1",)) for k, v in known.items()}
        await ops.put(*entries.values(), make_entry("other-scope", scope="scope-b", vector=q))
        hits = await ops.search("scope-a", q, 10, min_similarity=0.7)
        assert keys_of(hits)[:2] == ["same", "cos-0.8"]
        assert all(sim < 0.7 for _, sim in hits[2:])
        for entry, sim in hits:
            assert_same_entry(entry, entries[entry.key])
            assert sim == pytest.approx(cosine(q, known[entry.key]), abs=1e-4)
        assert keys_of(await ops.search("scope-a", q, 1, min_similarity=0.7)) == ["same"]
        assert keys_of(await ops.search("scope-a", q, 10, min_similarity=0.8))[:2] == [
            "same",
            "cos-0.8",
        ]
        # Another query: the order and the cut follow the query, not the first one.
        other = await ops.search("scope-a", vec(0, 1, 0, 0), 10, min_similarity=0.5)
        assert keys_of(other)[:1] == ["cos-0.8"]
        assert all(sim < 0.5 for _, sim in other[1:])
        # A threshold at or below -1 filters nothing (and is not a malformed query).
        everything = await ops.search("scope-a", q, 10, min_similarity=-1.0)
        assert keys_of(everything) == ["same", "cos-0.8", "cos-0.6", "orthogonal"]
        assert keys_of(await ops.search("scope-a", q, 10, min_similarity=-1e20)) == keys_of(
            everything
        )

    async def test_search_with_min_similarity_skips_expired_entries(self, ops: BackendOps) -> None:
        q = vec(1, 0, 0, 0)
        await ops.put(
            make_entry("expired", vector=q, expires_at=NOW - 1),
            make_entry("live", vector=vec(0.9, 0.1, 0, 0)),
        )
        assert keys_of(await ops.search("scope-a", q, 1, min_similarity=0.5)) == ["live"]

    async def test_search_stays_inside_the_scope(self, ops: BackendOps) -> None:
        q = vec(1, 0, 0, 0)
        mine = make_entry("mine", scope="scope-a", vector=vec(0.1, 1, 0, 0))
        # Many nearer vectors in other scopes: filtering after a global top-k would
        # return nothing for scope-a; filtering inside the query returns "mine".
        others = [
            make_entry(f"other-{i}", scope=f"scope-{'bc'[i % 2]}", vector=vec(1, 0.01 * i, 0, 0))
            for i in range(30)
        ]
        await ops.put(*others, mine)
        hits = await ops.search("scope-a", q, 1)
        assert keys_of(hits) == ["mine"]
        assert hits[0][1] == pytest.approx(cosine(q, vec(0.1, 1, 0, 0)), abs=1e-4)
        assert keys_of(await ops.search("scope-a", q, 50)) == ["mine"]
        b_hits = await ops.search("scope-b", q, 50)
        assert len(b_hits) == 15
        assert all(e.scope == "scope-b" for e, _ in b_hits)
        assert keys_of(b_hits)[0] == "other-0"
        sims = [s for _, s in b_hits]
        assert sims == sorted(sims, reverse=True)
        assert await ops.search("scope-nobody-uses", q, 5) == []

    async def test_scopes_that_look_alike_are_distinct(self, ops: BackendOps) -> None:
        q = vec(1, 0, 0, 0)
        scopes = ["abc", "ABC", "abc,def", "abc def", "ab", "a-b.c:d|e{f}", ""]
        await ops.put(
            *(make_entry(f"k{i}", scope=s, vector=vec(1, 0, 0, 0)) for i, s in enumerate(scopes))
        )
        for i, scope in enumerate(scopes):
            assert keys_of(await ops.search(scope, q, 10)) == [f"k{i}"], scope

    async def test_search_ignores_entries_without_vector(self, ops: BackendOps) -> None:
        await ops.put(
            make_entry("exact-only", vector=None),
            make_entry("semantic", vector=vec(0, 1, 0, 0)),
        )
        assert keys_of(await ops.search("scope-a", vec(1, 0, 0, 0), 5)) == ["semantic"]
        assert await ops.get("exact-only") is not None

    async def test_search_in_an_empty_backend_is_empty(self, ops: BackendOps) -> None:
        assert await ops.search("scope-a", vec(1, 0, 0, 0), 3) == []

    async def test_a_vector_of_another_dimension_breaks_nothing(self, ops: BackendOps) -> None:
        # The embedding model changed: a backend may refuse the new vectors with a
        # CacheBackendError or store them apart, but never half-store one, never
        # raise anything else, and never lose or mix up the entries it had.
        first = make_entry("old", vector=vec(1, 0, 0, 0), text="four dims")
        replaced = make_entry("replaced", vector=vec(0, 1, 0, 0), text="four dims too")
        await ops.put(first, replaced)
        other_dim = make_entry("new", vector=np.asarray([1, 0, 0], np.float32), text="three")
        other_dim_same_key = make_entry(
            "replaced", vector=np.asarray([0, 1, 0], np.float32), text="three again"
        )
        for entry, before in ((other_dim, None), (other_dim_same_key, replaced)):
            try:
                await ops.put(entry)
            except CacheBackendError:
                got = await ops.get(entry.key)
                if before is None:
                    assert got is None  # refused whole
                else:
                    assert_same_entry(got, before)  # the old entry is untouched
            else:
                assert_same_entry(await ops.get(entry.key), entry)
        assert_same_entry(await ops.get("old"), first)
        hits = await ops.search("scope-a", vec(1, 0, 0, 0), 10)
        assert keys_of(hits)[0] == "old"
        assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
        assert all(e.vector is not None and e.vector.size == 4 for e, _ in hits)
        try:
            short_hits = await ops.search("scope-a", np.asarray([1, 0, 0], np.float32), 10)
        except CacheBackendError:
            pass
        else:
            assert all(e.vector is not None and e.vector.size == 3 for e, _ in short_hits)
            assert set(keys_of(short_hits)) <= {"new", "replaced"}
        # Still fully usable for the original dimension.
        await ops.put(make_entry("after", vector=vec(0, 0, 1, 0)))
        assert keys_of(await ops.search("scope-a", vec(0, 0, 1, 0), 1)) == ["after"]
        assert await ops.delete(["old", "after"]) == 2
        assert await ops.present("old", "after") == set()

    # -- deletion ---------------------------------------------------------------------------

    async def test_delete_counts_only_existing_keys(self, ops: BackendOps) -> None:
        await ops.put(*(make_entry(k, vector=vec(1, 0, 0, 0)) for k in ("a", "b", "c")))
        assert await ops.delete(["a", "b", "missing"]) == 2
        assert await ops.present("a", "b", "c") == {"c"}
        assert keys_of(await ops.search("scope-a", vec(1, 0, 0, 0), 5)) == ["c"]
        assert await ops.delete(["a"]) == 0
        assert await ops.delete([]) == 0
        assert (await ops.stats()).entries == 1

    async def _tagged(self, ops: BackendOps) -> None:
        await ops.put(
            make_entry("n1-red", namespace="n1", tags=("red",), vector=vec(1, 0, 0, 0)),
            make_entry("n1-red-blue", namespace="n1", tags=("red", "blue"), vector=None),
            make_entry("n1-blue", namespace="n1", tags=("blue",), vector=vec(0, 1, 0, 0)),
            make_entry("n2-red", namespace="n2", tags=("red",), vector=vec(1, 0, 0, 0)),
            make_entry("n2-none", namespace="n2", vector=vec(0, 0, 1, 0)),
        )

    async def test_delete_tag_in_every_namespace(self, ops: BackendOps) -> None:
        await self._tagged(ops)
        assert await ops.delete_tag("red") == 3
        everyone = ("n1-red", "n1-red-blue", "n1-blue", "n2-red", "n2-none")
        assert await ops.present(*everyone) == {"n1-blue", "n2-none"}
        assert await ops.delete_tag("red") == 0
        assert await ops.delete_tag("no-such-tag") == 0

    async def test_delete_tag_in_one_namespace(self, ops: BackendOps) -> None:
        await self._tagged(ops)
        assert await ops.delete_tag("red", "n1") == 2
        everyone = ("n1-red", "n1-red-blue", "n1-blue", "n2-red", "n2-none")
        assert await ops.present(*everyone) == {"n1-blue", "n2-red", "n2-none"}
        assert await ops.delete_tag("red", "n3") == 0
        assert await ops.delete_tag("blue", "n2") == 0
        assert keys_of(await ops.search("scope-a", vec(1, 0, 0, 0), 10))[0] == "n2-red"

    async def test_delete_scope(self, ops: BackendOps) -> None:
        await ops.put(
            make_entry("a1", scope="scope-a", vector=vec(1, 0, 0, 0)),
            make_entry("a2", scope="scope-a", vector=None),
            make_entry("b1", scope="scope-b", vector=vec(1, 0, 0, 0)),
        )
        assert await ops.delete_scope("scope-a") == 2
        assert await ops.present("a1", "a2", "b1") == {"b1"}
        assert await ops.search("scope-a", vec(1, 0, 0, 0), 5) == []
        assert keys_of(await ops.search("scope-b", vec(1, 0, 0, 0), 5)) == ["b1"]
        assert await ops.delete_scope("scope-a") == 0

    async def test_delete_namespace(self, ops: BackendOps) -> None:
        await self._tagged(ops)
        assert await ops.delete_namespace("n1") == 3
        everyone = ("n1-red", "n1-red-blue", "n1-blue", "n2-red", "n2-none")
        assert await ops.present(*everyone) == {"n2-red", "n2-none"}
        assert await ops.delete_namespace("n1") == 0
        assert (await ops.stats()).entries == 2

    async def test_tags_and_namespaces_match_exactly(self, ops: BackendOps) -> None:
        # Case, separators, spaces, punctuation, unicode and "" are all distinct values.
        awkward = ["Beta", "beta", "a,b", "a", "with space", "x-y.z:w|v{u}*", "ünï", ""]
        await ops.put(
            *(
                make_entry(f"t{i}", namespace=value, tags=(value,), vector=vec(1, 0, 0, 0))
                for i, value in enumerate(awkward)
            )
        )
        everyone = [f"t{i}" for i in range(len(awkward))]
        assert await ops.delete_tag("beta") == 1
        assert await ops.delete_tag("a") == 1
        assert await ops.delete_namespace("") == 1
        assert await ops.delete_tag("x-y.z:w|v{u}*", "x-y.z:w|v{u}*") == 1
        assert await ops.present(*everyone) == {"t0", "t2", "t4", "t6"}
        assert await ops.delete_namespace("a,b") == 1
        assert await ops.delete_tag("with space", "other") == 0
        assert await ops.present(*everyone) == {"t0", "t4", "t6"}

    async def test_lone_surrogates_round_trip_losslessly(self, ops: BackendOps) -> None:
        lone = json.loads('"hello \\ud83d world"')  # what a client's JSON body can carry
        entry = make_entry(
            "k" + lone,
            scope="scope-" + lone,
            namespace="ns-" + lone,
            tags=("t" + lone,),
            prompt=lone,
            text=lone,
            vector=vec(1, 0, 0, 0),
        )
        await ops.put(entry)
        assert_same_entry(await ops.get(entry.key), entry)
        [(hit, _)] = await ops.search(entry.scope, vec(1, 0, 0, 0), 1)
        assert_same_entry(hit, entry)
        assert await ops.delete_tag("t" + lone, "ns-" + lone) == 1
        await ops.put(entry)
        assert await ops.delete_scope("scope-" + lone) == 1
        await ops.put(entry)
        assert await ops.delete_namespace("ns-" + lone) == 1
        await ops.put(entry)
        assert await ops.delete([entry.key]) == 1
        assert await ops.get(entry.key) is None

    async def test_clear_removes_everything_and_the_backend_stays_usable(
        self, ops: BackendOps
    ) -> None:
        await ops.put(
            make_entry("a", vector=vec(1, 0, 0, 0)),
            make_entry("b", scope="scope-b", namespace="n2", vector=None),
        )
        await ops.clear()
        assert await ops.present("a", "b") == set()
        assert await ops.search("scope-a", vec(1, 0, 0, 0), 5) == []
        assert (await ops.stats()).entries == 0
        await ops.clear()  # clearing an empty backend is fine
        await ops.put(make_entry("c", vector=vec(1, 0, 0, 0)))
        assert keys_of(await ops.search("scope-a", vec(1, 0, 0, 0), 5)) == ["c"]

    # -- both tiers in one trip (optional: CombinedLookup) ----------------------------------

    async def test_a_combined_lookup_equals_get_then_search(self, ops: BackendOps) -> None:
        await ops.put(
            make_entry("exact", vector=vec(1, 0, 0, 0)),
            make_entry("near", vector=vec(0.9, 0.1, 0, 0)),
            make_entry("mid", vector=vec(0.5, 0.5, 0, 0)),
            make_entry("other-scope", scope="scope-b", vector=vec(1, 0, 0, 0)),
            make_entry("expired", vector=vec(1, 0, 0, 0), expires_at=NOW - 1),
        )
        q = vec(1, 0.02, 0, 0)
        for key in ("exact", "missing", "expired", "other-scope"):
            for k, floor in ((4, None), (4, 0.9), (1, None), (0, None)):
                got = await ops.get_and_search(key, "scope-a", q, k, min_similarity=floor)
                want = await ops.get(key), await ops.search("scope-a", q, k, min_similarity=floor)
                if want[0] is None:
                    assert got[0] is None, key
                else:
                    assert_same_entry(got[0], want[0])
                assert keys_of(got[1]) == keys_of(want[1]), (key, k, floor)
                for (entry, sim), (same, same_sim) in zip(got[1], want[1], strict=True):
                    assert_same_entry(entry, same)
                    assert sim == pytest.approx(same_sim, abs=1e-5)
        _, scoped = await ops.get_and_search("exact", "scope-a", q, 4, min_similarity=0.9)
        assert keys_of(scoped) == ["exact", "near"]

    # -- stats ---------------------------------------------------------------------------

    async def test_stats_count_entries_and_bytes(self, ops: BackendOps) -> None:
        empty = await ops.stats()
        assert empty.entries == 0
        await ops.put(*(make_entry(f"k{i}", vector=vec(1, 0, 0, i)) for i in range(3)))
        three = await ops.stats()
        assert three.entries == 3
        assert three.bytes > 0
        big = "x" * 20_000
        await ops.put(*(make_entry(f"big{i}", prompt=big, vector=None) for i in range(3)))
        six = await ops.stats()
        assert six.entries == 6
        assert six.bytes > three.bytes + 3 * 10_000
        await ops.delete(["k0"])
        assert (await ops.stats()).entries == 5

    # -- sync and async share one store ----------------------------------------------------

    async def test_sync_and_async_twins_share_the_same_store(self, backend: CacheBackend) -> None:
        backend.put(make_entry("from-sync", vector=vec(1, 0, 0, 0)))
        await backend.aput(make_entry("from-async", vector=vec(0, 1, 0, 0)))
        assert await backend.aget("from-sync", now=NOW) is not None
        assert backend.get("from-async", now=NOW) is not None
        assert keys_of(backend.search("scope-a", vec(0, 1, 0, 0), 1, now=NOW)) == ["from-async"]
        hits = await backend.asearch("scope-a", vec(1, 0, 0, 0), 1, now=NOW)
        assert keys_of(hits) == ["from-sync"]
        assert await backend.adelete(["from-sync"]) == 1
        assert backend.delete(["from-async"]) == 1
