"""RouterChatModel: structured output by response format, not only by a forced tool call.

``bind_tools([], response_format=...)`` (``create_agent``'s ``ProviderStrategy``
for an agent without tools) still asks every tier for the format, and
``with_structured_output`` honours ``method`` (``function_calling``,
``json_schema``, ``json_mode``) and ``strict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from costopt_core.errors import ConfigurationError
from langchain_costopt.router import RouterChatModel
from tests.conftest import CheapFirst


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    temp: int


WEATHER = {"city": "Paris", "temp": 21}
RF = {
    "type": "json_schema",
    "json_schema": {"name": "Weather", "schema": Weather.model_json_schema()},
}


class Tier(BaseChatModel):
    """A provider-like tier: JSON when asked for a response format, a tool call
    when offered tools, prose otherwise (``answer`` changes what the JSON is)."""

    model_name: str = "gpt-4o-mini"
    answer: str = "honours"  # "honours" | "prose" | "bad_json"
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-provider"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[Any, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = "required" if tool_choice == "any" else tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(dict(kwargs))
        text, tool_calls = "It's 21 degrees in Paris.", []
        if self.answer == "honours" and kwargs.get("response_format"):
            text = json.dumps(WEATHER)
        elif self.answer == "bad_json" and kwargs.get("response_format"):
            text = json.dumps({"city": "Paris"})
        elif self.answer == "honours" and kwargs.get("tools"):
            name = kwargs["tools"][0]["function"]["name"]
            tool_calls = [{"name": name, "args": WEATHER, "id": "c1", "type": "tool_call"}]
            text = ""
        msg = AIMessage(
            content=text,
            tool_calls=tool_calls,
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


class NoToolsTier(Tier):
    """A tier that honours a response format but cannot call tools (as LocalChatModel)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        raise NotImplementedError("no tool calling")


class OpenAILikeTier(Tier):
    """A tier whose bind_tools converts response_format itself, with strict (as ChatOpenAI)."""

    binds: list[dict[str, Any]] = Field(default_factory=list)

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        strict: bool | None = None,
        response_format: Any = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        self.binds.append({"strict": strict, "response_format": response_format})
        if response_format is not None:
            spec = dict(response_format["json_schema"])
            spec["strict"] = bool(strict)
            kwargs["response_format"] = {"type": "json_schema", "json_schema": spec}
        return super().bind_tools(tools, tool_choice=tool_choice, **kwargs)


class StrictlessTier(Tier):
    """A tier whose bind_tools takes no ``strict`` (nor any other extra argument)."""

    def bind_tools(  # type: ignore[override]
        self, tools: Sequence[Any], *, tool_choice: Any = None
    ) -> Runnable[Any, AIMessage]:
        return super().bind_tools(tools, tool_choice=tool_choice)


def _router(small: Tier | None = None, big: Tier | None = None) -> RouterChatModel:
    small = small if small is not None else Tier(model_name="gpt-4o-mini")
    big = big if big is not None else Tier(model_name="gpt-4o")
    return RouterChatModel(tiers={"small": small, "frontier": big}, classifier=CheapFirst())


def _attempts(message: AIMessage) -> list[str]:
    route = message.response_metadata["costopt"]["route"]
    return [f"{a['tier']}: {a['outcome']}" for a in route["attempts"]]


# -- bind_tools([], response_format=...) --------------------------------------------


async def test_bind_tools_without_tools_still_asks_every_tier_for_the_format() -> None:
    small = Tier(model_name="gpt-4o-mini")
    router = _router(small)
    bound = router.bind_tools([], response_format=RF, tool_choice="auto", parallel_tool_calls=False)
    out = bound.invoke("weather in Paris?")
    assert json.loads(out.content) == WEATHER
    assert _attempts(out) == ["small: kept"]
    # the format reached the tier; tool_choice and parallel_tool_calls need tools
    assert small.calls == [{"response_format": RF}]
    aout = await bound.ainvoke("weather in Paris?")
    assert json.loads(aout.content) == WEATHER and _attempts(aout) == ["small: kept"]
    assert small.calls[-1] == {"response_format": RF}


