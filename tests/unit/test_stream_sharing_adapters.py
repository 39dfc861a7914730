"""Identical streams in flight make one model call through the adapters.

CachedChatModel (stream / astream) and CachedLLM (stream_chat, stream_complete
and their async twins): every caller gets the whole answer, the cost handler
records one model call and prices the others as exact cache hits, and a
caller that stops reading does not stop the others.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from costopt_core import CostEngine
from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt import CachedChatModel, CostCallbackHandler
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CachedLLM, CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM

USAGE = Usage(1000, 200)
ANSWER = "Refunds are accepted within thirty days of delivery."
PROMPT = "What is the refund window for orders?"


def engine_cache() -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256))


def script(latency_s: float) -> Script:
    # cycle=False: a second model call fails the test loudly.
    return Script([ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini")], latency_s=latency_s)


def in_threads(n: int, fn: Any) -> list[Any]:
    out: list[Any] = [None] * n

    def one(i: int) -> None:
        out[i] = fn()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# -- LangChain ------------------------------------------------------------------------------


def test_threads_streaming_one_prompt_through_a_cached_chat_model_make_one_call() -> None:
    model = ScriptedChatModel(script=script(0.2))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    texts = in_threads(4, lambda: "".join(str(c.content) for c in cached.stream(PROMPT, cfg)))
    assert model.script.calls == 1
    assert texts == [ANSWER] * 4
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact"] * 3 + ["model"]
    # The shared ones are priced as the call they did not make.
    hits = [r for r in engine.ledger.records() if r.outcome == "cache_exact"]
    assert all(r.cost_usd == 0 and sum(r.savings_usd.values()) > 0 for r in hits)
    assert cached.semantic_cache.stats().inflight_shared == 3


async def test_tasks_streaming_one_prompt_through_a_cached_chat_model_make_one_call() -> None:
    model = ScriptedChatModel(script=script(0.1))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}

    async def read() -> str:
        return "".join([str(c.content) async for c in cached.astream(PROMPT, cfg)])

    assert await asyncio.gather(*(read() for _ in range(4))) == [ANSWER] * 4
    assert model.script.calls == 1
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact"] * 3 + ["model"]
    # Stored once the stream ended: the next call is a plain hit.
    assert (await cached.ainvoke(PROMPT)).content == ANSWER
    assert model.script.calls == 1


async def test_an_astream_reading_the_same_prompt_mid_stream_does_not_wait_on_itself() -> None:
    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(
        model=model, semantic_cache=CacheEngine(embedder=FakeEmbedder(), config=CacheConfig())
    )
    first = cached.astream(PROMPT)
    head = await anext(first)
    second = await asyncio.wait_for(_text(cached.astream(PROMPT)), 5)
    rest = "".join([str(c.content) async for c in first])
    assert second == ANSWER and str(head.content) + rest == ANSWER
    assert model.script.calls == 1


async def _text(stream: Any) -> str:
    return "".join([str(c.content) async for c in stream])


def test_shared_chunks_are_copies_a_caller_can_change() -> None:
    model = ScriptedChatModel(script=script(0.2))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())

    def read_and_scribble() -> str:
        chunks = list(cached.stream(PROMPT))
        text = "".join(str(c.content) for c in chunks)
        for c in chunks:
            c.content = "scribbled"
        return text

    assert in_threads(3, read_and_scribble) == [ANSWER] * 3
    assert model.script.calls == 1


# -- LlamaIndex -----------------------------------------------------------------------------


def _llm(latency_s: float) -> tuple[ScriptedLLM, CachedLLM]:
    inner = ScriptedLLM(script=script(latency_s))
    return inner, CachedLLM(llm=inner, semantic_cache=engine_cache())


def test_threads_streaming_one_prompt_through_a_cached_llm_make_one_call() -> None:
    inner, llm = _llm(0.2)
    engine = CostEngine()
    msgs = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    handler = CostEventHandler(engine).attach()
    try:
        finals = in_threads(4, lambda: list(llm.stream_chat(msgs))[-1])
    finally:
        handler.detach()
    assert inner.script.calls == 1
    assert [f.message.content for f in finals] == [ANSWER] * 4
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact"] * 3 + ["model"]


async def test_tasks_streaming_one_prompt_through_a_cached_llm_make_one_call() -> None:
    inner, llm = _llm(0.1)
    engine = CostEngine()
    handler = CostEventHandler(engine).attach()

    async def read() -> str:
        return [r async for r in await llm.astream_complete(PROMPT)][-1].text

    try:
        texts = await asyncio.gather(*(read() for _ in range(4)))
    finally:
        handler.detach()
    assert texts == [ANSWER] * 4
    assert inner.script.calls == 1
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact"] * 3 + ["model"]


async def test_a_caller_that_stops_reading_does_not_stop_the_others() -> None:
    inner, llm = _llm(0.05)
    msgs = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    quitter = await llm.astream_chat(msgs)
    stayer = await llm.astream_chat(msgs)
    await anext(quitter)
    await quitter.aclose()
    assert [r async for r in stayer][-1].message.content == ANSWER
    assert inner.script.calls == 1
    # Read to its end by the one that stayed: stored.
    assert (await llm.achat(msgs)).message.content == ANSWER
    assert inner.script.calls == 1


# -- cached(...) components -------------------------------------------------------------------


class Steps:
    """A generator Runnable of plain dicts (no ``+``), slow enough to overlap."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def run(self, q: str) -> Any:
        import time

        self.calls += 1
        time.sleep(self.delay_s)
        yield {"node": "search", "q": q}
        yield {"node": "answer", "text": f"about {q}"}

    async def arun(self, q: str) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        yield {"node": "search", "q": q}
        yield {"node": "answer", "text": f"about {q}"}


