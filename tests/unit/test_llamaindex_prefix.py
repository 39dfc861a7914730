"""LlamaIndex prefix caching: CachePoint blocks for Anthropic, prompt_cache_key for OpenAI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    CacheControl,
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    MessageRole,
    TextBlock,
)
from pydantic import Field

from costopt_core.context.prefix import plan_prefix_cache
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import Script
from costopt_core.types import Message
from llamaindex_costopt.prefix import (
    PrefixCachedLLM,
    add_cache_points,
    detect_provider,
    prefix_cache_plan,
)
from llamaindex_costopt.testing import ScriptedLLM

LONG = " hello" * 1100  # ~1,104 tokens: above Sonnet's 1,024 minimum, below Haiku 4.5's 4,096


class Capturing(ScriptedLLM):
    """A scripted LLM that records the messages and keywords of every chat call."""

    seen: list[tuple[list[ChatMessage], dict[str, Any]]] = Field(default_factory=list)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.seen.append((list(messages), kwargs))
        return super().chat(messages, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.seen.append((list(messages), kwargs))
        return await super().achat(messages, **kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        self.seen.append((list(messages), kwargs))
        return super().stream_chat(messages, **kwargs)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        self.seen.append((list(messages), kwargs))
        return await super().astream_chat(messages, **kwargs)


class Anthropic(Capturing):
    """Stands in for llama_index.llms.anthropic.Anthropic (class name as that one's)."""

    @classmethod
    def class_name(cls) -> str:
        return "Anthropic_LLM"


class OpenAI(Capturing):
    @classmethod
    def class_name(cls) -> str:
        return "openai_llm"


def anthropic(model: str = "claude-sonnet-4-5") -> Anthropic:
    return Anthropic(script=Script(["ok"], model=model), model=model, usage_format="anthropic")


def openai(model: str = "gpt-4o") -> OpenAI:
    return OpenAI(script=Script(["ok"], model=model), model=model)


def conversation(system: str = LONG) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=system),
        ChatMessage(role=MessageRole.USER, content="Where is my order?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="It shipped yesterday."),
        ChatMessage(role=MessageRole.USER, content="When will it arrive?"),
    ]


def text_blocks(messages: list[ChatMessage]) -> list[list[str]]:
    return [[b.text for b in m.blocks if isinstance(b, TextBlock)] for m in messages]


def cache_points(messages: list[ChatMessage]) -> list[int]:
    return [i for i, m in enumerate(messages) if any(isinstance(b, CachePoint) for b in m.blocks)]


def test_provider_detection() -> None:
    assert detect_provider(anthropic()) == "anthropic"
    assert detect_provider(openai()) == "openai"
    assert detect_provider(ScriptedLLM.from_texts(["x"], model="claude-3-5-haiku")) == "anthropic"
    assert detect_provider(ScriptedLLM.from_texts(["x"], model="gpt-4o-mini")) == "openai"
    assert detect_provider(ScriptedLLM.from_texts(["x"], model="mistral-7b")) is None


def test_anthropic_cache_points_after_system_and_stable_history() -> None:
    inner = anthropic()
    llm = PrefixCachedLLM(llm=inner)
    msgs = conversation()
    assert llm.chat(msgs).message.content == "ok"
    [(sent, kwargs)] = inner.seen
    assert cache_points(sent) == [0, 2]
    assert text_blocks(sent) == text_blocks(msgs)  # text unchanged
    point = sent[0].blocks[-1]
    assert isinstance(point, CachePoint)
    assert (point.cache_control.type, point.cache_control.ttl) == ("ephemeral", "5m")
    assert sent[1] is msgs[1] and sent[3] is msgs[3]
    assert len(msgs[0].blocks) == 1  # the caller's messages are not mutated
    assert "prompt_cache_key" not in kwargs


def test_no_cache_points_below_the_model_minimum() -> None:
    inner = anthropic("claude-haiku-4-5")
    PrefixCachedLLM(llm=inner).chat(conversation())
    assert cache_points(inner.seen[0][0]) == []


def test_existing_cache_points_are_kept_and_not_doubled() -> None:
    msgs = conversation()
    msgs[0] = msgs[0].model_copy(
        update={
            "blocks": [*msgs[0].blocks, CachePoint(cache_control=CacheControl(type="ephemeral"))]
        }
    )
    plan = prefix_cache_plan(msgs, model="claude-sonnet-4-5")
    assert plan.breakpoint_messages == (2,)
    out = add_cache_points(msgs, plan)
    assert [sum(isinstance(b, CachePoint) for b in m.blocks) for m in out] == [1, 0, 1, 0]


