"""LangChain messages <-> the engine's neutral ``Message``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import ToolCall

from costopt_core.errors import ConfigurationError
from costopt_core.types import Message, Role

__all__ = ["from_langchain_message", "from_langchain_messages", "to_langchain_message"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(parts)


def from_langchain_message(m: BaseMessage) -> Message:
    role: Role
    if isinstance(m, SystemMessage):
        role = "system"
    elif isinstance(m, AIMessage):
        role = "assistant"
    elif isinstance(m, ToolMessage):
        role = "tool"
    else:
        role = "user"
    return Message(
        role=role,
        content=_text(m.content),
        name=m.name,
        tool_calls=tuple(dict(tc) for tc in getattr(m, "tool_calls", None) or ()),
        tool_call_id=getattr(m, "tool_call_id", None),
    )


def from_langchain_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    return [from_langchain_message(m) for m in messages]


def _tool_call(tc: Mapping[str, Any]) -> ToolCall:
    # LangChain requires name, args and an id key; a call read back from a file,
    # a queue or another framework may lack the id (None is LangChain's "no id").
    name, args, call_id = tc.get("name"), tc.get("args", {}), tc.get("id")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise ConfigurationError(
            f"a tool call needs a string 'name' and an 'args' object, got {dict(tc)!r}"
        )
    return ToolCall(
        name=name, args=args, id=None if call_id is None else str(call_id), type="tool_call"
    )


def to_langchain_message(m: Message) -> BaseMessage:
    """An engine ``Message`` (a queued request, a memory's summary) as a LangChain message."""
    if m.role == "system":
        return SystemMessage(content=m.content, name=m.name)
    if m.role == "assistant":
        return AIMessage(
            content=m.content, name=m.name, tool_calls=[_tool_call(tc) for tc in m.tool_calls]
        )
    if m.role == "tool":
        return ToolMessage(content=m.content, tool_call_id=m.tool_call_id or "")
    return HumanMessage(content=m.content, name=m.name)
