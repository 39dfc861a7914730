"""RouterLLM: validators read LlamaIndex answers; records agree with the cost handler."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
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

from costopt_core import Budget, CostEngine, Usage, default_engine, tenant_scope
from costopt_core.cache import SemanticCache
from costopt_core.errors import BudgetExceededError, ConfigurationError
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from llamaindex_costopt import CachedLLM, CostEventHandler, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

U = Usage(1000, 100)
MSGS = [ChatMessage(role="user", content="What is the weather in Paris?")]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
HEDGE = "I'm not sure, sorry."


class Always:
    name = "fixed"
    n_tiers = 2

    def predict(self, items: Any) -> Any:
        return np.array([[0.9, 1.0] for _ in items])


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
        classifier=Always(),
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
            classifier=Always(),
        )
