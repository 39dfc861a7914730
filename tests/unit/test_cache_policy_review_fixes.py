"""Cache policy fixes from a review: finish reasons in every provider's words, stream replays.

1. An answer cut by the output limit or blocked by a safety system is not
   stored, however its provider names the reason and wherever it puts it
   (Bedrock's ``stopReason``, Gemini's ``candidates[0].finish_reason`` and
   ``SAFETY`` / ``RECITATION``, ...), through LangChain and LlamaIndex alike.
2. A ``CachedChatModel`` stream hit adds up to the message an invoke hit
   returns: content blocks (a signed thinking block, tool_use), tool calls,
   usage (once) and metadata.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from costopt_core import CostEngine
from costopt_core.cache import CacheConfig, CachedResponse
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.engine import skip_reason
from costopt_core.finish import finish_reason_of, normalise_finish_reason
from costopt_core.testing import FakeEmbedder
from langchain_costopt import CostCallbackHandler
from langchain_costopt.cached_model import CachedChatModel
from llamaindex_costopt import CachedLLM

QUESTION = "List the three steps to reset the router."
USAGE = {"input_tokens": 10, "output_tokens": 8, "total_tokens": 18}


def engine_cache() -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder())


# -- 1. finish reasons ------------------------------------------------------------


class FinishReason(enum.Enum):
    """Stands in for Gemini's SDK enum (``google.genai.types.FinishReason``)."""

    STOP = 1
    MAX_TOKENS = 2
    SAFETY = 3


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("guardrail_intervened", "not_complete"),  # Bedrock Converse
        ("content_filtered", "not_complete"),  # Bedrock Converse
        ("SAFETY", "not_complete"),  # Gemini
        ("RECITATION", "not_complete"),  # Gemini
        ("PROHIBITED_CONTENT", "not_complete"),  # Gemini
        ("FinishReason.SAFETY", "not_complete"),  # a Gemini enum written with str()
        ("Content_Filter", "not_complete"),  # OpenAI, any case
        ("refusal", "not_complete"),  # Anthropic
        ("MAX_TOKENS", "truncated"),  # Gemini
        ("max_output_tokens", "truncated"),  # OpenAI Responses API
        ("model_context_window_exceeded", "truncated"),  # Anthropic, Bedrock
        ("length", "truncated"),  # OpenAI
        ("STOP", None),
        ("end_turn", None),
        ("tool_use", None),
        (None, None),
    ],
)
def test_skip_reason_knows_every_providers_blocked_and_cut_answers(
    finish: str | None, expected: str | None
) -> None:
    response = CachedResponse(text="The three steps are: 1) open the", finish_reason=finish)
    assert skip_reason(response, CacheConfig()) == expected


def test_a_blocked_answer_is_not_stored_even_when_truncated_answers_are() -> None:
    config = CacheConfig(cache_truncated=True)
    assert skip_reason(CachedResponse(text="cut", finish_reason="MAX_TOKENS"), config) is None
    blocked = CachedResponse(text="I can't help with that.", finish_reason="guardrail_intervened")
    assert skip_reason(blocked, config) == "not_complete"


def test_finish_reason_of_reads_each_providers_place_for_it() -> None:
    assert finish_reason_of({"choices": [{"finish_reason": "length"}]}) == "length"
    assert finish_reason_of({"stopReason": "max_tokens"}) == "max_tokens"
    assert finish_reason_of({"stop_reason": "refusal"}) == "refusal"
    assert finish_reason_of({"done_reason": "length"}) == "length"
    assert finish_reason_of({"candidates": [{"finishReason": "SAFETY"}]}) == "SAFETY"
    sdk = SimpleNamespace(candidates=[SimpleNamespace(finish_reason=FinishReason.MAX_TOKENS)])
    assert finish_reason_of(sdk) == "MAX_TOKENS"
    responses_api = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert finish_reason_of(responses_api) == "max_output_tokens"
    # The first source naming one wins; sources without one are skipped.
    assert finish_reason_of(None, {}, {"finish_reason": "stop"}, {"stopReason": "x"}) == "stop"
    assert finish_reason_of({"choices": []}, "text", None) is None
    assert normalise_finish_reason(" FinishReason.MAX_TOKENS ") == "max_tokens"


