"""Stand-ins for the paid provider models: no keys, no network, honest usage.

A stand-in answers by quoting the help-centre sentences it was sent (more of
them, and more explanation, the higher its tier), labels every answer
``[stand-in for <model>]``, and reports the usage the real call would have:
input tokens counted on the prompt it actually got (so a shorter prompt is
a cheaper call), output tokens of the answer it wrote and, for OpenAI
models, the provider's automatic prompt cache (a prefix of 1,024 tokens or
more seen before is read from cache, in 128-token steps). The ledger prices
each call as the provider model it stands for.

The same stand-in serves the LangChain half (:class:`StandInChatModel`), the
LlamaIndex half (:class:`StandInLLM`) and the batch API
(:class:`StandInBatchAPI`, priced at the provider's batch rates).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import ConfigDict, Field

from costopt_core.batch import BatchRequest, BatchResult, LocalBatchProvider
from costopt_core.testing import ScriptedResponse, usage_to_langchain
from costopt_core.tokens import TokenCounter
from costopt_core.types import CallMode, Message, Role, Usage
from costopt_demo.knowledge import article_sentences
from llamaindex_costopt.testing import UsageWireFormat, raw_payload

__all__ = ["StandIn", "StandInBatchAPI", "StandInChatModel", "StandInLLM", "label"]

# OpenAI caches prompt prefixes of at least 1,024 tokens automatically, in
# 128-token steps; Anthropic only caches behind explicit cache_control markers.
_PROMPT_CACHE_MIN_TOKENS = 1024
_PROMPT_CACHE_STEP = 128

#: How many help-centre sentences each tier quotes, and what it adds after them.
_QUOTED = {"small": 2, "mid": 3, "frontier": 5}
_CLOSING = {
    "small": "",
    "mid": "If that does not solve it, reply here and I will look further.",
    "frontier": (
        "Why this works: each of these steps is described in the article cited above, and "
        "doing them in this order avoids the usual pitfalls (a setting changed before the "
        "change it depends on, or a session left open with old credentials). Before you "
        "start, check that you have the owner or admin role, because most of these settings "
        "are hidden from other roles. If anything looks different in your console, send me "
        "a screenshot of the page and I will walk you through it."
    ),
}


def label(model: str) -> str:
    """The marker every stand-in answer starts with."""
    return f"[stand-in for {model}]"


def _quotable(messages: Sequence[Message], static_prefix: str) -> list[str]:
    """Help-centre sentences in the prompt: the question's own context first."""
    users = [m.content for m in messages if m.role == "user"]
    sources = users[-1:] + [
        m.content.replace(static_prefix, "") for m in messages if m.role == "system"
    ]
    found: list[str] = []
    for text in sources:
        hits = sorted((text.find(s), s) for s in article_sentences() if s in text)
        found += [s for _, s in hits if s not in found]
    return found


class StandIn:
    """The framework-neutral stand-in for one provider model.

    Args:
        model: the provider model it stands for (and is priced as).
        tier: ``small`` / ``mid`` / ``frontier``: how long its answers are.
        tokens: the token counter (the engine's).
        static_prefix: the system prompt every request starts with, the part
            a provider's prompt cache can serve.
    """

    def __init__(self, model: str, tier: str, tokens: TokenCounter, static_prefix: str) -> None:
        self.model = model
        self.tier = tier
        self.tokens = tokens
        self.static_prefix = static_prefix
        self.calls = 0
        self._prefix_seen = False
        self._lock = threading.Lock()

    def answer_text(self, messages: Sequence[Message]) -> str:
        quoted = _quotable(messages, self.static_prefix)[: _QUOTED[self.tier]]
        if not quoted:
            return (
                f"{label(self.model)} The help centre does not cover this. I am handing this "
                "over to a colleague, who will reply within one working day."
            )
        parts = [label(self.model), "From the help centre:", *quoted, _CLOSING[self.tier]]
        return " ".join(p for p in parts if p)

    def _cache_read(self, messages: Sequence[Message]) -> int:
        if not self.model.startswith("gpt") or not messages:
            return 0
        if not (
            messages[0].role == "system" and messages[0].content.startswith(self.static_prefix)
        ):
            return 0
        prefix = self.tokens.count(self.static_prefix, self.model)
        with self._lock:
            seen, self._prefix_seen = self._prefix_seen, True
        if not seen or prefix < _PROMPT_CACHE_MIN_TOKENS:
            return 0  # the first call writes the cache (free at OpenAI); later ones read it
        return prefix - prefix % _PROMPT_CACHE_STEP

    def respond(self, messages: Sequence[Message]) -> ScriptedResponse:
        """The answer to ``messages`` and the usage the provider would report for it."""
        with self._lock:
            self.calls += 1
        text = self.answer_text(messages)
        usage = Usage(
            input_tokens=self.tokens.count_messages(messages, self.model).tokens,
            output_tokens=self.tokens.count(text, self.model),
            cache_read_tokens=self._cache_read(messages),
            cache_write_5m_tokens=0,
            cache_write_1h_tokens=0,
        )
        return ScriptedResponse(text, usage, model=self.model)


