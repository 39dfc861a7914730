"""RouterChatModel review fixes: fenced structured answers, ``disable_streaming`` tiers,
and a budget estimate over every tier the request can still reach."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import BaseModel

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage
from costopt_core.routing.router import RouterConfig
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt._convert import from_langchain_messages
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel

U = Usage(100, 20, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
# Every request starts at the cheapest tier (of two).
ALWAYS_SMALL = RouterConfig(thresholds=(float("-inf"),))
PROMPT = "Capital of France? Answer in JSON with name and country."
WHOLE = '{"name": "Paris", "country": "France"}'


class City(BaseModel):
    name: str
    country: str


def scripted(*answers: str, model: str = "gpt-4o-mini", **kwargs: Any) -> ScriptedChatModel:
    rs = [ScriptedResponse(a, U, model=model) for a in answers]
    return ScriptedChatModel(script=Script(rs), model_name=model, **kwargs)


def _records(engine: CostEngine) -> list[tuple[str, str]]:
    return [(r.model, r.outcome) for r in engine.ledger.records()]


async def _run(runnable: Any, how: str, prompt: str, config: dict[str, Any]) -> Any:
    """The answer of ``runnable`` asked ``how``: invoked, or streamed and merged (last output)."""
    if how == "invoke":
        return runnable.invoke(prompt, config=config)
    if how == "ainvoke":
        return await runnable.ainvoke(prompt, config=config)
    last = None
    if how == "stream":
        for part in runnable.stream(prompt, config=config):
            last = part if last is None or not isinstance(last, AIMessageChunk) else last + part
        return last
    async for part in runnable.astream(prompt, config=config):
        last = part if last is None or not isinstance(last, AIMessageChunk) else last + part
    return last


# -- 1. a structured answer in a ```json fence is read as LangChain's parser reads it --
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
@pytest.mark.parametrize(
    "answer",
    [
        f"```json\n{WHOLE}\n```",
        f"Here it is:\n```json\n{WHOLE}\n```",
        f"```\n{WHOLE}\n```\nHope this helps!",
    ],
)
async def test_a_fenced_structured_answer_is_kept_at_the_cheap_tier(
    how: str, method: str, answer: str
) -> None:
    engine = CostEngine()
    small, big = scripted(answer), scripted(WHOLE, model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, router_config=ALWAYS_SMALL)
    structured = router.with_structured_output(City, method=method)
    out = await _run(structured, how, PROMPT, {"callbacks": [CostCallbackHandler(engine)]})
    assert out == City(name="Paris", country="France")  # JsonOutputParser reads the fence
    assert (small.script.calls, big.script.calls) == (1, 0)  # one call billed, not two
    assert _records(engine) == [("gpt-4o-mini", "model")]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # LangChain's parser cannot read JSON after a preamble without a fence.
        (f"Sure: {WHOLE}", "unparseable_structured_output"),
        # Its partial-JSON repair would read a cut answer or a leading number; not here.
        ('```json\n{"name": "Paris", "country": "Fra', "unparseable_structured_output"),
        ("2 capitals share that name.", "unparseable_structured_output"),
        # Fenced JSON is still checked against the schema.
        ('```json\n{"name": "Paris"}\n```', "invalid_structured_output"),
    ],
)
def test_a_structured_answer_the_parser_cannot_use_still_escalates(
    answer: str, reason: str
) -> None:
    engine = CostEngine()
    small, big = scripted(answer), scripted(WHOLE, model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, router_config=ALWAYS_SMALL)
    out = router.with_structured_output(City, method="json_schema", include_raw=True).invoke(
        PROMPT, config={"callbacks": [CostCallbackHandler(engine)]}
    )
    assert out["parsed"] == City(name="Paris", country="France")
    attempts = out["raw"].response_metadata["costopt"]["route"]["attempts"]
    assert [a["outcome"] for a in attempts] == [f"escalated: {reason}", "kept"]
    assert _records(engine) == [("gpt-4o-mini", "escalated"), ("gpt-4o", "model")]


def test_a_plain_answer_is_not_read_as_json() -> None:
    # Not a structured request: a fenced answer is prose like any other, kept as it came.
    text = f"```json\n{WHOLE}\n```"
    router = RouterChatModel(
        tiers={"small": scripted(text), "frontier": scripted(text, model="gpt-4o")},
        router_config=ALWAYS_SMALL,
        engine=CostEngine(),
    )
    out = router.invoke(PROMPT)
    assert out.content == text
    assert out.response_metadata["costopt"]["tier"] == "small"


# -- 2. a tier's disable_streaming is respected, as its own .stream() respects it ------
class _Unstreamable(ScriptedChatModel):
    """A provider model whose streaming endpoint refuses the request."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise RuntimeError("400: 'stream' is not supported with this model")

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        raise RuntimeError("400: 'stream' is not supported with this model")
        yield  # pragma: no cover - an async generator