STEPS = [{"node": "search", "q": "x"}, {"node": "answer", "text": "about x"}]


def test_threads_streaming_one_input_through_a_cached_runnable_run_it_once() -> None:
    from langchain_core.runnables import RunnableLambda

    from langchain_costopt.components import cached

    steps = Steps(0.2)
    wrapped = cached(RunnableLambda(steps.run), cache=engine_cache())

    def read_and_scribble() -> list[Any]:
        chunks = list(wrapped.stream("x"))
        snapshot = [dict(c) for c in chunks]
        for c in chunks:
            c["node"] = "scribbled"
        return snapshot

    assert in_threads(3, read_and_scribble) == [STEPS] * 3
    assert steps.calls == 1
    assert list(wrapped.stream("x")) == STEPS  # stored once read to its end
    assert steps.calls == 1


async def test_tasks_streaming_one_input_through_a_cached_runnable_run_it_once() -> None:
    from langchain_core.runnables import RunnableLambda

    from langchain_costopt.components import cached

    steps = Steps(0.1)
    wrapped = cached(RunnableLambda(steps.run, afunc=steps.arun), cache=engine_cache())

    async def read() -> list[Any]:
        return [c async for c in wrapped.astream("x")]

    assert await asyncio.gather(*(read() for _ in range(3))) == [STEPS] * 3
    assert steps.calls == 1
    other = [c async for c in wrapped.astream("y")]
    assert other[0] == {"node": "search", "q": "y"} and steps.calls == 2


# -- a stream its opener stops reading (review) ---------------------------------------------


def test_a_call_whose_opener_stopped_is_priced_once_in_full_by_the_one_that_read_it_all() -> None:
    # The opener's stopped run is recorded as any stopped stream (with what it
    # read: here no usage yet, so unpriced); the call it left running is
    # recorded once, in full, by the sharer that read it to its end.
    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    opener, sharer = cached.stream(PROMPT, cfg), cached.stream(PROMPT, cfg)
    head = next(opener)
    assert next(sharer).content == head.content
    opener.close()
    rest = "".join(str(c.content) for c in sharer)
    assert str(head.content) + rest == ANSWER
    assert model.script.calls == 1
    records = [(r.outcome, r.usage.input_tokens, r.cost_usd) for r in engine.ledger.records()]
    assert ("model", 1000, model_cost(engine)) in records
    assert sum(1 for _, _, cost in records if cost) == 1
    assert all(outcome == "model" for outcome, _, _ in records)


