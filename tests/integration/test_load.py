"""Load and concurrency: many requests at once through router + cache + cost handler.

1,000 concurrent ``ainvoke`` calls and 16 threads of ``invoke`` go through
``CachedChatModel(RouterChatModel(...))`` with a ``CostCallbackHandler``, over
tier models that sleep like a provider would. The checks are exact: no
deadlock (a timeout), one ledger record per answered request (cache hits
included) and no call id twice, totals to the last decimal place against
figures computed here from the scripted usage and the catalog's prices, one
model call per distinct (tenant, prompt) however many identical requests were
in flight, and every answer is its own tenant's. A long run then checks that
what is held in memory stays within the configured bounds while totals stay
exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from costopt_core import CostEngine, CostLedger, Usage
from costopt_core.cache import (
    CacheConfig,
    CachedResponse,
    CacheRequest,
    MemoryCacheBackend,
    SemanticCache,
)
from costopt_core.tenancy import current_tenant, tenant_scope
from costopt_core.testing import FakeEmbedder, Script, usage_to_langchain
from costopt_core.types import Message
from langchain_costopt import CostCallbackHandler
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel

pytestmark = pytest.mark.timeout(120)

SMALL, FRONTIER = "gpt-4o-mini", "gpt-4o"
# USD per million tokens, from prices.json (written out here so a catalog change
# that would silently shift every total makes this test fail instead).
PRICE = {SMALL: (Decimal("0.15"), Decimal("0.60")), FRONTIER: (Decimal("2.50"), Decimal("10.00"))}
TENANTS = ("acme", "globex", "initech", "umbrella")
MTOK = Decimal(1_000_000)


def usage_for(prompt: str) -> Usage:
    """Each prompt's own token usage, so a record priced with the wrong one shows."""
    return Usage(input_tokens=900 + 7 * len(prompt), output_tokens=30 + len(prompt) % 17)


def cost(model: str, u: Usage) -> Decimal:
    p_in, p_out = PRICE[model]
    return (Decimal(u.input_tokens or 0) * p_in + Decimal(u.output_tokens or 0) * p_out) / MTOK


class EchoTier(ScriptedChatModel):
    """A tier model: the script's latency and call count, an answer naming its request.

    The answer is ``"<tenant>|<prompt>"``, so an answer served to the wrong
    tenant or for the wrong prompt is visible, and calls are counted per
    (tenant, prompt) to prove in-flight de-duplication.
    """

    calls_by_key: Counter[tuple[str | None, str]]
    lock: Any

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        prompt = str(messages[-1].content)
        tenant = current_tenant()
        with self.lock:
            self.calls_by_key[(tenant, prompt)] += 1
        msg = AIMessage(
            content=f"{tenant}|{prompt}",
            usage_metadata=usage_to_langchain(usage_for(prompt)),  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.script.next()
        return self._answer(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self.script.anext()
        return self._answer(messages)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.script.next()
        yield from _chunks(self._answer(messages))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self.script.anext()
        for chunk in _chunks(self._answer(messages)):
            yield chunk


def _chunks(result: ChatResult) -> Iterator[ChatGenerationChunk]:
    """An answer as a provider streams it: the text in two parts, usage on the last."""
    msg = result.generations[0].message
    text = str(msg.content)
    cut = len(text) // 2
    yield ChatGenerationChunk(message=AIMessageChunk(content=text[:cut]))
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content=text[cut:],
            usage_metadata=msg.usage_metadata,
            response_metadata=msg.response_metadata,
        )
    )


def echo_tier(model: str, latency_s: float) -> EchoTier:
    return EchoTier(
        script=Script(["-"], model=model, latency_s=latency_s),
        model_name=model,
        calls_by_key=Counter(),
        lock=threading.Lock(),
    )


class ByKeyword:
    """Route classifier: prompts saying "prove" need the frontier, the rest do not."""

    name = "by-keyword"
    n_tiers = 2

    def predict(self, items: Any) -> Any:
        return np.array([[0.05 if "prove" in str(x) else 0.95, 1.0] for x in items])

    async def apredict(self, items: Any) -> Any:
        return self.predict(items)


@dataclass
class Stack:
    engine: CostEngine
    small: EchoTier
    frontier: EchoTier
    model: CachedChatModel
    handler: CostCallbackHandler


