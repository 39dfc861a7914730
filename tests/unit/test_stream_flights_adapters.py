"""Concurrent identical streamed misses make one model call in every adapter's stream path.

CachedChatModel (stream, astream), CachedLLM (stream_chat, stream_complete
and their async twins) and cached(...) Runnables (stream, astream) join the
engine's flight (SemanticCache.flight): one stream leads, the others replay its
answer once it is complete, recorded as the cache hits they are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from costopt_core import CostEngine, Usage
from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.components import cached
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt.cached_llm import CachedLLM
from llamaindex_costopt.handler import CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM

ANSWER = "Use the reset link on the sign-in page."
QUESTION = "How do I reset my password?"
USAGE = Usage(1000, 200, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
N = 6


def engine_cache(**cfg: Any) -> CacheEngine:
    config = CacheConfig(similarity_threshold=0.75, guards=GUARDS_OFF, **cfg)
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=config)


def script(*responses: ScriptedResponse | str, latency_s: float = 0.15) -> Script:
    # cycle=False: a model call the test did not expect fails loudly.
    items = responses or (ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini"),)
    return Script(list(items), latency_s=latency_s, cycle=False)


def in_threads(n: int, target: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(target())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads), "a stream hung"
    return results, errors


# -- LangChain CachedChatModel ---------------------------------------------------------------
def test_cached_chat_model_concurrent_streams_call_once_and_hits_are_booked() -> None:
    model = ScriptedChatModel(script=script())
    llm = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine(embedder=FakeEmbedder())
    cfg = {"callbacks": [CostCallbackHandler(engine)]}

    def read() -> list[str]:
        return [str(c.content) for c in llm.stream(QUESTION, config=cfg)]

    results, errors = in_threads(N, read)
    assert errors == [] and model.script.calls == 1
    assert ["".join(r) for r in results] == [ANSWER] * N
    assert all(len(r) > 2 for r in results)  # every caller got a stream, not one blob
    outcomes = sorted(r.outcome for r in engine.ledger.records())
    assert outcomes == ["cache_exact"] * (N - 1) + ["model"]
    saved = [r for r in engine.ledger.records() if r.outcome == "cache_exact"]
    assert all(r.usage.input_tokens == 1000 for r in saved)  # the call each one replaced


async def test_cached_chat_model_concurrent_astreams_call_once_and_hits_are_booked() -> None:
    model = ScriptedChatModel(script=script())
    llm = CachedChatModel(model=model, semantic_cache=engine_cache())
    engine = CostEngine(embedder=FakeEmbedder())
    cfg = {"callbacks": [CostCallbackHandler(engine)]}

    async def read() -> str:
        return "".join([str(c.content) async for c in llm.astream(QUESTION, config=cfg)])

    results = await asyncio.gather(*(read() for _ in range(N)))
    assert model.script.calls == 1 and results == [ANSWER] * N
    outcomes = sorted(r.outcome for r in engine.ledger.records())
    assert outcomes == ["cache_exact"] * (N - 1) + ["model"]


def test_cached_chat_model_a_failed_leader_stream_lets_one_waiter_retry() -> None:
    failing = ScriptedResponse("", USAGE, error=RuntimeError("503 from the provider"))
    model = ScriptedChatModel(
        script=script(failing, ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini"))
    )
    llm = CachedChatModel(model=model, semantic_cache=engine_cache())
    started = threading.Event()

    def read() -> str:
        started.set()
        return "".join(str(c.content) for c in llm.stream(QUESTION))

    first_out: list[Any] = []
    first = threading.Thread(target=lambda: first_out.append(_caught(read)))
    first.start()
    started.wait()
    time.sleep(0.03)  # the first leads
    results, errors = in_threads(N - 1, read)
    first.join()
    assert [str(e) for e in first_out] == ["503 from the provider"]
    assert errors == [] and results == [ANSWER] * (N - 1)
    assert model.script.calls == 2  # not one retry per waiter (the script has no third)


def _caught(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return exc


# -- LlamaIndex CachedLLM ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["stream_chat", "stream_complete"])
def test_cached_llm_concurrent_streams_call_once_and_hits_are_booked(method: str) -> None:
    inner = ScriptedLLM(script=script())
    llm = CachedLLM(llm=inner, semantic_cache=engine_cache())
    engine = CostEngine(embedder=FakeEmbedder())
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]

    def read() -> list[str]:
        gen = llm.stream_chat(msgs) if method == "stream_chat" else llm.stream_complete(QUESTION)
        return [c.delta or "" for c in gen]

    handler = CostEventHandler(engine).attach()
    try:
        results, errors = in_threads(N, read)
    finally:
        handler.detach()
    assert errors == [] and inner.script.calls == 1
    assert ["".join(r) for r in results] == [ANSWER] * N
    assert all(len(r) > 2 for r in results)
    outcomes = sorted(r.outcome for r in engine.ledger.records())
    assert outcomes == ["cache_exact"] * (N - 1) + ["model"]


@pytest.mark.parametrize("method", ["astream_chat", "astream_complete"])
async def test_cached_llm_concurrent_astreams_call_once(method: str) -> None:
    inner = ScriptedLLM(script=script())
    llm = CachedLLM(llm=inner, semantic_cache=engine_cache())
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]

    async def read() -> str:
        gen = await (
            llm.astream_chat(msgs) if method == "astream_chat" else llm.astream_complete(QUESTION)
        )
        return "".join([c.delta or "" async for c in gen])

    results = await asyncio.gather(*(read() for _ in range(N)))
    assert inner.script.calls == 1 and results == [ANSWER] * N


def test_cached_llm_an_abandoned_leader_stream_does_not_leave_waiters_hanging() -> None:
    inner = ScriptedLLM(
        script=script(
            ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini"),
            ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini"),
        )
    )
    llm = CachedLLM(llm=inner, semantic_cache=engine_cache(inflight_wait_s=30.0))
    msgs = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    leading = threading.Event()
    go_on = threading.Event()

    def stop_after_one_chunk() -> None:
        gen = llm.stream_chat(msgs)  # leads: the model is called now
        leading.set()
        next(gen)
        go_on.wait(5)
        gen.close()  # the caller stopped reading

    leader = threading.Thread(target=stop_after_one_chunk)
    leader.start()
    leading.wait()
    started = time.monotonic()
    threading.Timer(0.1, go_on.set).start()
    results, errors = in_threads(
        N - 1, lambda: "".join(c.delta or "" for c in llm.stream_chat(msgs))
    )
    leader.join()
    assert errors == [] and results == [ANSWER] * (N - 1)
    assert inner.script.calls == 2  # one waiter led after the abandoned stream
    assert time.monotonic() - started < 5  # not the 30 s wait


# -- cached(...) Runnables ------------------------------------------------------------------
class CountingStream:
    """A slow streaming Runnable body that counts its runs."""

    def __init__(self, chunks: list[Any]) -> None:
        self.chunks = chunks
        self.calls = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def sync(self, q: str) -> Iterator[Any]:
        self._count()
        for chunk in self.chunks:
            time.sleep(0.03)
            yield chunk

    async def asynchronous(self, q: str) -> AsyncIterator[Any]:
        self._count()
        for chunk in self.chunks:
            await asyncio.sleep(0.03)
            yield chunk


@pytest.mark.parametrize("chunks", [["Use ", "the ", "link."], [{"n": 1}, {"n": 2}]])
def test_cached_runnable_concurrent_streams_run_it_once(chunks: list[Any]) -> None:
    # Chunks that add up are shared as the output; dicts (no +) as the sequence.
    body = CountingStream(chunks)
    wrapped = cached(RunnableLambda(body.sync), cache=engine_cache(), name="search")
    results, errors = in_threads(N, lambda: list(wrapped.stream("q")))
    assert errors == [] and body.calls == 1
    expected = ["Use the link."] if isinstance(chunks[0], str) else chunks
    assert sorted(map(str, results)) == sorted([str(chunks)] + [str(expected)] * (N - 1))
    stats = wrapped.component.stats()  # type: ignore[attr-defined]
    assert (stats.misses, stats.exact_hits) == (1, N - 1)


@pytest.mark.parametrize("chunks", [["Use ", "the ", "link."], [{"n": 1}, {"n": 2}]])
async def test_cached_runnable_concurrent_astreams_run_it_once(chunks: list[Any]) -> None:
    body = CountingStream(chunks)
    wrapped = cached(
        RunnableLambda(body.sync, afunc=body.asynchronous), cache=engine_cache(), name="search"
    )

    async def read() -> list[Any]:
        return [c async for c in wrapped.astream("q")]

    results = await asyncio.gather(*(read() for _ in range(N)))
    assert body.calls == 1
    expected = ["Use the link."] if isinstance(chunks[0], str) else chunks
    assert sorted(map(str, results)) == sorted([str(chunks)] + [str(expected)] * (N - 1))
    stats = wrapped.component.stats()  # type: ignore[attr-defined]
    assert (stats.misses, stats.exact_hits) == (1, N - 1)


def test_cached_runnable_a_failing_leader_stream_lets_one_waiter_retry() -> None:
    calls = 0
    lock = threading.Lock()

    def body(q: str) -> Iterator[str]:
        nonlocal calls
        with lock:
            calls += 1
            n = calls
        time.sleep(0.05)
        yield "Use "
        if n == 1:
            raise RuntimeError("search backend down")
        yield "the link."

    wrapped = cached(RunnableLambda(body), cache=engine_cache(), name="search")
    results, errors = in_threads(N, lambda: list(wrapped.stream("q")))
    assert [str(e) for e in errors] == ["search backend down"]
    assert calls == 2
    assert sorted(map(str, results)) == sorted(
        [str(["Use ", "the link."])] + [str(["Use the link."])] * (N - 2)
    )


async def test_an_ainvoke_during_its_own_astream_does_not_wait_on_itself() -> None:
    # langchain-core runs ainvoke's generation in tasks of its own: they must
    # see that the task reading the stream leads its flight, as a thread does.
    answer = ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini")
    model = ScriptedChatModel(script=script(answer, answer, latency_s=0.0))
    llm = CachedChatModel(model=model, semantic_cache=engine_cache(inflight_wait_s=5.0))
    started = time.monotonic()
    stream = llm.astream(QUESTION)
    first = await stream.__anext__()
    again = await llm.ainvoke(QUESTION)
    rest = [chunk async for chunk in stream]
    assert time.monotonic() - started < 2.0
    assert again.content == ANSWER
    assert "".join(str(c.content) for c in [first, *rest]) == ANSWER


def test_an_invoke_during_its_own_stream_does_not_wait_on_itself() -> None:
    answer = ScriptedResponse(ANSWER, USAGE, model="gpt-4o-mini")
    model = ScriptedChatModel(script=script(answer, answer, latency_s=0.0))
    llm = CachedChatModel(model=model, semantic_cache=engine_cache(inflight_wait_s=5.0))
    started = time.monotonic()
    stream = llm.stream(QUESTION)
    first = next(stream)
    again = llm.invoke(QUESTION)
    rest = list(stream)
    assert time.monotonic() - started < 2.0
    assert again.content == ANSWER
    assert "".join(str(c.content) for c in [first, *rest]) == ANSWER
