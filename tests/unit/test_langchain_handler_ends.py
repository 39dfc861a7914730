"""CostCallbackHandler: runs that end without an end event, and answers in other shapes.

A cancelled ``ainvoke`` (no event at all), a stream the caller stops reading
(an error event), a stream whose merged answer garbles the model name, and
usage reported only in the provider's own shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from costopt_core import Budget, CostEngine
from costopt_core.testing import FakeEmbedder
from langchain_costopt import CostCallbackHandler

M = Decimal(1_000_000)
# gpt-4o-mini: $0.15 in, $0.075 cached read, $0.60 out per Mtok
MINI_1000_100 = (1000 * Decimal("0.15") + 100 * Decimal("0.60")) / M
MINI_CACHED = (2000 * Decimal("0.15") + 8000 * Decimal("0.075") + 500 * Decimal("0.60")) / M


class SpyEngine(CostEngine):
    """An engine that notes the budget holds released (and by which call)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(embedder=FakeEmbedder(), **kwargs)
        self.released: list[tuple[str | None, str]] = []
        self.checked: list[str | None] = []

    def check_budget(self, tenant: Any = None, estimate_usd: Any = None, *, call_id: Any = None):
        self.checked.append(call_id)
        return super().check_budget(tenant, estimate_usd, call_id=call_id)

    def release_budget(self, tenant: str | None, call_id: str) -> None:
        self.released.append((tenant, call_id))
        super().release_budget(tenant, call_id)


def budgeted() -> SpyEngine:
    # A warn budget: every call is estimated and held, none refused.
    return SpyEngine(budgets=[Budget(limit_usd=Decimal(100), tenant="acme", policy="warn")])


class FixedModel(BaseChatModel):
    """Answers with exactly the message / chunks given, after ``latency_s``."""

    message: Any = None
    chunks: Any = None
    model_name: str = "gpt-4o-mini"
    latency_s: float = 0.0
    llm_output: Any = None

    @property
    def _llm_type(self) -> str:
        return "fixed"

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = self.model_name
        return params

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=self.message.model_copy(deep=True))],
            llm_output=self.llm_output,
        )

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any
    ) -> ChatResult:
        await asyncio.sleep(self.latency_s)
        return self._generate(messages, stop)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        for c in self.chunks:
            chunk = ChatGenerationChunk(message=c.model_copy(deep=True))
            if run_manager:
                run_manager.on_llm_new_token(str(c.content), chunk=chunk)
            yield chunk

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for c in self.chunks:
            await asyncio.sleep(self.latency_s)
            chunk = ChatGenerationChunk(message=c.model_copy(deep=True))
            if run_manager:
                await run_manager.on_llm_new_token(str(c.content), chunk=chunk)
            yield chunk


def answer(**kwargs: Any) -> AIMessage:
    return AIMessage(
        "ok",
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": "gpt-4o-mini"},
        **kwargs,
    )


ACME: Any = {"metadata": {"costopt_tenant": "acme"}}


# -- 1. a cancelled call releases its budget hold -----------------------------------
async def test_an_ainvoke_cancelled_by_wait_for_releases_its_hold_and_is_forgotten() -> None:
    engine = budgeted()
    h = CostCallbackHandler(engine)
    m = FixedModel(message=answer(), latency_s=5).bind(max_tokens=200)
    for _ in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(m.ainvoke("hello", config={**ACME, "callbacks": [h]}), 0.02)
    await asyncio.sleep(0)
    assert len(engine.checked) == 3  # each call was held ...
    assert sorted(engine.released) == sorted(("acme", c) for c in engine.checked)  # ... and let go
    assert h._runs == {} and len(h._tasks) == 0
    assert engine.ledger.totals().calls == 0  # a call that never answered is not recorded


async def test_a_cancelled_task_releases_the_holds_of_its_calls() -> None:
    engine = budgeted()
    h = CostCallbackHandler(engine)
    m = FixedModel(message=answer(), latency_s=5)
    task = asyncio.create_task(m.ainvoke("hello", config={**ACME, "callbacks": [h]}))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.released == [("acme", engine.checked[0])]
    assert h._runs == {}


