"""SemanticCache engine: tiers, scopes, policies, invalidation, fail-open, de-duplication."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pytest

from costopt_core.cache import (
    CacheConfig,
    CachedResponse,
    CacheRequest,
    CacheResult,
    MemoryCacheBackend,
    SemanticCache,
)
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.cache.vector_index import VectorIndex
from costopt_core.errors import CacheBackendError, ConfigurationError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message, Usage


def req(text: str, *, history: Sequence[Message] = (), **kw) -> CacheRequest:
    return CacheRequest(messages=(*history, Message("user", text)), **kw)


def answer(text: str = "Use the reset link.", **kw) -> CachedResponse:
    return CachedResponse(text=text, model="gpt-4o-mini", usage=Usage(100, 20), **kw)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> SemanticCache:
    cfg = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)
    return SemanticCache(embedder=FakeEmbedder(dim=256), config=cfg, clock=clock)


def test_exact_then_semantic(cache: SemanticCache) -> None:
    assert cache.store(req("How do I reset my password?"), answer())
    exact = cache.lookup(req("How do I reset my password?"))
    assert exact is not None and exact.tier == "exact" and exact.similarity == 1.0
    # whitespace does not defeat the exact tier
    assert cache.lookup(req("How do I  reset my password? ")).tier == "exact"
    sem = cache.lookup(req("how do i reset my password"))
    assert sem is not None and sem.tier == "semantic" and sem.similarity > 0.75
    assert sem.response.text == "Use the reset link."
    assert cache.lookup(req("What is the capital of France?")) is None
    s = cache.stats()
    assert (s.lookups, s.exact_hits, s.semantic_hits, s.misses) == (4, 2, 1, 1)
    assert s.entries == 1 and s.bytes > 0


@pytest.mark.parametrize(
    "other",
    [
        {"model": "gpt-4o"},
        {"params": {"temperature": 1.0}},
        {"params": {"max_tokens": 5}},
        {"tools": ({"name": "search"},)},
        {"tenant": "globex"},
    ],
)
def test_scope_is_a_hard_partition(cache: SemanticCache, other: dict) -> None:
    base = {"model": "gpt-4o-mini", "params": {"temperature": 0.0}, "tenant": "acme"}
    cache.store(req("How do I reset my password?", **base), answer())
    assert cache.lookup(req("How do I reset my password?", **{**base, **other})) is None
    # ...and a parameter that does not change the answer does not split it
    hit = cache.lookup(req("How do I reset my password?", **base, ttl_s=5))
    assert hit is not None


def test_system_prompt_splits_the_scope(cache: SemanticCache) -> None:
    sys_a = Message("system", "Answer in French.")
    sys_b = Message("system", "Answer in German.")
    cache.store(req("Hello there", history=[sys_a]), answer("Bonjour"))
    assert cache.lookup(req("Hello there", history=[sys_b])) is None
    assert cache.lookup(req("Hello there", history=[sys_a])).response.text == "Bonjour"


def test_nearer_entry_of_another_tenant_never_hides_the_right_one(cache: SemanticCache) -> None:
    cache.store(req("How do I reset my password now?", tenant="a"), answer("tenant a answer"))
    cache.store(req("How do I reset my password?", tenant="b"), answer("tenant b answer"))
    hit = cache.lookup(req("How do I reset my password?", tenant="a"))
    assert hit is not None and hit.response.text == "tenant a answer"


def test_follow_up_questions_do_not_collide_across_conversations(clock: Clock) -> None:
    cache = SemanticCache(
        embedder=FakeEmbedder(dim=256),
        config=CacheConfig(similarity_threshold=0.9, guards=GUARDS_OFF, context_turns=2),
        clock=clock,
    )
    obama = [Message("user", "Who was the 44th president?"), Message("assistant", "Obama.")]
    einstein = [Message("user", "Who developed relativity?"), Message("assistant", "Einstein.")]
    cache.store(req("How old is he?", history=obama), answer("61"))
    assert cache.lookup(req("How old is he?", history=einstein)) is None
    assert cache.lookup(req("How old is he?", history=obama)).response.text == "61"


@pytest.mark.parametrize(
    ("resp", "reason"),
    [
        (answer("", finish_reason="stop"), "empty"),
        (answer("cut off", finish_reason="length"), "truncated"),
        (answer("blocked", finish_reason="content_filter"), "not_complete"),
    ],
)
def test_store_policy_skips_incomplete_answers(cache: SemanticCache, resp, reason) -> None:
    assert not cache.store(req("q?"), resp)
    assert cache.stats().skipped_stores[reason] == 1
    assert cache.lookup(req("q?")) is None


def test_tool_call_answers_are_cached_faithfully(cache: SemanticCache) -> None:
    call = {"name": "lookup", "args": {"id": 7}, "id": "call_1", "type": "tool_call"}
    resp = CachedResponse(
        text="",
        model="gpt-4o",
        usage=Usage(50, 10, cache_read_tokens=20, cache_write_5m_tokens=0, cache_write_1h_tokens=0),
        finish_reason="tool_calls",
        tool_calls=(call,),
        structured={"a": [1, 2]},
        payload="opaque",
        payload_format="x/v1",
    )
    assert cache.store(req("Find order 7"), resp)
    assert cache.lookup(req("Find order 7")).response == resp
    no_tools = SemanticCache(embedder=FakeEmbedder(), config=CacheConfig(cache_tool_calls=False))
    assert not no_tools.store(req("Find order 7"), resp)


def test_opt_out_and_ttl(cache: SemanticCache, clock: Clock) -> None:
    assert not cache.store(req("q one", cache=False), answer())
    assert cache.lookup(req("q one")) is None
    cache.store(req("q two"), answer(), ttl_s=10)
    assert cache.lookup(req("q two", cache=False)) is None  # opt-out skips the lookup too
    clock.t += 9
    assert cache.lookup(req("q two")) is not None
    clock.t += 2
    assert cache.lookup(req("q two")) is None
    cache.store(req("q three", ttl_s=5), answer())  # per-request ttl
    clock.t += 6
    assert cache.lookup(req("q three")) is None


def test_invalidation(cache: SemanticCache) -> None:
    cache.store(req("refund policy?", tenant="a", tags=("doc:1",)), answer())
    cache.store(req("shipping times?", tenant="a", tags=("doc:2",)), answer())
    cache.store(req("refund policy?", tenant="b", tags=("doc:1",)), answer())
    assert cache.invalidate(tag="doc:1", tenant="a") == 1
    assert cache.lookup(req("refund policy?", tenant="b")) is not None
    assert cache.invalidate(tag="doc:1", all_tenants=True) == 1
    assert cache.invalidate(request=req("shipping times?", tenant="a")) == 1
    cache.store(req("x", tenant="c"), answer())
    cache.store(req("y", tenant="c"), answer())
    assert cache.invalidate(tenant="c") == 2
    cache.store(req("z", model="m1"), answer())
    assert cache.invalidate_scope(req("anything", model="m1")) == 1
    with pytest.raises(ConfigurationError):
        cache.invalidate(all_tenants=True)
    assert cache.stats().entries == 0


class BrokenBackend(MemoryCacheBackend):
    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.calls = 0

    def get(self, key, *, now):  # type: ignore[override]
        self.calls += 1
        if self.broken:
            raise CacheBackendError("redis is down")
        return super().get(key, now=now)

    def search(self, scope, vector, k, *, now):  # type: ignore[override]
        self.calls += 1
        if self.broken:
            raise CacheBackendError("redis is down")
        return super().search(scope, vector, k, now=now)

    def put(self, entry) -> None:  # type: ignore[override]
        self.calls += 1
        if self.broken:
            raise CacheBackendError("redis is down")
        super().put(entry)


def test_backend_failure_is_a_miss_and_the_breaker_opens() -> None:
    backend = BrokenBackend()
    cache = SemanticCache(
        backend, embedder=FakeEmbedder(), config=CacheConfig(breaker_failures=3, breaker_reset_s=60)
    )
    out = cache.get_or_call(req("q"), lambda: answer())
    assert out.hit is None and out.response.text == "Use the reset link."
    for _ in range(5):
        assert cache.lookup(req("q")) is None
    s = cache.stats()
    assert s.errors == 3  # then the breaker stopped calling the dead backend
    assert s.breaker_skips >= 3
    assert cache.breaker.state == "open"
    # recovery: after reset_s one trial call goes through and closes the breaker
    backend.broken = False
    cache.breaker.clock = lambda: time.monotonic() + 61
    cache.store(req("q"), answer())
    assert cache.breaker.state == "closed"
    assert cache.lookup(req("q")).tier == "exact"


def test_embedding_failure_is_a_miss() -> None:
    class Boom(FakeEmbedder):
        def embed(self, texts):  # type: ignore[override]
            raise RuntimeError("model not loaded")

    cache = SemanticCache(embedder=Boom())
    assert cache.lookup(req("anything")) is None
    assert cache.stats().errors == 1


def test_verifier_can_reject_a_semantic_hit(clock: Clock) -> None:
    seen: list[tuple[str, str]] = []

    def verifier(q: str, cached: str, resp: CachedResponse) -> bool:
        seen.append((q, cached))
        return False

    cache = SemanticCache(
        embedder=FakeEmbedder(dim=256),
        config=CacheConfig(similarity_threshold=0.7, guards=GUARDS_OFF),
        verifier=verifier,
        clock=clock,
    )
    cache.store(req("How do I reset my password?"), answer())
    assert cache.lookup(req("how do i reset my password")) is None
    assert seen == [("how do i reset my password", "How do I reset my password?")]
    assert cache.stats().guard_rejections["verifier"] == 1
    assert cache.lookup(req("How do I reset my password?")).tier == "exact"  # exact skips it


async def test_a_verifiers_model_call_is_the_caches_overhead(clock: Clock) -> None:
    """A judge model's call is the semantic cache's cost: no baseline, no request."""
    from costopt_core import CostEngine

    engine = CostEngine(embedder=FakeEmbedder())

    def judge(q: str, cached: str, resp: CachedResponse) -> bool:
        # what a cost handler on the judge model records when its call ends
        engine.record_call(model="gpt-4o-mini", usage=Usage(input_tokens=200, output_tokens=1))
        return True

    cache = SemanticCache(
        embedder=FakeEmbedder(dim=256),
        config=CacheConfig(similarity_threshold=0.7, guards=GUARDS_OFF),
        verifier=judge,
        clock=clock,
    )
    cache.store(req("How do I reset my password?"), answer())
    assert cache.lookup(req("how do i reset my password")).tier == "semantic"
    assert (await cache.alookup(req("how do i reset my password ?"))).tier == "semantic"
    engine.record_call(model="gpt-4o-mini", usage=Usage(input_tokens=200, output_tokens=1))
    first, second, after = engine.ledger.records()
    cost = Decimal("0.0000306")  # 200 x $0.15/M + 1 x $0.60/M
    for rec in (first, second):
        assert (rec.outcome, rec.cost_usd, rec.baseline_cost_usd) == ("overhead", cost, 0)
        assert rec.savings_usd == {"cache_semantic": -cost}
    assert after.outcome == "model"  # the mark ends with the verifier


def test_concurrent_identical_misses_call_once_threads(cache: SemanticCache) -> None:
    calls = 0
    lock = threading.Lock()

    def slow() -> CachedResponse:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.05)
        return answer()

    results = []

    def worker() -> None:
        results.append(cache.get_or_call(req("same question"), slow))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1
    assert len(results) == 16
    assert sum(r.hit is None for r in results) == 1
    assert all(r.response.text == "Use the reset link." for r in results)


async def test_concurrent_identical_misses_call_once_async(cache: SemanticCache) -> None:
    calls = 0

    async def slow() -> CachedResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return answer()

    results = await asyncio.gather(*(cache.aget_or_call(req("same q"), slow) for _ in range(50)))
    assert calls == 1
    assert sum(r.hit is None for r in results) == 1
    assert cache.stats().inflight_shared == 49


def test_leader_failure_lets_followers_call(cache: SemanticCache) -> None:
    state = {"n": 0}
    started = threading.Event()

    def flaky() -> CachedResponse:
        state["n"] += 1
        if state["n"] == 1:
            started.set()
            time.sleep(0.05)
            raise TimeoutError("provider timed out")
        return answer()

    errors: list[BaseException] = []

    def leader() -> None:
        try:
            cache.get_or_call(req("q"), flaky)
        except TimeoutError as exc:
            errors.append(exc)

    t = threading.Thread(target=leader)
    t.start()
    started.wait()
    out = cache.get_or_call(req("q"), flaky)
    t.join()
    assert len(errors) == 1
    assert out.response.text == "Use the reset link."


def test_after_a_leader_fails_one_waiter_retries_and_the_rest_share_its_answer(
    cache: SemanticCache,
) -> None:
    # Not a burst of eight calls against a provider that has just refused.
    calls = 0
    lock = threading.Lock()
    started = threading.Event()

    def rate_limited_once() -> CachedResponse:
        nonlocal calls
        with lock:
            calls += 1
            first = calls == 1
        if first:
            started.set()
            time.sleep(0.1)  # the others join the flight meanwhile
            raise RuntimeError("429 rate limited")
        time.sleep(0.05)
        return answer()

    results: list[CacheResult] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(cache.get_or_call(req("same question"), rate_limited_once))
        except RuntimeError as exc:
            errors.append(exc)

    lead = threading.Thread(target=worker)
    lead.start()
    started.wait()
    others = [threading.Thread(target=worker) for _ in range(7)]
    for t in others:
        t.start()
    for t in [lead, *others]:
        t.join()
    assert len(errors) == 1 and calls == 2
    assert len(results) == 7 and sum(r.hit is None for r in results) == 1
    assert all(r.response.text == "Use the reset link." for r in results)


@pytest.mark.parametrize("failure", ["raises", "cancelled"])
async def test_after_an_async_leader_fails_one_waiter_retries(
    cache: SemanticCache, failure: str
) -> None:
    calls = 0

    async def flaky() -> CachedResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            if failure == "raises":
                raise RuntimeError("429 rate limited")
            await asyncio.sleep(10)  # cancelled by its caller's timeout
        await asyncio.sleep(0.01)
        return answer()

    async def leader() -> None:
        call = cache.aget_or_call(req("same q"), flaky)
        if failure == "raises":
            with pytest.raises(RuntimeError):
                await call
        else:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, 0.1)

    async def follower() -> CacheResult:
        await asyncio.sleep(0.01)  # after the leader took the flight
        return await cache.aget_or_call(req("same q"), flaky)

    _, *results = await asyncio.gather(leader(), *(follower() for _ in range(7)))
    assert calls == 2
    assert sum(r.hit is None for r in results) == 1
    assert all(r.response.text == "Use the reset link." for r in results)


async def test_sync_async_parity(clock: Clock) -> None:
    def make() -> SemanticCache:
        return SemanticCache(
            embedder=FakeEmbedder(dim=256),
            config=CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF),
            clock=clock,
        )

    a, b = make(), make()
    queries = ["How do I reset my password?", "how do i reset my password", "unrelated thing"]
    a.store(req(queries[0]), answer())
    await b.astore(req(queries[0]), answer())
    sync_hits = [a.lookup(req(q)) for q in queries]
    async_hits = [await b.alookup(req(q)) for q in queries]
    assert [(h.tier, round(h.similarity, 6)) if h else None for h in sync_hits] == [
        (h.tier, round(h.similarity, 6)) if h else None for h in async_hits
    ]
    sa, sb = a.stats(), b.stats()
    assert (sa.lookups, sa.exact_hits, sa.semantic_hits, sa.misses) == (
        sb.lookups,
        sb.exact_hits,
        sb.semantic_hits,
        sb.misses,
    )


def test_unknown_backend_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend 'mongo'"):
        SemanticCache("mongo")


def test_bad_config_rejected() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"similarity_threshold=1\.5"):
        CacheConfig(similarity_threshold=1.5)
    with pytest.raises(ConfigurationError, match="top_k=0"):
        CacheConfig(top_k=0)
    with pytest.raises(ConfigurationError) as err:
        CacheConfig(signing_key=12345678901234567890)
    assert "12345678901234567890" not in str(err.value)  # a key is never echoed


def test_hnsw_decisions_match_exact_search() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6000, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(64, hnsw_threshold=1000)
    for i, v in enumerate(vecs):
        index.add(i, v)
    assert index.uses_hnsw
    for i in range(0, 6000, 97):
        index.remove(i)
    agree = 0
    queries = vecs[1::50] + rng.normal(scale=0.05, size=(120, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for q in queries:
        approx = index.search(q, 1)
        exact = index.exact_search(q, 1)
        assert approx[0][0] % 97 != 0  # removed labels never come back
        agree += approx[0][0] == exact[0][0]
    assert agree / len(queries) >= 0.99


async def test_sync_async_parity_when_the_backend_fails(clock: Clock) -> None:
    """Both twins run one lookup and store: a failing backend is a miss for each, counted alike."""
    from costopt_core.cache import MemoryCacheBackend

    class Failing(MemoryCacheBackend):
        def __init__(self, fail: set[str]) -> None:
            super().__init__()
            self.fail = fail

        def _maybe(self, op: str) -> None:
            if op in self.fail:
                raise ConnectionError(f"{op} down")

        def get(self, key, *, now):  # type: ignore[no-untyped-def]
            self._maybe("get")
            return super().get(key, now=now)

        def search(self, *a, **k):  # type: ignore[no-untyped-def]
            self._maybe("search")
            return super().search(*a, **k)

        def put(self, entry):  # type: ignore[no-untyped-def]
            self._maybe("put")
            return super().put(entry)

        async def aget(self, key, *, now):  # type: ignore[no-untyped-def]
            return self.get(key, now=now)

        async def asearch(self, *a, **k):  # type: ignore[no-untyped-def]
            return self.search(*a, **k)

        async def aput(self, entry):  # type: ignore[no-untyped-def]
            return self.put(entry)

    queries = ["How do I reset my password?", "how do i reset my password", "unrelated thing"]
    for fail in ({"get"}, {"search"}, {"put"}, {"get", "search", "put"}):
        a, b = (
            SemanticCache(
                Failing(fail),
                embedder=FakeEmbedder(dim=256),
                config=CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF),
                clock=clock,
            )
            for _ in range(2)
        )
        stored = (a.store(req(queries[0]), answer()), await b.astore(req(queries[0]), answer()))
        # A failed put is counted and reported as not stored, never raised; a
        # working put says True.
        assert stored == (("put" not in fail),) * 2
        sync_hits = [a.lookup(req(q)) for q in queries]
        async_hits = [await b.alookup(req(q)) for q in queries]
        assert [h.tier if h else None for h in sync_hits] == [
            h.tier if h else None for h in async_hits
        ]
        sa, sb = a.stats(), b.stats()
        got = [
            (s.lookups, s.exact_hits, s.semantic_hits, s.misses, s.stores, s.errors)
            for s in (sa, sb)
        ]
        assert got[0] == got[1], fail
        assert sa.errors > 0 and sa.lookups == 3
        if "put" in fail:
            assert sa.stores == 0 and all(h is None for h in sync_hits)


class OneTrip(MemoryCacheBackend):
    """A memory backend that also answers both tiers at once, counting its calls."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.calls: list[str] = []

    def get(self, key, *, now):  # type: ignore[no-untyped-def]
        self.calls.append("get")
        return super().get(key, now=now)

    def search(self, *args, **kw):  # type: ignore[no-untyped-def]
        self.calls.append("search")
        return super().search(*args, **kw)

    def get_and_search(self, key, scope, vector, k, *, now, min_similarity=None):  # type: ignore[no-untyped-def]
        self.calls.append("both")
        if self.fail:
            raise CacheBackendError("down")
        found = MemoryCacheBackend.get(self, key, now=now)
        hits = MemoryCacheBackend.search(
            self, scope, vector, k, now=now, min_similarity=min_similarity
        )
        return found, hits

    async def aget(self, key, *, now):  # type: ignore[no-untyped-def]
        return self.get(key, now=now)

    async def asearch(self, *args, **kw):  # type: ignore[no-untyped-def]
        return self.search(*args, **kw)

    async def aget_and_search(self, *args, **kw):  # type: ignore[no-untyped-def]
        return self.get_and_search(*args, **kw)


