"""The cache engine when calls are cut short or the backend misbehaves quietly:
cancelled waiters and trial calls, failed stores, shared counters, agent turns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

import costopt_core.cache.engine as engine_module
from costopt_core.cache import (
    CacheConfig,
    CachedResponse,
    CacheRequest,
    MemoryCacheBackend,
    SemanticCache,
)
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.cache.keys import semantic_text
from costopt_core.errors import CacheBackendError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message

LOOSE = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF)


def req(*messages: Message) -> CacheRequest:
    return CacheRequest(messages=messages)


class SlowOrDown(MemoryCacheBackend):
    """A memory backend whose async reads can be made to fail or hang."""

    mode = "ok"

    async def aget(self, key: str, *, now: float) -> Any:
        if self.mode == "down":
            raise CacheBackendError("down")
        if self.mode == "slow":
            await asyncio.sleep(1.0)
        return self.get(key, now=now)


class FailingPuts(MemoryCacheBackend):
    def put(self, entry: Any) -> None:
        raise CacheBackendError("disk full")

    async def aput(self, entry: Any) -> None:
        raise CacheBackendError("disk full")


class SharedCounters(MemoryCacheBackend):
    """A backend that keeps every replica's counters (as Redis does)."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: Counter[str] = Counter()
        self.threads: list[str] = []

    def add_stats(self, deltas: dict[str, int]) -> None:
        self.threads.append(threading.current_thread().name)
        self.counters.update(deltas)

    def read_stats(self) -> dict[str, int]:
        return dict(self.counters)


def test_an_agent_turn_after_a_tool_result_is_never_a_semantic_hit() -> None:
    cache = SemanticCache(embedder=FakeEmbedder(dim=256), config=LOOSE)
    ask = Message("user", "What is the weather in Paris today?")
    call = {"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    first = req(ask)
    assert cache.store(first, CachedResponse(text="", tool_calls=(call,)))
    after_tool = req(
        ask,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "15C", tool_call_id="call_1"),
    )
    # Same user question, so the same words: served, the agent would ask for the
    # tool again forever.
    assert semantic_text(after_tool.messages, 2) == ""
    assert cache.lookup(after_tool) is None
    # It is still cached exactly, and the first turn still matches semantically.
    assert cache.store(after_tool, CachedResponse(text="It is 15C in Paris."))
    hit = cache.lookup(after_tool)
    assert hit is not None and hit.tier == "exact" and hit.response.text == "It is 15C in Paris."
    near = cache.lookup(req(Message("user", "what is the weather in paris today")))
    assert near is not None and near.tier == "semantic" and near.response.tool_calls == (call,)


async def test_a_cancelled_waiter_does_not_call_the_model() -> None:
    cache = SemanticCache(embedder=FakeEmbedder(dim=256), config=LOOSE)
    request = req(Message("user", "What is the refund policy for orders?"))
    calls = []

    async def slow() -> CachedResponse:
        calls.append(1)
        await asyncio.sleep(0.3)
        return CachedResponse(text="30 days")

    leader = asyncio.create_task(cache.aget_or_call(request, slow))
    await asyncio.sleep(0.05)
    follower = asyncio.create_task(cache.aget_or_call(request, slow))
    await asyncio.sleep(0.05)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    assert (await leader).response.text == "30 days"
    assert len(calls) == 1
    # The cancelled waiter left the flight: a later identical ask is a plain hit.
    again = await cache.aget_or_call(request, slow)
    assert again.hit is not None and len(calls) == 1


async def test_a_cancelled_trial_call_gives_the_breaker_back() -> None:
    backend = SlowOrDown()
    cfg = CacheConfig(breaker_failures=1, breaker_reset_s=0.05, semantic=False)
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=cfg)
    request = req(Message("user", "What is the refund policy?"))
    backend.mode = "down"
    assert await cache.alookup(request) is None
    assert cache.breaker.state == "open"
    await asyncio.sleep(0.06)
    backend.mode = "slow"
    with pytest.raises(TimeoutError):  # the trial call is cut short by the caller
        await asyncio.wait_for(cache.alookup(request), 0.05)
    backend.mode = "ok"
    assert await cache.astore(request, CachedResponse(text="30 days"))
    hit = await cache.alookup(request)
    assert hit is not None and hit.response.text == "30 days"
    assert cache.breaker.state == "closed"