# -- LangChain -------------------------------------------------------------------
_LC_ROLES: dict[str, Role] = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
}


class StandInChatModel(BaseChatModel):
    """A LangChain chat model over a :class:`StandIn`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stand_in: StandIn = Field(exclude=True)
    model_name: str

    @classmethod
    def of(cls, stand_in: StandIn) -> StandInChatModel:
        return cls(stand_in=stand_in, model_name=stand_in.model)

    @property
    def _llm_type(self) -> str:
        return "costopt-demo-stand-in"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        neutral = [Message(role=_LC_ROLES.get(m.type, "user"), content=m.text) for m in messages]
        r = self.stand_in.respond(neutral)
        message = AIMessage(
            content=r.text,
            usage_metadata=usage_to_langchain(r.usage),
            response_metadata={"model_name": r.model, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)


# -- LlamaIndex ------------------------------------------------------------------
_LI_ROLES: dict[str, Role] = {"system": "system", "assistant": "assistant", "tool": "tool"}


class StandInLLM(CustomLLM):
    """A LlamaIndex LLM over a :class:`StandIn`; usage in the provider's wire format."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stand_in: StandIn = Field(exclude=True)
    usage_format: UsageWireFormat = "openai"

    @classmethod
    def of(cls, stand_in: StandIn) -> StandInLLM:
        wire: UsageWireFormat = "anthropic" if stand_in.model.startswith("claude") else "openai"
        return cls(stand_in=stand_in, usage_format=wire)

    @classmethod
    def class_name(cls) -> str:
        return "costopt_demo_stand_in_llm"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.stand_in.model, is_chat_model=True)

    def _respond(self, messages: Sequence[ChatMessage]) -> ScriptedResponse:
        return self.stand_in.respond(
            [
                Message(role=_LI_ROLES.get(m.role.value, "user"), content=m.content or "")
                for m in messages
            ]
        )

    def _chat(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        r = self._respond(messages)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=r.text),
            raw=raw_payload(r, self.usage_format),
        )

    def _complete(self, prompt: str) -> CompletionResponse:
        r = self._respond([ChatMessage(role=MessageRole.USER, content=prompt)])
        return CompletionResponse(text=r.text, raw=raw_payload(r, self.usage_format))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return self._complete(prompt)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self._complete(prompt)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()


# -- the provider's batch API -----------------------------------------------------
class StandInBatchAPI(LocalBatchProvider):
    """A provider's batch API (e.g. Anthropic Message Batches), stood in for locally.

    The local executor answers each request with the stand-in at once; the
    job prices the answers at the provider's batch rates (``mode = "batch"``),
    as the real batch API would bill them.
    """

    mode: CallMode = "batch"

    def __init__(self, stand_in: StandIn, *, name: str = "stand-in-batch-api") -> None:
        super().__init__(self._answer, max_concurrency=2, name=name)
        self.stand_in = stand_in

    def _answer(self, request: BatchRequest) -> BatchResult:
        r = self.stand_in.respond(request.messages)
        return BatchResult(request.id, "succeeded", r.text, r.usage, r.model)
