"""Calling a wrapped chat model inside our own run, as LangChain itself would.

The cache wrapper and the router call the models they wrap through
``_generate`` / ``_stream`` so that one user call stays one LLM run for the
cost handler. Two things LangChain's public entry points do on the way would
be lost by that: the model's own ``rate_limiter`` (taken once per model call),
and the fallback to one whole answer when a model cannot stream (it only
implements ``_generate``). Both live here, once, for every adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

__all__ = [
    "agenerate",
    "astream",
    "chunk_of",
    "generate",
    "stream",
    "streams",
]


def streams(model: BaseChatModel) -> bool:
    """True if ``model`` implements streaming itself (not only ``_generate``)."""
    return type(model)._stream is not BaseChatModel._stream


def _astreams(model: BaseChatModel) -> bool:
    # BaseChatModel._astream runs a native _stream in a thread; without either
    # it raises NotImplementedError.
    return type(model)._astream is not BaseChatModel._astream or streams(model)


def chunk_of(message: BaseMessage, content: Any = None) -> ChatGenerationChunk:
    """A whole answer as the last chunk of a stream: tool calls, usage and metadata,
    with ``message``'s content unless ``content`` replaces it (a replay sends the
    text in earlier chunks)."""
    tool_calls = list(getattr(message, "tool_calls", None) or [])
    chunk = AIMessageChunk(
        content=message.content if content is None else content,
        tool_call_chunks=[
            {
                "name": tc["name"],
                "args": _json(tc["args"]),
                "id": tc.get("id"),
                "index": i,
            }
            for i, tc in enumerate(tool_calls)
        ],
        usage_metadata=getattr(message, "usage_metadata", None),
        response_metadata=dict(message.response_metadata or {}),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


def _first_message(result: ChatResult) -> BaseMessage:
    gen = result.generations[0] if result.generations else None
    if isinstance(gen, ChatGeneration):
        return gen.message
    return AIMessage(content="" if gen is None else gen.text)


def generate(
    model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
) -> ChatResult:
    """``model._generate`` behind the model's own rate limiter."""
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)
    return model._generate(messages, stop=stop, **kwargs)


async def agenerate(
    model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
) -> ChatResult:
    """Async :func:`generate`."""
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)
    return await model._agenerate(messages, stop=stop, **kwargs)


def stream(
    model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
) -> Iterator[ChatGenerationChunk]:
    """The model's chunks, or its whole answer as one chunk if it cannot stream."""
    if not streams(model):
        yield chunk_of(_first_message(generate(model, messages, stop, **kwargs)))
        return
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)
    yield from model._stream(messages, stop=stop, **kwargs)


async def astream(
    model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
) -> AsyncIterator[ChatGenerationChunk]:
    """Async :func:`stream`."""
    if not _astreams(model):
        result = await agenerate(model, messages, stop, **kwargs)
        yield chunk_of(_first_message(result))
        return
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)
    async for chunk in model._astream(messages, stop=stop, **kwargs):
        yield chunk
