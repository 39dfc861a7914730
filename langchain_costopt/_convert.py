"""LangChain messages <-> the engine's neutral ``Message``."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import ToolCall

from costopt_core.errors import ConfigurationError, UsageFormatError
from costopt_core.types import Message, Role, Usage

__all__ = [
    "cache_model",
    "from_langchain_message",
    "from_langchain_messages",
    "non_text_digest",
    "to_langchain_message",
    "usage_or_unknown",
]

log = logging.getLogger(__name__)


def _is_text(block: Any) -> bool:
    return isinstance(block, str) or (
        isinstance(block, dict)
        and block.get("type", "text") == "text"
        and isinstance(block.get("text"), str)
    )


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


def non_text_digest(messages: Sequence[BaseMessage]) -> str | None:
    """A digest of every content block that is not text (images, audio, files).

    The neutral ``Message`` carries text only, so two requests that differ in
    an image alone would otherwise share a cache entry. None when all is text.
    """
    h = hashlib.blake2b(digest_size=16)
    seen = False
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            continue
        for block in m.content:
            if not _is_text(block):
                seen = True
                h.update(f"{i}:".encode())
                h.update(json.dumps(block, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest() if seen else None


def cache_model(model: str, messages: Sequence[BaseMessage]) -> str:
    """The cache scope's model string: ``model``, plus the non-text blocks' digest."""
    digest = non_text_digest(messages)
    return model if digest is None else f"{model}/blocks:{digest}"


def usage_or_unknown(read: Callable[[Any], Usage], payload: Any) -> Usage:
    """``payload`` read as usage, or ``Usage()`` (unknown) when it is missing or malformed.

    A provider that reports impossible counts (negative, not a number, cache
    reads above the input) still made the call: it is recorded with an unknown
    cost, never dropped, never $0, and never an error in the user's call.
    """
    if payload is None:
        return Usage()
    try:
        return read(payload)
    except UsageFormatError as exc:
        log.warning("costopt: unreadable token usage (%s); the call's cost is unknown", exc)
        return Usage()


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
