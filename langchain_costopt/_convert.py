"""LangChain messages <-> the engine's neutral ``Message``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

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


def to_langchain_message(m: Message) -> BaseMessage:
    """An engine ``Message`` (a queued request, a memory's summary) as a LangChain message."""
    if m.role == "system":
        return SystemMessage(content=m.content, name=m.name)
    if m.role == "assistant":
        return AIMessage(
            content=m.content, name=m.name, tool_calls=[dict(tc) for tc in m.tool_calls]
        )
    if m.role == "tool":
        return ToolMessage(content=m.content, tool_call_id=m.tool_call_id or "")
    return HumanMessage(content=m.content, name=m.name)