def test_store_says_false_when_the_backend_refused_it() -> None:
    cache = SemanticCache(FailingPuts(), embedder=FakeEmbedder(), config=LOOSE)
    request = req(Message("user", "What is the refund policy?"))
    assert cache.store(request, CachedResponse(text="30 days")) is False
    assert asyncio.run(cache.astore(request, CachedResponse(text="30 days"))) is False
    stats = cache.stats()
    assert stats.stores == 0 and stats.errors == 2
    # Still answered (and shared with waiters) when it cannot be kept.
    out = cache.get_or_call(request, lambda: CachedResponse(text="30 days"))
    assert out.response.text == "30 days" and out.hit is None


def test_reading_shared_stats_does_not_take_the_breakers_trial() -> None:
    backend = SharedCounters()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=LOOSE)
    ticks = iter(range(1000))
    half = cache.breaker.reset_s / 2
    # Every look at the clock is half a reset later: stats() finds the breaker
    # open for its backend read and half-open by the time it reads the counters.
    cache.breaker.clock = lambda: next(ticks) * half
    for _ in range(cache.breaker.failures):
        cache.breaker.failure()
    cache.stats()
    assert cache.breaker.allow()  # the trial is still there for a real call


def test_shared_counters_are_sent_off_the_callers_thread_and_without_more_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "STATS_FLUSH_S", 0.05)
    backend = SharedCounters()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=LOOSE)

    async def ask() -> None:
        for _ in range(3):
            await cache.alookup(req(Message("user", "What is the refund policy?")))

    asyncio.run(ask())
    deadline = time.monotonic() + 2.0
    while backend.counters["lookups"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    # An idle replica's last increments arrive, and never from the event loop's
    # thread (a slow Redis would block every coroutine on it).
    assert backend.counters["lookups"] == 3
    assert backend.threads and threading.main_thread().name not in backend.threads


def test_code_that_differs_only_in_indentation_is_never_served_for_each_other() -> None:
    from costopt_core.cache.defaults import DEFAULT_GUARDS

    cache = SemanticCache(
        embedder=FakeEmbedder(dim=256),
        config=CacheConfig(similarity_threshold=0.75, guards=DEFAULT_GUARDS),
    )
    valid = "Is this valid Python?\n\ndef f(x):\n    if x:\n        return 1\n"
    invalid = "Is this valid Python?\n\ndef f(x):\n    if x:\n    return 1\n"
    assert cache.store(req(Message("user", valid)), CachedResponse(text="Yes, it is valid."))
    # Same words, so the same vector: only the layout tells them apart.
    assert cache.lookup(req(Message("user", invalid))) is None
    assert cache.stats().guard_rejections["layout_mismatch"] == 1
    # Trailing spaces and blank lines are still the same snippet.
    same = "Is this valid Python?\ndef f(x):  \n    if x:\n        return 1"
    hit = cache.lookup(req(Message("user", same)))
    assert hit is not None and hit.tier == "exact"
    # A tab is not four spaces (a Makefile, YAML): asked apart, never served.
    tabbed = "Is this valid Python?\ndef f(x):\n\tif x:\n\t\treturn 1"
    assert cache.lookup(req(Message("user", tabbed))) is None


class SlowCounters(SharedCounters):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def add_stats(self, deltas: dict[str, int]) -> None:
        time.sleep(0.3)  # a remote Redis
        super().add_stats(deltas)

    def close(self) -> None:
        self.closed = True


def test_stats_wait_for_a_flush_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "STATS_FLUSH_S", 0.0)
    backend = SlowCounters()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=LOOSE)
    for _ in range(2):
        cache.lookup(req(Message("user", "What is the refund policy?")))
    time.sleep(0.1)  # the timer's flush is on its way
    assert cache.stats().lookups == 2