def build(latency_s: float) -> Stack:
    engine = CostEngine(embedder=FakeEmbedder(), ledger=CostLedger(max_records=None))
    small, frontier = echo_tier(SMALL, latency_s), echo_tier(FRONTIER, latency_s)
    router = RouterChatModel(
        tiers={"small": small, "frontier": frontier}, classifier=ByKeyword(), engine=engine
    )
    # Exact tier only: which distinct prompt a FakeEmbedder finds "similar" to
    # another is not the point here, and would make the expected counts fuzzy.
    cache = SemanticCache(embedder=FakeEmbedder(), config=CacheConfig(semantic=False))
    model = CachedChatModel(model=router, semantic_cache=cache)
    return Stack(engine, small, frontier, model, CostCallbackHandler(engine))


def workload(hot: int, repeats: int, unique: int) -> list[tuple[str, str]]:
    """(tenant, prompt) requests: per tenant ``hot`` prompts asked ``repeats`` times
    each, side by side (identical concurrent misses), plus ``unique`` one-off prompts
    spread over the tenants. Every tenant asks the same hot prompts: a cross-tenant
    hit would show as a missing model call and a wrong answer."""
    out: list[tuple[str, str]] = []
    for h in range(hot):
        verb = "prove" if h % 3 == 0 else "explain"
        for t in TENANTS:
            out += [(t, f"please {verb} hot topic number {h}")] * repeats
    for u in range(unique):
        verb = "prove" if u % 4 == 0 else "summarise"
        out.append((TENANTS[u % len(TENANTS)], f"{verb} the one-off question {u} in detail"))
    return out


def check(stack: Stack, requests: list[tuple[str, str]], answers: list[str]) -> None:
    # Every request got its own tenant's answer to its own prompt.
    assert answers == [f"{t}|{p}" for t, p in requests]

    distinct = sorted(set(requests))
    # One model call per distinct (tenant, prompt), on the tier the router picks.
    want_small = Counter(k for k in distinct if "prove" not in k[1])
    want_frontier = Counter(k for k in distinct if "prove" in k[1])
    assert stack.small.calls_by_key == want_small
    assert stack.frontier.calls_by_key == want_frontier
    assert stack.small.script.calls + stack.frontier.script.calls == len(distinct)

    ledger = stack.engine.ledger
    records = ledger.records()
    assert len(records) == len(ledger) == len(requests)
    assert len({r.call_id for r in records}) == len(requests)
    outcomes = Counter(r.outcome for r in records)
    assert outcomes == {"model": len(distinct), "cache_exact": len(requests) - len(distinct)}
    per_tenant_models = Counter(r.tenant for r in records if r.outcome == "model")
    assert per_tenant_models == Counter(t for t, _ in distinct)
    assert Counter(r.tenant for r in records) == Counter(t for t, _ in requests)

    # Totals by hand: a miss costs its tier's price; a hit is free; the baseline is
    # every request on the frontier model.
    want_cost = sum(
        (cost(FRONTIER if "prove" in p else SMALL, usage_for(p)) for _, p in distinct),
        Decimal(0),
    )
    want_baseline = sum((cost(FRONTIER, usage_for(p)) for _, p in requests), Decimal(0))
    totals = ledger.totals()
    assert totals.cost_usd == want_cost
    assert sum((r.cost_usd or Decimal(0) for r in records), Decimal(0)) == want_cost
    assert totals.baseline_cost_usd == want_baseline
    assert totals.requests == len(requests)
    assert totals.cache_hits_exact == len(requests) - len(distinct)
    assert totals.tokens["input_tokens"] == sum(usage_for(p).input_tokens or 0 for _, p in distinct)
    by_tenant = ledger.totals_by("tenant")
    for t in TENANTS:
        mine = [p for tt, p in distinct if tt == t]
        assert by_tenant[t].cost_usd == sum(
            (cost(FRONTIER if "prove" in p else SMALL, usage_for(p)) for p in mine), Decimal(0)
        )
    assert stack.handler.errors == 0 and not stack.handler._runs


def answer(stack: Stack, prompt: str, cfg: Any, *, streams: bool = False) -> str:
    """The stack's answer to ``prompt``: invoked, or streamed and joined."""
    if not streams:
        return str(stack.model.invoke(prompt, config=cfg).content)
    return "".join(str(c.content) for c in stack.model.stream(prompt, config=cfg))


async def aanswer(stack: Stack, prompt: str, cfg: Any, *, streams: bool = False) -> str:
    """Async :func:`answer`."""
    if not streams:
        return str((await stack.model.ainvoke(prompt, config=cfg)).content)
    return "".join([str(c.content) async for c in stack.model.astream(prompt, config=cfg)])


