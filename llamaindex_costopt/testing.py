"""``ScriptedLLM``: a LlamaIndex LLM that answers from a script.

Stands in for a provider LLM in tests, notebooks and the demo: a real model
name, the provider's own usage payload in ``response.raw`` (OpenAI, Anthropic
or Gemini format, so the cost handler goes through the same normalization as
with real providers), instrumentation events like any LlamaIndex LLM, and
streams whose last response carries the usage, as providers do.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, model_validator

from costopt_core.testing import (
    Script,
    ScriptedResponse,
    usage_to_anthropic,
    usage_to_gemini,
    usage_to_openai,
)

__all__ = ["ScriptedLLM", "UsageWireFormat", "raw_payload"]

UsageWireFormat = Literal["openai", "anthropic", "gemini"]


def raw_payload(r: ScriptedResponse, usage_format: UsageWireFormat) -> dict[str, Any]:
    """The provider response ``raw`` holds: model name and usage in ``usage_format``."""
    if usage_format == "openai":
        return {"model": r.model, "usage": usage_to_openai(r.usage)}
    if usage_format == "anthropic":
        return {"model": r.model, "usage": usage_to_anthropic(r.usage)}
    if usage_format == "gemini":
        return {"model": r.model, "usage_metadata": usage_to_gemini(r.usage)}
    raise ValueError(f"unknown usage_format {usage_format!r}; use openai, anthropic or gemini")


class ScriptedLLM(CustomLLM):
    """A LlamaIndex LLM that returns scripted answers with scripted token usage.

    Every method (``chat``, ``complete``, their ``stream_*`` and ``a*``
    twins) takes the next response of the script and emits the usual
    instrumentation events. Streams yield one response per word, then a last
    one (empty delta) whose ``raw`` carries the usage.

    Args:
        script: the answers to give.
        usage_format: wire format of the usage in ``raw``: ``"openai"``
            (``raw["usage"]``), ``"anthropic"`` (``raw["usage"]``) or
            ``"gemini"`` (``raw["usage_metadata"]``).
        model: the model name in ``metadata``; the first response's model by default.

    Example:
        >>> from costopt_core.testing import Script
        >>> llm = ScriptedLLM(script=Script(["Paris."], model="gpt-4o-mini"))
        >>> llm.complete("Capital of France?").text
        'Paris.'
    """

    script: Script
    usage_format: UsageWireFormat = "openai"
    model: str = Field(default="", description="Model name; the script's model by default.")

    @model_validator(mode="after")
    def _default_model(self) -> ScriptedLLM:
        if not self.model:
            self.model = self.script.responses[0].model
        return self

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], *, model: str = "gpt-4o-mini", **kwargs: Any
    ) -> ScriptedLLM:
        """An LLM answering ``texts`` in turn, with default usage."""
        return cls(script=Script(texts, model=model), model=model, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "costopt_scripted_llm"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=True)

    # -- response building --------------------------------------------------
    def _raw(self, r: ScriptedResponse) -> dict[str, Any]:
        return raw_payload(r, self.usage_format)

    def _chat_response(self, r: ScriptedResponse) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=r.text), raw=self._raw(r)
        )

    def _completion_response(self, r: ScriptedResponse) -> CompletionResponse:
        return CompletionResponse(text=r.text, raw=self._raw(r))

    def _completion_chunks(self, r: ScriptedResponse) -> Generator[CompletionResponse, None, None]:
        text = ""
        for i, word in enumerate(r.text.split(" ")):
            delta = word if i == 0 else " " + word
            text += delta
            # Providers name the model on every chunk but report usage once, at the end.
            yield CompletionResponse(text=text, delta=delta, raw={"model": r.model})
        yield CompletionResponse(text=text, delta="", raw=self._raw(r))

    def _chat_chunks(self, r: ScriptedResponse) -> Generator[ChatResponse, None, None]:
        for c in self._completion_chunks(r):
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=c.text),
                delta=c.delta,
                raw=c.raw,
            )

    # -- chat ---------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(self.script.next())

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # Take the response now, as a provider call would be made now.
        return self._chat_chunks(self.script.next())

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(await self.script.anext())

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        r = await self.script.anext()

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for chunk in self._chat_chunks(r):
                yield chunk

        return gen()

    # -- completion ---------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion_response(self.script.next())

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self._completion_chunks(self.script.next())

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return self._completion_response(await self.script.anext())

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        r = await self.script.anext()

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for chunk in self._completion_chunks(r):
                yield chunk

        return gen()
