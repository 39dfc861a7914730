"""get_or_call's in-flight paths, each run by both twins (threads and coroutines):
de-duplication off, a waiter that stops waiting, an answer that cannot be shared."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from costopt_core.cache import CacheConfig, CachedResponse, CacheRequest, SemanticCache
from costopt_core.cache.engine import NotShared
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message

REQUEST = CacheRequest(messages=(Message("user", "What is the refund policy for orders?"),))


class Model:
    """A slow model, sync and async, counting how many of its calls overlap."""

    def __init__(self, seconds: float, *, shareable: bool = True) -> None:
        self.seconds = seconds
        self.shareable = shareable
        self.calls = self.active = self.most = 0
        self.first = threading.Event()
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
        self.first.set()

    def _leave(self) -> CachedResponse:
        with self._lock:
            self.active -= 1
        if not self.shareable:
            raise NotShared
        return CachedResponse(text="30 days")

    def call(self) -> CachedResponse:
        self._enter()
        time.sleep(self.seconds)
        return self._leave()

    async def acall(self) -> CachedResponse:
        self._enter()
        await asyncio.sleep(self.seconds)
        return self._leave()


async def together(cache: SemanticCache, model: Model, n: int, sync: bool) -> list[object]:
    """``n`` identical get_or_calls: one first, the rest once its call has begun."""
    if sync:
        out: list[object] = []

        def one() -> None:
            try:
                out.append(cache.get_or_call(REQUEST, model.call))
            except NotShared as exc:
                out.append(exc)

        threads = [threading.Thread(target=one) for _ in range(n)]
        threads[0].start()
        assert model.first.wait(5)
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join()
        return out

    async def aone() -> object:
        try:
            return await cache.aget_or_call(REQUEST, model.acall)
        except NotShared as exc:
            return exc

    lead = asyncio.create_task(aone())
    while not model.first.is_set():
        await asyncio.sleep(0.005)
    rest = await asyncio.gather(*(aone() for _ in range(n - 1)))
    return [await lead, *rest]


def make(**config: object) -> SemanticCache:
    return SemanticCache(embedder=FakeEmbedder(), config=CacheConfig(semantic=False, **config))


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_without_dedupe_every_miss_calls_and_the_answer_is_kept(sync: bool) -> None:
    cache = make(dedupe_inflight=False)
    model = Model(0.1)
    results = await together(cache, model, 4, sync)
    assert model.calls == 4
    assert all(getattr(r, "hit", "raised") is None for r in results)
    assert cache.stats().inflight_shared == 0
    assert cache.lookup(REQUEST) is not None


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_waiter_past_inflight_wait_s_answers_for_itself(sync: bool) -> None:
    cache = make(inflight_wait_s=0.05)
    model = Model(0.4)
    results = await together(cache, model, 3, sync)
    assert model.calls == 3
    assert all(getattr(r, "hit", "raised") is None for r in results)
    assert cache.stats().inflight_shared == 0


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_waiters_on_an_answer_that_cannot_be_shared_call_at_once(sync: bool) -> None:
    cache = make()
    model = Model(0.2, shareable=False)
    results = await together(cache, model, 5, sync)
    assert len(results) == 5 and all(isinstance(r, NotShared) for r in results)
    assert model.calls == 5
    assert model.most == 4  # the four waiters together, after the leader, not in turn
    assert cache.stats().stores == 0