@pytest.mark.parametrize("streams", [False, True], ids=["ainvoke", "astream"])
async def test_1000_concurrent_requests_are_counted_once_and_exactly(streams: bool) -> None:
    stack = build(latency_s=0.05)
    requests = workload(hot=15, repeats=10, unique=400)
    assert len(requests) == 1000
    cfg = {"callbacks": [stack.handler]}

    async def one(tenant: str, prompt: str) -> str:
        with tenant_scope(tenant):
            return await aanswer(stack, prompt, cfg, streams=streams)

    answers = await asyncio.wait_for(asyncio.gather(*(one(t, p) for t, p in requests)), timeout=60)
    check(stack, requests, list(answers))
    # Every identical request that did not find the answer stored shared the one
    # call in flight instead of making its own (streams too).
    assert stack.model.semantic_cache.stats().inflight_shared > 0


@pytest.mark.parametrize("streams", [False, True], ids=["invoke", "stream"])
def test_16_threads_of_requests_are_counted_once_and_exactly(streams: bool) -> None:
    stack = build(latency_s=0.02)
    # 16 identical requests side by side: the 16 workers take them at once.
    requests = workload(hot=6, repeats=16, unique=120)
    cfg = {"callbacks": [stack.handler]}

    def one(req: tuple[str, str]) -> str:
        tenant, prompt = req
        with tenant_scope(tenant):
            return answer(stack, prompt, cfg, streams=streams)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, requests, timeout=60))
    check(stack, requests, answers)
    assert stack.model.semantic_cache.stats().inflight_shared > 0


def test_async_and_threads_at_once_on_one_stack() -> None:
    """Both paths share one cache and ledger: an event loop in one thread, workers in 8."""
    stack = build(latency_s=0.02)
    async_reqs = workload(hot=5, repeats=8, unique=40)
    thread_reqs = workload(hot=5, repeats=8, unique=40)
    cfg = {"callbacks": [stack.handler]}
    async_answers: list[str] = []

    async def run_async() -> None:
        async def one(tenant: str, prompt: str) -> str:
            with tenant_scope(tenant):
                return str((await stack.model.ainvoke(prompt, config=cfg)).content)

        async_answers.extend(
            await asyncio.wait_for(asyncio.gather(*(one(t, p) for t, p in async_reqs)), 60)
        )

    def one(req: tuple[str, str]) -> str:
        with tenant_scope(req[0]):
            return str(stack.model.invoke(req[1], config=cfg).content)

    loop_thread = threading.Thread(target=lambda: asyncio.run(run_async()))
    loop_thread.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        thread_answers = list(pool.map(one, thread_reqs, timeout=60))
    loop_thread.join(60)
    assert not loop_thread.is_alive()
    check(stack, async_reqs + thread_reqs, async_answers + thread_answers)


# -- a long run stays within its memory bounds ----------------------------------------


def test_ledger_long_run_holds_at_most_max_records_and_totals_stay_exact() -> None:
    ledger = CostLedger(max_records=1000)
    fixed = datetime(2026, 11, 21, 12, tzinfo=UTC)
    engine = CostEngine(ledger=ledger, embedder=FakeEmbedder(), clock=lambda: fixed)
    usages = [Usage(input_tokens=1000 + i, output_tokens=100 + i) for i in range(5)]
    per_thread, threads = 12_500, 4

    def record(k: int) -> None:
        for i in range(per_thread):
            engine.record_call(
                model=SMALL if i % 2 else FRONTIER,
                usage=usages[i % 5],
                tenant=TENANTS[k],
                framework="langchain",
            )

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(record, range(threads), timeout=60))

    n = per_thread * threads
    assert len(ledger) == n
    assert len(ledger.records()) == 1000  # the retention bound
    want = sum(
        (cost(SMALL if i % 2 else FRONTIER, usages[i % 5]) for i in range(per_thread)),
        Decimal(0),
    )
    totals = ledger.totals()
    assert totals.calls == n
    assert totals.cost_usd == want * threads
    assert totals.tokens["input_tokens"] == threads * sum(
        usages[i % 5].input_tokens or 0 for i in range(per_thread)
    )
    by_tenant = ledger.totals_by("tenant")
    assert {t: by_tenant[t].cost_usd for t in TENANTS} == dict.fromkeys(TENANTS, want)
    # The state that grows with traffic is bounded too: remembered call ids and
    # calls not yet folded into the totals.
    assert len(ledger._seen_ids) <= 65_536
    assert len(ledger._pending) < 4096