class _LangChainModel(BaseChatModel):
    """A provider whose answer carries ``meta`` as its response metadata."""

    meta: dict[str, Any]
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "fake-provider"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        msg = AIMessage(
            content="The three steps are: 1) open the",
            response_metadata=dict(self.meta),
            usage_metadata=USAGE,  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


@pytest.mark.parametrize(
    ("meta", "calls"),
    [
        ({"stopReason": "max_tokens"}, 2),  # Bedrock Converse: cut
        ({"stopReason": "guardrail_intervened"}, 2),  # Bedrock Guardrails: blocked
        ({"finish_reason": "SAFETY"}, 2),  # Gemini (langchain-google-genai): blocked
        ({"finish_reason": "RECITATION"}, 2),  # Gemini: blocked
        ({"stopReason": "end_turn"}, 1),  # a whole answer is stored
        ({"finish_reason": "STOP"}, 1),
    ],
)
def test_langchain_does_not_store_cut_or_blocked_answers_in_any_providers_words(
    meta: dict[str, Any], calls: int
) -> None:
    inner = _LangChainModel(meta=meta)
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    first = cached.invoke(QUESTION)
    again = cached.invoke(QUESTION)
    assert inner.calls == calls
    assert first.content == again.content == "The three steps are: 1) open the"


class _LlamaIndexModel(CustomLLM):
    """A provider whose completions carry ``raw``; its stream yields ``chunks``."""

    raw: Any = None
    chunks: list[CompletionResponse] = Field(default_factory=list)
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="fake")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text="The three steps are: 1) open the", raw=self.raw)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kw: Any
    ) -> Iterator[CompletionResponse]:
        self.calls += 1
        chunks = [c.model_copy() for c in self.chunks]

        def gen() -> Iterator[CompletionResponse]:
            yield from chunks

        return gen()


@pytest.mark.parametrize(
    ("raw", "calls"),
    [
        ({"stopReason": "max_tokens"}, 2),  # Bedrock Converse
        ({"stopReason": "guardrail_intervened"}, 2),
        ({"candidates": [{"finish_reason": "MAX_TOKENS"}]}, 2),  # Gemini, as a dict
        ({"candidates": [{"finish_reason": "SAFETY"}]}, 2),
        # Gemini's SDK object, its finish reason an enum
        (SimpleNamespace(candidates=[SimpleNamespace(finish_reason=FinishReason.MAX_TOKENS)]), 2),
        ({"choices": [{"finish_reason": "content_filter"}]}, 2),  # OpenAI
        ({"stopReason": "end_turn"}, 1),  # a whole answer is stored
        ({"candidates": [{"finish_reason": "STOP"}]}, 1),
    ],
)
def test_llamaindex_does_not_store_cut_or_blocked_answers_in_any_providers_words(
    raw: Any, calls: int
) -> None:
    inner = _LlamaIndexModel(raw=raw)
    cached = CachedLLM(llm=inner, semantic_cache=engine_cache())
    assert cached.complete(QUESTION).text == "The three steps are: 1) open the"
    assert cached.complete(QUESTION).text == "The three steps are: 1) open the"
    assert inner.calls == calls


def test_llamaindex_stream_cut_on_a_chunk_before_the_last_is_not_stored() -> None:
    # OpenAI streams "length" on the last content chunk, then a usage-only chunk.
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    chunks = [
        CompletionResponse(text="The three", delta="The three", raw={"choices": [{}]}),
        CompletionResponse(
            text="The three steps",
            delta=" steps",
            raw={"choices": [{"finish_reason": "length"}]},
        ),
        CompletionResponse(text="The three steps", delta="", raw={"choices": [], "usage": usage}),
    ]
    inner = _LlamaIndexModel(chunks=chunks)
    cached = CachedLLM(llm=inner, semantic_cache=engine_cache())
    for _ in range(2):
        streamed = list(cached.stream_complete(QUESTION))
        assert streamed[-1].text == "The three steps"
    assert inner.calls == 2
    # A whole answer streamed the same way is stored: the one call serves the second.
    chunks[1] = chunks[1].model_copy(update={"raw": {"choices": [{"finish_reason": "stop"}]}})
    whole = _LlamaIndexModel(chunks=chunks)
    cached = CachedLLM(llm=whole, semantic_cache=engine_cache())
    for _ in range(2):
        assert "".join(r.delta or "" for r in cached.stream_complete(QUESTION)) == (
            "The three steps"
        )
    assert whole.calls == 1