def test_one_hour_ttl() -> None:
    inner = anthropic()
    PrefixCachedLLM(llm=inner, ttl="1h").chat(conversation())
    point = inner.seen[0][0][0].blocks[-1]
    assert isinstance(point, CachePoint) and point.cache_control.ttl == "1h"


def test_openai_key_is_stable_per_prefix_and_tenant() -> None:
    inner = openai()
    llm = PrefixCachedLLM(llm=inner)
    llm.chat(conversation())
    llm.chat([ChatMessage(role="system", content=LONG), ChatMessage(role="user", content="Hi")])
    llm.chat(conversation(LONG + " Be brief."))
    with tenant_scope("acme"):
        llm.chat(conversation())
    llm.chat(conversation(), prompt_cache_key="mine")
    keys = [kw["prompt_cache_key"] for _, kw in inner.seen]
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3
    assert keys[4] == "mine"
    expected = plan_prefix_cache(
        [Message("system", LONG), Message("user", "x")], model="gpt-4o"
    ).prompt_cache_key
    assert keys[0] == expected
    assert cache_points(inner.seen[0][0]) == []  # messages untouched


def test_unknown_model_passes_through() -> None:
    inner = Capturing(script=Script(["ok"], model="mistral-7b"), model="mistral-7b")
    PrefixCachedLLM(llm=inner).chat(conversation())
    [(sent, kwargs)] = inner.seen
    assert sent == conversation() and kwargs == {}


async def test_sync_async_and_streaming_send_the_same_messages() -> None:
    inner = anthropic()
    llm = PrefixCachedLLM(llm=inner)
    msgs = conversation()
    llm.chat(msgs)
    await llm.achat(msgs)
    assert [r.delta for r in llm.stream_chat(msgs)][-2:] == ["ok", ""]
    gen = await llm.astream_chat(msgs)
    assert [r.message.content async for r in gen][-1] == "ok"
    sent = [s for s, _ in inner.seen]
    assert len(sent) == 4
    assert all(s == sent[0] for s in sent)
    assert cache_points(sent[0]) == [0, 2]


async def test_completion_passes_through() -> None:
    inner = anthropic()
    llm = PrefixCachedLLM(llm=inner)
    assert llm.complete("hi").text == "ok"
    assert (await llm.acomplete("hi")).text == "ok"
    assert llm.metadata.model_name == "claude-sonnet-4-5"
    assert llm.metadata.is_function_calling_model is False


def test_bad_configuration_raises() -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        PrefixCachedLLM(llm=anthropic(), ttl="2h")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="provider"):
        PrefixCachedLLM(llm=anthropic(), provider="gemini")  # type: ignore[arg-type]


def test_openai_key_follows_the_track_costs_tenant() -> None:
    # The tenant of a track_costs block keeps tenants' provider cache keys apart,
    # as tenant_scope does.
    from llamaindex_costopt import track_costs

    inner = openai()
    llm = PrefixCachedLLM(llm=inner)
    with track_costs(tenant="acme"):
        llm.chat(conversation())
    with track_costs(tenant="globex"):
        llm.chat(conversation())
    with tenant_scope("acme"):
        llm.chat(conversation())
    keys = [kw["prompt_cache_key"] for _, kw in inner.seen]
    assert keys[0] != keys[1]
    assert keys[0] == keys[2]


def test_predict_through_the_wrapper_sends_what_the_wrapped_llm_would() -> None:
    """LlamaIndex's predict formats with the LLM it is called on: the wrapped
    LLM's system prompt and completion template must still apply."""
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.prompts import PromptTemplate

    asked: list[str] = []

    class Templated(MockLLM):
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            asked.append(prompt if formatted else self.completion_to_prompt(prompt))
            return super().complete(prompt, formatted=True, **kw)

    inner = Templated(completion_to_prompt=lambda p: f"<|user|>{p}<|end|>", system_prompt="Brief.")
    inner.predict(PromptTemplate("Say {x}"), x="hi")
    PrefixCachedLLM(llm=inner).predict(PromptTemplate("Say {x}"), x="hi")
    assert asked == ["Brief.\n\n<|user|>Say hi<|end|>"] * 2