def _tiers(cache: SemanticCache, texts: Sequence[str]) -> list[str | None]:
    return [None if (h := cache.lookup(req(t))) is None else h.tier for t in texts]


async def _atiers(cache: SemanticCache, texts: Sequence[str]) -> list[str | None]:
    return [None if (h := await cache.alookup(req(t))) is None else h.tier for t in texts]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_vector_at_hand_reads_both_tiers_in_one_backend_call(
    clock: Clock, mode: str
) -> None:
    from costopt_core.embeddings import CachingEmbedder

    backend = OneTrip()
    cfg = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)
    cache = SemanticCache(
        backend, embedder=CachingEmbedder(FakeEmbedder(dim=256)), config=cfg, clock=clock
    )
    cache.store(req("How do I reset my password?"), answer())
    texts = ["How do I reset my password?", "how do i reset my password", "Where is Paris?"]
    run = _tiers if mode == "sync" else _atiers
    backend.calls.clear()
    # The stored prompt's vector is at hand (store embedded it); the others are
    # read exact-first, then embedded and searched on a miss.
    first = (
        await asyncio.to_thread(run, cache, texts) if mode == "sync" else await run(cache, texts)
    )
    assert first == ["exact", "semantic", None]
    assert backend.calls == ["both", "get", "search", "get", "search"]
    backend.calls.clear()
    # Every vector is in the embedder's LRU now: one combined read per lookup.
    again = (
        await asyncio.to_thread(run, cache, texts) if mode == "sync" else await run(cache, texts)
    )
    assert again == first
    assert backend.calls == ["both", "both", "both"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failing_combined_read_falls_back_to_one_tier_at_a_time(
    clock: Clock, mode: str
) -> None:
    from costopt_core.embeddings import CachingEmbedder

    backend = OneTrip(fail=True)
    cfg = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)
    cache = SemanticCache(
        backend, embedder=CachingEmbedder(FakeEmbedder(dim=256)), config=cfg, clock=clock
    )
    cache.store(req("How do I reset my password?"), answer())
    cache.embedder.embed(["how do i reset my password"])  # both vectors at hand
    texts = ["How do I reset my password?", "how do i reset my password"]
    backend.calls.clear()
    tiers = (
        await asyncio.to_thread(_tiers, cache, texts)
        if mode == "sync"
        else await _atiers(cache, texts)
    )
    # A search error must not cost the exact hit, nor the semantic one when the
    # plain search works.
    assert tiers == ["exact", "semantic"]
    assert backend.calls == ["both", "get", "both", "get", "search"]
    assert cache.stats().errors == 2


