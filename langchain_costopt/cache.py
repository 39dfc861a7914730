"""LangChain's LLM cache interface over costopt's semantic cache engine.

``SemanticCache`` plugs into ``set_llm_cache(...)``: it turns the (prompt,
llm_string) pair LangChain hands a cache into an engine ``CacheRequest`` and
the cached generations back. The llm_string (model, parameters, bound tools)
goes into the scope as a whole, so answers are only shared between identical
model configurations. LangChain hands a cache no run, so a small callback
handler, added to every LangChain run by a configure hook, notes each model
run's tenant (its metadata's ``costopt_tenant``, else
:func:`costopt_core.tenant_scope`'s) when the run starts: LangChain calls it
inline, in the caller's thread or task, just before it reads the cache. The
config in effect is not enough: a model invoked directly does not put its
config in effect, and a ``batch`` runs each element in a thread or task whose
config in effect is the caller's, so every element, whatever its tenant,
shared one partition.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from types import FrameType
from typing import Any
from uuid import UUID

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import Serializable, loads
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables.config import ensure_config
from langchain_core.tracers.context import register_configure_hook
from pydantic import BaseModel

from costopt_core.cache import CachedResponse, CacheHit, CacheRequest
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.errors import ConfigurationError
from costopt_core.finish import finish_reason_of
from costopt_core.served import SERVED, served_info
from costopt_core.types import Usage
from costopt_core.usage import usage_from_langchain
from langchain_costopt._calls import StreamRun
from langchain_costopt._convert import cache_model, from_langchain_messages, usage_or_unknown
from langchain_costopt.batch import usage_metadata_of
from langchain_costopt.callbacks import cost_handlers, run_tenant
from langchain_costopt.components import METADATA_KEY, as_new_message, encode

__all__ = ["PAYLOAD_FORMAT", "SemanticCache", "engine_cache", "generations_of", "response_of"]

PAYLOAD_FORMAT = "langchain/generations/v1"

log = logging.getLogger("costopt.cache")


@dataclass(frozen=True)
class _Noted:
    """The tenant of the model run in progress, over the runs it is nested in."""

    run_id: UUID
    tenant: str | None
    outer: _Noted | None
    #: The run's metadata, for a model that must read its run (:func:`run_in_progress`).
    metadata: Mapping[str, Any] | None = None


_RUN: ContextVar[_Noted | None] = ContextVar("costopt_cache_run_tenant", default=None)


class _RunTenantNote(BaseCallbackHandler):
    """Notes each chat model run's tenant for :class:`SemanticCache` (see the module docstring).

    Chat models only: langchain-core reads and writes a chat model's cache
    inside its run, but a completion model's before its run starts and after
    it ends, where no note can be its own (those fall back to the config in
    effect and ``tenant_scope``). A run that ends takes its note out wherever
    it sits: runs started together (``generate`` over several prompts) end in
    any order, and a model called inside another's call cannot change the
    outer one's partition.
    """

    run_inline = True  # in the caller's context: the note must reach the cache lookup
    raise_error = False
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def _start(self, run_id: UUID, metadata: dict[str, Any] | None) -> None:
        _RUN.set(_Noted(run_id, run_tenant(metadata), _RUN.get(), metadata))

    def _end(self, run_id: UUID) -> None:
        kept: list[_Noted] = []
        noted = _RUN.get()
        while noted is not None and noted.run_id != run_id:
            kept.append(noted)
            noted = noted.outer
        if noted is None:
            return  # not in this context (a stream closed elsewhere): nothing to take out
        rest = noted.outer
        for above in reversed(kept):
            rest = dataclasses.replace(above, outer=rest)
        _RUN.set(rest)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None, **kw: Any
    ) -> None:
        self._start(run_id, metadata)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id)


# Always set (the default), so the hook adds the note to every run's callbacks.
# The handler keeps no state (the note is in _RUN): one serves every context.
_NOTE: ContextVar[_RunTenantNote | None] = ContextVar(
    "costopt_cache_run_tenant_note",
    default=_RunTenantNote(),  # noqa: B039
)
register_configure_hook(_NOTE, inheritable=True)


def run_in_progress(*callbacks: Any) -> StreamRun | None:
    """The chat model run in progress in this context (the innermost), or None.

    For a costopt chat model whose ``_stream`` got no run: langchain-core
    streams an ``invoke`` / ``ainvoke`` itself (``streaming=True``, or a
    streaming callback handler attached, as LangGraph's
    ``stream_mode="messages"`` does) and calls ``_stream`` with neither the run
    manager nor our run kwarg, so the run's tenant (its metadata's
    ``costopt_tenant``) was lost and every tenant shared the default cache
    partition. The run's note, set inline when it started, is then this
    model's own run: the innermost one in progress.

    Args:
        *callbacks: the model's own callbacks. The run's handlers are not
            noted; these and the enclosing ``track_costs`` block's are among
            them (see :func:`~langchain_costopt.callbacks.cost_handlers`).
    """
    noted = _RUN.get()
    if noted is None:
        return None
    return StreamRun(noted.run_id, noted.metadata or {}, cost_handlers(*callbacks))


def _tenant(chat: bool) -> str | None:
    """The tenant of the chat model run reading the cache, else (a completion
    model) of the prompt's run, else the config's in effect, else
    ``tenant_scope``'s. A completion model's lookup is never inside its run (see
    :class:`_RunTenantNote`): a note is not its own."""
    noted = _RUN.get() if chat else None
    if noted is not None:
        return noted.tenant
    if not chat:
        found, metadata = _completion_run_metadata()
        if found:
            return run_tenant(metadata)
    return run_tenant(ensure_config().get("metadata"))


#: langchain-core's functions that read and write the cache for a completion
#: model's prompts, and how each names the prompt's index into its caller's
#: ``callback_managers`` (``update_cache`` counts the prompts that missed).
_PROMPT_INDEX: dict[str, Any] = {
    "get_prompts": lambda f: f["i"],
    "aget_prompts": lambda f: f["i"],
    "update_cache": lambda f: f["missing_prompt_idxs"][f["i"]],
    "aupdate_cache": lambda f: f["missing_prompt_idxs"][f["i"]],
}
_LLMS_MODULE = "langchain_core.language_models.llms"


def _completion_run_metadata() -> tuple[bool, Mapping[str, Any] | None]:
    """(found, metadata) of the run whose completion prompt the cache is reading or writing.

    ``BaseLLM.generate`` reads the cache before it starts the run and writes it
    after the run ends, so no callback sees the run's metadata in time, and
    for a model invoked or batched directly no config is in effect: a tenant
    given in ``config={"metadata": ...}`` was missed, and one tenant's answer
    served to another. The prompt's callback manager, made from that metadata
    before the cache is read, is in ``generate``'s frame, indexed as the loop
    over the prompts in langchain-core's cache functions counts. (False when
    those frames are not found: a cache called some other way.)
    """
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        index_of = _PROMPT_INDEX.get(frame.f_code.co_name)
        if index_of is not None and frame.f_globals.get("__name__") == _LLMS_MODULE:
            caller = frame.f_back
            try:
                managers = caller.f_locals["callback_managers"] if caller else None
                metadata = managers[index_of(frame.f_locals)]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                return False, None
            return True, getattr(metadata, "metadata", None)
        frame = frame.f_back
    return False, None


def engine_cache(value: Any, what: str) -> CacheEngine:
    """``value`` if it is an engine cache, else a ``ConfigurationError`` saying what to pass.

    Checked when the adapter is built: a wrong type would otherwise fail (or,
    worse, be swallowed as a cache miss) inside every call.

    Args:
        value: what the caller passed.
        what: the argument, as the message should name it.
    """
    if isinstance(value, CacheEngine):
        return value
    engine = "costopt_core.cache.SemanticCache (imported as CacheEngine in the README)"
    if isinstance(value, SemanticCache):
        got = "langchain_costopt.SemanticCache, the LangChain adapter"
        fix = f"pass its engine cache (.engine) or a {engine}"
    elif type(value).__name__.endswith("Backend"):
        got = type(value).__name__
        fix = f"wrap the backend in the engine cache: CacheEngine({got}(...))"
    else:
        got = repr(value) if isinstance(value, str | int | float | bool) else type(value).__name__
        fix = (
            "omit it for the in-memory cache (SemanticCache() is in memory), or pass "
            "CacheEngine(SQLiteCacheBackend(path)) / CacheEngine(RedisCacheBackend(url))"
        )
    raise ConfigurationError(f"{what} must be a {engine}, got {got}; {fix}")


def _messages_of(prompt: str) -> tuple[list[BaseMessage], bool]:
    """The prompt's messages, and whether it is a chat model's.

    LangChain serialises a chat prompt with ``dumps``: a JSON list of message
    constructors. Chat-ness is read from that shape, not from whether the
    list loads back: ``dumps`` writes what it cannot serialise (a history
    message's ``additional_kwargs["parsed"]`` pydantic object, a tool's
    ``artifact``) as a stub ``loads`` rejects, and such a chat prompt read as
    a completion one lost its run's tenant (one tenant served another's
    answer) and was keyed as one user turn of JSON (an agent step after a
    tool result matched semantically). Plain LLM prompts are text.
    """
    if prompt.startswith("["):
        try:
            data = json.loads(prompt)
        except ValueError:
            data = None
        if isinstance(data, list) and all(_is_message_constructor(m) for m in data):
            return _load_messages(data), True
    return [HumanMessage(prompt)], False


def _is_message_constructor(obj: Any) -> bool:
    """Whether ``obj`` is how ``dumps`` writes a message (of LangChain's or another
    package's class), whatever its fields hold."""
    return (
        isinstance(obj, dict)
        and obj.get("lc") == 1
        and obj.get("type") == "constructor"
        and isinstance(obj.get("id"), list)
        and bool(obj["id"])
        and str(obj["id"][-1]).endswith(("Message", "MessageChunk"))
        and isinstance(obj.get("kwargs"), dict)
    )


def _without_stubs(obj: Any) -> Any:
    """``obj`` with each of ``dumps``' not-serialisable stubs made None.

    The cache key reads none of what gets stubbed (extras, a tool's artifact):
    only roles, text, names, tool calls and non-text content blocks.
    """
    if isinstance(obj, dict):
        if obj.get("lc") == 1 and obj.get("type") == "not_implemented":
            return None
        return {k: _without_stubs(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_stubs(v) for v in obj]
    return obj


def _load_messages(data: list[Any]) -> list[BaseMessage]:
    """The messages of a chat prompt's JSON, each loaded as leniently as it takes."""
    out: list[BaseMessage] = []
    for item in data:
        try:
            msg = loads(json.dumps(_without_stubs(item)), allowed_objects="messages")
        except Exception:
            msg = None
        out.append(msg if isinstance(msg, BaseMessage) else _bare_message(item))
    return out


def _bare_message(item: dict[str, Any]) -> BaseMessage:
    """What the cache key reads of a message that does not load (a class of
    another package, a field that fails validation): its role, text, name,
    tool calls and tool call id."""
    kwargs = item["kwargs"]
    content = kwargs.get("content")
    if not isinstance(content, str | list):
        content = ""
    name = kwargs.get("name") if isinstance(kwargs.get("name"), str) else None
    kind = str(item["id"][-1])
    try:
        if kind.startswith("System"):
            return SystemMessage(content=content, name=name)
        if kind.startswith("Tool"):
            return ToolMessage(content=content, tool_call_id=str(kwargs.get("tool_call_id") or ""))
        if kind.startswith("AI"):
            return AIMessage(content=content, name=name, tool_calls=kwargs.get("tool_calls") or [])
        return HumanMessage(content=content, name=name)
    except Exception:  # its JSON as the turn's text: the key still tells it apart
        return HumanMessage(json.dumps(item, sort_keys=True))


def response_of(generations: Sequence[Generation]) -> CachedResponse:
    """The neutral form of LangChain generations, with a payload that loads back.

    An answer's extras are kept JSON-safe (a pydantic object, such as the
    ``additional_kwargs["parsed"]`` of OpenAI's structured output, as its
    ``model_dump``): ``dumps`` writes what it cannot serialise as a stub that
    ``loads`` rejects, and every hit would then fail. The payload is read back
    here: if it does not load, the answer is kept as what does (content,
    extras, tool calls, usage, metadata); if even that does not, it is not
    stored at all (an empty answer, which the cache skips), rather than
    stored to be served without its parts.
    """
    first = generations[0] if generations else Generation(text="")
    # Any provider's name and place for it (Bedrock's stopReason, Gemini's
    # MAX_TOKENS, ...): a cut or blocked answer read as whole would be stored.
    finish = finish_reason_of(first.generation_info)
    model = None
    usage = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    if isinstance(first, ChatGeneration) and isinstance(first.message, AIMessage):
        msg = first.message
        meta = msg.response_metadata or {}
        finish = finish or finish_reason_of(meta, msg.additional_kwargs)
        model = meta.get("model_name") or meta.get("model")
        if msg.usage_metadata is not None:
            # Unreadable counts must not lose the answer the model was paid for.
            usage = usage_or_unknown(usage_from_langchain, msg.usage_metadata)
        tool_calls = tuple(dict(tc) for tc in msg.tool_calls)
    payload = _loadable([_storable(g) for g in generations])
    if payload is None:
        payload = _loadable([_rebuilt(g) for g in generations])
    if payload is None:
        log.warning("an answer that cannot be restored from the cache is not stored")
        return CachedResponse(text="")  # empty: the cache stores no empty answer
    return CachedResponse(
        text=first.text,
        model=model,
        finish_reason=finish,
        tool_calls=tool_calls,
        payload=payload,
        payload_format=PAYLOAD_FORMAT,
        usage=usage if usage is not None else Usage(),
    )


def _loadable(generations: list[Generation]) -> str | None:
    """``generations`` as ``dumps`` writes them, if ``loads`` rebuilds them; else None."""
    try:
        return encode(generations)
    except Exception:
        return None


_DROP = object()


def _json_safe(value: Any, *, strict: bool = False) -> Any:
    """``value`` with what ``dumps`` cannot write made JSON (``_DROP`` if it cannot be).

    Pydantic models become their ``model_dump`` (LangChain's own serialisable
    objects stay, unless ``strict``), enums their value, dates ISO text,
    dataclasses dicts, tuples and sets lists; anything else is dropped.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Serializable) and not strict and value.is_lc_serializable():
        return value  # dumps writes it; the payload is read back to make sure
    if isinstance(value, BaseModel):
        try:
            return _json_safe(value.model_dump(mode="json"), strict=strict)
        except Exception:
            return _DROP
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            safe = _json_safe(v, strict=strict)
            if safe is not _DROP and (key := _json_safe(k, strict=True)) is not _DROP:
                out[key if isinstance(key, str) else str(key)] = safe
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = (_json_safe(v, strict=strict) for v in value)
        return [v for v in items if v is not _DROP]
    if isinstance(value, Enum):
        return _json_safe(value.value, strict=strict)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return _json_safe(dataclasses.asdict(value), strict=strict)
        except Exception:
            return _DROP
    return _DROP


def _safe_dict(value: Mapping[str, Any] | None, *, strict: bool = False) -> dict[str, Any]:
    safe = _json_safe(value or {}, strict=strict)
    return safe if isinstance(safe, dict) else {}


def _storable(g: Generation) -> Generation:
    """``g`` as stored: its extras JSON-safe, without what costopt wrote on it.

    What costopt wrote on a message describes one call; the stored answer must
    not carry it.
    """
    update: dict[str, Any] = {}
    if g.generation_info:
        update["generation_info"] = _safe_dict(g.generation_info)
    if isinstance(g, ChatGeneration):
        msg = as_new_message(g.message)
        extras = {
            "additional_kwargs": _safe_dict(msg.additional_kwargs),
            "response_metadata": _safe_dict(msg.response_metadata),
        }
        update["message"] = msg.model_copy(update=extras)
    return g.model_copy(update=update) if update else g


def _rebuilt(g: Generation) -> Generation:
    """What can be kept of ``g`` when it does not load back whole: its parts, as JSON."""
    info = _safe_dict(g.generation_info, strict=True) or None
    if not isinstance(g, ChatGeneration):
        return Generation(text=g.text, generation_info=info)
    msg = as_new_message(g.message)
    content = _json_safe(msg.content, strict=True)
    if not isinstance(content, str | list):
        content = msg.text
    meta = msg.response_metadata
    fields: dict[str, Any] = {}
    if isinstance(msg, AIMessage):
        fields = {
            "tool_calls": _json_safe(msg.tool_calls, strict=True),
            "invalid_tool_calls": _json_safe(msg.invalid_tool_calls, strict=True),
            "usage_metadata": _json_safe(msg.usage_metadata, strict=True),
        }
    message = AIMessage(
        content=content,
        additional_kwargs=_safe_dict(msg.additional_kwargs, strict=True),
        response_metadata=_safe_dict(meta, strict=True),
        name=msg.name,
        **fields,
    )
    return ChatGeneration(message=message, generation_info=info)


def generations_of(hit: CacheHit, *, expose: bool = False) -> list[Generation]:
    """Rebuild the stored generations, noted as served by the cache for the cost handler.

    Args:
        hit: the cache hit.
        expose: also mark each message's ``response_metadata["costopt"]`` as
            served by the cache (callers then see hit/miss; off by default).
    """
    r = hit.response
    gens: list[Generation] | None = None
    if r.payload and r.payload_format == PAYLOAD_FORMAT:
        try:
            loaded = loads(r.payload, allowed_objects="core")
            if isinstance(loaded, list):
                gens = loaded
        except Exception:
            gens = None
    if gens is None:
        gens = [
            ChatGeneration(
                message=AIMessage(
                    content=r.text,
                    tool_calls=list(r.tool_calls),
                    response_metadata={"model_name": r.model, "finish_reason": r.finish_reason},
                    # The usage the answer was paid for: what a hit saves is priced on it.
                    usage_metadata=usage_metadata_of(r.usage),
                )
            )
        ]
    info = served_info(hit)
    out: list[Generation] = []
    for g in gens:
        if isinstance(g, ChatGeneration):
            # A served answer is a new message (see as_new_message: LangGraph's
            # add_messages would merge one with the stored id into the first answer).
            msg = as_new_message(g.message)
            if expose:
                meta = {**(msg.response_metadata or {}), METADATA_KEY: info}
                msg = msg.model_copy(update={"response_metadata": meta})
            g = g.model_copy(update={"message": msg})
            # The generation, not its message: langchain-core replaces a cached
            # message (to zero its cost) but keeps the generation object.
            SERVED.note(g, info)
        out.append(g)
    return out


class SemanticCache(BaseCache):
    """Exact + semantic LLM cache for ``set_llm_cache``, tenant-safe.

    Args:
        cache: the engine cache (backend, embedder, thresholds); a default
            in-memory one if omitted.
        expose_cache_info: mark served answers' ``response_metadata["costopt"]``
            with the cache tier. Off by default: whether an answer was cached
            tells a caller that someone asked the same question before. The
            cost handler learns it either way.

    The tenant partitions the cache: ``tenant_scope`` around the call, or the
    run's ``config={"metadata": {"costopt_tenant": ...}}`` (a chain's, a
    model's own, each element's of a ``batch``).

    Example:
        >>> from langchain_core.globals import set_llm_cache
        >>> set_llm_cache(SemanticCache())  # doctest: +SKIP
        >>> with tenant_scope("acme"):  # doctest: +SKIP
        ...     chat_model.invoke("How do I reset my password?")
    """

    def __init__(
        self, cache: CacheEngine | None = None, *, expose_cache_info: bool = False
    ) -> None:
        self.engine = (
            engine_cache(cache, "SemanticCache's cache") if cache is not None else CacheEngine()
        )
        self.expose_cache_info = expose_cache_info

    def _request(self, prompt: str, llm_string: str) -> CacheRequest:
        messages, chat = _messages_of(prompt)
        return CacheRequest(
            messages=tuple(from_langchain_messages(messages)),
            model=cache_model(llm_string, messages),
            tenant=_tenant(chat),
        )

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = self.engine.lookup(self._request(prompt, llm_string))
        return None if hit is None else generations_of(hit, expose=self.expose_cache_info)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self.engine.store(self._request(prompt, llm_string), response_of(return_val))

    def clear(self, **kwargs: Any) -> None:
        self.engine.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = await self.engine.alookup(self._request(prompt, llm_string))
        return None if hit is None else generations_of(hit, expose=self.expose_cache_info)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await self.engine.astore(self._request(prompt, llm_string), response_of(return_val))

    async def aclear(self, **kwargs: Any) -> None:
        await self.engine.aclear()
