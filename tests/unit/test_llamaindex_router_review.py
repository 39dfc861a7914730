"""RouterLLM: validators read LlamaIndex answers; records agree with the cost handler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core.base.llms.types import LogProb, TextBlock, ToolCallBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index_instrumentation.dispatcher import instrument_tags
from pydantic import BaseModel, Field

from costopt_core import Budget, CostEngine, Usage, default_engine, tenant_scope
from costopt_core.cache import SemanticCache
from costopt_core.errors import BudgetExceededError, ConfigurationError
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Message
from llamaindex_costopt import CachedLLM, CostEventHandler, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import CheapFirst

U = Usage(1000, 100)
MSGS = [ChatMessage(role="user", content="What is the weather in Paris?")]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
HEDGE = "I'm not sure, sorry."


class Canned(CustomLLM):
    """Answers every chat with ``make()``: any response shape an integration produces."""

    make: Callable[[], ChatResponse]
    name: str = "gpt-4o-mini"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.name, is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.make()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        r = self.make()
        return CompletionResponse(
            text=r.message.content or "",
            raw=r.raw,
            logprobs=r.logprobs,
            additional_kwargs=r.additional_kwargs,
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield self.complete(prompt)


def scripted(*texts: str, model: str = "gpt-4o") -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(t, U, model=model) for t in texts]))


def reply(content: str = "", raw: Any = None, **kw: Any) -> ChatResponse:
    msg_kw = kw.pop("message_kwargs", {})
    return ChatResponse(
        message=ChatMessage(role="assistant", content=content, additional_kwargs=msg_kw),
        raw=raw if raw is not None else {"model": "gpt-4o-mini"},
        **kw,
    )


def router(cheap: Any, frontier: Any | None = None, **kw: Any) -> RouterLLM:
    return RouterLLM(
        tiers={"small": cheap, "frontier": frontier or scripted("Sunny.")},
        classifier=CheapFirst(),
        **kw,
    )


async def ask(r: RouterLLM, how: str, **kwargs: Any) -> Any:
    if how == "chat":
        return r.chat(MSGS, **kwargs).raw["costopt"]["route"]
    return (await r.achat(MSGS, **kwargs)).raw["costopt"]["route"]


def outcomes(route: dict[str, Any]) -> list[str]:
    return [a["outcome"] for a in route["attempts"]]


# -- 1. tool calls in any integration's shape ---------------------------------------
def _openai_sdk_call(args: str) -> Any:
    from openai.types.chat import ChatCompletionMessageToolCall

    return ChatCompletionMessageToolCall(
        id="call_1", type="function", function={"name": "get_weather", "arguments": args}
    )


def _tool_call_reply(shape: str, args: str = '{"city": "Paris"}') -> ChatResponse:
    if shape == "openai_dict":
        call: Any = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": args},
        }
        return reply(message_kwargs={"tool_calls": [call]})
    if shape == "openai_sdk":
        return reply(message_kwargs={"tool_calls": [_openai_sdk_call(args)]})
    if shape == "anthropic":
        call = {"id": "tu_1", "type": "tool_use", "name": "get_weather", "input": {"city": "P"}}
        return reply(message_kwargs={"tool_calls": [call]})
    block = ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs=args)
    return ChatResponse(
        message=ChatMessage(role="assistant", blocks=[TextBlock(text=""), block]),
        raw={"model": "gpt-4o-mini"},
    )


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("shape", ["openai_dict", "openai_sdk", "anthropic", "block"])
async def test_a_valid_tool_call_is_kept_whatever_its_shape(shape: str, how: str) -> None:
    r = router(Canned(make=lambda: _tool_call_reply(shape)), engine=CostEngine())
    route = await ask(r, how, tools=TOOLS)
    assert route["tier"] == "small" and outcomes(route) == ["kept"]


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("shape", ["openai_dict", "openai_sdk", "block"])
async def test_malformed_tool_arguments_still_escalate(shape: str, how: str) -> None:
    r = router(Canned(make=lambda: _tool_call_reply(shape, args="{city:")), engine=CostEngine())
    route = await ask(r, how, tools=TOOLS)
    assert outcomes(route) == ["escalated: invalid_tool_args", "kept"]


async def test_a_tool_that_was_not_offered_escalates() -> None:
    r = router(Canned(make=lambda: _tool_call_reply("openai_dict")), engine=CostEngine())
    other = [{"type": "function", "function": {"name": "get_time"}}]
    route = await ask(r, "chat", tools=other)
    assert outcomes(route) == ["escalated: unknown_tool", "kept"]


# -- 2. finish_reason and log-probabilities ------------------------------------------
TRUNCATED: dict[str, Callable[[], ChatResponse]] = {
    "openai_raw_dict": lambda: reply(
        "The answer is a long expla",
        raw={"model": "gpt-4o-mini", "choices": [{"finish_reason": "length"}]},
    ),
    "openai_raw_object": lambda: reply(
        "The answer is a long expla",
        raw=SimpleNamespace(model="gpt-4o-mini", choices=[SimpleNamespace(finish_reason="length")]),
    ),
    "anthropic_raw": lambda: reply(
        "The answer is a long expla", raw={"model": "gpt-4o-mini", "stop_reason": "max_tokens"}
    ),
    "local_raw": lambda: reply(
        "The answer is a long expla", raw={"model": "gpt-4o-mini", "finish_reason": "length"}
    ),
    "additional_kwargs": lambda: reply(
        "The answer is a long expla", additional_kwargs={"finish_reason": "length"}
    ),
}


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("where", list(TRUNCATED))
async def test_a_truncated_cheap_answer_escalates(where: str, how: str) -> None:
    r = router(Canned(make=TRUNCATED[where]), engine=CostEngine())
    route = await ask(r, how)
    assert route["tier"] == "frontier"
    assert outcomes(route) == ["escalated: truncated", "kept"]


@pytest.mark.parametrize("how", ["chat", "achat"])
async def test_an_unsure_answer_escalates_on_its_log_probabilities(how: str) -> None:
    def llama_index_logprobs() -> ChatResponse:
        tokens = [[LogProb(token="Sun", logprob=-3.0), LogProb(token="Rain", logprob=-3.5)]] * 3
        return reply("Sunny.", logprobs=tokens)

    def openai_raw() -> ChatResponse:
        content = [{"token": "Sun", "logprob": -2.5}, {"token": "ny", "logprob": -2.0}]
        return reply(
            "Sunny.", raw={"model": "gpt-4o-mini", "choices": [{"logprobs": {"content": content}}]}
        )

    for make in (llama_index_logprobs, openai_raw):
        route = await ask(router(Canned(make=make), engine=CostEngine()), how)
        assert outcomes(route) == ["escalated: low_logprob", "kept"]
    sure = [[LogProb(token="Sunny", logprob=-0.01)]] * 2
    route = await ask(router(Canned(make=lambda: reply("Sunny.", logprobs=sure))), how)
    assert outcomes(route) == ["kept"]


# -- 9, 10. answers a cache served are never priced as calls -------------------------
def test_cache_hits_of_a_cached_tier_are_recorded_as_hits() -> None:
    engine = CostEngine()
    small = CachedLLM(
        llm=scripted("four", model="gpt-4o-mini"),
        semantic_cache=SemanticCache(embedder=FakeEmbedder()),
    )
    r = router(small, scripted("4"), engine=engine)
    with track_costs(engine):
        r.chat(MSGS)
        hit = r.chat(MSGS)
        streamed = "".join(c.delta or "" for c in r.stream_chat(MSGS))
    assert hit.message.content == "four" and streamed == "four"
    recs = [(x.model, x.outcome, x.tier, x.cost_usd) for x in engine.ledger.records()]
    assert [x[:3] for x in recs] == [
        ("gpt-4o-mini", "model", "small"),
        ("gpt-4o-mini", "cache_exact", "small"),
        ("gpt-4o-mini", "cache_exact", "small"),
    ]
    assert recs[0][3] > 0 and recs[1][3] == recs[2][3] == 0


async def test_async_cache_hits_of_a_cached_tier_are_recorded_as_hits() -> None:
    engine = CostEngine()
    small = CachedLLM(
        llm=scripted("four", model="gpt-4o-mini"),
        semantic_cache=SemanticCache(embedder=FakeEmbedder()),
    )
    r = router(small, scripted("4"), engine=engine)
    with track_costs(engine):
        await r.achat(MSGS)
        await r.achat(MSGS)
    assert [x.outcome for x in engine.ledger.records()] == ["model", "cache_exact"]


@pytest.mark.parametrize("how", ["chat", "achat"])
async def test_a_rejected_answer_the_cache_served_is_not_recorded(how: str) -> None:
    engine = CostEngine()
    cheap = ScriptedLLM(
        script=Script([ScriptedResponse(HEDGE, U, model="gpt-4o-mini")], cycle=True)
    )
    small = CachedLLM(llm=cheap, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    big = ScriptedLLM(script=Script([ScriptedResponse("4", U, model="gpt-4o")], cycle=True))
    r = router(small, big, engine=engine)
    with track_costs(engine):
        for _ in range(2):
            await ask(r, how)
    recs = [(x.model, x.outcome) for x in engine.ledger.records()]
    assert recs == [
        ("gpt-4o-mini", "escalated"),
        ("gpt-4o", "model"),
        ("gpt-4o", "model"),
    ]
    assert cheap.script.calls == 1


# -- 11, 12. the handler's engine and tenant ------------------------------------------
@pytest.mark.parametrize("how", ["chat", "achat"])
async def test_escalations_go_to_the_attached_handlers_engine(how: str) -> None:
    engine = CostEngine()
    before = len(default_engine().ledger.records())
    handler = CostEventHandler(engine).attach()
    try:
        r = router(scripted(HEDGE, model="gpt-4o-mini"), scripted("4"))
        await ask(r, how)
        assert [(x.model, x.outcome) for x in engine.ledger.records()] == [
            ("gpt-4o-mini", "escalated"),
            ("gpt-4o", "model"),
        ]
        assert len(default_engine().ledger.records()) == before
        # Budgets are read there too: an exhausted block budget stops the next call.
        engine.ledger.add_budget(Budget(limit_usd=0.000001, policy="block"))
        with pytest.raises(BudgetExceededError):
            await ask(router(scripted("x"), scripted("y")), how)
    finally:
        handler.detach()


def test_a_handler_on_a_child_dispatcher_is_found_too() -> None:
    engine = CostEngine()
    handler = CostEventHandler(engine).attach(get_dispatcher("llama_index.core.llms.callbacks"))
    try:
        router(scripted(HEDGE, model="gpt-4o-mini"), scripted("4")).chat(MSGS)
    finally:
        handler.detach()
    assert [x.outcome for x in engine.ledger.records()] == ["escalated", "model"]


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("setting", ["track_costs", "router", "tags", "tenant_scope", "handler"])
async def test_escalation_and_answer_share_one_tenant(setting: str, how: str) -> None:
    engine = CostEngine()
    r = router(
        scripted(HEDGE, model="gpt-4o-mini"),
        scripted("4"),
        engine=engine,
        tenant="acme" if setting == "router" else None,
    )
    if setting == "handler":
        handler = CostEventHandler(engine, tenant="acme").attach()
        try:
            await ask(r, how)
        finally:
            handler.detach()
    else:
        with track_costs(engine, tenant="acme" if setting == "track_costs" else None):
            if setting == "tags":
                with instrument_tags({"costopt_tenant": "acme"}):
                    await ask(r, how)
            elif setting == "tenant_scope":
                with tenant_scope("acme"):
                    await ask(r, how)
            else:
                await ask(r, how)
    assert [(x.outcome, x.tenant) for x in engine.ledger.records()] == [
        ("escalated", "acme"),
        ("model", "acme"),
    ]


def test_a_call_tag_names_the_tenant_over_the_routers_own() -> None:
    engine = CostEngine()
    r = router(scripted(HEDGE, model="gpt-4o-mini"), scripted("4"), engine=engine, tenant="acme")
    with track_costs(engine), instrument_tags({"tenant_id": "globex"}):
        r.chat(MSGS)
    assert {x.tenant for x in engine.ledger.records()} == {"globex"}


# -- 13. an escalated attempt without usage is still recorded, unpriced ----------------
@pytest.mark.parametrize("how", ["chat", "achat"])
async def test_an_escalated_attempt_without_usage_is_recorded_unpriced(how: str) -> None:
    engine = CostEngine()
    r = router(Canned(make=lambda: reply(HEDGE, raw={"model": "gpt-4o-mini"})), engine=engine)
    with track_costs(engine):
        await ask(r, how)
    recs = engine.ledger.records()
    assert [(x.model, x.outcome, x.tier) for x in recs] == [
        ("gpt-4o-mini", "escalated", "small"),
        ("gpt-4o", "model", "frontier"),
    ]
    assert recs[0].cost_usd is None and recs[1].cost_usd is not None
    assert engine.ledger.totals().unpriced_calls == 1


def test_a_router_over_mismatched_classifier_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="scores 2 tiers, the router has 3"):
        RouterLLM(
            tiers={"a": scripted("x"), "b": scripted("y"), "c": scripted("z")},
            classifier=CheapFirst(),
        )


# -- a tier that is not an LLM fails at construction ------------------------------------
@pytest.mark.parametrize("bad", ["gpt-4o-mini", None, 42])
@pytest.mark.parametrize("as_list", [False, True])
def test_a_tier_that_is_not_an_llm_fails_at_construction(bad: Any, as_list: bool) -> None:
    # Accepted, it failed on every call and sent every request to the frontier.
    frontier = scripted("frontier answer")
    with pytest.raises(ConfigurationError) as err:
        RouterLLM(tiers={"small": [scripted("x"), bad] if as_list else bad, "frontier": frontier})
    message = str(err.value)
    assert "'small'" in message and repr(bad) in message and "LlamaIndex LLM" in message
    assert frontier.script.calls == 0


# -- function calling: agents take the router; each tier formats and reads its own ----
def _recording_multiply() -> tuple[Any, list[tuple[int, int]]]:
    from llama_index.core.tools import FunctionTool

    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    return FunctionTool.from_defaults(multiply), calls


def test_the_router_calls_functions_only_when_every_tier_does() -> None:
    from tests.fakes.llamaindex_tools import ToolLLM

    assert router(ToolLLM(), ToolLLM()).metadata.is_function_calling_model is True
    assert router(scripted("x"), ToolLLM()).metadata.is_function_calling_model is False
    assert router(ToolLLM(), scripted("x")).metadata.is_function_calling_model is False


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_function_agent_runs_on_the_router(streaming: bool) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    from tests.fakes.llamaindex_tools import ToolLLM

    small, big = ToolLLM(fmt="kwargs"), ToolLLM(fmt="blocks", model="gpt-4o")
    tool, calls = _recording_multiply()
    agent = FunctionAgent(tools=[tool], llm=router(small, big), streaming=streaming)
    out = await agent.run("What is 3 times 4?")
    assert str(out) == "The product is 12."
    # the cheap tier's call, read in its own format (its calls are not blocks)
    assert calls == [(3, 4)]
    assert small.seen_tools == [[{"format": "kwargs", "name": "multiply"}]] * 2
    assert big.calls == 0


async def test_a_bad_cheap_tool_call_escalates_and_the_answerer_reads_its_own() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    from tests.fakes.llamaindex_tools import ToolLLM

    # "three" is no integer: multiply's schema says so, and the call goes one tier up.
    small = ToolLLM(fmt="kwargs", args={"a": "three", "b": 4})
    big = ToolLLM(fmt="blocks", model="gpt-4o")
    tool, calls = _recording_multiply()
    engine = CostEngine()
    agent = FunctionAgent(tools=[tool], llm=router(small, big), streaming=False)
    with track_costs(engine):
        out = await agent.run("What is 3 times 4?")
    assert str(out) == "The product is 12."
    assert calls == [(3, 4)]  # the frontier's call, read from its blocks
    # each tier got the tools in its own format
    assert small.seen_tools == [[{"format": "kwargs", "name": "multiply"}]] * 2
    assert big.seen_tools == [[{"format": "blocks", "name": "multiply"}]]
    assert [(r.outcome, r.tier) for r in engine.ledger.records()] == [
        ("escalated", "small"),
        ("model", "frontier"),
        ("model", "small"),
    ]


def test_predict_and_call_through_the_router_calls_the_tool() -> None:
    from tests.fakes.llamaindex_tools import ToolLLM

    tool, calls = _recording_multiply()
    out = router(ToolLLM(fmt="kwargs"), ToolLLM(model="gpt-4o")).predict_and_call(
        [tool], user_msg="What is 3 times 4?"
    )
    assert out.response == "12" and calls == [(3, 4)]


# -- structured output: what the program cannot parse goes one tier up -----------------
class City(BaseModel):
    name: str
    country: str


PARIS = '{"name": "Paris", "country": "France"}'


async def _predict(r: RouterLLM, how: str) -> Any:
    from llama_index.core.prompts import PromptTemplate

    prompt = PromptTemplate("Which city is the Eiffel Tower in?")
    if how == "structured_predict":
        return r.structured_predict(City, prompt)
    if how == "astructured_predict":
        return await r.astructured_predict(City, prompt)
    question = [ChatMessage(role="user", content="Which city is the Eiffel Tower in?")]
    if how == "as_structured_llm":
        return r.as_structured_llm(City).chat(question).raw
    return (await r.as_structured_llm(City).achat(question)).raw


STRUCTURED_CALLS = ["structured_predict", "astructured_predict", "as_structured_llm", "achat"]


@pytest.mark.parametrize("how", STRUCTURED_CALLS)
@pytest.mark.parametrize(
    "cheap",
    [
        "Sure! The city is Paris, in France.",  # prose: no JSON to parse
        '{"name": "Paris"}',  # JSON that does not fit City
        '{"name": "Paris", "country": "France"',  # cut short
    ],
)
async def test_a_structured_answer_the_class_cannot_take_escalates(how: str, cheap: str) -> None:
    small, big = scripted(cheap, model="gpt-4o-mini"), scripted(PARIS)
    engine = CostEngine()
    with track_costs(engine):
        out = await _predict(router(small, big), how)
    assert out == City(name="Paris", country="France")
    assert (small.script.calls, big.script.calls) == (1, 1)
    assert [(r.outcome, r.tier) for r in engine.ledger.records()] == [
        ("escalated", "small"),
        ("model", "frontier"),
    ]


@pytest.mark.parametrize("how", STRUCTURED_CALLS)
@pytest.mark.parametrize("cheap", [PARIS, f"Here you go:\n```json\n{PARIS}\n```"])
async def test_a_structured_answer_the_class_takes_is_kept(how: str, cheap: str) -> None:
    # LlamaIndex's parser reads the JSON out of a fenced answer: no reason to re-ask.
    small, big = scripted(cheap, model="gpt-4o-mini"), scripted(PARIS)
    out = await _predict(router(small, big), how)
    assert out == City(name="Paris", country="France")
    assert (small.script.calls, big.script.calls) == (1, 0)


def test_a_stream_structured_predict_is_routed_as_structured() -> None:
    from llama_index.core.prompts import PromptTemplate

    seen: list[Any] = []
    r = router(scripted(PARIS, model="gpt-4o-mini"), scripted(PARIS))
    real = r.router.route

    def route(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("structured"))
        return real(*args, **kwargs)

    object.__setattr__(r.router, "route", route)
    parts = list(r.stream_structured_predict(City, PromptTemplate("Which city?")))
    assert parts and seen == [True]
    r.chat(MSGS)  # outside the stream: a plain request again
    assert seen == [True, False]


# -- budgets: an estimate of the call, every recording engine, holds ----------------------
BIG = Usage(100_000, 10_000)
LONG_PROMPT = [
    ChatMessage(role="user", content="Summarize: " + "lorem ipsum dolor sit amet " * 4000)
]


def _costly() -> tuple[ScriptedLLM, ScriptedLLM]:
    small = ScriptedLLM(
        script=Script([ScriptedResponse("a", BIG, model="gpt-4o-mini")], cycle=True)
    )
    big = ScriptedLLM(script=Script([ScriptedResponse("b", BIG, model="gpt-4o")], cycle=True))
    return small, big


def test_a_block_budget_refuses_the_call_its_estimate_would_take_over() -> None:
    # Each call costs $0.021 on gpt-4o-mini, but may reach gpt-4o (a fallback, an
    # escalation): estimated at $0.15003 there, a $0.19 budget takes two, not three
    # (priced at gpt-4o-mini, $0.009 each, it took eight).
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.19"), period="day", policy="block")])
    small, big = _costly()
    r = router(small, big, engine=engine)
    handler = CostEventHandler(engine).attach()
    try:
        r.chat(LONG_PROMPT, max_tokens=10_000)
        r.chat(LONG_PROMPT, max_tokens=10_000)
        with pytest.raises(BudgetExceededError) as err:
            r.chat(LONG_PROMPT, max_tokens=10_000)
    finally:
        handler.detach()
    # the estimate: the prompt plus the answer's cap, priced at the dearest reachable model
    prompt = [Message("user", LONG_PROMPT[0].content or "")]
    expected = engine.estimate("gpt-4o", prompt, max_output_tokens=10_000)
    assert expected == Decimal("0.15003")
    assert err.value.estimate_usd == expected
    assert small.script.calls == 2 and big.script.calls == 0  # refused before any call
    assert engine.ledger.spent(None, "day") == Decimal("0.042")


def test_the_answer_cap_is_read_from_the_tier_llm_when_the_call_names_none() -> None:
    from llamaindex_costopt.router import _max_output_tokens

    class Capped(ScriptedLLM):
        # As provider integrations keep them: a field, or in additional_kwargs.
        max_tokens: int | None = None
        additional_kwargs: dict[str, Any] = Field(default_factory=dict)

    script = Script(["x"])
    assert _max_output_tokens(Capped(script=script), {}) == 0
    assert _max_output_tokens(Capped(script=script, max_tokens=64), {}) == 64
    assert _max_output_tokens(Capped(script=script, max_tokens=64), {"max_tokens": 10}) == 10
    kwargs_cap = Capped(script=script, additional_kwargs={"max_completion_tokens": 32})
    assert _max_output_tokens(kwargs_cap, {}) == 32


def test_track_costs_keeps_the_default_engines_block_budget() -> None:
    from costopt_core import set_default_engine

    app = CostEngine(budgets=[Budget(limit_usd=Decimal("0.01"), period="day", policy="block")])
    previous = default_engine()
    set_default_engine(app)
    handler = CostEventHandler(app).attach()
    small, big = _costly()
    r = router(small, big)
    try:
        with track_costs():
            r.chat(MSGS)  # $0.021: the first call fits the empty budget
        with pytest.raises(BudgetExceededError), track_costs():
            r.chat(MSGS)
    finally:
        handler.detach()
        set_default_engine(previous)
    assert small.script.calls == 1
    assert app.ledger.spent(None, "day") == Decimal("0.021")


def test_every_engine_that_records_the_answer_has_its_budgets_read() -> None:
    # An application's handler records a track_costs block's calls on another
    # engine too: its block budget is read, and the escalation is in its ledger.
    app = CostEngine(budgets=[Budget(limit_usd=Decimal("0.01"), period="day", policy="block")])
    block = CostEngine()
    handler = CostEventHandler(app).attach()
    small = ScriptedLLM(script=Script([ScriptedResponse(HEDGE, BIG, model="gpt-4o-mini")]))
    big = ScriptedLLM(script=Script([ScriptedResponse("4", U, model="gpt-4o")]))
    r = router(small, big)
    try:
        with track_costs(block):
            r.chat(MSGS)
            with pytest.raises(BudgetExceededError):
                r.chat(MSGS)
    finally:
        handler.detach()
    for engine in (app, block):
        assert [(x.outcome, x.tier) for x in engine.ledger.records()] == [
            ("escalated", "small"),
            ("model", "frontier"),
        ]
    assert small.script.calls == 1


class _Store:
    """A shared budget store that notes what it is asked to hold and release."""

    def __init__(self) -> None:
        self.reserved: list[tuple[str | None, Decimal, str | None]] = []
        self.released: list[str] = []

    def reserve(
        self, budgets: Any, tenant: str | None, estimate: Decimal, call_id: str | None, now: Any
    ) -> list[Any]:
        from costopt_core.budgets import evaluate_budget

        self.reserved.append((tenant, estimate, call_id))
        return [evaluate_budget(b, Decimal(0), estimate) for b in budgets]

    def release(self, budgets: Any, tenant: str | None, call_id: str, now: Any) -> None:
        self.released.append(call_id)

    def spent(self, tenant: str | None, period: str, now: Any) -> Decimal:
        return Decimal(0)


def test_the_estimate_is_held_under_the_id_the_answer_is_recorded_under() -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("100"), policy="block")])
    store = _Store()
    engine.ledger.budget_store = store
    small, big = _costly()
    with track_costs(engine, tenant="acme"):
        router(small, big).chat(MSGS, max_tokens=100)
    [(tenant, estimate, call_id)] = store.reserved
    [answer] = engine.ledger.records()
    assert (tenant, call_id) == ("acme", answer.call_id)
    # gpt-4o: the frontier tier a fallback or an escalation may reach
    assert estimate == engine.estimate(
        "gpt-4o", [Message("user", MSGS[0].content or "")], max_output_tokens=100
    )
    assert store.released == []  # the answer's record releases it


def test_a_hold_is_released_when_no_tier_answers() -> None:
    from costopt_core.errors import RoutingError

    class Down(ScriptedLLM):
        @llm_chat_callback()
        def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
            raise ConnectionError("provider down")

    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("100"), policy="block")])
    store = _Store()
    engine.ledger.budget_store = store
    down = lambda: Down(script=Script(["x"], model="gpt-4o-mini"))  # noqa: E731
    with track_costs(engine), pytest.raises(RoutingError):
        router(down(), down()).chat(MSGS)
    [(_, _, call_id)] = store.reserved
    assert call_id is not None and store.released == [call_id]


@pytest.mark.parametrize("cheap_args", [None, {"name": "Paris"}])
def test_a_function_calling_structured_predict_escalates_what_the_class_cannot_take(
    cheap_args: dict[str, Any] | None,
) -> None:
    # Over function-calling tiers the program asks for a call of the class's tool:
    # prose (no call), or a call whose arguments miss a field, goes one tier up.
    from llama_index.core.prompts import PromptTemplate

    from tests.fakes.llamaindex_tools import ToolLLM

    def answering(args: dict[str, Any] | None) -> Callable[..., ChatMessage]:
        def respond(messages: Any, **kwargs: Any) -> ChatMessage:
            if args is None:
                return ChatMessage(role="assistant", content="Paris, in France.")
            name = kwargs["tools"][0]["name"]  # as ToolLLM formats a tool
            call = ToolCallBlock(tool_call_id="c1", tool_name=name, tool_kwargs=args)
            return ChatMessage(role="assistant", blocks=[TextBlock(text=""), call])

        return respond

    small, big = ToolLLM(), ToolLLM(model="gpt-4o")
    # the ToolLLMs, answering as the structured program's tool asks
    small._response_generator = answering(cheap_args)
    big._response_generator = answering({"name": "Paris", "country": "France"})
    r = router(small, big)
    assert r.metadata.is_function_calling_model
    engine = CostEngine()
    with track_costs(engine):
        out = r.structured_predict(City, PromptTemplate("Which city is the Eiffel Tower in?"))
    assert out == City(name="Paris", country="France")
    assert [(x.outcome, x.tier) for x in engine.ledger.records()] == [
        ("escalated", "small"),
        ("model", "frontier"),
    ]


@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat"])
@pytest.mark.parametrize("failure", ["every tier down", "interrupted"])
async def test_a_hold_is_released_when_no_answer_comes(how: str, failure: str) -> None:
    # One call loop serves every entry point: each releases its hold when every
    # tier fails or the call is interrupted (a stream, while it opens), since no
    # answer will be recorded to release it.
    from costopt_core.errors import RoutingError

    down = failure == "every tier down"

    class Failing(ScriptedLLM):
        def _fail(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("provider down") if down else KeyboardInterrupt

        async def _afail(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("provider down") if down else KeyboardInterrupt

        chat = stream_chat = _fail  # type: ignore[assignment]
        achat = astream_chat = _afail  # type: ignore[assignment]

    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("100"), policy="block")])
    store = _Store()
    engine.ledger.budget_store = store
    failing = lambda: Failing(script=Script(["x"], model="gpt-4o-mini"))  # noqa: E731
    r = router(failing(), failing())
    with track_costs(engine), pytest.raises(RoutingError if down else KeyboardInterrupt):
        if how == "chat":
            r.chat(MSGS)
        elif how == "achat":
            await r.achat(MSGS)
        elif how == "stream_chat":
            list(r.stream_chat(MSGS))
        else:
            [x async for x in await r.astream_chat(MSGS)]
    [(_, _, call_id)] = store.reserved
    assert call_id is not None and store.released == [call_id]


STREAMS = ["stream_chat", "stream_complete", "astream_chat", "astream_complete"]


@pytest.mark.parametrize("how", STREAMS)
@pytest.mark.parametrize("validate_streams", [True, False])
async def test_a_hold_is_released_when_the_caller_stops_reading_a_stream(
    how: str, validate_streams: bool
) -> None:
    # The handler leaves a router's unfinished stream to the router, so nothing
    # else would release its hold. The router records it, once: a held-back
    # stream was read whole, so paid for whole (its usage is known); a live one
    # was billed for what it streamed, and its last item read reports no usage
    # (unknown: unpriced, never $0).
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("100"), policy="block")])
    store = _Store()
    engine.ledger.budget_store = store
    r = router(scripted("Take the bus, it is faster."), validate_streams=validate_streams)
    with track_costs(engine):
        if how.startswith("a"):
            stream = await getattr(r, how)(MSGS if "chat" in how else "q")
            async for _ in stream:
                break
            await stream.aclose()
            await asyncio.sleep(0)  # the wrapped generator is closed by the loop's finalizer
            await asyncio.sleep(0)
        else:
            for _ in getattr(r, how)(MSGS if "chat" in how else "q"):
                break
    [(_, _, call_id)] = store.reserved
    assert call_id is not None and store.released == [call_id]
    records = [
        (x.outcome, x.tier, x.model, x.usage.input_tokens, x.cost_usd)
        for x in engine.ledger.records()
    ]
    held = ("model", "small", "gpt-4o", 1000, Decimal("0.0035"))
    assert records == [held if validate_streams else ("model", "small", "gpt-4o", None, None)]


@pytest.mark.parametrize("how", ["stream_chat", "astream_chat", "stream_complete"])
@pytest.mark.parametrize("validate_streams", [False, True])
async def test_a_stopped_replay_of_a_cache_tier_is_not_recorded_as_a_paid_call(
    how: str, validate_streams: bool
) -> None:
    # Only the replay's last item carried the cache's note; stopped before it,
    # the replay was recorded as a model call although no model was called.
    usage = Usage(1000, 100)
    cheap = ScriptedLLM(
        script=Script(
            [ScriptedResponse("one two three four", usage, model="gpt-4o-mini")], cycle=True
        )
    )
    small = CachedLLM(llm=cheap, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    big = ScriptedLLM(script=Script([ScriptedResponse("x", usage, model="gpt-4o")], cycle=True))
    engine = CostEngine()
    r = RouterLLM(
        tiers={"small": small, "frontier": big},
        classifier=CheapFirst(),
        engine=engine,
        validate_streams=validate_streams,
    )
    msgs = [ChatMessage(role="user", content="What is the refund window?")]
    with track_costs(engine):
        for whole in (True, False):
            if how == "astream_chat":
                stream: Any = await r.astream_chat(msgs)
                if whole:
                    [x async for x in stream]
                else:
                    await anext(stream)
                    await stream.aclose()
                    for _ in range(100):
                        await asyncio.sleep(0)
            else:
                sync = (
                    r.stream_chat(msgs)
                    if how == "stream_chat"
                    else r.stream_complete("What is the refund window?")
                )
                if whole:
                    list(sync)
                else:
                    next(sync)
                    sync.close()
    assert cheap.script.calls == 1
    assert [(x.model, x.outcome) for x in engine.ledger.records()] == [("gpt-4o-mini", "model")]


class _NoModelInRaw(ScriptedLLM):
    """Names its model on the LLM only, as many integrations do (raw has usage)."""

    def _raw(self, r: Any) -> Any:
        d = super()._raw(r)
        d.pop("model")
        return d


@pytest.mark.parametrize("how", ["chat", "stream_chat", "achat", "astream_chat"])
async def test_an_answer_whose_raw_names_no_model_is_priced_as_its_tier(how: str) -> None:
    def tier(model: str) -> Any:
        return _NoModelInRaw(script=Script([ScriptedResponse("four", U, model=model)]), model=model)

    engine = CostEngine()
    router = RouterLLM(
        tiers={"small": tier("gpt-4o-mini"), "frontier": tier("gpt-4o")},
        classifier=CheapFirst(),
        engine=engine,
    )
    m = [ChatMessage(role="user", content="What is 2+2?")]
    with track_costs(engine):
        if how == "chat":
            out = router.chat(m)
        elif how == "stream_chat":
            out = list(router.stream_chat(m))[-1]
        elif how == "achat":
            out = await router.achat(m)
        else:
            out = [r async for r in await router.astream_chat(m)][-1]
    assert out.raw["model"] == "gpt-4o-mini"
    records = [(r.model, r.tier, r.cost_usd) for r in engine.ledger.records()]
    assert records == [("gpt-4o-mini", "small", Decimal("0.00021"))]


@pytest.mark.parametrize("how", ["predict", "stream", "apredict", "astream"])
def test_each_tier_applies_its_own_completion_template(how: str) -> None:
    """predict() asks the router with formatted=True: that is the router's own
    (identity) template, not the tier's, which the tier must still apply."""
    import asyncio

    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.prompts import PromptTemplate

    asked: list[str] = []

    class Templated(MockLLM):
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            asked.append(prompt if formatted else self.completion_to_prompt(prompt))
            return super().complete(prompt, formatted=True, **kw)

        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            asked.append(prompt if formatted else self.completion_to_prompt(prompt))
            return super().stream_complete(prompt, formatted=True, **kw)

    def tier() -> Templated:
        return Templated(completion_to_prompt=lambda p: f"<|user|>{p}<|end|>")

    router = RouterLLM(tiers={"small": tier(), "frontier": tier()}, classifier=CheapFirst())
    template = PromptTemplate("Say {x}")

    async def run() -> None:
        if how == "apredict":
            await router.apredict(template, x="hi")
        else:
            async for _ in await router.astream(template, x="hi"):
                pass

    if how == "predict":
        router.predict(template, x="hi")
    elif how == "stream":
        list(router.stream(template, x="hi"))
    else:
        asyncio.run(run())
    assert asked[0] == "<|user|>Say hi<|end|>"


@pytest.mark.parametrize("how", STRUCTURED_CALLS)
@pytest.mark.parametrize("wrapper", ["CachedLLM", "PrefixCachedLLM"])
async def test_a_wrapped_router_still_escalates_an_answer_the_class_cannot_take(
    how: str, wrapper: str
) -> None:
    """The wrapper's structured calls reach the router as chat calls: they must
    carry the structured mark, or the router passes the cheap prose on (and a
    cache would store it and serve it again)."""
    from llamaindex_costopt import PrefixCachedLLM

    small = scripted("Sure! The city is Paris, in France.", model="gpt-4o-mini")
    big = scripted(PARIS)
    inner = router(small, big)
    outer: Any = (
        CachedLLM(llm=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
        if wrapper == "CachedLLM"
        else PrefixCachedLLM(llm=inner)
    )
    engine = CostEngine()
    with track_costs(engine):
        out = await _predict(outer, how)
    assert out == City(name="Paris", country="France")
    assert (small.script.calls, big.script.calls) == (1, 1)
    assert [(r.outcome, r.tier) for r in engine.ledger.records()] == [
        ("escalated", "small"),
        ("model", "frontier"),
    ]
