"""LangChain prefix caching: cache_control markers for Anthropic, prompt_cache_key for OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_tests.unit_tests.chat_models import ChatModelUnitTests
from pydantic import BaseModel, Field

from costopt_core.context.prefix import plan_prefix_cache
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import Script
from langchain_costopt._convert import _text, from_langchain_messages
from langchain_costopt.prefix import (
    PrefixCachedChatModel,
    PrefixCacheOptimizer,
    detect_provider,
    with_prefix_cache,
)
from langchain_costopt.testing import ScriptedChatModel

LONG = " hello" * 1100  # ~1,104 tokens: above Sonnet's 1,024 minimum, below Haiku 4.5's 4,096
EPHEMERAL = {"type": "ephemeral"}


class Capturing(ScriptedChatModel):
    """A scripted model that records the messages and keywords of every call."""

    seen: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append((messages, kwargs))
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append((messages, kwargs))
        return await super()._agenerate(messages, stop, run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.seen.append((messages, kwargs))
        yield from super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.seen.append((messages, kwargs))
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk


class ChatAnthropic(Capturing):
    """Named like langchain_anthropic's class, which is not installed here."""

    @property
    def _llm_type(self) -> str:
        return "anthropic-chat"


class ChatOpenAI(Capturing):
    @property
    def _llm_type(self) -> str:
        return "openai-chat"


def anthropic(model: str = "claude-sonnet-4-5") -> ChatAnthropic:
    return ChatAnthropic(script=Script(["ok"], model=model), model_name=model)


def openai(model: str = "gpt-4o") -> ChatOpenAI:
    return ChatOpenAI(script=Script(["ok"], model=model), model_name=model)


def conversation(system: str = LONG) -> list[BaseMessage]:
    return [
        SystemMessage(system),
        HumanMessage("Where is my order?"),
        AIMessage("It shipped yesterday."),
        HumanMessage("When will it arrive?"),
    ]


def texts(messages: list[BaseMessage]) -> list[str]:
    return [_text(m.content) for m in messages]


class GetOrder(BaseModel):
    """Look up an order by id."""

    order_id: str = Field(description="the order id" + " x" * 1100)


# -- detection ------------------------------------------------------------------
def test_provider_detection_by_class_type_and_model_name() -> None:
    assert detect_provider(anthropic()) == "anthropic"
    assert detect_provider(openai()) == "openai"
    assert detect_provider(ScriptedChatModel.from_texts(["x"], model="claude-3-5-haiku")) == (
        "anthropic"
    )
    assert detect_provider(ScriptedChatModel.from_texts(["x"], model="gpt-4o-mini")) == "openai"
    assert detect_provider(ScriptedChatModel.from_texts(["x"], model="mistral-7b")) is None


# -- Anthropic ------------------------------------------------------------------------
def test_anthropic_breakpoints_on_system_and_stable_history() -> None:
    inner = anthropic()
    llm = with_prefix_cache(inner)
    msgs = conversation()
    assert llm.invoke(msgs).content == "ok"
    [(sent, _)] = inner.seen
    assert texts(sent) == texts(msgs)  # byte-identical text
    assert sent[0].content == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert sent[2].content == [
        {"type": "text", "text": "It shipped yesterday.", "cache_control": EPHEMERAL}
    ]
    # the newest turn and the first question are left alone
    assert sent[1] is msgs[1] and sent[3] is msgs[3]
    # the caller's messages are not mutated
    assert msgs[0].content == LONG


def test_no_markers_below_the_model_minimum() -> None:
    inner = anthropic("claude-haiku-4-5")  # 4,096-token minimum
    with_prefix_cache(inner).invoke(conversation())
    [(sent, _)] = inner.seen
    assert [m.content for m in sent] == [m.content for m in conversation()]


def test_anthropic_tools_get_a_breakpoint_on_the_last_tool() -> None:
    inner = anthropic()
    llm = with_prefix_cache(inner).bind_tools([GetOrder])
    llm.invoke(conversation("Be brief."))
    [(sent, kwargs)] = inner.seen
    tools = kwargs["tools"]
    assert tools[-1]["cache_control"] == EPHEMERAL
    assert {k: v for k, v in tools[-1].items() if k != "cache_control"} == (
        inner.bind_tools([GetOrder]).kwargs["tools"][-1]  # type: ignore[attr-defined]
    )
    # the short system prompt alone is below the minimum, but tools + system is not
    assert sent[0].content == [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]
    assert sent[3].content == "When will it arrive?"


def test_existing_markers_count_against_the_limit_of_four() -> None:
    inner = anthropic()
    marked = [
        {"type": "text", "text": f"part {i}" + LONG, "cache_control": EPHEMERAL} for i in range(3)
    ]
    msgs = [SystemMessage(marked), HumanMessage("a"), AIMessage("b"), HumanMessage("c")]
    with_prefix_cache(inner).invoke(msgs)
    [(sent, _)] = inner.seen
    count = sum(
        1
        for m in sent
        if isinstance(m.content, list)
        for b in m.content
        if isinstance(b, dict) and "cache_control" in b
    )
    assert count == 4


def test_list_content_gets_the_marker_on_its_last_text_block() -> None:
    inner = anthropic()
    system = SystemMessage(["intro", {"type": "text", "text": LONG}])
    with_prefix_cache(inner).invoke([system, HumanMessage("hi")])
    [(sent, _)] = inner.seen
    assert sent[0].content == [
        "intro",
        {"type": "text", "text": LONG, "cache_control": EPHEMERAL},
    ]


def test_one_hour_ttl() -> None:
    inner = anthropic()
    with_prefix_cache(inner, ttl="1h").invoke(conversation())
    [(sent, _)] = inner.seen
    assert sent[0].content[0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}  # type: ignore[index]


# -- OpenAI ---------------------------------------------------------------------------
def test_openai_gets_a_stable_prompt_cache_key() -> None:
    inner = openai()
    llm = with_prefix_cache(inner)
    llm.invoke(conversation())
    llm.invoke([SystemMessage(LONG), HumanMessage("Something else")])
    llm.invoke(conversation(LONG + " Be brief."))
    keys = [kw["prompt_cache_key"] for _, kw in inner.seen]
    assert keys[0] == keys[1] != keys[2]
    engine_plan = plan_prefix_cache(from_langchain_messages(conversation()), model="gpt-4o")
    assert keys[0] == engine_plan.prompt_cache_key
    # messages are passed through untouched
    assert inner.seen[0][0] == conversation()


def test_openai_key_separates_tenants_and_respects_an_explicit_key() -> None:
    inner = openai()
    llm = with_prefix_cache(inner)
    with tenant_scope("acme"):
        llm.invoke(conversation())
    with tenant_scope("globex"):
        llm.invoke(conversation())
    llm.invoke(conversation(), prompt_cache_key="mine")
    keys = [kw["prompt_cache_key"] for _, kw in inner.seen]
    assert keys[0] != keys[1]
    assert keys[2] == "mine"


@pytest.mark.parametrize("style", ["invoke", "ainvoke", "stream", "astream"])
async def test_openai_key_follows_the_runs_metadata_tenant(style: str) -> None:
    # The tenant the cost handler books the call under: two tenants never share a key.
    inner = openai()
    llm = with_prefix_cache(inner)
    for tenant in ("acme", "globex", "acme"):
        config = {"metadata": {"costopt_tenant": tenant}}
        if style == "invoke":
            llm.invoke(conversation(), config=config)
        elif style == "ainvoke":
            await llm.ainvoke(conversation(), config=config)
        elif style == "stream":
            list(llm.stream(conversation(), config=config))
        else:
            [c async for c in llm.astream(conversation(), config=config)]
    keys = [kw["prompt_cache_key"] for _, kw in inner.seen]
    assert keys[0] != keys[1] and keys[0] == keys[2]
    assert all("costopt_run" not in kw for _, kw in inner.seen)


def test_unknown_provider_passes_through() -> None:
    inner = Capturing(script=Script(["ok"], model="mistral-7b"), model_name="mistral-7b")
    with_prefix_cache(inner).invoke(conversation())
    [(sent, kwargs)] = inner.seen
    assert sent == conversation() and "prompt_cache_key" not in kwargs


# -- call styles ----------------------------------------------------------------------
async def test_sync_async_and_streaming_send_the_same_messages() -> None:
    inner = anthropic()
    llm = with_prefix_cache(inner)
    msgs = conversation()
    llm.invoke(msgs)
    await llm.ainvoke(msgs)
    assert "".join(str(c.content) for c in llm.stream(msgs)) == "ok"
    chunks = [c async for c in llm.astream(msgs)]
    assert "".join(str(c.content) for c in chunks) == "ok"
    sent = [s for s, _ in inner.seen]
    assert len(sent) == 4
    assert all(s == sent[0] for s in sent)


# -- the LCEL step ------------------------------------------------------------------------
def test_optimizer_in_a_chain() -> None:
    inner = anthropic()
    prompt = ChatPromptTemplate.from_messages([("system", LONG), ("human", "{question}")])
    chain = prompt | PrefixCacheOptimizer(model="claude-sonnet-4-5") | inner
    chain.invoke({"question": "Where is my order?"})
    [(sent, _)] = inner.seen
    assert sent[0].content == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert sent[1].content == "Where is my order?"


async def test_optimizer_on_plain_message_lists_sync_and_async() -> None:
    step = PrefixCacheOptimizer(model="claude-sonnet-4-5")
    msgs = conversation()
    out = step.invoke(msgs)
    assert await step.ainvoke(msgs) == out
    assert texts(out) == texts(msgs)
    assert [isinstance(m.content, list) for m in out] == [True, False, True, False]
    # other providers: unchanged
    assert PrefixCacheOptimizer(model="gpt-4o").invoke(msgs) == msgs


def test_bad_configuration_raises() -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        PrefixCacheOptimizer(model="claude-sonnet-4-5", ttl="2h")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="provider"):
        PrefixCachedChatModel(model=anthropic(), provider="gemini")  # type: ignore[arg-type]


# -- LangChain's standard chat model tests -------------------------------------------------
class TestPrefixCachedChatModelStandard(ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A wrapper's temperature, max_tokens and stop are defaults for the models
        # it wraps; timeout and retries are each wrapped client's, refused by name.
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return PrefixCachedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel.from_texts(["ok"], model="claude-sonnet-4-5")}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