def test_bind_tools_without_tools_goes_through_each_tiers_own_bind_tools() -> None:
    # ChatOpenAI converts response_format in bind_tools (with strict): so does this tier.
    small = OpenAILikeTier(model_name="gpt-4o-mini")
    out = _router(small).bind_tools([], response_format=RF, strict=True).invoke("weather?")
    assert json.loads(out.content) == WEATHER
    assert small.binds == [{"strict": True, "response_format": RF}]
    [kwargs] = small.calls
    assert kwargs["response_format"]["json_schema"]["strict"] is True
    assert "tools" not in kwargs  # no empty tool list for the provider


def test_bind_tools_without_tools_reaches_a_tier_that_cannot_call_tools() -> None:
    small = NoToolsTier(model_name="local-llama")
    out = _router(small).bind_tools([], response_format=RF, strict=True).invoke("weather?")
    assert json.loads(out.content) == WEATHER
    assert _attempts(out) == ["small: kept"]
    assert small.calls == [{"response_format": RF}]  # as .bind() would: strict needs tools


@pytest.mark.parametrize("sync", [True, False])
async def test_create_agent_provider_strategy_without_tools(sync: bool) -> None:
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ProviderStrategy

    small, big = Tier(model_name="gpt-4o-mini"), Tier(model_name="gpt-4o")
    agent = create_agent(_router(small, big), tools=[], response_format=ProviderStrategy(Weather))
    request = {"messages": [("user", "weather in Paris?")]}
    state = agent.invoke(request) if sync else await agent.ainvoke(request)
    assert state["structured_response"] == Weather(**WEATHER)
    assert (len(small.calls), len(big.calls)) == (1, 0)
    assert small.calls[0]["response_format"]["type"] == "json_schema"


# -- with_structured_output(method=...) ---------------------------------------------


