"""``ScriptedChatModel``: a LangChain chat model that answers from a script.

Stands in for a provider model in tests, notebooks and the demo: real
``usage_metadata`` (cache reads and writes included), a real model name, and
streaming whose last chunk carries the usage, as providers do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from costopt_core.testing import Script, ScriptedResponse, usage_to_langchain

__all__ = ["ScriptedChatModel"]


def _message(r: ScriptedResponse) -> AIMessage:
    return AIMessage(
        content=r.text,
        tool_calls=[dict(tc) for tc in r.tool_calls],
        usage_metadata=usage_to_langchain(r.usage),
        response_metadata={"model_name": r.model, "finish_reason": r.finish_reason},
    )


def _chunks(r: ScriptedResponse) -> Iterator[ChatGenerationChunk]:
    words = r.text.split(" ")
    for i, w in enumerate(words):
        yield ChatGenerationChunk(message=AIMessageChunk(content=w if i == 0 else " " + w))
    # The tool calls come whole in the last chunk, with the usage (providers send
    # their arguments in pieces; merged, it is the same message).
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": tc["name"], "args": json.dumps(tc["args"]), "id": tc.get("id"), "index": i}
                for i, tc in enumerate(r.tool_calls)
            ],
            usage_metadata=usage_to_langchain(r.usage),
            response_metadata={"model_name": r.model, "finish_reason": r.finish_reason},
            chunk_position="last",
        )
    )


class ScriptedChatModel(BaseChatModel):
    """A chat model that returns scripted answers with scripted token usage.

    Example:
        >>> from costopt_core.testing import Script
        >>> model = ScriptedChatModel(script=Script(["Paris."], model="gpt-4o-mini"))
        >>> model.invoke("Capital of France?").content
        'Paris.'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: Script
    model_name: str = Field(default="gpt-4o-mini")

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], *, model: str = "gpt-4o-mini", **kwargs: Any
    ) -> ScriptedChatModel:
        return cls(script=Script(texts, model=model), model_name=model, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "costopt-scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        """Bind tools in OpenAI's format, as provider models do (the script ignores them)."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = self.model_name
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=_message(self.script.next()))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        r = await self.script.anext()
        return ChatResult(generations=[ChatGeneration(message=_message(r))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in _chunks(self.script.next()):
            if run_manager and chunk.message.content:
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        r = await self.script.anext()
        for chunk in _chunks(r):
            if run_manager and chunk.message.content:
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk
