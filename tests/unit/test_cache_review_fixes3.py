"""Cache engine and embedded backends, review fixes: NaN vectors, LRU order after a
hit, a leader interrupted while storing, TTL bounds, calibration bounds, signatures."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from costopt_core.cache import CacheConfig, CachedResponse, MemoryCacheBackend, SemanticCache
from costopt_core.cache.calibrate import calibrate_from_scores
from costopt_core.cache.entry import CacheEntry
from costopt_core.cache.guards import decide
from costopt_core.cache.keys import CacheRequest
from costopt_core.cache.signing import _V1, _mac, sign, verify
from costopt_core.errors import CacheBackendError, ConfigurationError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message


def req(q: str, **kw: object) -> CacheRequest:
    return CacheRequest(messages=(Message("user", q),), model="m", **kw)  # type: ignore[arg-type]


class NaNEmbedder(FakeEmbedder):
    """Returns NaN for texts about emoji (a custom embedder dividing a zero vector)."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = super().embed(texts)
        for i, t in enumerate(texts):
            if "emoji" in t:
                out[i] = np.nan
        return out


@pytest.mark.parametrize("hnsw_threshold", [4096, 0], ids=["brute_force", "hnsw"])
def test_a_nan_vector_is_never_served(hnsw_threshold: int) -> None:
    backend = MemoryCacheBackend(hnsw_threshold=hnsw_threshold)
    cache = SemanticCache(
        backend, embedder=NaNEmbedder(), config=CacheConfig(similarity_threshold=0.9)
    )
    cache.store(req("tell me a joke about an emoji"), CachedResponse("JOKE"))
    cache.store(req("what is the capital of france"), CachedResponse("Paris"))
    # The NaN prompt is kept for exact matches only; it is served to nothing else.
    for q in ("tell me a joke about a cat", "tell me a joke about a dog"):
        assert cache.lookup(req(q)) is None
    assert cache.lookup(req("tell me a joke about an emoji")).response.text == "JOKE"  # type: ignore[union-attr]
    assert cache.lookup(req("what is the capital of france")).tier == "exact"  # type: ignore[union-attr]
    assert cache.stats().errors >= 1


def test_the_memory_backend_refuses_a_non_finite_vector() -> None:
    backend = MemoryCacheBackend()
    entry = CacheEntry(
        key="k", scope="s", namespace="n", prompt_text="p", response=CachedResponse("a"),
        vector=np.array([np.nan, 1.0], dtype=np.float32), created_at=0.0,
    )  # fmt: skip
    with pytest.raises(CacheBackendError, match="NaN or infinite"):
        backend.put(entry)
    assert backend.get("k", now=0.0) is None


def test_a_nan_similarity_is_below_any_threshold() -> None:
    verdict = decide("a b c d", "a b c d", math.nan, threshold=0.5, config=CacheConfig().guards)
    assert verdict == "below_threshold"


def test_lru_keeps_the_entry_that_just_served_a_hit() -> None:
    backend = MemoryCacheBackend(max_entries=4)
    cache = SemanticCache(
        backend, embedder=FakeEmbedder(dim=256), config=CacheConfig(similarity_threshold=0.8)
    )
    cache.store(req("how do I reset my account password please"), CachedResponse("RESET"))
    cache.store(req("what are your office opening hours"), CachedResponse("9-5"))
    cache.store(req("where is the nearest train station"), CachedResponse("MAIN ST"))
    cache.store(req("which payment methods do you accept"), CachedResponse("CARDS"))
    hit = cache.lookup(req("how do I reset my account password"))
    assert hit is not None and hit.tier == "semantic"
    cache.store(req("do you ship to canada"), CachedResponse("YES"))  # evicts one entry
    again = cache.lookup(req("how do I reset my account password"))
    assert again is not None and again.response.text == "RESET"


class SlowPut(MemoryCacheBackend):
    async def aput(self, entry: CacheEntry) -> None:
        await asyncio.sleep(0.3)
        self.put(entry)


async def test_a_leader_cancelled_while_storing_still_answers_its_waiters() -> None:
    cache = SemanticCache(SlowPut(), embedder=FakeEmbedder(), config=CacheConfig(inflight_wait_s=5))
    calls = 0

    async def acall() -> CachedResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return CachedResponse("ok")

    r = req("what is the capital of italy")
    leader = asyncio.create_task(cache.aget_or_call(r, acall))
    await asyncio.sleep(0.02)
    followers = [asyncio.create_task(cache.aget_or_call(r, acall)) for _ in range(10)]
    await asyncio.sleep(0.2)  # the call returned at 0.1 s: the leader is storing
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert calls == 1  # every waiter got the leader's answer
    assert {res.response.text for res in results} == {"ok"}


@pytest.mark.parametrize("ttl", [math.nan, math.inf, 0, -5, "60", True])
def test_bad_ttls_are_refused_before_the_model_call(ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl_s"):
        req("hello there friend", ttl_s=ttl)
    cache = SemanticCache(MemoryCacheBackend(), embedder=FakeEmbedder())
    with pytest.raises(ConfigurationError, match="ttl_s"):
        cache.store(req("hello there friend"), CachedResponse("hi"), ttl_s=ttl)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl_s"):
        asyncio.run(cache.astore(req("hello there friend"), CachedResponse("hi"), ttl_s=ttl))  # type: ignore[arg-type]
    assert cache.stats().stores == 0
    assert req("hello there friend", ttl_s=60).ttl_s == 60.0


@pytest.mark.parametrize("lowest", [-0.2, 0.0])
def test_calibration_returns_a_threshold_cache_config_takes(lowest: float) -> None:
    result = calibrate_from_scores(similarities=[0.9, 0.3, lowest], labels=[1, 1, 1])
    assert result.reached and 0 < result.threshold <= 0.3
    CacheConfig(similarity_threshold=result.threshold)
    assert result.recall == pytest.approx(2 / 3) and result.precision == 1.0


def _entry(**kw: object) -> CacheEntry:
    base = dict(
        key="k", scope="s", namespace="n", prompt_text="p", response=CachedResponse("a"),
        vector=None, tags=("doc:1",), created_at=0.0, expires_at=100.0,
    )  # fmt: skip
    return CacheEntry(**(base | kw))  # type: ignore[arg-type]


def test_a_signature_covers_the_expiry_and_the_tags() -> None:
    key = b"secret"
    signed = sign(_entry(), key)
    assert verify(signed, key)
    assert not verify(dataclasses.replace(signed, expires_at=None), key)
    assert not verify(dataclasses.replace(signed, expires_at=1e12), key)
    assert not verify(dataclasses.replace(signed, tags=()), key)
    assert verify(dataclasses.replace(signed, tags=("doc:1",), vector=np.ones(3)), key)
    # An entry signed before (v1) still verifies on what v1 covered.
    old = _entry()
    v1 = dataclasses.replace(
        old, response=dataclasses.replace(old.response, signature=_mac(old, key, _V1))
    )
    assert verify(v1, key)
    assert not verify(dataclasses.replace(v1, prompt_text="other"), key)