def test_json_schema_binds_openai_response_format_not_a_tool() -> None:
    small = Tier(model_name="gpt-4o-mini")
    raw = (
        _router(small)
        .with_structured_output(Weather, method="json_schema", include_raw=True)
        .invoke("weather in Paris?")
    )
    assert raw["parsed"] == Weather(**WEATHER) and raw["parsing_error"] is None
    assert _attempts(raw["raw"]) == ["small: kept"]
    [kwargs] = small.calls
    assert sorted(kwargs) == ["response_format"]
    fmt = kwargs["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["schema"]["properties"].keys() == {"city", "temp"}
    assert "strict" not in fmt["json_schema"]


def test_json_schema_strict_goes_into_the_format() -> None:
    small = Tier(model_name="gpt-4o-mini")
    structured = _router(small).with_structured_output(Weather, method="json_schema", strict=True)
    assert structured.invoke("weather?") == Weather(**WEATHER)
    spec = small.calls[0]["response_format"]["json_schema"]
    assert spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False  # a strict schema, as OpenAI needs


def test_json_schema_with_a_dict_schema_parses_to_a_dict() -> None:
    schema = {
        "title": "weather",
        "description": "The weather.",
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
        "required": ["city", "temp"],
    }
    structured = _router().with_structured_output(schema, method="json_schema")
    assert structured.invoke("weather?") == WEATHER
    # an OpenAI response format is taken as it is
    small = Tier(model_name="gpt-4o-mini")
    assert _router(small).with_structured_output(RF, method="json_schema").invoke("w") == WEATHER
    assert small.calls[0]["response_format"] == RF


def test_json_mode_binds_json_object() -> None:
    small = Tier(model_name="gpt-4o-mini")
    structured = _router(small).with_structured_output(Weather, method="json_mode")
    assert structured.invoke("weather as JSON with city and temp") == Weather(**WEATHER)
    assert small.calls == [{"response_format": {"type": "json_object"}}]
    loose = _router().with_structured_output(None, method="json_mode")
    assert loose.invoke("weather as JSON") == WEATHER


async def test_json_schema_serves_a_cheap_tier_that_cannot_call_tools() -> None:
    small = NoToolsTier(model_name="local-llama")
    structured = _router(small).with_structured_output(
        Weather, method="json_schema", include_raw=True
    )
    raw = structured.invoke("weather in Paris?")
    assert raw["parsed"] == Weather(**WEATHER)
    assert _attempts(raw["raw"]) == ["small: kept"]
    araw = await structured.ainvoke("weather in Paris?")
    assert araw["parsed"] == Weather(**WEATHER)
    assert _attempts(araw["raw"]) == ["small: kept"]


@pytest.mark.parametrize(
    ("method", "answer", "outcome"),
    [
        ("json_schema", "prose", "escalated: unparseable_structured_output"),
        ("json_schema", "bad_json", "escalated: invalid_structured_output"),
        ("json_mode", "prose", "escalated: unparseable_structured_output"),
    ],
)
def test_a_cheap_answer_that_does_not_parse_escalates(
    method: str, answer: str, outcome: str
) -> None:
    small = Tier(model_name="gpt-4o-mini", answer=answer)
    structured = _router(small).with_structured_output(Weather, method=method, include_raw=True)
    raw = structured.invoke("weather in Paris?")
    assert raw["parsed"] == Weather(**WEATHER)
    assert _attempts(raw["raw"]) == [f"small: {outcome}", "frontier: kept"]


def test_include_raw_keeps_a_parsing_error() -> None:
    small = Tier(model_name="gpt-4o-mini", answer="prose")
    big = Tier(model_name="gpt-4o", answer="prose")
    raw = (
        _router(small, big)
        .with_structured_output(Weather, method="json_schema", include_raw=True)
        .invoke("weather?")
    )
    assert raw["parsed"] is None and raw["parsing_error"] is not None
    assert raw["raw"].content == "It's 21 degrees in Paris."


def test_function_calling_passes_strict_to_tiers_that_take_it() -> None:
    small = OpenAILikeTier(model_name="gpt-4o-mini")
    structured = _router(small).with_structured_output(Weather, strict=True)
    assert structured.invoke("weather?") == Weather(**WEATHER)
    assert small.binds == [{"strict": True, "response_format": None}]
    [tool] = small.calls[0]["tools"]
    assert tool["function"]["strict"] is True
    assert small.calls[0]["tool_choice"] == "required"
    # a tier whose bind_tools takes no strict still answers (its tools are strict already)
    other = StrictlessTier(model_name="gpt-4o-mini")
    raw = (
        _router(other)
        .with_structured_output(Weather, strict=True, include_raw=True)
        .invoke("weather?")
    )
    assert raw["parsed"] == Weather(**WEATHER)
    assert _attempts(raw["raw"]) == ["small: kept"]
    assert other.calls[0]["tools"][0]["function"]["strict"] is True


def test_unknown_method_or_missing_schema_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'json'.*'function_calling'.*'json_schema'"):
        _router().with_structured_output(Weather, method="json")
    with pytest.raises(ConfigurationError, match="schema"):
        _router().with_structured_output(None, method="json_schema")
    with pytest.raises(ValueError, match="unsupported"):
        _router().with_structured_output(Weather, tools=[])


class _Options(BaseCallbackHandler):
    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.options.append(kwargs.get("options") or {})


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_the_structured_output_format_is_traced_on_the_router_run(method: str) -> None:
    seen = _Options()
    structured = _router().with_structured_output(Weather, method=method, strict=True)
    assert structured.invoke("weather?", config={"callbacks": [seen]}) == Weather(**WEATHER)
    [options] = seen.options  # the router's run only: the tiers' runs are not reported
    traced = options["ls_structured_output_format"]
    assert traced["kwargs"]["method"] == method
    assert traced["schema"]["title"] == "Weather"


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
@pytest.mark.parametrize("wrapper", ["cached", "prefix"])
def test_the_cache_wrappers_ask_the_wrapped_model_the_way_method_says(
    method: str, wrapper: str
) -> None:
    """langchain-core's default with_structured_output drops method and forces
    a tool call; a wrapper must pass the request on as the method says."""
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder
    from langchain_costopt import CachedChatModel
    from langchain_costopt.prefix import PrefixCachedChatModel

    inner = Tier()
    model: BaseChatModel = (
        CachedChatModel(model=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
        if wrapper == "cached"
        else PrefixCachedChatModel(model=inner)
    )
    out = model.with_structured_output(Weather, method=method).invoke("Weather in Paris?")
    assert out == Weather(**WEATHER)
    [sent] = inner.calls
    if method == "function_calling":
        assert "tools" in sent and "response_format" not in sent
    else:
        assert "tools" not in sent
        assert sent["response_format"]["type"] == method.replace("_mode", "_object")
    with pytest.raises(ConfigurationError, match=f"{type(model).__name__}.with_structured_output"):
        model.with_structured_output(Weather, method="xml")