def _weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.mark.parametrize("how", ["stream", "astream"])
@pytest.mark.parametrize("validate_streams", [True, False])
@pytest.mark.parametrize(("disable", "tools"), [(True, False), ("tool_calling", True)])
async def test_a_tier_that_disables_streaming_answers_as_one_chunk(
    how: str, validate_streams: bool, disable: Any, tools: bool
) -> None:
    engine = CostEngine()
    small = _Unstreamable(
        script=Script([ScriptedResponse("Paris.", U, model="gpt-4o-mini")]),
        model_name="gpt-4o-mini",
        disable_streaming=disable,
    )
    big = scripted("Paris.", model="gpt-4o")
    router = RouterChatModel(
        tiers={"small": small, "frontier": big},
        router_config=ALWAYS_SMALL,
        validate_streams=validate_streams,
    )
    runnable = router.bind_tools([_weather]) if tools else router
    out = await _run(
        runnable, how, "Capital of France?", {"callbacks": [CostCallbackHandler(engine)]}
    )
    assert out.content == "Paris."
    route = out.response_metadata["costopt"]["route"]
    assert [(a["model"], a["outcome"]) for a in route["attempts"]] == [("gpt-4o-mini", "kept")]
    assert (small.script.calls, big.script.calls) == (1, 0)
    assert _records(engine) == [("gpt-4o-mini", "model")]


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_tool_calling_disables_streaming_only_with_tools(how: str) -> None:
    # disable_streaming="tool_calling" without tools streams, as the model's own
    # .stream() would: here the stream fails, and the request falls back.
    small = _Unstreamable(
        script=Script([ScriptedResponse("Paris.", U, model="gpt-4o-mini")]),
        model_name="gpt-4o-mini",
        disable_streaming="tool_calling",
    )
    router = RouterChatModel(
        tiers={"small": small, "frontier": scripted("Paris.", model="gpt-4o")},
        router_config=ALWAYS_SMALL,
        engine=CostEngine(),
    )
    out = await _run(router, how, "Capital of France?", {})
    assert out.response_metadata["costopt"]["tier"] == "frontier"
    assert small.script.calls == 0


# -- 3. the budget estimate prices every tier the request can still reach --------------
CAP = 1000
# Starts every request at the middle tier (of three).
START_AT_MID = RouterConfig(thresholds=(float("inf"), float("-inf")))


def _opus_estimate(engine: CostEngine, prompt: str) -> Decimal:
    messages = from_langchain_messages([HumanMessage(prompt)])
    estimate = engine.estimate("claude-opus-4-1", messages, max_output_tokens=CAP)
    assert estimate is not None
    return estimate


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("mid_as_fallback", [False, True])
async def test_a_block_budget_prices_the_dearest_reachable_tier(
    how: str, mid_as_fallback: bool
) -> None:
    # The ladder's cost order is not enforced: the middle tier (or a fallback in
    # it) is dearer than the last. Pricing the last tier only let this call pass
    # a $0.02 block budget and spend $0.075.
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.02"), period="day", policy="block")])
    small = scripted("An answer.", model="gpt-4o-mini")
    opus = scripted("An answer.", model="claude-opus-4-1")
    mid: Any = [scripted("An answer.", model="gpt-4o-mini"), opus] if mid_as_fallback else opus
    big = scripted("An answer.", model="gpt-4o")
    router = RouterChatModel(
        tiers={"small": small, "mid": mid, "frontier": big},
        router_config=START_AT_MID,
        max_tokens=CAP,
    )
    prompt = "Summarise our refund policy."
    with pytest.raises(BudgetExceededError) as refused:
        await _run(router, how, prompt, {"callbacks": [CostCallbackHandler(engine)]})
    assert refused.value.estimate_usd == _opus_estimate(engine, prompt) > Decimal("0.02")
    assert opus.script.calls == big.script.calls == small.script.calls == 0
    assert engine.ledger.records() == []


