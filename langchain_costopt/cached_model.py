"""``CachedChatModel``: a chat model behind the semantic cache, streaming included.

LangChain's global LLM cache is skipped by ``.stream()``; this wrapper is
not: a hit is replayed as chunks (usage on the last one, as providers send
it), a miss streams from the wrapped model and is stored when complete.
Concurrent identical misses make one call. The wrapped model is called
through its ``_generate``/``_stream`` methods so that one user call stays
one LLM run for the cost handler; it is handed that run, so a router inside
records its escalations with the run's cost handlers.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ConfigDict, Field, ValidationError, model_validator

from costopt_core.cache import CachedResponse, CacheHit, CacheRequest
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.shared_stream import AsyncReading, Reading
from costopt_core.errors import ConfigurationError, check_arguments, config_error
from costopt_core.served import PAID_INFO, SERVED, SHARED_INFO, served_info, served_outcome
from langchain_costopt import _calls
from langchain_costopt._convert import cache_model, from_langchain_messages
from langchain_costopt.cache import engine_cache, generations_of, response_of, run_in_progress
from langchain_costopt.callbacks import TENANT_KEYS, run_tenant
from langchain_costopt.components import METADATA_KEY

__all__ = ["CachedChatModel"]


def _replay(hit: CacheHit, expose: bool) -> Iterator[ChatGenerationChunk]:
    """A cached answer as a stream that adds up to the message an invoke hit returns.

    Text goes in word chunks, then one last chunk with the tool calls, usage
    and metadata. Content blocks (Anthropic's text, thinking with its
    signature and tool_use, a text block's citations or id, a streamed
    block's index) go whole, in one chunk with the rest: as text they would
    add up to a string where the answer had blocks, and lose what an agent
    must send back (a signed thinking block) and what a block says beyond
    its text. Each chunk is noted as served by
    the cache: the cost handler sees the chunks (``on_llm_new_token``) before
    the merged answer, which is a new object.
    """
    gen = generations_of(hit, expose=expose)[0]
    SERVED.take(gen)  # noted for an invoke; a stream hands out its chunks instead
    msg = gen.message if isinstance(gen, ChatGeneration) else AIMessage(content=gen.text)
    info = served_info(hit)
    if not isinstance(msg.content, str):
        # Blocks cannot be cut into word chunks that add back up to themselves
        # (chunks merge list items by their "index" key, which stored blocks may
        # lack or share; as strings, plain text blocks would add up to one string),
        # so the whole answer is one chunk, its usage counted once.
        chunk = _calls.chunk_of(msg)
        SERVED.note(chunk, info)
        yield chunk
        return
    text = msg.text
    words = text.split(" ") if text else []
    # The message's additional_kwargs (reasoning, a parsed answer) go on one chunk
    # only, the first: merging chunks concatenates string values.
    extras = dict(msg.additional_kwargs or {})
    for i, w in enumerate(words):
        chunk = ChatGenerationChunk(
            message=AIMessageChunk(
                content=w if i == 0 else " " + w, additional_kwargs=extras if i == 0 else {}
            )
        )
        SERVED.note(chunk, info)
        yield chunk
    chunk = _calls.chunk_of(msg, content="", additional_kwargs=not words)
    SERVED.note(chunk, info)
    yield chunk


def _told(chunk: ChatGenerationChunk) -> bool:
    """Whether a chunk goes to the run's ``on_llm_new_token``: one with text, and
    a noted one even without (the note says how the run is recorded)."""
    return bool(chunk.text) or SERVED.noted(chunk)


_MEMO_LOCK = threading.Lock()


class _Reader:
    """How one request passes on the chunks of a stream it may share (both twins).

    Every reader gets its own copy of each chunk: langchain-core sets the
    message id and metadata of the chunk it is given, and the others replay
    the original. The wrapped model's own notes (a cache inside, replaying or
    sharing) are taken once per stream into the stream's memo; they say
    whether the wrapped call was a model call (``upstream_paid``). The opener's
    copies carry them (its run is that call); a sharer's first copy is noted
    served. At the end (see ``Reading.pays``) the first reader there records
    the call and the others a hit: :meth:`ending` settles it with an empty last
    chunk when the copies said otherwise.
    """

    def __init__(self, pairs: Reading[Any] | AsyncReading[Any], expose: bool) -> None:
        # The memo is read per chunk: a reading that asks again (its shared call
        # failed) reads another stream, with a memo of its own.
        self.pairs, self.expose = pairs, expose
        self.first, self.shared, self.upstream_paid = True, False, True

    def _inner(self, chunk: ChatGenerationChunk) -> dict[str, Any] | None:
        memo = self.pairs.memo
        with _MEMO_LOCK:  # readers in threads take a chunk's note once between them
            entry = memo.get(id(chunk))
            if entry is None:  # held with its chunk, so its id is not reused
                entry = memo[id(chunk)] = (chunk, SERVED.take(chunk))
        info: dict[str, Any] | None = entry[1]
        return info

    def copy(self, chunk: ChatGenerationChunk, shared: bool) -> ChatGenerationChunk:
        info = self._inner(chunk)
        if info is not None:
            self.upstream_paid = served_outcome(info) is None
        self.shared = shared
        message = chunk.message.model_copy(deep=shared)
        if shared and self.first and self.expose:
            meta = {**message.response_metadata, METADATA_KEY: dict(SHARED_INFO)}
            message.response_metadata = meta
        out = ChatGenerationChunk(message=message, generation_info=chunk.generation_info)
        note = (SHARED_INFO if self.first else None) if shared else info
        if note is not None:
            SERVED.note(out, note)
        self.first = False
        return out

    def ending(self, pays: bool) -> ChatGenerationChunk | None:
        """The empty last chunk that settles how the run is recorded, or None."""
        if not self.upstream_paid or self.shared != pays:
            return None  # no model was called for it, or the copies said it
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=""))
        SERVED.note(chunk, PAID_INFO if pays else SHARED_INFO)
        return chunk


class CachedChatModel(_calls.RunAwareChatModel):
    """Wraps any chat model with costopt's exact + semantic cache.

    Args:
        model: the chat model to call on a miss.
        semantic_cache: the engine cache; a default in-memory one if omitted.
        tenant: tenant of this model's calls (the cache partition and the
            ledger's tenant). Otherwise the run's, as the cost handler reads
            it: the run metadata's ``costopt_tenant`` (or ``tenant_id`` /
            ``tenant``), else ``costopt_core.tenant_scope``'s. Set at
            construction: it is also put in the model's ``metadata``, where
            the cost handler reads it.
        expose_cache_info: mark answers served from the cache in
            ``response_metadata["costopt"]``. Off by default: it tells a caller
            that someone asked the same question before. The cost handler
            learns it either way.
        cache: langchain-core's switch. ``False`` turns this cache off (every
            call goes to ``model``, nothing is stored), as it turns off
            LangChain's global LLM cache for any model.
        temperature, max_tokens, stop: defaults for every call of the wrapped
            model(s); a call's own values win (see ``RunAwareChatModel``).

    Example:
        >>> cached = CachedChatModel(model=chat_model)  # doctest: +SKIP
        >>> for chunk in cached.stream("How do I reset my password?"):  # doctest: +SKIP
        ...     print(chunk.content, end="")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    semantic_cache: CacheEngine = Field(default_factory=CacheEngine)
    tenant: str | None = None
    expose_cache_info: bool = False

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic, whose message would name neither the fix nor
        # (for a union) the field plainly.
        if "model" in data and not isinstance(data["model"], BaseChatModel):
            model = data["model"]
            got = f"str {model!r}" if isinstance(model, str) else type(model).__name__
            raise ConfigurationError(
                "CachedChatModel's model must be a LangChain chat model (BaseChatModel), got "
                f"{got}; pass the model object, e.g. ChatOpenAI(model='gpt-4o-mini')"
            )
        if data.get("semantic_cache") is not None:
            engine_cache(data["semantic_cache"], "CachedChatModel's semantic_cache")
        check_arguments("CachedChatModel", data, type(self), wraps_models=True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error("CachedChatModel", exc) from None

    @model_validator(mode="after")
    def _set_costopt_tenant(self) -> Self:
        # The cache partitions by ``tenant``; the cost handler reads a run's tenant
        # from its metadata. The model's own metadata is in every run it makes and
        # overrides the caller's, as ``tenant`` overrides the scope in the cache.
        # (A unique name: pydantic replaces same-named validators of a base class.)
        if self.tenant is not None:
            self.metadata = {**(self.metadata or {}), TENANT_KEYS[0]: self.tenant}
        return self

    @property
    def _llm_type(self) -> str:
        return f"costopt-cached-{self.model._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model._identifying_params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        kwargs.pop(_calls.RUN_KWARG, None)  # ours: the wrapped model's params do not have it
        stop = self._fill_defaults(stop, kwargs)
        return self.model._get_ls_params(stop=stop, **kwargs)

    @property
    def _caching(self) -> bool:
        # ``cache=False`` is langchain-core's "will not use a cache"; None, True
        # or a BaseCache say nothing against this one.
        return self.cache is not False

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as the wrapped model would; the tools become part of the cache scope."""
        bound = self.model.bind_tools(tools, **kwargs)
        if not isinstance(bound, RunnableBinding):
            raise NotImplementedError(f"{type(self.model).__name__}.bind_tools is not a binding")
        return self.bind(**bound.kwargs)

    def _call_of(
        self, run_manager: Any, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[_calls.Run | None, list[str] | None]:
        run, stop = super()._call_of(run_manager, stop, kwargs)
        if run is None:
            # An invoke that langchain-core streams itself (streaming=True, or a
            # streaming callback handler such as LangGraph's stream_mode="messages")
            # reaches _stream with no run: without this its tenant was lost and
            # every tenant shared the default partition. The run noted when it
            # started stands in for it.
            run = run_in_progress(self.callbacks)
        return run, stop

    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run: _calls.Run | None = None,
    ) -> CacheRequest:
        return CacheRequest(
            messages=tuple(from_langchain_messages(messages)),
            model=cache_model(self.model._get_llm_string(stop=stop, **kwargs), messages),
            tools=tuple(kwargs.get("tools") or ()),
            # The tenant the cost handler books the run under: a partition that
            # disagreed with it would serve one tenant's answer to another.
            tenant=run_tenant(getattr(run, "metadata", None), own=self.tenant),
        )

    def _result(self, hit: CacheHit | None, fresh: ChatResult | None) -> ChatResult:
        if hit is None and fresh is not None:
            return fresh
        assert hit is not None
        gens = generations_of(hit, expose=self.expose_cache_info)
        return ChatResult(generations=gens)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, stop = self._call_of(run_manager, stop, kwargs)
        # The wrapped model's answer is this run's answer: it gets the run manager
        # (its tokens, a router's escalations and budget holds belong to this run).
        if not self._caching:
            return _calls.generate(
                self.model, messages, stop, run=run, run_manager=run_manager, **kwargs
            )
        fresh: list[ChatResult] = []

        def call() -> CachedResponse:
            result = _calls.generate(
                self.model, messages, stop, run=run, run_manager=run_manager, **kwargs
            )
            fresh.append(result)
            return response_of(result.generations)

        out = self.semantic_cache.get_or_call(self._request(messages, stop, kwargs, run), call)
        return self._result(out.hit, fresh[0] if fresh else None)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, stop = self._call_of(run_manager, stop, kwargs)
        if not self._caching:
            return await _calls.agenerate(
                self.model, messages, stop, run=run, run_manager=run_manager, **kwargs
            )
        fresh: list[ChatResult] = []

        async def call() -> CachedResponse:
            result = await _calls.agenerate(
                self.model, messages, stop, run=run, run_manager=run_manager, **kwargs
            )
            fresh.append(result)
            return response_of(result.generations)

        request = self._request(messages, stop, kwargs, run)
        out = await self.semantic_cache.aget_or_call(request, call)
        return self._result(out.hit, fresh[0] if fresh else None)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run, stop = self._call_of(run_manager, stop, kwargs)
        if not self._caching:
            yield from self._emit(
                _calls.stream(self.model, messages, stop, run=run, **kwargs), run_manager
            )
            return
        request = self._request(messages, stop, kwargs, run)
        hit = self.semantic_cache.lookup(request)
        if hit is not None:
            yield from self._emit(_replay(hit, self.expose_cache_info), run_manager)
            return
        # An identical request streaming now shares its call (served as a hit).
        # Only a stream read to its end is stored: a half-read answer is not one.
        pairs = self.semantic_cache.share_stream(
            request,
            lambda: _calls.stream(self.model, messages, stop, run=run, **kwargs),
            self._complete,
        )
        yield from self._emit(self._served_shares(pairs), run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run, stop = self._call_of(run_manager, stop, kwargs)
        if not self._caching:
            async for chunk in _calls.astream(self.model, messages, stop, run=run, **kwargs):
                if run_manager and _told(chunk):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            return
        request = self._request(messages, stop, kwargs, run)
        hit = await self.semantic_cache.alookup(request)
        if hit is not None:
            for chunk in _replay(hit, self.expose_cache_info):
                if run_manager and _told(chunk):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            return
        pairs = await self.semantic_cache.ashare_stream(
            request,
            lambda: _calls.astream(self.model, messages, stop, run=run, **kwargs),
            self._complete,
        )
        reader = _Reader(pairs, self.expose_cache_info)
        try:
            async for pair, shared in pairs:
                chunk = reader.copy(pair, shared)
                if run_manager and _told(chunk):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            await pairs.aclose()
        if (ending := reader.ending(pairs.pays)) is not None:
            if run_manager:
                await run_manager.on_llm_new_token("", chunk=ending)
            yield ending

    def _served_shares(self, pairs: Reading[ChatGenerationChunk]) -> Iterator[ChatGenerationChunk]:
        reader = _Reader(pairs, self.expose_cache_info)
        try:
            for chunk, shared in pairs:
                yield reader.copy(chunk, shared)
        finally:
            pairs.close()  # now: a stream nobody else reads ends with this one
        if (ending := reader.ending(pairs.pays)) is not None:
            yield ending

    @staticmethod
    def _emit(
        chunks: Iterator[ChatGenerationChunk], run_manager: CallbackManagerForLLMRun | None
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in chunks:
            if run_manager and _told(chunk):
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    @staticmethod
    def _complete(chunks: list[ChatGenerationChunk]) -> CachedResponse:
        total = chunks[0]
        for c in chunks[1:]:
            total = total + c
        # The whole message, as an invoke would have returned it: additional_kwargs
        # (reasoning_content, refusal, function_call), invalid tool calls and id
        # included, not only its content, tool calls, usage and metadata.
        message = message_chunk_to_message(total.message)
        gen = ChatGeneration(message=message, generation_info=total.generation_info)
        return response_of([gen])