def model_cost(engine: CostEngine) -> Any:
    priced = [r.cost_usd for r in engine.ledger.records() if r.cost_usd]
    return priced[0] if priced else None


async def test_an_async_call_whose_opener_stopped_is_priced_once_in_full() -> None:
    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    opener, sharer = cached.astream(PROMPT, cfg), cached.astream(PROMPT, cfg)
    await anext(opener)
    await anext(sharer)
    await opener.aclose()
    assert len([c async for c in sharer]) > 1
    assert model.script.calls == 1
    priced = [r for r in engine.ledger.records() if r.cost_usd]
    assert [(r.outcome, r.usage.input_tokens, r.usage.output_tokens) for r in priced] == [
        ("model", 1000, 200)
    ]
    assert not [r for r in engine.ledger.records() if r.outcome != "model"]


def test_two_identical_llamaindex_streams_stopped_in_one_thread_record_the_call() -> None:
    inner, llm = _llm(0.0)
    engine = CostEngine()
    msgs = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    handler = CostEventHandler(engine).attach()
    try:
        opener = llm.stream_chat(msgs)
        next(opener)
        sharer = llm.stream_chat(msgs)
        next(sharer)
        sharer.close()
        opener.close()
    finally:
        handler.detach()
    assert inner.script.calls == 1
    assert [r.outcome for r in engine.ledger.records()] == ["model"]


def test_a_llamaindex_opener_editing_its_chunks_changes_nobody_elses() -> None:
    inner, llm = _llm(0.0)
    msgs = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    opener, sharer = llm.stream_chat(msgs), llm.stream_chat(msgs)
    for r in opener:
        r.message.content = "scribbled"
    assert list(sharer)[-1].message.content == ANSWER
    assert llm.chat(msgs).message.content == ANSWER  # and the stored answer
    assert inner.script.calls == 1


def test_an_opener_that_stops_after_a_sharer_read_it_all_leaves_the_call_priced_once() -> None:
    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    opener, sharer = cached.stream(PROMPT, cfg), cached.stream(PROMPT, cfg)
    next(opener)
    assert "".join(str(c.content) for c in sharer) == ANSWER
    opener.close()
    priced = [r for r in engine.ledger.records() if r.cost_usd]
    assert [(r.outcome, r.usage.input_tokens, r.usage.output_tokens) for r in priced] == [
        ("model", 1000, 200)
    ]
    assert model.script.calls == 1


async def test_an_opener_reading_after_a_sharer_read_it_all_is_recorded_as_a_hit() -> None:
    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    opener, sharer = cached.astream(PROMPT, cfg), cached.astream(PROMPT, cfg)
    await anext(opener)
    assert await _text(sharer) == ANSWER
    await _text(opener)
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact", "model"]
    assert model.script.calls == 1