def test_memory_cache_long_run_stays_within_max_entries() -> None:
    backend = MemoryCacheBackend(max_entries=200, hnsw_threshold=64)
    cache = SemanticCache(backend, embedder=FakeEmbedder(dim=32))
    n = 6000
    for i in range(n):
        req = CacheRequest(
            messages=(Message("user", f"question {i} about topic {i % 37}"),),
            tenant=TENANTS[i % 4],
        )
        cache.store(req, CachedResponse(text=f"answer {i}"))
        if i % 500 == 499:
            assert backend.stats().entries <= 200
    stats = backend.stats()
    assert stats.entries == 200
    # What the bound keeps is usable: the newest entries are found, the oldest gone.
    last = CacheRequest(
        messages=(Message("user", f"question {n - 1} about topic {(n - 1) % 37}"),),
        tenant=TENANTS[(n - 1) % 4],
    )
    first = CacheRequest(messages=(Message("user", "question 0 about topic 0"),), tenant="acme")
    hit = cache.lookup(last)
    assert hit is not None and hit.response.text == f"answer {n - 1}"
    assert cache.lookup(first) is None or cache.lookup(first).tier == "semantic"  # type: ignore[union-attr]
    # The vector indexes shrink with the entries (no rows left behind by evictions).
    assert sum(len(ix) for ix in backend._scopes.values()) == 200
    assert all(ix._n <= 2 * 200 + 16 for ix in backend._scopes.values())
    assert stats.bytes < 200 * 4096


# -- the window between a miss and joining the call in flight -------------------------


class LateReader(MemoryCacheBackend):
    """A backend whose ``get`` in the thread named ``late`` returns its miss only after
    ``release`` is set: that thread missed, and is slow to act on it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def get(self, key: str, *, now: float) -> Any:
        entry = super().get(key, now=now)
        if threading.current_thread().name == "late":
            assert self.release.wait(10)
        return entry


def test_a_miss_that_joins_after_the_call_landed_does_not_call_again() -> None:
    """Thread ``late`` misses while the leader's call is in flight, and reaches the
    in-flight registry only after the leader stored its answer and left: it must
    take the stored answer, not make a second model call."""
    backend = LateReader()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=CacheConfig(semantic=False))
    req = CacheRequest(messages=(Message("user", "what is the refund policy?"),), tenant="acme")
    calls: list[str] = []
    in_call = threading.Event()
    finish_call = threading.Event()

    def call() -> CachedResponse:
        calls.append(threading.current_thread().name)
        in_call.set()
        finish_call.wait(10)
        return CachedResponse(text="30 days", model=SMALL)

    leader = threading.Thread(target=cache.get_or_call, args=(req, call), name="leader")
    leader.start()
    assert in_call.wait(10)
    results: list[Any] = []
    late = threading.Thread(
        target=lambda: results.append(cache.get_or_call(req, call)), name="late"
    )
    late.start()
    time.sleep(0.05)  # ``late`` has read its miss and waits in the backend
    finish_call.set()
    leader.join(10)
    backend.release.set()
    late.join(10)
    assert calls == ["leader"]
    [out] = results
    assert out.response.text == "30 days" and out.hit is not None


async def test_an_async_miss_that_joins_after_the_call_landed_does_not_call_again() -> None:
    """The same window on the async path, with a backend whose reads really await."""

    class SlowAsyncReads(MemoryCacheBackend):
        def __init__(self) -> None:
            super().__init__()
            self.slow_next = False

        async def aget(self, key: str, *, now: float) -> Any:
            entry = self.get(key, now=now)
            if self.slow_next:
                self.slow_next = False
                await asyncio.sleep(0.1)  # a network round trip; the leader lands meanwhile
            return entry

    backend = SlowAsyncReads()
    cache = SemanticCache(backend, embedder=FakeEmbedder(), config=CacheConfig(semantic=False))
    req = CacheRequest(messages=(Message("user", "what is the refund policy?"),), tenant="acme")
    calls = 0

    async def call() -> CachedResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return CachedResponse(text="30 days", model=SMALL)

    leader = asyncio.create_task(cache.aget_or_call(req, call))
    await asyncio.sleep(0.005)  # the leader is in its call
    backend.slow_next = True
    late = await cache.aget_or_call(req, call)
    await leader
    assert calls == 1
    assert late.response.text == "30 days" and late.hit is not None