def test_the_caching_embedder_knows_only_what_it_embedded() -> None:
    from costopt_core.embeddings import CachingEmbedder, KnowsVectors

    inner = FakeEmbedder(dim=8)
    emb = CachingEmbedder(inner)
    assert isinstance(emb, KnowsVectors) and not isinstance(inner, KnowsVectors)
    assert emb.known("hello") is None
    v = emb.embed(["hello"])[0]
    known = emb.known("hello")
    assert known is not None and np.array_equal(known, v)
    assert inner.texts_embedded == 1  # known() never embeds


class _HeadEmbedder(FakeEmbedder):
    """Reads only the first ``window`` characters, as a sentence model reads its
    first ``max_seq_length`` tokens, and says so (``KnowsWindow``)."""

    def __init__(self, window: int) -> None:
        super().__init__(dim=256)
        self.window = window

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return super().embed([t[: self.window] for t in texts])

    def fits(self, text: str) -> bool:
        return len(text) <= self.window


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_prompt_longer_than_the_embedders_window_is_matched_exactly_only(
    clock: Clock, mode: str
) -> None:
    # A query engine's prompt: the same retrieved context, then different questions.
    context = "Orders are packed and dispatched by the fulfilment team. " * 4
    first, other = (req(context + q) for q in ("How long do returns take?", "Who runs support?"))
    cfg = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)
    cache = SemanticCache(embedder=_HeadEmbedder(window=120), config=cfg, clock=clock)

    async def run(method: str, *args):
        if mode == "sync":
            return getattr(cache, method)(*args)
        return await getattr(cache, "a" + method)(*args)

    assert await run("store", first, answer("Thirty days."))
    assert await run("lookup", other) is None  # same vector, another question
    hit = await run("lookup", first)
    assert hit is not None and hit.tier == "exact"
    stats = cache.stats()
    assert stats.guard_rejections["too_long"] == 1 and stats.semantic_hits == 0
    # Nor is the long prompt stored with a vector a short query could match.
    short = req(context[:100])
    assert await run("lookup", short) is None
    # Within the window the semantic tier works as before.
    assert await run("store", req("How do I reset my password?"), answer())
    assert (await run("lookup", req("how do i reset my password"))).tier == "semantic"
