"""Cost handlers review fixes: calls that end without their end event are settled.

LangChain: a budget refusal raised from one handler's start event leaves no
hold behind in any handler (nor for a many-prompt call's other prompts); a
streaming ``ainvoke`` whose task is cancelled after tokens flowed, and a
stream that fails part way, are recorded (billed) at the usage the chunks
reported. LlamaIndex: a stream read while other LLM calls are made in the same
context is still recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.llms import BaseLLM
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, Generation, LLMResult
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.callbacks import llm_chat_callback

from costopt_core import Budget, CostEngine
from costopt_core.errors import BudgetExceededError
from costopt_core.testing import (
    FakeEmbedder,
    Script,
    ScriptedResponse,
    usage_to_langchain,
    usage_to_openai,
)
from costopt_core.types import Usage
from langchain_costopt import CostCallbackHandler, track_costs
from langchain_costopt import callbacks as lc_callbacks
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM

M = Decimal(1_000_000)
# gpt-4o-mini: $0.15 in, $0.60 out per Mtok; gpt-4o: $2.50 in, $10 out.
MINI_2000_1 = (2000 * Decimal("0.15") + 1 * Decimal("0.60")) / M  # $0.0003006
GPT4O_5000_1 = (5000 * Decimal("2.5") + 1 * Decimal(10)) / M  # $0.01251
LONG = "word " * 1000  # about $0.0025 of gpt-4o input; with max_tokens=500, $0.00752


def block_engine(limit: str) -> CostEngine:
    return CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(limit), policy="block")]
    )


def held(engine: CostEngine) -> Decimal:
    return engine.ledger._held_all


@pytest.fixture(autouse=True)
def no_call_left_registered() -> Iterator[None]:
    """Every run a test started was ended or dropped in the cross-handler registry too."""
    yield
    assert lc_callbacks._RUN_HANDLERS == {} and lc_callbacks._CALL_RUNS == {}


# -- 1. a budget refusal leaves no hold in any handler ------------------------------------
@pytest.mark.parametrize("sync", [True, False], ids=["invoke", "ainvoke"])
async def test_a_refusal_by_a_track_costs_block_releases_the_app_handlers_hold(sync: bool) -> None:
    """The app's handler held the call's estimate before the block's handler refused
    it; no end event came, so the hold stayed and refused every later call."""
    app = block_engine("0.01")
    app_handler = CostCallbackHandler(app)
    model = ScriptedChatModel.from_texts(["ok"], model="gpt-4o")
    config: Any = {"callbacks": [app_handler]}

    async def call() -> None:
        if sync:
            model.invoke(LONG, config=config, max_tokens=500)
        else:
            await model.ainvoke(LONG, config=config, max_tokens=500)

    with track_costs() as block:
        block.engine.ledger.add_budget(Budget(limit_usd=Decimal("0.000001"), policy="block"))
        with pytest.raises(BudgetExceededError):
            await call()
    assert held(app) == 0 and held(block.engine) == 0
    assert app_handler._runs == {} and block._runs == {}
    assert app.ledger.totals().calls == 0
    # Each call fits the app's $0.01 budget on its own: all pass.
    for _ in range(3):
        await call()
    assert app.ledger.totals().calls == 3
    assert held(app) == 0


@pytest.mark.parametrize("sync", [True, False], ids=["generate", "agenerate"])
async def test_a_chat_generate_whose_second_prompt_is_refused_releases_the_first(
    sync: bool,
) -> None:
    engine = block_engine("0.01")
    handler = CostCallbackHandler(engine)
    model = ScriptedChatModel.from_texts(["ok"], model="gpt-4o")
    prompt: list[BaseMessage] = [HumanMessage(LONG)]
    with pytest.raises(BudgetExceededError):  # each held at $0.00752: the second is refused
        if sync:
            model.generate([prompt, prompt], callbacks=[handler], max_tokens=500)
        else:
            await model.agenerate([prompt, prompt], callbacks=[handler], max_tokens=500)
    await asyncio.sleep(0)
    assert held(engine) == 0 and handler._runs == {}
    assert engine.ledger.spent(None, "month") == 0
    # The budget is whole again: a call of the same size passes.
    model.invoke(prompt, config={"callbacks": [handler]}, max_tokens=500)
    assert [r.outcome for r in engine.ledger.records()] == ["model"]
    assert held(engine) == 0


class CompletionLLM(BaseLLM):
    """One request for all prompts (like langchain_openai.OpenAI)."""

    @property
    def _llm_type(self) -> str:
        return "fake-completion"

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
        return LLMResult(
            generations=[[Generation(text="ok")] for _ in prompts],
            llm_output={"token_usage": usage, "model_name": "gpt-4o-mini"},
        )

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "gpt-4o-mini"}


@pytest.mark.parametrize("sync", [True, False], ids=["batch", "abatch"])
async def test_a_completion_batch_refused_by_one_handler_leaves_no_run_in_the_other(
    sync: bool,
) -> None:
    """Under abatch the prompts start concurrently: the runs the other handler
    starts after the refusal are dropped too."""
    roomy = CostEngine(embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(1))])
    tight = block_engine("0.0004")  # about $0.00015 a prompt: two fit, not three
    first, second = CostCallbackHandler(roomy), CostCallbackHandler(tight)
    config: Any = {"callbacks": [first, second]}
    with pytest.raises(BudgetExceededError):
        if sync:
            CompletionLLM().batch([LONG] * 4, config=config, max_tokens=1000)
        else:
            await CompletionLLM().abatch([LONG] * 4, config=config, max_tokens=1000)
    await asyncio.sleep(0)
    assert first._runs == {} and second._runs == {}
    assert held(roomy) == 0 and held(tight) == 0
    assert first._batches == {} and first._batch_of == {}


# -- 2. a streaming ainvoke cancelled after tokens flowed is recorded ---------------------
class SlowStream(ScriptedChatModel):
    """Anthropic-like: the first chunk carries the input usage; then slow text."""

    usage_first: bool = True

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        usage = usage_to_langchain(Usage(input_tokens=5000, output_tokens=1))
        first = ChatGenerationChunk(
            message=AIMessageChunk(
                content="Hel",
                usage_metadata=usage if self.usage_first else None,
                response_metadata={"model_name": "gpt-4o"},
            )
        )
        if run_manager:
            await run_manager.on_llm_new_token("Hel", chunk=first)
        yield first
        for word in ["lo", " wor", "ld"]:
            await asyncio.sleep(0.05)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
            if run_manager:
                await run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk


async def cancel_soon(coro: Any) -> None:
    task = asyncio.create_task(coro)
    await asyncio.sleep(0.03)  # after the first chunk, before the second
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)


async def test_a_streaming_ainvoke_cancelled_mid_stream_is_recorded_at_its_usage() -> None:
    """ainvoke with streaming on (a LangGraph node under stream_mode="messages"):
    the task's cancellation dropped a call the provider billed."""
    engine = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(100), policy="warn")]
    )
    handler = CostCallbackHandler(engine)
    model = SlowStream(script=Script(["x"]), model_name="gpt-4o")
    await cancel_soon(model.ainvoke("hi", config={"callbacks": [handler]}, stream=True))
    [rec] = engine.ledger.records()
    assert (rec.model, rec.outcome) == ("gpt-4o", "model")
    assert rec.usage.input_tokens == 5000 and rec.cost_usd == GPT4O_5000_1
    assert held(engine) == 0  # the record settled the hold
    assert handler._runs == {} and handler._seen == {} and len(handler._tasks) == 0


