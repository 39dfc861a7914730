"""SemanticCache.share_stream / ashare_stream: identical streams in flight make one call.

Each behaviour runs on both twins where it applies: readers in threads and in
tasks, a reader that interleaves two identical streams in one thread or task,
a leader that leaves early, a call that fails before or after its first chunk,
and the store at the end.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from costopt_core.cache import CacheConfig, CachedResponse, CacheRequest, SemanticCache
from costopt_core.cache.shared_stream import SharedStreamError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message

REQUEST = CacheRequest(messages=(Message("user", "What is the refund policy for orders?"),))
OTHER = CacheRequest(messages=(Message("user", "How long does shipping to Canada take?"),))
WORDS = ["Refunds ", "within ", "30 ", "days."]


def complete(chunks: list[str]) -> CachedResponse:
    return CachedResponse(text="".join(chunks))


class Provider:
    """A streaming model, sync and async: counts calls and how far each was read."""

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls = 0
        self.closed = 0
        self.pulled = 0

    def stream(self) -> Iterator[str]:
        self.calls += 1

        def chunks() -> Iterator[str]:
            try:
                for i, w in enumerate(WORDS):
                    if i == self.fail_at:
                        raise ConnectionError("provider dropped the stream")
                    time.sleep(self.delay_s)
                    self.pulled += 1
                    yield w
            finally:
                self.closed += 1

        return chunks()

    async def astream(self) -> AsyncIterator[str]:
        self.calls += 1

        async def chunks() -> AsyncIterator[str]:
            try:
                for i, w in enumerate(WORDS):
                    if i == self.fail_at:
                        raise ConnectionError("provider dropped the stream")
                    await asyncio.sleep(self.delay_s)
                    self.pulled += 1
                    yield w
            finally:
                self.closed += 1

        return chunks()


def new_cache(**config: object) -> SemanticCache:
    return SemanticCache(embedder=FakeEmbedder(), config=CacheConfig(**config))  # type: ignore[arg-type]


def read_all(cache: SemanticCache, provider: Provider, request: CacheRequest = REQUEST):
    return list(cache.share_stream(request, provider.stream, complete))


async def aread_all(cache: SemanticCache, provider: Provider, request: CacheRequest = REQUEST):
    return [p async for p in await cache.ashare_stream(request, provider.astream, complete)]


# -- one call for identical streams -------------------------------------------------------


def test_threads_streaming_the_same_request_make_one_call_and_all_get_every_chunk() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.02)
    out: list[list[tuple[str, bool]]] = []
    threads = [
        threading.Thread(target=lambda: out.append(read_all(cache, provider))) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.calls == 1
    assert [[c for c, _ in pairs] for pairs in out] == [WORDS] * 5
    # One reader's chunks are its own call's; the others' came from it.
    assert sorted(all(shared for _, shared in pairs) for pairs in out) == [False] + [True] * 4
    assert cache.stats().inflight_shared == 4
    hit = cache.lookup(REQUEST)
    assert hit is not None and hit.response.text == "".join(WORDS)


async def test_tasks_streaming_the_same_request_make_one_call_and_all_get_every_chunk() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    out = await asyncio.gather(*(aread_all(cache, provider) for _ in range(5)))
    assert provider.calls == 1
    assert [[c for c, _ in pairs] for pairs in out] == [WORDS] * 5
    assert sorted(all(shared for _, shared in pairs) for pairs in out) == [False] + [True] * 4
    assert cache.stats().inflight_shared == 4
    hit = await cache.alookup(REQUEST)
    assert hit is not None and hit.response.text == "".join(WORDS)


def test_different_requests_do_not_share() -> None:
    cache, provider = new_cache(), Provider()
    first = cache.share_stream(REQUEST, provider.stream, complete)
    second = cache.share_stream(OTHER, provider.stream, complete)
    assert [s for _, s in first] == [False] * 4
    assert [s for _, s in second] == [False] * 4
    assert provider.calls == 2


def test_a_later_identical_stream_replays_from_the_first_chunk() -> None:
    cache, provider = new_cache(), Provider()
    first = cache.share_stream(REQUEST, provider.stream, complete)
    assert next(first) == ("Refunds ", False)
    assert next(first) == ("within ", False)
    second = cache.share_stream(REQUEST, provider.stream, complete)
    assert [c for c, _ in second] == WORDS
    assert provider.calls == 1


# -- no reader waits on another -------------------------------------------------------------


def test_one_thread_reading_two_identical_streams_in_turn_never_waits() -> None:
    # A chain reading a second identical stream before it finishes the first:
    # the second pulls the chunks itself instead of waiting for the first.
    cache, provider = new_cache(inflight_wait_s=30.0), Provider()
    first = cache.share_stream(REQUEST, provider.stream, complete)
    started = time.monotonic()
    assert next(first)[0] == "Refunds "
    second = [c for c, _ in cache.share_stream(REQUEST, provider.stream, complete)]
    rest = [c for c, _ in first]
    assert second == WORDS and rest == WORDS[1:]
    assert provider.calls == 1
    assert time.monotonic() - started < 5


async def test_one_task_reading_two_identical_streams_in_turn_never_waits() -> None:
    cache, provider = new_cache(inflight_wait_s=30.0), Provider()
    first = await cache.ashare_stream(REQUEST, provider.astream, complete)
    assert (await anext(first))[0] == "Refunds "
    second = [c async for c, _ in await cache.ashare_stream(REQUEST, provider.astream, complete)]
    assert second == WORDS
    assert [c async for c, _ in first] == WORDS[1:]
    assert provider.calls == 1


# -- the leader leaves ----------------------------------------------------------------------


def test_a_follower_finishes_and_stores_a_stream_its_leader_dropped() -> None:
    cache, provider = new_cache(), Provider()
    leader = cache.share_stream(REQUEST, provider.stream, complete)
    next(leader)
    follower = cache.share_stream(REQUEST, provider.stream, complete)
    del leader
    gc.collect()
    assert [c for c, _ in follower] == WORDS
    assert provider.calls == 1
    assert cache.lookup(REQUEST) is not None


async def test_a_task_finishes_and_stores_a_stream_its_leader_closed() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    leader = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await anext(leader)
    follower = await cache.ashare_stream(REQUEST, provider.astream, complete)
    assert (await anext(follower))[0] == "Refunds "
    await leader.aclose()
    assert [c async for c, _ in follower] == WORDS[1:]
    assert provider.calls == 1
    assert await cache.alookup(REQUEST) is not None
    # It read to the end the call its opener left: it is the one that pays.
    assert follower.pays is True


async def test_a_joined_stream_not_read_yet_does_not_keep_a_left_one_open() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    leader = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await anext(leader)
    unread = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await leader.aclose()
    assert provider.closed == 1  # closed as the last reader left, as unshared
    # The joiner reads later: the stream is gone, so it makes its own call.
    assert [c async for c, _ in unread] == WORDS
    assert provider.calls == 2
    assert unread.pays is True  # its own call


def test_a_sharer_that_reads_to_the_end_a_stream_its_opener_left_pays() -> None:
    cache, provider = new_cache(), Provider()
    opener = cache.share_stream(REQUEST, provider.stream, complete)
    one = cache.share_stream(REQUEST, provider.stream, complete)
    two = cache.share_stream(REQUEST, provider.stream, complete)
    next(opener)
    next(one)
    opener.close()
    assert [s for _, s in one] == [True] * 3 and one.pays is True
    assert [s for _, s in two] == [True] * 4 and two.pays is False
    assert provider.calls == 1
    # Counted as shared: only the one that did not pay.
    assert cache.stats().inflight_shared == 1


def test_the_first_reader_to_the_end_pays_whoever_opened_the_stream() -> None:
    # The opener is the slower reader and stops after a sharer read it all:
    # the sharer records the call (the opener's stopped run has only what it read).
    cache, provider = new_cache(), Provider()
    opener = cache.share_stream(REQUEST, provider.stream, complete)
    sharer = cache.share_stream(REQUEST, provider.stream, complete)
    next(opener)
    assert [c for c, _ in sharer] == WORDS and sharer.pays is True
    assert [c for c, _ in opener] == WORDS[1:] and opener.pays is False
    # Read to its end first, the opener records it, as unshared.
    again = new_cache()
    opener = again.share_stream(REQUEST, provider.stream, complete)
    sharer = again.share_stream(REQUEST, provider.stream, complete)
    assert [c for c, _ in opener] == WORDS and [c for c, _ in sharer] == WORDS
    assert (opener.pays, sharer.pays) == (True, False)


async def test_an_async_opener_not_reading_yet_keeps_its_stream_when_a_sharer_leaves() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    opener = await cache.ashare_stream(REQUEST, provider.astream, complete)  # not read yet
    sharer = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await anext(sharer)
    await sharer.aclose()
    assert [c async for c, _ in opener] == WORDS
    assert provider.calls == 1 and opener.pays is True


def test_streams_are_not_shared_when_hits_are_padded() -> None:
    cache, provider = new_cache(pad_hits_to_s=0.01), Provider()
    first = cache.share_stream(REQUEST, provider.stream, complete)
    next(first)
    assert [s for _, s in cache.share_stream(REQUEST, provider.stream, complete)] == [False] * 4
    assert provider.calls == 2


async def test_when_every_reader_leaves_the_provider_stream_is_closed_and_nothing_stored() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.05)
    one = await cache.ashare_stream(REQUEST, provider.astream, complete)
    two = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await anext(one)
    await anext(two)
    await one.aclose()
    await two.aclose()
    for _ in range(20):
        if provider.closed:
            break
        await asyncio.sleep(0.01)
    assert provider.closed == 1
    assert provider.pulled < len(WORDS)  # the rest was never generated
    assert await cache.alookup(REQUEST) is None
    # The next identical stream makes its own call.
    assert [c for c, _ in await aread_all(cache, provider)] == WORDS
    assert provider.calls == 2


async def test_a_cancelled_reader_does_not_stop_the_others() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.02)

    async def reader() -> list[str]:
        return [c async for c, _ in await cache.ashare_stream(REQUEST, provider.astream, complete)]

    doomed = asyncio.create_task(reader())
    kept = asyncio.create_task(reader())
    await asyncio.sleep(0.03)
    doomed.cancel()
    assert await kept == WORDS
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert provider.calls == 1


# -- failures -------------------------------------------------------------------------------


def test_a_call_failing_before_its_first_chunk_lets_a_follower_ask_again() -> None:
    cache = new_cache()
    failing, healthy = Provider(fail_at=0), Provider()
    leader = cache.share_stream(REQUEST, failing.stream, complete)
    follower = cache.share_stream(REQUEST, healthy.stream, complete)
    with pytest.raises(ConnectionError):
        next(leader)
    assert [c for c, _ in follower] == WORDS
    assert (failing.calls, healthy.calls) == (1, 1)


async def test_a_task_whose_shared_call_fails_before_its_first_chunk_asks_again() -> None:
    cache = new_cache()
    failing, healthy = Provider(fail_at=0), Provider()
    leader = await cache.ashare_stream(REQUEST, failing.astream, complete)
    follower = await cache.ashare_stream(REQUEST, healthy.astream, complete)
    with pytest.raises(ConnectionError):
        await anext(leader)
    assert [c async for c, _ in follower] == WORDS
    assert (failing.calls, healthy.calls) == (1, 1)


def test_a_call_failing_mid_stream_fails_every_reader_past_its_first_chunk() -> None:
    cache, provider = new_cache(), Provider(fail_at=2)
    leader = cache.share_stream(REQUEST, provider.stream, complete)
    follower = cache.share_stream(REQUEST, provider.stream, complete)
    assert next(follower)[0] == "Refunds "
    with pytest.raises(ConnectionError):
        list(leader)
    with pytest.raises(ConnectionError):
        list(follower)
    assert provider.calls == 1
    assert cache.lookup(REQUEST) is None


def test_a_stream_that_cannot_be_opened_fails_its_caller_only() -> None:
    cache, healthy = new_cache(), Provider()

    def refuse() -> Iterator[str]:
        raise TimeoutError("provider timed out")

    with pytest.raises(TimeoutError):
        cache.share_stream(REQUEST, refuse, complete)
    assert [c for c, _ in cache.share_stream(REQUEST, healthy.stream, complete)] == WORDS


def test_a_follower_cut_off_by_an_interrupt_of_the_stream_gets_a_costopt_error() -> None:
    cache = new_cache()

    def interrupted() -> Iterator[str]:
        yield "Refunds "
        raise KeyboardInterrupt

    leader = cache.share_stream(REQUEST, interrupted, complete)
    follower = cache.share_stream(REQUEST, interrupted, complete)
    assert next(follower)[0] == "Refunds "
    with pytest.raises(KeyboardInterrupt):
        list(leader)  # the leader's own thread was interrupted
    with pytest.raises(SharedStreamError, match="ask again"):
        list(follower)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("request_cache", [True, False])
def test_without_dedupe_or_cache_every_stream_makes_its_own_call(request_cache: bool) -> None:
    cache, provider = new_cache(dedupe_inflight=not request_cache), Provider()
    request = CacheRequest(messages=REQUEST.messages, cache=request_cache)
    first = cache.share_stream(request, provider.stream, complete)
    next(first)
    second = list(cache.share_stream(request, provider.stream, complete))
    assert [s for _, s in second] == [False] * 4
    assert provider.calls == 2
    list(first)
    assert (cache.lookup(REQUEST) is not None) is request_cache


def test_a_stream_nobody_joined_is_closed_when_its_reader_stops() -> None:
    cache, provider = new_cache(), Provider()
    stream = cache.share_stream(REQUEST, provider.stream, complete)
    next(stream)
    stream.close()
    assert provider.closed == 1  # now, not at garbage collection
    # and an identical stream asked next makes its own call
    assert [c for c, _ in cache.share_stream(REQUEST, provider.stream, complete)] == WORDS
    assert provider.calls == 2


def test_a_stream_someone_joined_lives_on_when_its_opener_stops() -> None:
    cache, provider = new_cache(), Provider()
    opener = cache.share_stream(REQUEST, provider.stream, complete)
    joiner = cache.share_stream(REQUEST, provider.stream, complete)
    next(opener)
    opener.close()
    assert provider.closed == 0
    assert [c for c, _ in joiner] == WORDS
    assert provider.calls == 1


def test_a_stream_is_closed_when_the_last_of_its_readers_stops() -> None:
    cache, provider = new_cache(), Provider()
    opener = cache.share_stream(REQUEST, provider.stream, complete)
    sharer = cache.share_stream(REQUEST, provider.stream, complete)
    next(opener)
    next(sharer)
    opener.close()
    assert provider.closed == 0  # the sharer reads on
    sharer.close()
    assert provider.closed == 1  # now, not at garbage collection


async def test_an_async_opener_closing_its_stream_unread_gives_its_seat_back() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    opener = await cache.ashare_stream(REQUEST, provider.astream, complete)
    sharer = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await opener.aclose()  # never read
    await anext(sharer)
    await sharer.aclose()
    assert provider.closed == 1
    assert not [t for t in asyncio.all_tasks() if "_pump" in repr(t) and not t.done()]


async def test_an_async_opener_dropped_unread_does_not_keep_its_stream_open() -> None:
    cache, provider = new_cache(), Provider(delay_s=0.01)
    opener = await cache.ashare_stream(REQUEST, provider.astream, complete)
    sharer = await cache.ashare_stream(REQUEST, provider.astream, complete)
    del opener
    gc.collect()
    await anext(sharer)
    await sharer.aclose()
    assert provider.closed == 1
    assert not [t for t in asyncio.all_tasks() if "_pump" in repr(t) and not t.done()]


async def test_an_async_stream_closed_unread_by_its_only_reader_is_not_joined_later() -> None:
    cache, provider = new_cache(), Provider()
    opener = await cache.ashare_stream(REQUEST, provider.astream, complete)
    await opener.aclose()  # opened, never read, nobody joined
    assert [c async for c, _ in await cache.ashare_stream(REQUEST, provider.astream, complete)] == (
        WORDS
    )
    assert provider.calls == 2


async def test_a_sharer_giving_up_before_the_hand_over_does_not_end_the_opener_s_stream() -> None:
    cache, provider = new_cache(), Provider()

    async def slow_open() -> AsyncIterator[str]:
        await asyncio.sleep(0.2)  # the provider's time to first byte
        return await provider.astream()

    async def read() -> list[str]:
        return [c async for c, _ in await cache.ashare_stream(REQUEST, slow_open, complete)]

    async def impatient() -> list[str] | None:
        await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(read(), 0.05)
        except TimeoutError:
            return None

    assert await asyncio.gather(read(), impatient()) == [WORDS, None]
    assert provider.calls == 1


def test_a_sharer_that_stopped_waiting_for_the_hand_over_gives_its_seat_back() -> None:
    cache, provider = new_cache(inflight_wait_s=0.05), Provider()
    started = threading.Event()

    def slow_open() -> Iterator[str]:
        started.set()
        time.sleep(0.3)
        return provider.stream()

    opener_out: list[Iterator[tuple[str, bool]]] = []
    t = threading.Thread(
        target=lambda: opener_out.append(cache.share_stream(REQUEST, slow_open, complete))
    )
    t.start()
    started.wait()
    fallback = cache.share_stream(REQUEST, provider.stream, complete)
    assert next(fallback) == ("Refunds ", False)  # its own call after the wait
    t.join()
    opener = opener_out[0]
    next(opener)
    opener.close()
    assert provider.closed == 1  # the fallback's old seat does not keep it open
    assert [c for c, _ in fallback] == WORDS[1:]


def test_a_half_read_stream_is_not_stored() -> None:
    cache, provider = new_cache(), Provider()
    stream = cache.share_stream(REQUEST, provider.stream, complete)
    next(stream)
    stream.close()
    del stream
    gc.collect()
    assert cache.lookup(REQUEST) is None