def test_close_sends_what_is_pending_and_stops_the_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "STATS_FLUSH_S", 60.0)
    backend = SlowCounters()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=LOOSE)
    for _ in range(3):
        cache.lookup(req(Message("user", "What is the refund policy?")))
    cache.close()
    assert backend.counters["lookups"] == 3 and backend.closed
    assert cache._flush_timer is None

    other = SemanticCache(SlowCounters(), embedder=FakeEmbedder(), config=LOOSE)
    other.lookup(req(Message("user", "What is the refund policy?")))
    asyncio.run(other.aclose())
    assert other.backend.counters["lookups"] == 1  # type: ignore[attr-defined]


def test_counts_still_unsent_at_exit_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "STATS_FLUSH_S", 60.0)
    backend = SharedCounters()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=LOOSE)
    cache.lookup(req(Message("user", "What is the refund policy?")))
    # Daemon timers die with the interpreter; the exit hook sends what is left.
    engine_module._flush_at_exit()
    assert backend.counters["lookups"] == 1
    cache.close()


class Unreachable(MemoryCacheBackend):
    """Every backend call fails as a hung or refused server does, after a wait."""

    def __init__(self, unreachable: bool = True) -> None:
        super().__init__()
        self.unreachable = unreachable
        self.calls: list[str] = []

    def _down(self, op: str) -> Any:
        self.calls.append(op)
        raise CacheBackendError(f"{op} timed out", unreachable=self.unreachable)

    def get(self, key: str, *, now: float) -> Any:
        return self._down("get")

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._down("search")

    def put(self, entry: Any) -> None:
        self._down("put")

    async def aget(self, key: str, *, now: float) -> Any:
        return self._down("get")

    async def asearch(self, *args: Any, **kwargs: Any) -> Any:
        return self._down("search")

    async def aput(self, entry: Any) -> None:
        self._down("put")


@pytest.mark.parametrize("how", ["sync", "async"])
async def test_an_unreachable_backend_costs_a_request_one_timeout_not_one_per_call(
    how: str,
) -> None:
    # A hung server makes every call wait out its timeout: after the first, the
    # rest of the request's calls (search, the leader's re-read, the put) are skipped.
    backend = Unreachable()
    cache = SemanticCache(
        backend, embedder=FakeEmbedder(dim=64), config=CacheConfig(breaker_failures=50)
    )
    request = req(Message("user", "How do I reset my password?"))
    answer = CachedResponse(text="Use the reset link.", model="m")

    async def one() -> Any:
        if how == "sync":
            return cache.get_or_call(request, lambda: answer)

        async def call() -> CachedResponse:
            return answer

        return await cache.aget_or_call(request, call)

    assert (await one()).response.text == "Use the reset link."
    assert backend.calls == ["get"]
    assert (await one()).response.text == "Use the reset link."  # a new request tries again
    assert backend.calls == ["get", "get"]
    # A failure that is not about reaching the server skips nothing.
    other = Unreachable(unreachable=False)
    cache = SemanticCache(
        other, embedder=FakeEmbedder(dim=64), config=CacheConfig(breaker_failures=50)
    )
    await one() if how == "async" else cache.get_or_call(request, lambda: answer)
    assert other.calls == ["get", "search", "get", "put"]


class Recording(MemoryCacheBackend):
    """A healthy backend that notes its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get(self, key: str, *, now: float) -> Any:
        self.calls.append("get")
        return super().get(key, now=now)

    def put(self, entry: Any) -> None:
        self.calls.append("put")
        super().put(entry)


def test_an_unreachable_backend_does_not_make_a_nested_cache_skip_its_own() -> None:
    # A cached component whose call goes through another cache (a cached model):
    # the outer backend being down says nothing about the inner one.
    down, healthy = Unreachable(), Recording()
    config = CacheConfig(breaker_failures=50, semantic=False)
    outer = SemanticCache(down, embedder=FakeEmbedder(dim=64), config=config)
    inner = SemanticCache(healthy, embedder=FakeEmbedder(dim=64), config=config)
    request = req(Message("user", "How do I reset my password?"))
    answer = CachedResponse(text="Use the reset link.", model="m")

    def through_inner() -> CachedResponse:
        return inner.get_or_call(request, lambda: answer).response

    assert outer.get_or_call(request, through_inner).response.text == "Use the reset link."
    assert down.calls == ["get"]
    assert healthy.calls == ["get", "get", "put"]
    assert inner.lookup(request) is not None
