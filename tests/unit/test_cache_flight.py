"""SemanticCache.flight / aflight: concurrent identical streamed misses make one model call."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from costopt_core.cache import (
    AsyncCacheFlight,
    CacheConfig,
    CachedResponse,
    CacheFlight,
    CacheRequest,
    SemanticCache,
)
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message, Usage

ANSWER = "Use the reset link."
CHUNKS = ["Use", " the", " reset", " link."]


def req(text: str = "How do I reset my password?", **kw: object) -> CacheRequest:
    return CacheRequest(messages=(Message("user", text),), **kw)  # type: ignore[arg-type]


def whole(chunks: list[str], **kw: object) -> CachedResponse:
    usage = Usage(100, 20)
    return CachedResponse(text="".join(chunks), model="gpt-4o-mini", usage=usage, **kw)  # type: ignore[arg-type]


def replay(response: CachedResponse) -> list[str]:
    words = response.text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def make_cache(**cfg: object) -> SemanticCache:
    config = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF, **cfg)  # type: ignore[arg-type]
    return SemanticCache(embedder=FakeEmbedder(dim=256), config=config)


class StreamingModel:
    """Streams ``CHUNKS`` slowly; counts calls; its ``fail_calls``-th calls fail mid-way."""

    def __init__(self, *, delay_s: float = 0.02, fail_calls: tuple[int, ...] = ()) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self.fail_calls = fail_calls
        self.started = threading.Event()
        self._lock = threading.Lock()

    def _begin(self) -> int:
        with self._lock:
            self.calls += 1
            n = self.calls
        self.started.set()
        return n

    def stream(self) -> Iterator[str]:
        n = self._begin()
        for i, chunk in enumerate(CHUNKS):
            time.sleep(self.delay_s)
            if n in self.fail_calls and i == 2:
                raise RuntimeError("stream broke mid-way")
            yield chunk

    async def astream(self) -> AsyncIterator[str]:
        n = self._begin()
        for i, chunk in enumerate(CHUNKS):
            await asyncio.sleep(self.delay_s)
            if n in self.fail_calls and i == 2:
                raise RuntimeError("stream broke mid-way")
            yield chunk


def stream_through(
    cache: SemanticCache, model: StreamingModel, request: CacheRequest | None = None
) -> list[str]:
    """What an adapter's stream does: replay a hit, else stream, then land."""
    with cache.flight(request or req()) as f:
        if f.hit is not None:
            return replay(f.hit.response)
        chunks = []
        for chunk in model.stream():
            chunks.append(chunk)
        f.land(whole(chunks))
        return chunks


async def astream_through(
    cache: SemanticCache, model: StreamingModel, request: CacheRequest | None = None
) -> list[str]:
    async with cache.aflight(request or req()) as f:
        if f.hit is not None:
            return replay(f.hit.response)
        chunks = [chunk async for chunk in model.astream()]
        await f.land(whole(chunks))
        return chunks


def run_threads(n: int, target: object) -> tuple[list[list[str]], list[BaseException]]:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(target())  # type: ignore[operator]
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return results, errors


def test_concurrent_identical_streams_call_once_threads() -> None:
    cache, model = make_cache(), StreamingModel()
    results, errors = run_threads(8, lambda: stream_through(cache, model))
    assert errors == [] and model.calls == 1
    assert results == [CHUNKS] * 8
    stats = cache.stats()
    assert stats.inflight_shared == 7 and stats.stores == 1


async def test_concurrent_identical_streams_call_once_async() -> None:
    cache, model = make_cache(), StreamingModel()
    results = await asyncio.gather(*(astream_through(cache, model) for _ in range(8)))
    assert model.calls == 1
    assert results == [CHUNKS] * 8
    assert cache.stats().inflight_shared == 7


async def test_a_stream_and_a_call_share_one_flight() -> None:
    cache, model = make_cache(), StreamingModel()
    calls = 0

    async def call() -> CachedResponse:
        nonlocal calls
        calls += 1
        return whole(CHUNKS)

    async def late_call() -> str:
        await asyncio.sleep(0.01)  # the stream leads
        return (await cache.aget_or_call(req(), call)).response.text

    chunks, text = await asyncio.gather(astream_through(cache, model), late_call())
    assert (model.calls, calls) == (1, 0)
    assert chunks == CHUNKS and text == ANSWER