async def test_a_streaming_ainvoke_cancelled_before_any_usage_is_recorded_unpriced() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    model = SlowStream(script=Script(["x"]), model_name="gpt-4o", usage_first=False)
    await cancel_soon(model.ainvoke("hi", config={"callbacks": [handler]}, stream=True))
    [rec] = engine.ledger.records()
    assert rec.model == "gpt-4o" and rec.cost_usd is None  # unknown, never $0
    assert handler._runs == {}


async def test_a_cancelled_ainvoke_that_streamed_nothing_is_still_only_released() -> None:
    engine = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(100), policy="warn")]
    )
    handler = CostCallbackHandler(engine)
    # Not streamed: _agenerate answers after its latency, and the task is cancelled first.
    slow = ScriptedChatModel(script=Script(["x"], latency_s=5), model_name="gpt-4o")
    await cancel_soon(slow.ainvoke("hi", config={"callbacks": [handler]}))
    assert engine.ledger.records() == [] and held(engine) == 0
    assert handler._runs == {}


# -- 3. a stream that fails part way is recorded -----------------------------------------
class FailingStream(ScriptedChatModel):
    """Sends its usage with the first chunk, then the connection drops."""

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        usage = usage_to_langchain(Usage(input_tokens=2000, output_tokens=1))
        first = ChatGenerationChunk(
            message=AIMessageChunk(
                content="Hel", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"}
            )
        )
        if run_manager:
            run_manager.on_llm_new_token("Hel", chunk=first)
        yield first
        yield ChatGenerationChunk(message=AIMessageChunk(content="lo"))
        raise ConnectionError("connection reset mid-stream")


@pytest.mark.parametrize("how", ["stream", "invoke(streaming)"])
def test_a_stream_that_fails_after_its_usage_is_recorded_at_it(how: str) -> None:
    """Recorded as the LlamaIndex handler records the same stream ($0.0003006)."""
    engine = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(100), policy="warn")]
    )
    handler = CostCallbackHandler(engine)
    model = FailingStream(script=Script(["x"]), callbacks=[handler])
    with pytest.raises(ConnectionError):
        if how == "stream":
            for _ in model.stream("hi"):
                pass
        else:
            model.invoke("hi", stream=True)
    [rec] = engine.ledger.records()
    assert (rec.model, rec.outcome, rec.cost_usd) == ("gpt-4o-mini", "model", MINI_2000_1)
    assert held(engine) == 0 and handler._runs == {} and handler._seen == {}


