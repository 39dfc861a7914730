"""Calling a wrapped chat model inside our own run, as LangChain itself would.

The cache wrapper and the router call the models they wrap through
``_generate`` / ``_stream`` so that one user call stays one LLM run for the
cost handler. Two things LangChain's public entry points do on the way would
be lost by that: the model's own ``rate_limiter`` (taken once per model call),
and the fallback to one whole answer when a model cannot stream (it only
implements ``_generate``) or must not (its ``disable_streaming``). Both live
here, once, for every adapter.

The third thing is the run itself. A wrapper's answer must be booked to the
run's tenant and its discarded attempts to the run's cost handlers, but
langchain-core hands ``_generate`` the run manager and calls ``_stream``
without one. :class:`RunAwareChatModel` closes that gap: its ``stream`` /
``astream`` pass ``_stream`` a :class:`StreamRun` (the run's id, metadata and
handlers) under a private call kwarg, and :func:`run_of` gives either one to
the code that needs the run.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.utils.json import parse_partial_json
from pydantic import BaseModel, Field

from langchain_costopt.callbacks import cost_handlers

__all__ = [
    "RUN_KWARG",
    "Run",
    "RunAwareChatModel",
    "StreamRun",
    "agenerate",
    "astream",
    "chunk_of",
    "generate",
    "run_of",
    "stream",
    "streams",
]

#: The call kwarg under which ``RunAwareChatModel.stream`` hands ``_stream`` its run.
RUN_KWARG = "costopt_run"


class Run(Protocol):
    """What the adapters read of a run: a LangChain run manager, or a :class:`StreamRun`."""

    @property
    def run_id(self) -> UUID | None: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    @property
    def handlers(self) -> Sequence[BaseCallbackHandler]: ...


@dataclass(frozen=True)
class StreamRun:
    """A streamed run as ``_stream`` cannot otherwise see it.

    Attributes:
        run_id: the id the run is started under (the cost handler's call id).
        metadata: the run's metadata: the caller's, then the model's own.
        handlers: the cost handlers of the run (the only handlers read here).
    """

    run_id: UUID
    metadata: Mapping[str, Any]
    handlers: Sequence[BaseCallbackHandler]


def run_of(run_manager: Any, kwargs: dict[str, Any]) -> Run | None:
    """The run of a ``_generate`` / ``_stream`` call; removes :data:`RUN_KWARG` from ``kwargs``.

    Args:
        run_manager: what LangChain passed (None when it called ``_stream``).
        kwargs: the call's kwargs; the private run entry is taken out so it
            never reaches a provider's request.
    """
    passed: Run | None = kwargs.pop(RUN_KWARG, None)
    return run_manager if run_manager is not None else passed


class RunAwareChatModel(BaseChatModel):
    """A costopt chat model whose ``_stream`` learns its run (see the module docstring).

    It wraps other chat models, so it has no sampling of its own; LangChain's
    standard settings, given here, are defaults for every call it makes of
    them (a call's own ``temperature=`` / ``max_tokens=`` / ``stop=`` win).
    They are part of the request as a cache scope or a budget estimate sees it.

    Args:
        temperature: sampling temperature passed to every wrapped call.
        max_tokens: the most output tokens of every wrapped call.
        stop: stop sequences of every wrapped call.
        streaming: LangChain's switch for ``invoke`` to stream from the
            wrapped model (tokens reach ``on_llm_new_token``). RouterChatModel
            takes it and keeps ``invoke`` on its validated path regardless, so
            that a weak cheap answer still escalates: stream with ``.stream()``.
    """

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    # None, not False: langchain-core reads a False it finds set as "never
    # stream invoke", and configurable_fields passes every field back in.
    streaming: bool | None = None

    def _fill_defaults(self, stop: list[str] | None, kwargs: dict[str, Any]) -> list[str] | None:
        """Put this model's sampling defaults into ``kwargs`` where the call has none;
        returns the call's stop sequences (this model's when the call gives none)."""
        for name in ("temperature", "max_tokens"):
            if (value := getattr(self, name)) is not None:
                kwargs.setdefault(name, value)
        return self.stop if stop is None else stop

    def _call_of(
        self, run_manager: Any, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Run | None, list[str] | None]:
        """The run (:func:`run_of`) and stop sequences of one ``_generate`` / ``_stream``
        call, its ``kwargs`` given this model's sampling defaults (:meth:`_fill_defaults`)."""
        return run_of(run_manager, kwargs), self._fill_defaults(stop, kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        stop = self._fill_defaults(stop, kwargs)
        return super()._get_ls_params(stop=stop, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema``, asked of the wrapped model(s) the way ``method`` says.

        Args:
            schema: a pydantic class, a TypedDict, a JSON schema or an OpenAI
                tool / response format; a pydantic class is parsed into an
                instance, the rest into a dict. Optional for ``json_mode`` only.
            include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of
                raising when the answer does not parse.
            method: ``"function_calling"``: the schema is bound as a forced
                tool call (each wrapped model's ``bind_tools``, ``strict`` passed
                on where it takes it). ``"json_schema"``: the wrapped models are
                asked for ``response_format={"type": "json_schema", "json_schema":
                {...}}`` (OpenAI's shape, as ChatOpenAI binds it) and the JSON
                text is parsed; for models that honour a response format but
                cannot call tools. ``"json_mode"``: ``response_format={"type":
                "json_object"}`` (the prompt must describe the schema).
            strict: OpenAI's strict schema adherence, for the tool or the format.

        Through a router, a cheap tier's answer that does not parse (prose, a
        missing tool call, or for ``json_schema`` JSON that breaks the schema)
        escalates one tier up.

        Raises:
            ConfigurationError: an unknown ``method``, or no ``schema`` where it needs one.
        """
        from langchain_costopt._structured import structured_output

        return structured_output(
            self, schema, include_raw=include_raw, method=method, strict=strict, **kwargs
        )

    def _stream_kwargs(
        self, config: RunnableConfig | None, kwargs: dict[str, Any], *, async_api: bool
    ) -> tuple[RunnableConfig, dict[str, Any]]:
        config = ensure_config(config)
        if not self._should_stream(async_api=async_api, **{**kwargs, "stream": True}):
            # Not streamed: LangChain calls invoke(), whose _generate gets the run manager.
            return config, kwargs
        # The run is started under this id, so the run manager's and ours agree.
        run_id = config.get("run_id") or uuid.uuid4()
        metadata = {**(config.get("metadata") or {}), **(self.metadata or {})}
        run = StreamRun(run_id, metadata, cost_handlers(config.get("callbacks"), self.callbacks))
        return RunnableConfig(**{**config, "run_id": run_id}), {**kwargs, RUN_KWARG: run}

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, kwargs = self._stream_kwargs(config, kwargs, async_api=False)
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, kwargs = self._stream_kwargs(config, kwargs, async_api=True)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The run is no parameter of the request: kept out of traces and cache keys.
        # The sampling defaults are: LangChain's LLM cache keys on them, and the
        # cost handler's budget estimate reads max_tokens here.
        kwargs.pop(RUN_KWARG, None)
        stop = self._fill_defaults(stop, kwargs)
        return super()._get_invocation_params(stop=stop, **kwargs)


@functools.lru_cache(maxsize=256)
def _takes_run_manager(cls: type[BaseChatModel], method: str) -> bool:
    # As langchain-core itself checks before passing one (some models' methods take none).
    return "run_manager" in inspect.signature(getattr(cls, method)).parameters


def _with_run(
    model: BaseChatModel,
    method: str,
    kwargs: dict[str, Any],
    run: Run | None,
    run_manager: Any,
) -> dict[str, Any]:
    """``kwargs`` plus the run, in the one form ``model`` takes."""
    if run_manager is not None and _takes_run_manager(type(model), method):
        return {**kwargs, "run_manager": run_manager}
    if run is not None and isinstance(model, RunAwareChatModel):
        return {**kwargs, RUN_KWARG: run}
    return kwargs


def streams(model: BaseChatModel) -> bool:
    """True if ``model`` implements streaming itself (not only ``_generate``)."""
    return type(model)._stream is not BaseChatModel._stream


def _astreams(model: BaseChatModel) -> bool:
    # BaseChatModel._astream runs a native _stream in a thread; without either
    # it raises NotImplementedError.
    return type(model)._astream is not BaseChatModel._astream or streams(model)


def _will_stream(model: BaseChatModel, kwargs: dict[str, Any], *, async_api: bool) -> bool:
    """Whether ``model.stream()`` / ``.astream()`` would stream a call with ``kwargs``.

    BaseChatModel's own rule (``_should_stream``, asked as its ``stream``
    asks it): the model implements streaming, and its ``disable_streaming``
    does not turn it off (``True``, or ``"tool_calling"`` with tools in the
    call). A model set so has a stream that fails or misbehaves (a provider
    endpoint without streaming, tool calls that break when streamed); called
    directly, it answers through ``invoke`` instead, and so it must here.
    """
    implemented = _astreams(model) if async_api else streams(model)
    return implemented and bool(
        model._should_stream(async_api=async_api, **{**kwargs, "stream": True})
    )


def chunk_of(
    message: BaseMessage, content: Any = None, *, additional_kwargs: bool = True
) -> ChatGenerationChunk:
    """A whole answer as the last chunk of a stream: tool calls, usage and metadata,
    with ``message``'s content unless ``content`` replaces it (a replay sends the
    text in earlier chunks), and its ``additional_kwargs`` unless an earlier chunk
    carried them (``additional_kwargs=False``: merged chunks concatenate strings).

    Invalid tool calls go as the chunks they were, unless their arguments would
    now parse as a call (a truncated JSON object would: a call that failed must
    not be made with cut arguments).
    """
    tool_calls = list(getattr(message, "tool_calls", None) or [])
    chunks: list[dict[str, Any]] = [
        {"name": tc["name"], "args": _json(tc["args"]), "id": tc.get("id")} for tc in tool_calls
    ]
    for itc in getattr(message, "invalid_tool_calls", None) or []:
        if _stays_invalid(itc.get("args")):
            chunks.append({"name": itc.get("name"), "args": itc.get("args"), "id": itc.get("id")})
    chunk = AIMessageChunk(
        content=message.content if content is None else content,
        additional_kwargs=dict(message.additional_kwargs or {}) if additional_kwargs else {},
        tool_call_chunks=[
            tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=i)
            for i, c in enumerate(chunks)
        ],
        usage_metadata=getattr(message, "usage_metadata", None),
        response_metadata=dict(message.response_metadata or {}),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk)


def _stays_invalid(args: Any) -> bool:
    """True if a chunk with these arguments is read as an invalid tool call again."""
    if not args:
        return False  # no arguments read as {}: a call
    try:
        return not isinstance(parse_partial_json(args), dict)
    except Exception:
        return True


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


def _first_message(result: ChatResult) -> BaseMessage:
    gen = result.generations[0] if result.generations else None
    if isinstance(gen, ChatGeneration):
        return gen.message
    return AIMessage(content="" if gen is None else gen.text)


def generate(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    *,
    run: Run | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    """``model._generate`` behind the model's own rate limiter.

    Args:
        model: the wrapped model.
        messages: the request.
        stop: stop sequences.
        run: the caller's run, for a costopt model to read (tenant, cost
            handlers); never emits anything.
        run_manager: the caller's run manager, for a model whose answer *is*
            the caller's (it may stream tokens into it). Not for a router's
            tier: a discarded attempt's tokens must not reach the caller.
        **kwargs: the request's call kwargs.
    """
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)
    kwargs = _with_run(model, "_generate", kwargs, run, run_manager)
    return model._generate(messages, stop=stop, **kwargs)


async def agenerate(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    *,
    run: Run | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    """Async :func:`generate`."""
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)
    kwargs = _with_run(model, "_agenerate", kwargs, run, run_manager)
    return await model._agenerate(messages, stop=stop, **kwargs)


def stream(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    *,
    run: Run | None = None,
    **kwargs: Any,
) -> Iterator[ChatGenerationChunk]:
    """The model's chunks, or its whole answer as one chunk if it cannot stream.

    The caller emits the chunks it passes on; ``model`` gets the run to read
    (``run``), never a run manager to emit into, so no token is sent twice.
    A model that would not stream when called directly (:func:`_will_stream`:
    no ``_stream``, or ``disable_streaming``) answers as one chunk.
    """
    if not _will_stream(model, kwargs, async_api=False):
        yield chunk_of(_first_message(generate(model, messages, stop, run=run, **kwargs)))
        return
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)
    yield from model._stream(messages, stop=stop, **_with_run(model, "_stream", kwargs, run, None))


async def astream(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    *,
    run: Run | None = None,
    **kwargs: Any,
) -> AsyncIterator[ChatGenerationChunk]:
    """Async :func:`stream`."""
    if not _will_stream(model, kwargs, async_api=True):
        result = await agenerate(model, messages, stop, run=run, **kwargs)
        yield chunk_of(_first_message(result))
        return
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)
    kwargs = _with_run(model, "_astream", kwargs, run, None)
    async for chunk in model._astream(messages, stop=stop, **kwargs):
        yield chunk