def test_leader_stream_failing_midway_lets_one_waiter_retry_threads() -> None:
    cache, model = make_cache(), StreamingModel(delay_s=0.03, fail_calls=(1,))
    results, errors = run_threads(6, lambda: stream_through(cache, model))
    assert [str(e) for e in errors] == ["stream broke mid-way"]
    assert model.calls == 2  # the failed leader's and one retry, not five retries
    assert results == [CHUNKS] * 5
    assert cache.stats().inflight_shared == 4


async def test_leader_stream_failing_midway_lets_one_waiter_retry_async() -> None:
    cache, model = make_cache(), StreamingModel(fail_calls=(1,))

    async def caller() -> list[str] | str:
        try:
            return await astream_through(cache, model)
        except RuntimeError as exc:
            return str(exc)

    results = await asyncio.gather(*(caller() for _ in range(6)))
    assert model.calls == 2
    assert sorted(map(str, results)) == sorted([str(CHUNKS)] * 5 + ["stream broke mid-way"])


def test_an_abandoned_leader_stream_does_not_leave_waiters_hanging() -> None:
    cache = make_cache(inflight_wait_s=30.0)
    model = StreamingModel(delay_s=0.03)

    def reader_who_stops() -> list[str]:
        with cache.flight(req()) as f:
            assert f.hit is None
            first = next(iter(model.stream()))  # the caller stopped reading: no land
            return [first]

    leader = threading.Thread(target=reader_who_stops)
    leader.start()
    model.started.wait()
    started = time.monotonic()
    results, errors = run_threads(4, lambda: stream_through(cache, model))
    leader.join()
    assert errors == [] and results == [CHUNKS] * 4
    assert model.calls == 2  # one waiter led after the abandoned leader
    assert time.monotonic() - started < 5  # not the 30 s wait


async def test_a_cancelled_async_leader_lets_one_waiter_retry() -> None:
    cache, model = make_cache(inflight_wait_s=30.0), StreamingModel(delay_s=0.05)
    leader = asyncio.create_task(astream_through(cache, model))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(astream_through(cache, model)) for _ in range(4)]
    await asyncio.sleep(0.02)
    leader.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert results == [CHUNKS] * 4 and model.calls == 2


def test_a_dropped_flight_lands_failed() -> None:
    # A flight that is neither landed nor left (a stream never read, then
    # collected) must not hold its key: the next caller leads at once.
    cache = make_cache(inflight_wait_s=30.0)
    flight = cache.flight(req()).__enter__()
    assert flight.hit is None
    del flight
    gc.collect()
    started = time.monotonic()
    assert stream_through(cache, StreamingModel()) == CHUNKS
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("unstorable", ["land_unshared", "policy_skip"])
def test_an_unstorable_answer_sends_the_waiters_to_the_model_at_once(unstorable: str) -> None:
    cache = make_cache(inflight_wait_s=30.0)
    model = StreamingModel(delay_s=0.01)
    release = threading.Event()

    def leader() -> None:
        with cache.flight(req()) as f:
            assert f.hit is None
            model._begin()  # its own call
            release.wait(5)
            if unstorable == "land_unshared":
                f.land_unshared()
            else:
                f.land(whole(CHUNKS, finish_reason="length"))  # truncated: not kept

    t = threading.Thread(target=leader)
    t.start()
    model.started.wait()
    calls_before = model.calls

    def waiter() -> list[str]:
        out = stream_through(cache, model)
        return out

    def release_soon() -> None:
        time.sleep(0.1)
        release.set()

    threading.Thread(target=release_soon).start()
    started = time.monotonic()
    results, errors = run_threads(4, waiter)
    t.join()
    assert errors == [] and results == [CHUNKS] * 4
    # all four called (none waited for another, none served another's answer)
    assert model.calls - calls_before == 4
    assert time.monotonic() - started < 5
    if unstorable == "policy_skip":
        assert cache.stats().skipped_stores["truncated"] == 1


async def test_async_land_unshared_sends_waiters_to_the_model() -> None:
    cache, model = make_cache(inflight_wait_s=30.0), StreamingModel()

    async def leader() -> None:
        async with cache.aflight(req()) as f:
            assert f.hit is None
            await asyncio.sleep(0.05)
            await f.land_unshared()

    async def waiter() -> list[str]:
        await asyncio.sleep(0.01)
        return await astream_through(cache, model)

    _, *results = await asyncio.gather(leader(), *(waiter() for _ in range(3)))
    assert results == [CHUNKS] * 3 and model.calls == 3
    assert cache.stats().stores == 0 and cache.lookup(req()) is None


