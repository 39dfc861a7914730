"""A fake LlamaIndex function-calling LLM with a provider format of its own.

Real integrations format tools for their provider and read tool calls back
in that provider's shape; one integration cannot read another's. ``ToolLLM``
does the same with two made-up formats, so tests can tell which LLM formatted
the tools of a call and which one read its answer:

- ``"kwargs"``: tools as ``{"format": "kwargs", "name": ...}``; a tool call
  in ``additional_kwargs["tool_calls"]`` as ``{"id", "name", "input"}``
  (Anthropic-like), read only from there;
- ``"blocks"``: tools as ``{"format": "blocks", "name": ...}``; a tool call
  as a ``ToolCallBlock``, read only from the blocks.

It asks for ``multiply`` with ``args`` while the last message is the user's,
then answers ``answer`` once a tool result is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.mock import MockFunctionCallingLLM
from pydantic import Field, PrivateAttr

__all__ = ["ToolLLM", "multiply"]


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class ToolLLM(MockFunctionCallingLLM):
    """A function-calling LLM with its own tool format (see the module doc)."""

    fmt: str = "blocks"
    args: dict[str, Any] = Field(default_factory=lambda: {"a": 3, "b": 4})
    answer: str = "The product is 12."
    model: str = "gpt-4o-mini"
    #: The ``tools`` each call received, in the order of the calls.
    seen_tools: list[Any] = Field(default_factory=list)
    _calls: int = PrivateAttr(default=0)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("is_chat_model", True)
        super().__init__(**kwargs)
        self._response_generator = self._respond

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> Any:
        meta = super().metadata
        return meta.model_copy(update={"model_name": self.model})

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self._calls += 1
        self.seen_tools.append(kwargs.get("tools"))
        if messages[-1].role != MessageRole.USER:
            return ChatMessage(role=MessageRole.ASSISTANT, content=self.answer)
        call_id = f"{self.fmt}-{self._calls}"
        if self.fmt == "kwargs":
            call = {"id": call_id, "name": "multiply", "input": dict(self.args)}
            return ChatMessage(
                role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}
            )
        block = ToolCallBlock(tool_call_id=call_id, tool_name="multiply", tool_kwargs=self.args)
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text=""), block])

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        # The model in raw, as provider integrations put it (the handler prices by it).
        response = super().chat(messages, **kwargs)
        return response.model_copy(update={"raw": {**(response.raw or {}), "model": self.model}})

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        formatted = [{"format": self.fmt, "name": t.metadata.name} for t in tools]
        return {"messages": messages, "tools": formatted, **kwargs}

    def get_tool_calls_from_response(
        self, response: Any, error_on_no_tool_call: bool = False, **kwargs: Any
    ) -> list[ToolSelection]:
        message = response.message
        if self.fmt == "kwargs":
            calls = [
                ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["input"])
                for c in message.additional_kwargs.get("tool_calls") or ()
            ]
        else:
            calls = [
                ToolSelection(
                    tool_id=b.tool_call_id or "",
                    tool_name=b.tool_name,
                    tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
                )
                for b in message.blocks
                if isinstance(b, ToolCallBlock)
            ]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"no tool call in a {self.fmt!r} answer")
        return calls