async def test_a_call_whose_task_swallowed_the_timeout_is_released_when_the_task_ends() -> None:
    engine = budgeted()
    h = CostCallbackHandler(engine)
    m = FixedModel(message=answer(), latency_s=5)

    async def worker() -> str:
        try:
            async with asyncio.timeout(0.02):  # cancels this task, then carries on
                await m.ainvoke("hello", config={**ACME, "callbacks": [h]})
        except TimeoutError:
            pass
        return "done"

    assert await asyncio.create_task(worker()) == "done"
    await asyncio.sleep(0)
    assert engine.released == [("acme", engine.checked[0])]
    assert h._runs == {}


async def test_calls_that_end_are_recorded_and_not_released_when_their_task_ends() -> None:
    engine = budgeted()
    h = CostCallbackHandler(engine)
    m = FixedModel(message=answer())

    async def two_calls() -> None:
        await m.ainvoke("a", config={**ACME, "callbacks": [h]})
        await m.ainvoke("b", config={**ACME, "callbacks": [h]})

    await asyncio.create_task(two_calls())
    await asyncio.sleep(0)
    assert engine.ledger.totals().calls == 2
    assert engine.ledger.totals().cost_usd == 2 * MINI_1000_100
    assert engine.released == []
    assert h._runs == {} and len(h._tasks) == 0


async def test_a_stream_read_on_in_another_task_is_still_recorded() -> None:
    # The task that awaited the first chunk ends with the run open: the stream
    # goes on, and is recorded when it ends.
    engine = budgeted()
    h = CostCallbackHandler(engine)
    chunks = [
        AIMessageChunk("Hel"),
        AIMessageChunk("lo"),
        AIMessageChunk(
            "",
            usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
            response_metadata={"model_name": "gpt-4o-mini"},
            chunk_position="last",
        ),
    ]
    stream = FixedModel(chunks=chunks).astream("hi", config={**ACME, "callbacks": [h]})
    first = await asyncio.create_task(anext(stream))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    rest = [c async for c in stream]
    assert first.content + "".join(str(c.content) for c in rest) == "Hello"
    [rec] = engine.ledger.records()
    assert rec.cost_usd == MINI_1000_100
    assert engine.released == []


def test_a_failed_call_releases_its_hold_without_a_budget_store() -> None:
    engine = budgeted()
    assert engine.ledger.budget_store is None
    h = CostCallbackHandler(engine)
    m = FixedModel(message=None)  # _generate fails: None has no model_copy
    with pytest.raises(AttributeError):
        m.invoke("hello", config={**ACME, "callbacks": [h]})
    assert engine.released == [("acme", engine.checked[0])]
    assert h._runs == {}


# -- 2. a stream whose chunks all name the model ------------------------------------
@pytest.mark.parametrize(
    ("named", "answered", "expected"),
    [
        ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"),  # merged: "gpt-4o-minigpt-4o-mini..."
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
    ],
)
@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_stream_naming_the_model_in_every_chunk_is_priced(
    named: str, answered: str, expected: str, how: str
) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    h = CostCallbackHandler(engine)
    chunks = [
        AIMessageChunk("Hel", response_metadata={"model_name": answered}),
        AIMessageChunk("lo", response_metadata={"model_name": answered}),
        AIMessageChunk(
            "",
            usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
            response_metadata={"model_name": answered},
            chunk_position="last",
        ),
    ]
    m = FixedModel(chunks=chunks, model_name=named)
    if how == "stream":
        list(m.stream("hi", config={"callbacks": [h]}))
    else:
        [c async for c in m.astream("hi", config={"callbacks": [h]})]
    [rec] = engine.ledger.records()
    assert rec.model == expected
    assert rec.cost_usd == MINI_1000_100


def test_an_answer_naming_another_unpriced_model_stays_unpriced() -> None:
    # A proxy answering under another name is not priced as the model asked for.
    engine = CostEngine(embedder=FakeEmbedder())
    msg = answer()
    msg.response_metadata["model_name"] = "acme-llm-7b"
    with pytest.warns(UserWarning, match="acme-llm-7b"):
        FixedModel(message=msg).invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    [rec] = engine.ledger.records()
    assert (rec.model, rec.cost_usd) == ("acme-llm-7b", None)


# -- 3. usage only in the provider's own shape --------------------------------------
OPENAI_USAGE = {
    "prompt_tokens": 10000,
    "completion_tokens": 500,
    "total_tokens": 10500,
    "prompt_tokens_details": {"cached_tokens": 8000},
}


def test_openai_token_usage_in_response_metadata_is_read() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    msg = AIMessage(
        "x", response_metadata={"model_name": "gpt-4o-mini", "token_usage": OPENAI_USAGE}
    )
    FixedModel(message=msg).invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    [rec] = engine.ledger.records()
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (10000, 500)
    assert rec.usage.cache_read_tokens == 8000
    assert rec.cost_usd == MINI_CACHED


def test_openai_token_usage_in_llm_output_is_read() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    msg = AIMessage("x", response_metadata={"model_name": "gpt-4o-mini"})
    m = FixedModel(
        message=msg, llm_output={"token_usage": OPENAI_USAGE, "model_name": "gpt-4o-mini"}
    )
    m.invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    [rec] = engine.ledger.records()
    assert rec.usage.cache_read_tokens == 8000
    assert rec.cost_usd == MINI_CACHED


def test_usage_metadata_wins_over_token_usage() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    msg = answer()
    msg.response_metadata["token_usage"] = OPENAI_USAGE
    FixedModel(message=msg).invoke("hi", config={"callbacks": [CostCallbackHandler(engine)]})
    assert engine.ledger.records()[0].cost_usd == MINI_1000_100


# -- 4. a stream the caller stops reading -------------------------------------------
GPT4O_CHUNKS = [
    AIMessageChunk("Hel", response_metadata={"model_name": "gpt-4o"}),
    AIMessageChunk("lo"),
    AIMessageChunk(
        "",
        usage_metadata={"input_tokens": 50000, "output_tokens": 100, "total_tokens": 50100},
        chunk_position="last",
    ),
]


def test_a_stream_closed_early_is_recorded_unpriced() -> None:
    engine = budgeted()
    h = CostCallbackHandler(engine)
    stream = FixedModel(chunks=GPT4O_CHUNKS, model_name="gpt-4o").stream(
        "long prompt", config={**ACME, "callbacks": [h]}
    )
    assert next(stream).content == "Hel"
    stream.close()
    [rec] = engine.ledger.records()
    assert (rec.model, rec.outcome, rec.tenant) == ("gpt-4o", "model", "acme")
    assert rec.usage.input_tokens is None and rec.cost_usd is None  # never $0
    assert engine.ledger.totals().unpriced_calls == 1
    assert engine.released == []  # the record settles its hold
    assert h._runs == {}


def test_a_stream_closed_after_its_usage_is_priced_from_it() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    chunks = [GPT4O_CHUNKS[2], *GPT4O_CHUNKS[:2]]  # usage first (as Anthropic sends input)
    stream = FixedModel(chunks=chunks, model_name="gpt-4o").stream(
        "long prompt", config={"callbacks": [CostCallbackHandler(engine)]}
    )
    next(stream)
    next(stream)
    stream.close()
    [rec] = engine.ledger.records()
    assert rec.usage.input_tokens == 50000
    assert rec.cost_usd == (50000 * Decimal("2.5") + 100 * Decimal(10)) / M


async def test_an_astream_closed_or_cancelled_is_recorded() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    h = CostCallbackHandler(engine)
    m = FixedModel(chunks=GPT4O_CHUNKS, model_name="gpt-4o")
    stream = m.astream("long prompt", config={"callbacks": [h]})
    await anext(stream)  # type: ignore[arg-type]
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.ledger.totals().calls == 1

    slow = FixedModel(chunks=GPT4O_CHUNKS, model_name="gpt-4o", latency_s=5)

    async def read() -> None:
        async for _ in slow.astream("long prompt", config={"callbacks": [h]}):
            pass

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read(), 0.02)
    await asyncio.sleep(0)
    t = engine.ledger.totals()
    assert (t.calls, t.unpriced_calls) == (2, 2)
    assert {r.model for r in engine.ledger.records()} == {"gpt-4o"}
    assert h._runs == {}