# -- 2. stream replay of content blocks ---------------------------------------------

THINKING = {
    "type": "thinking",
    "thinking": "User wants the weather; call the tool.",
    "signature": "EqQBCgIYAhIM...",
}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
CITED = {
    "type": "text",
    "text": "Paris is the capital of France.",
    "annotations": [{"type": "url_citation", "url": "https://example.com/paris"}],
}


class _BlocksModel(BaseChatModel):
    """An Anthropic-like provider whose answer is ``content`` (a list of blocks)."""

    content: list[Any]
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "anthropic-like"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        tool_calls = [
            {"name": b["name"], "args": b["input"], "id": b["id"], "type": "tool_call"}
            for b in self.content
            if b.get("type") == "tool_use"
        ]
        msg = AIMessage(
            content=self.content,
            tool_calls=tool_calls,
            additional_kwargs={"note": "kept"},
            response_metadata={"stop_reason": "tool_use", "model_name": "claude-3-5-haiku"},
            usage_metadata=USAGE,  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


def _same_message(summed: AIMessageChunk, invoked: BaseMessage) -> None:
    assert isinstance(invoked, AIMessage)
    assert summed.content == invoked.content
    assert summed.tool_calls == invoked.tool_calls
    assert summed.invalid_tool_calls == invoked.invalid_tool_calls
    assert summed.usage_metadata == invoked.usage_metadata == USAGE  # not doubled
    assert summed.additional_kwargs == invoked.additional_kwargs
    assert summed.response_metadata == invoked.response_metadata


def _sum(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


@pytest.mark.parametrize(
    "content",
    [
        [THINKING, {"type": "text", "text": "Let me check."}, TOOL_USE],
        [CITED],
        # Plain text blocks (an Anthropic answer) stay blocks, not a string.
        [{"type": "text", "text": "It is sunny"}, {"type": "text", "text": " in Paris."}],
    ],
    ids=["thinking_text_tool_use", "text_with_citations", "plain_text_blocks"],
)
def test_a_stream_hit_adds_up_to_the_invoke_hit(content: list[Any]) -> None:
    inner = _BlocksModel(content=content)
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    question = "What's the weather in Paris?"
    cached.invoke(question)
    invoked = cached.invoke(question)
    chunks = list(cached.stream(question))

    async def astream() -> list[AIMessageChunk]:
        return [c async for c in cached.astream(question)]

    achunks = asyncio.run(astream())
    assert inner.calls == 1
    assert invoked.content == content
    for streamed in (chunks, achunks):
        _same_message(_sum(streamed), invoked)
        # The usage is on one chunk only, so adding the chunks does not double it.
        assert sum(c.usage_metadata is not None for c in streamed) == 1


def test_a_stream_hit_with_blocks_is_recorded_once_at_its_usage() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    inner = _BlocksModel(content=[THINKING, {"type": "text", "text": "Let me check."}, TOOL_USE])
    cached = CachedChatModel(model=inner, semantic_cache=engine_cache())
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    cached.invoke("What's the weather in Paris?", config=cfg)
    streamed = _sum(list(cached.stream("What's the weather in Paris?", config=cfg)))
    assert [b["type"] for b in streamed.content] == ["thinking", "text", "tool_use"]  # type: ignore[index]
    records = engine.ledger.records()
    assert [r.outcome for r in records] == ["model", "cache_exact"]
    assert (records[1].usage.input_tokens, records[1].usage.output_tokens) == (10, 8)