def test_a_waiter_gives_up_after_inflight_wait_s_and_streams_itself() -> None:
    cache = make_cache(inflight_wait_s=0.1)
    slow, fast = StreamingModel(delay_s=0.2), StreamingModel(delay_s=0.0)
    leader = threading.Thread(target=stream_through, args=(cache, slow))
    leader.start()
    slow.started.wait()
    started = time.monotonic()
    assert stream_through(cache, fast) == CHUNKS
    waited = time.monotonic() - started
    leader.join()
    assert 0.1 <= waited < 0.6  # gave up on a leader that takes 0.8 s
    assert (slow.calls, fast.calls) == (1, 1)
    assert cache.stats().stores == 1  # the impatient waiter's answer is not stored


async def test_an_async_waiter_gives_up_after_inflight_wait_s() -> None:
    cache = make_cache(inflight_wait_s=0.05)
    slow, fast = StreamingModel(delay_s=0.1), StreamingModel(delay_s=0.0)

    async def waiter() -> list[str]:
        await asyncio.sleep(0.01)
        return await astream_through(cache, fast)

    results = await asyncio.gather(astream_through(cache, slow), waiter())
    assert results == [CHUNKS, CHUNKS] and (slow.calls, fast.calls) == (1, 1)


def test_dedupe_off_each_stream_calls() -> None:
    cache, model = make_cache(dedupe_inflight=False), StreamingModel()
    results, errors = run_threads(4, lambda: stream_through(cache, model))
    assert errors == [] and results == [CHUNKS] * 4 and model.calls == 4
    assert cache.lookup(req()) is not None  # each stored (the last write wins)


def test_a_request_with_cache_off_streams_and_stores_nothing() -> None:
    cache, model = make_cache(), StreamingModel()
    assert stream_through(cache, model, req(cache=False)) == CHUNKS
    assert stream_through(cache, model, req(cache=False)) == CHUNKS
    assert model.calls == 2 and cache.stats().stores == 0


def test_one_thread_reading_two_identical_streams_does_not_wait_on_itself() -> None:
    cache = make_cache(inflight_wait_s=30.0)
    started = time.monotonic()
    with cache.flight(req()) as first, cache.flight(req()) as second:
        assert first.hit is None and second.hit is None
        second.land(whole(CHUNKS))
        first.land(whole(CHUNKS))
    assert time.monotonic() - started < 5


def test_a_hit_is_served_and_cannot_be_landed() -> None:
    cache, model = make_cache(), StreamingModel()
    assert stream_through(cache, model) == CHUNKS
    with cache.flight(req()) as f:
        assert f.hit is not None and f.hit.tier == "exact"
        assert f.hit.response.text == ANSWER
        with pytest.raises(RuntimeError, match="nothing to land"):
            f.land(whole(CHUNKS))
    assert model.calls == 1


def test_land_twice_and_enter_twice_are_errors() -> None:
    cache = make_cache()
    flight = cache.flight(req())
    with flight as f:
        f.land(whole(CHUNKS))
        with pytest.raises(RuntimeError):
            f.land(whole(CHUNKS))
    with pytest.raises(RuntimeError, match="entered once"), flight:
        pass


async def test_store_as_keeps_the_answer_elsewhere_and_waiters_get_it() -> None:
    cache = make_cache()
    elsewhere = req(model="chunks-scope")

    async def leader() -> None:
        async with cache.aflight(req()) as f:
            assert f.hit is None
            await asyncio.sleep(0.05)
            await f.land(whole(CHUNKS), store_as=elsewhere)

    async def waiter() -> str | None:
        await asyncio.sleep(0.01)
        async with cache.aflight(req()) as f:
            return None if f.hit is None else f.hit.entry.scope

    _, scope = await asyncio.gather(leader(), waiter())
    stored = cache.lookup(elsewhere)
    assert stored is not None and scope == stored.entry.scope
    assert cache.lookup(req()) is None  # not under the flight's own request


def test_flight_types() -> None:
    cache = make_cache()
    assert isinstance(cache.flight(req()), CacheFlight)
    assert isinstance(cache.aflight(req()), AsyncCacheFlight)