def test_the_estimate_starts_at_the_decided_tier() -> None:
    # As RouterLLM: a request decided for the frontier cannot reach the tiers below
    # it, so a dear model there does not refuse it.
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.02"), period="day", policy="block")])
    opus, big = scripted("no", model="claude-opus-4-1"), scripted("An answer.", model="gpt-4o")
    router = RouterChatModel(
        tiers={"mid": opus, "frontier": big},
        router_config=RouterConfig(thresholds=(float("inf"),)),  # always the frontier
        max_tokens=CAP,
    )
    out = router.invoke("Summarise.", config={"callbacks": [CostCallbackHandler(engine)]})
    assert out.response_metadata["costopt"]["tier"] == "frontier"
    assert (opus.script.calls, big.script.calls) == (0, 1)
    assert _records(engine) == [("gpt-4o", "model")]


@pytest.mark.parametrize("given", ["tiers", "manager"])
def test_a_cost_handler_set_on_a_tier_model_is_named_in_a_warning(given: str) -> None:
    """ChatX(callbacks=[handler]), the usual way to price one model, records none
    of the routed calls (the router calls its tiers itself): the router says so
    and how to attach it. (Making such handlers the router's recorded every
    tier's calls in every tier's ledger: a review found per-model ledgers
    counted twice.)"""
    from langchain_core.callbacks import CallbackManager

    handler = CostCallbackHandler(CostEngine())
    usage = Usage(input_tokens=100, output_tokens=20)

    def tier(text: str, model: str, callbacks: Any = None) -> ScriptedChatModel:
        script = Script([ScriptedResponse(text, model=model, usage=usage)])
        return ScriptedChatModel(script=script, model_name=model, callbacks=callbacks)

    cbs: Any = CallbackManager([handler]) if given == "manager" else [handler]
    with pytest.warns(UserWarning, match=r"tier 'small' model 'gpt-4o-mini' carries a Cost"):
        RouterChatModel(
            tiers={"small": tier("x", "gpt-4o-mini", cbs), "frontier": tier("y", "gpt-4o")}
        )
    # Given to the router too, it records the routed calls: nothing to say.
    small, big = (
        tier("I'm sorry, I can't help.", "gpt-4o-mini", [handler]),
        tier("30 days.", "gpt-4o"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        router = RouterChatModel(tiers={"small": small, "frontier": big}, callbacks=[handler])
    assert router.invoke("What is our refund window?").content == "30 days."
    records = [(r.model, r.outcome) for r in handler.ledger.records()]
    assert records == [("gpt-4o-mini", "escalated"), ("gpt-4o", "model")]


@pytest.mark.parametrize(
    "metadata",
    [{"stopReason": "max_tokens"}, {"finish_reason": "MAX_TOKENS"}, {"stop_reason": "max_tokens"}],
)
def test_a_cut_answer_in_any_providers_words_escalates(metadata: dict[str, Any]) -> None:
    """Bedrock's stopReason=max_tokens (and Gemini's MAX_TOKENS) were not read as
    cut off: the router kept a truncated cheap answer. One reader
    (costopt_core.finish) serves the routers and the caches."""
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Cut(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
            message = AIMessage("The refund window is", response_metadata=dict(metadata))
            return ChatResult(generations=[ChatGeneration(message=message)])

    small = Cut(script=Script(["unused"]), model_name="gpt-4o-mini")
    big = ScriptedChatModel(
        script=Script([ScriptedResponse("30 days.", model="gpt-4o", usage=Usage(9, 3))]),
        model_name="gpt-4o",
    )
    out = RouterChatModel(tiers={"small": small, "frontier": big}).invoke("Refund window?")
    assert out.content == "30 days."
    attempts = out.response_metadata["costopt"]["route"]["attempts"]
    assert attempts[0]["outcome"] == "escalated: truncated"