def test_a_call_that_fails_before_answering_is_still_not_recorded() -> None:
    engine = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(100), policy="warn")]
    )
    handler = CostCallbackHandler(engine)

    class Refused(ScriptedChatModel):
        def _stream(self, *a: Any, **kw: Any) -> Iterator[ChatGenerationChunk]:
            raise ConnectionError("refused")
            yield  # a generator

    with pytest.raises(ConnectionError):
        list(Refused(script=Script(["x"]), callbacks=[handler]).stream("hi"))
    assert engine.ledger.records() == [] and held(engine) == 0


def test_the_llamaindex_handler_records_the_same_failed_stream_alike() -> None:
    class LIFailing(ScriptedLLM):
        @llm_chat_callback()
        def stream_chat(self, messages: Any, **kw: Any) -> Any:
            def gen() -> Iterator[ChatResponse]:
                usage = usage_to_openai(Usage(input_tokens=2000, output_tokens=1))
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content="Hel"),
                    delta="Hel",
                    raw={"model": "gpt-4o-mini", "usage": usage},
                )
                raise ConnectionError("connection reset mid-stream")

            return gen()

    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostEventHandler(engine).attach()
    try:
        with pytest.raises(ConnectionError):
            for _ in LIFailing(script=Script(["x"])).stream_chat([ChatMessage(content="hi")]):
                pass
    finally:
        handler.detach()
    [rec] = engine.ledger.records()
    assert rec.cost_usd == MINI_2000_1


# -- 4. LlamaIndex: a stream read while other calls are made ------------------------------
@pytest.fixture
def li_engine() -> Iterator[CostEngine]:
    root = get_dispatcher()
    before = list(root.event_handlers)
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostEventHandler(engine).attach()
    try:
        yield engine
    finally:
        handler.detach()
        assert root.event_handlers == before


class NoUsage(ScriptedLLM):
    """An OpenAI stream without include_usage: no item reports usage."""

    def _raw(self, r: Any) -> dict[str, Any]:
        return {"model": r.model}


USAGE = Usage(1000, 200)
MINI_1000_200 = (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M


def stream_llm(usage: bool) -> ScriptedLLM:
    cls = ScriptedLLM if usage else NoUsage
    return cls(script=Script([ScriptedResponse("one two three four five", USAGE)]))


def helper() -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse("ok", USAGE)], cycle=True))


@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_a_stream_stopped_while_other_calls_are_made_is_recorded(
    li_engine: CostEngine, usage: bool
) -> None:
    """A per-item moderation call nested in the stream's span: the stream was
    skipped as if that call had recorded its answer."""
    llm, check = stream_llm(usage), helper()
    gen = llm.stream_chat([ChatMessage(content="hi")])
    for i, item in enumerate(gen):
        check.complete("moderate: " + (item.delta or ""))
        if i == 1:
            break
    gen.close()
    t = li_engine.ledger.totals()
    assert t.calls == llm.script.calls + check.script.calls == 3
    # The helper calls are priced; the stream, stopped before its last item
    # (where the scripted provider reports usage), is unknown, never $0.
    assert t.unpriced_calls == 1
    assert t.cost_usd == 2 * MINI_1000_200


@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_a_stream_read_whole_while_other_calls_are_made_is_recorded(
    li_engine: CostEngine, usage: bool
) -> None:
    llm, check = stream_llm(usage), helper()
    for item in llm.stream_chat([ChatMessage(content="hi")]):
        check.complete("moderate: " + (item.delta or ""))
    t = li_engine.ledger.totals()
    assert t.calls == llm.script.calls + check.script.calls
    assert check.script.calls > 1
    assert t.unpriced_calls == (0 if usage else 1)


def test_a_stream_stopped_while_a_cached_helper_is_served_is_recorded(
    li_engine: CostEngine,
) -> None:
    """A cache hit nested in the stream read as the stream's own (a replay, no model call)."""
    from costopt_core.cache import SemanticCache
    from llamaindex_costopt import CachedLLM

    cache = SemanticCache(embedder=FakeEmbedder(dim=256))
    check = CachedLLM(llm=helper(), semantic_cache=cache)
    check.complete("moderate this")  # stored: the helper's calls below are hits
    llm = stream_llm(True)
    gen = llm.stream_chat([ChatMessage(content="hi")])
    for i, _ in enumerate(gen):
        check.complete("moderate this")
        if i == 1:
            break
    gen.close()
    outcomes = sorted(r.outcome for r in li_engine.ledger.records())
    assert outcomes.count("model") == 2  # the first helper call, and the stream
    assert len(outcomes) == 4  # and the two hits


def test_a_helper_stream_opened_while_reading_another_is_recorded_when_stopped_after_it(
    li_engine: CostEngine,
) -> None:
    """The helper's stream nests in the one being read; that one stopped (and
    recorded) first, and the helper's was skipped as if it were its delegate."""
    llm, check = stream_llm(True), helper()
    gen = llm.stream_chat([ChatMessage(content="hi")])
    next(gen)
    side = check.stream_complete("moderate this")
    next(side)
    gen.close()
    side.close()
    t = li_engine.ledger.totals()
    assert t.calls == llm.script.calls + check.script.calls == 2