def test_a_cache_wrapping_a_cache_streams_the_inner_hit_as_a_hit() -> None:
    model = ScriptedChatModel(script=script(0.0))
    inner = CachedChatModel(model=model, semantic_cache=engine_cache())
    inner.invoke(PROMPT)  # stored in the inner cache only
    outer = CachedChatModel(model=inner, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    assert "".join(str(c.content) for c in outer.stream(PROMPT, cfg)) == ANSWER
    assert [r.outcome for r in engine.ledger.records()] == ["cache_exact"]
    assert model.script.calls == 1


async def test_a_llamaindex_opener_not_reading_yet_keeps_its_call_when_a_sharer_stops() -> None:
    inner, llm = _llm(0.01)
    engine = CostEngine()
    msgs = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    handler = CostEventHandler(engine).attach()
    try:
        opener = await llm.astream_chat(msgs)
        sharer = await llm.astream_chat(msgs)
        await anext(sharer)
        await sharer.aclose()
        assert [r async for r in opener][-1].message.content == ANSWER
    finally:
        handler.detach()
    assert inner.script.calls == 1
    assert [r.outcome for r in engine.ledger.records() if r.cost_usd] == ["model"]


@pytest.mark.parametrize("sharer_first", [True, False])
def test_a_cache_wrapping_a_cache_shares_the_inner_hit_as_hits(sharer_first: bool) -> None:
    model = ScriptedChatModel(script=script(0.0))
    inner = CachedChatModel(model=model, semantic_cache=engine_cache())
    inner.invoke(PROMPT)
    outer = CachedChatModel(model=inner, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    opener, sharer = outer.stream(PROMPT, cfg), outer.stream(PROMPT, cfg)
    head = str(next(opener).content)
    first, second = (sharer, opener) if sharer_first else (opener, sharer)
    texts = ["".join(str(c.content) for c in first), "".join(str(c.content) for c in second)]
    assert ANSWER in {texts[0], head + texts[0]} and ANSWER in {texts[1], head + texts[1]}
    assert [r.outcome for r in engine.ledger.records()] == ["cache_exact", "cache_exact"]
    assert model.script.calls == 1


def test_a_cache_around_a_shared_inner_stream_prices_the_one_call_once() -> None:
    # X streams the inner cache (opens its share); O streams the outer one, whose
    # wrapped stream shares X's; S shares O's. One model call: priced once.
    model = ScriptedChatModel(script=script(0.0))
    inner = CachedChatModel(model=model, semantic_cache=engine_cache())
    outer = CachedChatModel(model=inner, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    x = inner.stream(PROMPT, cfg)
    next(x)
    o = outer.stream(PROMPT, cfg)
    next(o)
    assert "".join(str(c.content) for c in outer.stream(PROMPT, cfg)) == ANSWER
    list(o)
    list(x)
    assert model.script.calls == 1
    assert sorted(r.outcome for r in engine.ledger.records()) == ["cache_exact"] * 2 + ["model"]


async def test_a_reader_that_asks_again_reads_the_new_stream_s_notes() -> None:
    # A cache around a warm cache. The first shared stream fails before its first
    # chunk, so J asks again and opens a second one, which S shares. J copies every
    # chunk first and S reaches the end first: both are hits (no model was called).
    from langchain_core.rate_limiters import BaseRateLimiter

    class FailsOnce(BaseRateLimiter):
        failures = 0

        def acquire(self, *, blocking: bool = True) -> bool:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("provider refused")
            return True

        async def aacquire(self, *, blocking: bool = True) -> bool:
            return self.acquire(blocking=blocking)

    limiter = FailsOnce()
    model = ScriptedChatModel(script=script(0.0))
    inner = CachedChatModel(model=model, semantic_cache=engine_cache(), rate_limiter=limiter)
    await inner.ainvoke(PROMPT)
    outer = CachedChatModel(model=inner, semantic_cache=engine_cache())
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    limiter.failures = 1
    opener, j = outer.astream(PROMPT, cfg), outer.astream(PROMPT, cfg)
    failed, first = await asyncio.gather(anext(opener), anext(j), return_exceptions=True)
    assert isinstance(failed, ConnectionError)
    s = outer.astream(PROMPT, cfg)
    s_text = str((await anext(s)).content)
    got = [first]
    while not got[-1].usage_metadata:
        got.append(await anext(j))
    s_text += await _text(s)
    j_text = "".join(str(c.content) for c in got) + await _text(j)
    assert s_text == j_text == ANSWER
    assert model.script.calls == 1  # the warm-up
    assert [r.outcome for r in engine.ledger.records() if r.cost_usd] == []


def test_a_streamed_hit_leaves_no_served_note_behind() -> None:
    from costopt_core.served import SERVED

    model = ScriptedChatModel(script=script(0.0))
    cached = CachedChatModel(model=model, semantic_cache=engine_cache())
    cached.invoke(PROMPT)
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    before = len(SERVED)
    for _ in range(5):
        assert "".join(str(c.content) for c in cached.stream(PROMPT, cfg)) == ANSWER
    assert len(SERVED) == before  # the notes are bounded, and live ones must not be pushed out
    assert [r.outcome for r in engine.ledger.records()] == ["cache_exact"] * 5
