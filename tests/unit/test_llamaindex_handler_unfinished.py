"""CostEventHandler: a stream that does not end is still recorded, exactly once.

The provider bills the prompt (and what it streamed) of a stream the caller
stops reading (``break``, ``close()``, cancellation): it is recorded with the
usage of its last item read if that reports any, else with an unknown usage
(unpriced, never $0), outcome ``model``. A costopt router records its own
unfinished streams; a costopt cache's replay called no model, and is recorded
as the hit it was (at no cost), as LangChain records one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

from costopt_core import Budget, CostEngine, Usage
from costopt_core.cache import SemanticCache
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from llamaindex_costopt import CachedLLM, CostEventHandler, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import CheapFirst
from tests.unit import test_llamaindex_handler as _base
from tests.unit.test_llamaindex_router_review import _Store

# The handler tests' fixtures: an attached handler, and the root dispatcher left as found.
handler = _base.handler
root_handlers_restored = _base.root_handlers_restored

MESSAGES = [ChatMessage(role="user", content="Capital of France?")]
TEXT = "Paris is the capital of France."
USAGE = Usage(1000, 200)


def scripted(model: str = "gpt-4o-mini") -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(TEXT, USAGE, model=model)], cycle=True))


async def read_one(llm: Any, how: str) -> Any:
    """Open a stream, read its first item, then stop reading it (close / aclose)."""
    if how.startswith("a"):
        gen = await (llm.astream_chat(MESSAGES) if "chat" in how else llm.astream_complete("q"))
        first = await gen.__anext__()
        await gen.aclose()
        # The generators it wraps are closed by the loop's finalizer, one a tick.
        for _ in range(5):
            await asyncio.sleep(0)
        return first
    gen = llm.stream_chat(MESSAGES) if "chat" in how else llm.stream_complete("q")
    first = next(gen)
    gen.close()
    return first


def rows(engine: CostEngine) -> list[tuple[Any, ...]]:
    return [(r.outcome, r.model, r.usage, r.cost_usd, r.framework) for r in engine.ledger.records()]


HOWS = ["stream_chat", "stream_complete", "astream_chat", "astream_complete"]


@pytest.mark.parametrize("how", HOWS)
async def test_a_stream_the_caller_stops_reading_is_recorded_once_unpriced(
    engine: CostEngine, handler: CostEventHandler, how: str
) -> None:
    # The scripted provider reports usage on its last item only, as providers do:
    # the first item names the model and nothing else.
    first = await read_one(scripted(), how)
    assert first.delta == "Paris"
    assert rows(engine) == [("model", "gpt-4o-mini", Usage(), None, "llamaindex")]
    assert engine.ledger.totals().unpriced_calls == 1
    [rec] = engine.ledger.records()
    assert rec.call_id.startswith("ScriptedLLM.")  # the stream's own span
    assert handler.pending == 0 and handler.errors == 0
    # and a stream read to its end is recorded as before, with its usage
    list(scripted().stream_chat(MESSAGES))
    assert [r.usage for r in engine.ledger.records()][1:] == [
        Usage(1000, 200, 0, 0, 0, None),
    ]


class Counting(CustomLLM):
    """Streams items that each report the usage so far (Gemini sends it on every chunk)."""

    fail_after: int | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Iterator[CompletionResponse]:
        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for i in range(1, 4):
                if self.fail_after is not None and i > self.fail_after:
                    raise ConnectionError("connection reset")
                text += f"w{i} "
                usage = {"prompt_tokens": 1000, "completion_tokens": 10 * i}
                raw = {"model": "gpt-4o-mini", "usage": usage}
                yield CompletionResponse(text=text, delta=f"w{i} ", raw=raw)

        return gen()


@pytest.mark.parametrize("how", ["stream_chat", "stream_complete"])
def test_the_last_item_reports_the_usage_of_a_stopped_stream(
    engine: CostEngine, handler: CostEventHandler, how: str
) -> None:
    # stream_chat delegates to stream_complete: two nested streams of one answer,
    # the outer one closed first. One record, with the usage of the last item read.
    llm = Counting()
    gen: Any = llm.stream_chat(MESSAGES) if how == "stream_chat" else llm.stream_complete("q")
    next(gen)
    next(gen)
    gen.close()
    # 1000 in at $0.15 + 20 out at $0.60 per Mtok
    assert rows(engine) == [
        ("model", "gpt-4o-mini", Usage(1000, 20, 0, 0, 0, None), Decimal("0.000162"), "llamaindex")
    ]
    assert handler.pending == 0


@pytest.mark.parametrize("how", ["stream_chat", "stream_complete"])
def test_a_stream_failing_part_way_is_recorded_and_one_failing_first_is_not(
    engine: CostEngine, handler: CostEventHandler, how: str
) -> None:
    def read(llm: Counting) -> None:
        gen = llm.stream_chat(MESSAGES) if how == "stream_chat" else llm.stream_complete("q")
        with pytest.raises(ConnectionError):
            for _ in gen:
                pass

    read(Counting(fail_after=0))  # refused before its first item: not billed
    assert rows(engine) == []
    read(Counting(fail_after=1))  # one item streamed, then the connection dropped
    assert rows(engine) == [
        ("model", "gpt-4o-mini", Usage(1000, 10, 0, 0, 0, None), Decimal("0.000156"), "llamaindex")
    ]
    assert handler.pending == 0


class Waiting(Counting):
    """An async stream whose first item is slow to come (a long prompt, a busy provider)."""

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        async def gen() -> Any:
            await asyncio.sleep(5)
            yield CompletionResponse(text="late", delta="late")

        return gen()


async def test_a_stream_cancelled_before_its_first_item_is_recorded_unpriced(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    # The request was sent; the caller gave up waiting for the answer.
    async def consume() -> None:
        async for _ in await Waiting().astream_complete("q"):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rows(engine) == [("model", "gpt-4o-mini", Usage(), None, "llamaindex")]
    assert handler.pending == 0


def cache() -> SemanticCache:
    from tests.unit.test_llamaindex_cached_llm import LOOSE

    return SemanticCache(embedder=FakeEmbedder(dim=256), config=LOOSE)


@pytest.mark.parametrize("expose", [False, True])
def test_a_cached_llm_records_a_stopped_miss_once_and_a_stopped_replay_as_its_hit(
    engine: CostEngine, handler: CostEventHandler, expose: bool
) -> None:
    inner = scripted()
    llm = CachedLLM(llm=inner, semantic_cache=cache(), expose_cache_info=expose)
    list(llm.stream_chat(MESSAGES))  # stored (a miss read whole)
    assert len(engine.ledger) == 1
    gen = llm.stream_chat(MESSAGES)  # a replay of the stored answer: no model called
    next(gen)
    gen.close()
    # Recorded as the hit it was, at no cost, as LangChain records a stopped replay.
    assert inner.script.calls == 1
    assert [(r.outcome, r.cost_usd) for r in engine.ledger.records()][1:] == [
        ("cache_exact", Decimal(0))
    ]
    other = [ChatMessage(role="user", content="Something else entirely, about whales?")]
    gen = llm.stream_chat(other)  # a miss: the wrapped LLM is called
    next(gen)
    gen.close()
    assert inner.script.calls == 2
    assert rows(engine)[2:] == [("model", "gpt-4o-mini", Usage(), None, "llamaindex")]
    assert handler.pending == 0


# -- a router's unfinished stream: the router records it, the handler does not ------
def router(**kw: Any) -> RouterLLM:
    return RouterLLM(
        tiers={"small": scripted("gpt-4o-mini"), "frontier": scripted("gpt-4o")},
        classifier=CheapFirst(),
        **kw,
    )


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("validate_streams", [True, False])
async def test_a_router_stream_stopped_is_recorded_once_in_every_ledger(
    how: str, validate_streams: bool
) -> None:
    # An application's handler and a track_costs block on another engine: each
    # ledger gets the call once (not the router's span, not its tier call, again).
    app, block = CostEngine(), CostEngine()
    handler = CostEventHandler(app).attach()
    try:
        with track_costs(block):
            await read_one(router(validate_streams=validate_streams), how)
    finally:
        handler.detach()
    usage = Usage(1000, 200, 0, 0, 0, None) if validate_streams else Usage()
    cost = Decimal("0.00027") if validate_streams else None  # read whole when held back
    for engine in (app, block):
        assert rows(engine) == [("model", "gpt-4o-mini", usage, cost, "llamaindex")]
        assert [r.tier for r in engine.ledger.records()] == ["small"]
    assert handler.pending == 0


@pytest.mark.parametrize("how", ["stream_chat", "astream_chat"])
async def test_a_router_stream_releases_its_hold_and_a_cached_router_records_once(
    how: str,
) -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("100"), policy="block")])
    store = _Store()
    engine.ledger.budget_store = store
    with track_costs(engine):
        await read_one(router(validate_streams=False), how)
    [(_, _, call_id)] = store.reserved
    assert call_id is not None and store.released == [call_id]
    assert len(engine.ledger) == 1
    # A CachedLLM in front of the router: the cache's span encloses the router's,
    # which records the stream; the cache's must not record it again.
    cached = CachedLLM(llm=router(validate_streams=False), semantic_cache=cache())
    with track_costs() as costs:
        await read_one(cached, how)
    assert rows(costs.engine) == [("model", "gpt-4o-mini", Usage(), None, "llamaindex")]
    assert costs.pending == 0
